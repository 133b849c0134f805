//! Between weir's own types and each contract version's generated ones.

/// Defines, in a version folder, the conversions between weir's own `Event` and
/// `TimeDomain` and the generated types of `super::bindings` (moving buffers, never
/// copying them): `event`, `guest_event`, `time_domain` and `guest_time_domain`.
macro_rules! conversions {
    () => {
        use $crate::stream::{Event, Header};
        use $crate::timers::TimeDomain;
        use bindings::weir::operator::types;

        /// Converts an event emitted by the guest into weir's own.
        pub(super) fn event(event: types::Event) -> Event {
            Event {
                key: event.key,
                value: event.value,
                timestamp: event.timestamp,
                headers: event.headers.into_iter().map(|h| Header { name: h.name, value: h.value }).collect(),
            }
        }

        /// Converts weir's event for the guest.
        #[allow(dead_code, reason = "contract 0.3 sends events only in flat batches; its co-handler takes the same-shaped event of 0.2")]
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
    };
}

pub(in crate::plugin) use conversions;
