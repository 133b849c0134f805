//! Contract `weir:operator@0.2.0` (`wit/operator.wit`): elements cross the boundary in
//! batches (`handler.process-batch`), each made current by `batch.begin-element`, and
//! what a batch emitted comes back in one go.

pub mod bindings;
mod host;

use crate::stream::{Event, Header};
use crate::timers::TimeDomain;
use bindings::weir::operator::types;

/// Converts an event emitted by the guest into weir's own (moving its buffers).
pub(super) fn event(event: types::Event) -> Event {
    Event {
        key: event.key,
        value: event.value,
        timestamp: event.timestamp,
        headers: event.headers.into_iter().map(|h| Header { name: h.name, value: h.value }).collect(),
    }
}

/// Converts weir's event for the guest (moving its buffers).
pub(super) fn guest_event(event: Event) -> types::Event {
    types::Event {
        key: event.key,
        value: event.value,
        timestamp: event.timestamp,
        headers: event.headers.into_iter().map(|h| types::Header { name: h.name, value: h.value }).collect(),
    }
}

pub(super) fn time_domain(domain: types::TimeDomain) -> TimeDomain {
    match domain {
        types::TimeDomain::EventTime => TimeDomain::EventTime,
        types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}

pub(super) fn guest_time_domain(domain: TimeDomain) -> types::TimeDomain {
    match domain {
        TimeDomain::EventTime => types::TimeDomain::EventTime,
        TimeDomain::ProcessingTime => types::TimeDomain::ProcessingTime,
    }
}
