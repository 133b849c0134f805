//! A deterministic generator: the same settings give the same events, in order.

use std::sync::Arc;

use std::io::Write;

use super::{Pacer, Source, SourceError, SourcePoll};
use crate::stream::{Event, Spares};

/// Generates `{"seq": n, "key": "key-k", "value": v}` events keyed by `key-k`.
pub struct GeneratorSource {
    label: Arc<str>,
    count: Option<u64>,
    pacer: Pacer,
    keys: u64,
    seed: u64,
    start_ms: i64,
    step_ms: i64,
    next: u64,
    /// Padding added to each value (`"pad":"xxx.."`), empty for none.
    pad: String,
}

impl GeneratorSource {
    pub fn new(
        uid: &str,
        count: Option<u64>,
        rate: Option<f64>,
        keys: u64,
        seed: u64,
        start_ms: i64,
        step_ms: i64,
    ) -> Result<Self, SourceError> {
        let error = |message: &str| SourceError { uid: uid.into(), message: message.into() };
        if keys == 0 {
            return Err(error("`keys` must be at least 1"));
        }
        Ok(GeneratorSource {
            label: format!("generator `{uid}`").into(),
            count,
            pacer: Pacer::new(rate),
            keys,
            seed,
            start_ms,
            step_ms,
            next: 0,
            pad: String::new(),
        })
    }

    /// Pads every value to about `bytes` bytes.
    pub fn with_payload(mut self, bytes: usize) -> Self {
        self.pad = "x".repeat(bytes);
        self
    }

    /// The event with sequence number `seq`.
    pub fn event(&self, seq: u64) -> Event {
        let mut event = Event::default();
        self.fill(seq, &mut event);
        event
    }

    /// Makes `event` (whatever it held) the event with sequence number `seq`, in the
    /// buffers it has.
    pub fn fill(&self, seq: u64, event: &mut Event) {
        let random = splitmix64(self.seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut key = event.key.take().unwrap_or_default();
        key.clear();
        // A new event's buffers are made about the right size at once.
        key.reserve(16);
        event.value.reserve(64 + self.pad.len());
        // Writing into a Vec cannot fail.
        let _ = write!(key, "key-{}", random % self.keys);
        let value = &mut event.value;
        value.clear();
        let _ = write!(value, r#"{{"seq":{seq},"key":""#);
        value.extend_from_slice(&key);
        let _ = write!(value, r#"","value":{}"#, (random >> 32) % 1000);
        if !self.pad.is_empty() {
            let _ = write!(value, r#","pad":"{}""#, self.pad);
        }
        value.push(b'}');
        event.key = Some(key);
        event.timestamp = Some(self.start_ms + seq as i64 * self.step_ms);
        event.headers.clear();
    }
}

/// SplitMix64: a tiny, well-distributed, version-stable mixer.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Source for GeneratorSource {
    fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    fn unit(&self) -> &'static str {
        "seq"
    }

    fn poll(&mut self) -> Result<SourcePoll, SourceError> {
        self.poll_reusing(&mut Spares::default())
    }

    fn poll_reusing(&mut self, spares: &mut Spares) -> Result<SourcePoll, SourceError> {
        if self.count.is_some_and(|count| self.next >= count) {
            return Ok(SourcePoll::End);
        }
        if let Some(wait) = self.pacer.wait(self.next) {
            return Ok(SourcePoll::Pending(wait));
        }
        let seq = self.next;
        self.next += 1;
        let mut event = spares.take();
        self.fill(seq, &mut event);
        Ok(SourcePoll::Record { event, offset: seq as i64, split: 0 })
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "next": self.next })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError> {
        self.next = position["next"].as_u64().ok_or_else(|| SourceError {
            uid: self.label.to_string(),
            message: format!("bad saved position {position}"),
        })?;
        self.pacer.resume_at(self.next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_event_is_filled_exactly_as_a_new_one() {
        use crate::stream::Header;
        let g = GeneratorSource::new("g", None, None, 10, 7, 0, 1).unwrap();
        let mut spares = Spares::default();
        let stale = Event {
            key: Some(b"a much longer stale key than any generated one".to_vec()),
            value: vec![b'x'; 300],
            timestamp: None,
            headers: Vec::new(),
        };
        spares.keep([stale]);
        let mut from_spare = spares.take();
        assert_eq!(from_spare.value.len(), 300, "the spare kept");
        from_spare.headers.push(Header { name: "h".into(), value: b"v".to_vec() });
        g.fill(12, &mut from_spare);
        assert_eq!(from_spare, g.event(12));
        let value = String::from_utf8(from_spare.value).unwrap();
        let key = String::from_utf8(from_spare.key.unwrap()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["seq"], 12);
        assert_eq!(json["key"], key.as_str());
        assert!(key.starts_with("key-") && json["value"].as_u64().unwrap() < 1000, "{value}");
    }

    #[test]
    fn same_seed_same_events_and_count_is_honoured() {
        let mut a = GeneratorSource::new("g", Some(3), None, 10, 42, 1000, 5).unwrap();
        let b = GeneratorSource::new("g", Some(3), None, 10, 42, 1000, 5).unwrap();
        for seq in 0..3 {
            let SourcePoll::Record { event, offset, .. } = a.poll().unwrap() else { panic!() };
            assert_eq!(offset, seq as i64);
            assert_eq!(event, b.event(seq));
            assert_eq!(event.timestamp, Some(1000 + 5 * seq as i64));
        }
        assert!(matches!(a.poll().unwrap(), SourcePoll::End));
        let other = GeneratorSource::new("g", Some(3), None, 10, 43, 1000, 5).unwrap();
        assert_ne!((0..3).map(|s| other.event(s).key).collect::<Vec<_>>(),
                   (0..3).map(|s| b.event(s).key).collect::<Vec<_>>());
    }
}
