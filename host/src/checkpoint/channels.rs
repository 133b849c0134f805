//! Channel state: the records and watermarks an unaligned checkpoint barrier overtook
//! on a task's input channels (Flink's `InputChannelStateHandle`s). A task records
//! them while it goes on processing them, stores them with its part of the checkpoint,
//! and on restore processes them again first, channel by channel, before anything new.
//!
//! The file is an entry file ([`crate::state::snapshot`]): `n` + channel index (u32 BE)
//! → the channel's name, and `d` + channel index + sequence number (u32 BE each) → one
//! batch of elements, so entries sort into channel order and, within a channel, into
//! the order they were sent.

use std::path::Path;
use std::sync::Arc;

use crate::state::snapshot::{FileEntry, read_entries, write_file};
use crate::stream::{Batch, Element, Event, Header, Label, Position, Record};
use crate::watermark::Watermark;

/// The in-flight data of one task for one checkpoint, encoded as it is recorded.
#[derive(Debug, Default)]
pub struct ChannelState {
    /// The names of the task's input channels, by index.
    names: Vec<Arc<str>>,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per channel: batches recorded so far.
    counts: Vec<u32>,
    records: u64,
}

/// What a channel state file holds for one channel, in order.
#[derive(Debug)]
pub struct RestoredChannel {
    pub name: String,
    pub batches: Vec<Batch>,
}

impl ChannelState {
    pub fn new(names: Vec<Arc<str>>) -> Self {
        let counts = vec![0; names.len()];
        ChannelState { names, counts, ..Default::default() }
    }

    /// Records `batch`, which arrived on channel `channel` ahead of the barrier.
    pub fn record(&mut self, channel: usize, batch: &Batch) {
        let mut key = Vec::with_capacity(9);
        key.push(b'd');
        key.extend_from_slice(&(channel as u32).to_be_bytes());
        key.extend_from_slice(&self.counts[channel].to_be_bytes());
        self.counts[channel] += 1;
        let value = encode_batch(batch);
        self.records += batch.records as u64;
        self.entries.push((key, value));
    }

    /// How many records were recorded.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Writes the file at `relative` under `root`; nothing when no data was in flight.
    pub fn write(mut self, root: &Path, relative: &str) -> Result<Option<FileEntry>, String> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        for (index, name) in self.names.iter().enumerate() {
            if self.counts[index] > 0 {
                let mut key = vec![b'n'];
                key.extend_from_slice(&(index as u32).to_be_bytes());
                self.entries.push((key, name.as_bytes().to_vec()));
            }
        }
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let entries = self.entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
        write_file(root, relative, entries).map(Some)
    }

    /// Reads a channel state file back, channel by channel.
    pub fn read(path: &Path) -> Result<Vec<RestoredChannel>, String> {
        let mut names: Vec<(u32, String)> = Vec::new();
        let mut data: Vec<(u32, Batch)> = Vec::new();
        let mut malformed = None;
        read_entries(path, |key, value| {
            let index = key.get(1..5).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
            match (key.first(), index) {
                (Some(b'n'), Some(index)) => names.push((index, String::from_utf8_lossy(&value).into_owned())),
                (Some(b'd'), Some(index)) if key.len() == 9 => match decode_batch(&value) {
                    Some(batch) => data.push((index, batch)),
                    None => malformed = Some("a malformed batch"),
                },
                _ => malformed = Some("an unknown entry"),
            }
        })?;
        if let Some(what) = malformed {
            return Err(format!("{}: channel state holds {what}", path.display()));
        }
        if let Some((index, _)) = data.iter().find(|(i, _)| !names.iter().any(|(n, _)| n == i)) {
            return Err(format!("{}: channel state holds data of unnamed channel {index}", path.display()));
        }
        // Entries come in key order: by channel, then in the order they were sent.
        let mut channels: Vec<(u32, RestoredChannel)> =
            names.into_iter().map(|(index, name)| (index, RestoredChannel { name, batches: Vec::new() })).collect();
        for (index, batch) in data {
            let (_, channel) = channels.iter_mut().find(|(i, _)| *i == index).expect("named, checked above");
            channel.batches.push(batch);
        }
        let channels: Vec<RestoredChannel> = channels.into_iter().map(|(_, c)| c).collect();
        Ok(channels)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.bytes / 2 + 16);
    out.extend_from_slice(&(batch.elements.len() as u32).to_be_bytes());
    for element in &batch.elements {
        match element {
            Element::Watermark(Watermark::EventTime(t)) => {
                out.push(1);
                out.extend_from_slice(&t.to_be_bytes());
            }
            Element::Watermark(Watermark::Idle) => out.push(2),
            Element::Record(record) => {
                out.push(0);
                let event = &record.event;
                match &event.key {
                    Some(key) => {
                        out.push(1);
                        put_bytes(&mut out, key);
                    }
                    None => out.push(0),
                }
                put_bytes(&mut out, &event.value);
                match event.timestamp {
                    Some(t) => {
                        out.push(1);
                        out.extend_from_slice(&t.to_be_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(&(event.headers.len() as u32).to_be_bytes());
                for header in &event.headers {
                    put_bytes(&mut out, header.name.as_bytes());
                    put_bytes(&mut out, &header.value);
                }
                put_bytes(&mut out, record.position.source.text().as_bytes());
                put_bytes(&mut out, record.position.unit.text().as_bytes());
                out.extend_from_slice(&record.position.offset.to_be_bytes());
                out.extend_from_slice(&record.key_group.to_be_bytes());
            }
        }
    }
    out
}

/// Reads what [`encode_batch`] wrote.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

fn decode_batch(bytes: &[u8]) -> Option<Batch> {
    let mut r = Reader { bytes };
    let count = r.u32()?;
    let mut batch = Batch::with_capacity((count as usize).min(4096));
    for _ in 0..count {
        match r.u8()? {
            1 => batch.push_watermark(Watermark::EventTime(r.i64()?)),
            2 => batch.push_watermark(Watermark::Idle),
            0 => {
                let key = match r.u8()? {
                    0 => None,
                    _ => Some(r.bytes()?.to_vec()),
                };
                let value = r.bytes()?.to_vec();
                let timestamp = match r.u8()? {
                    0 => None,
                    _ => Some(r.i64()?),
                };
                let headers = (0..r.u32()?)
                    .map(|_| Some(Header { name: r.text()?.to_string(), value: r.bytes()?.to_vec() }))
                    .collect::<Option<Vec<_>>>()?;
                let source = Label::intern(r.text()?);
                let unit = Label::intern(r.text()?);
                let offset = r.i64()?;
                let key_group = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
                batch.push_record(Record {
                    event: Event { key, value, timestamp, headers },
                    position: Position { source, unit, offset },
                    key_group,
                    ingested: None,
                });
            }
            _ => return None,
        }
    }
    r.bytes.is_empty().then_some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, value: &str, offset: i64) -> Record {
        Record {
            event: Event {
                key: key.map(|k| k.as_bytes().to_vec()),
                value: value.as_bytes().to_vec(),
                timestamp: Some(offset * 10),
                headers: vec![Header { name: "h".into(), value: b"v".to_vec() }],
            },
            position: Position { source: Label::intern("channels-test.jsonl"), unit: Label::intern("line"), offset },
            key_group: 17,
            ingested: None,
        }
    }

    #[test]
    fn recorded_batches_read_back_per_channel_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ChannelState::new(vec!["a#0".into(), "b#0 input 2".into(), "c#0".into()]);
        let mut first = Batch::default();
        first.push_record(record(Some("k1"), "{\"n\":1}", 1));
        first.push_watermark(Watermark::EventTime(15));
        first.push_record(record(None, "{\"n\":2}", 2));
        let mut second = Batch::default();
        second.push_watermark(Watermark::Idle);
        second.push_record(record(Some("k3"), "{\"n\":3}", 3));
        let mut other = Batch::default();
        other.push_record(record(Some("x"), "{}", 9));
        state.record(1, &other);
        state.record(0, &first);
        state.record(0, &second);
        assert_eq!(state.records(), 4);
        let file = state.write(dir.path(), "chk/t/channels.ent").unwrap().expect("data was recorded");
        let restored = ChannelState::read(&dir.path().join(&file.path)).unwrap();
        assert_eq!(restored.len(), 2, "channel c#0 had nothing in flight");
        assert_eq!(restored[0].name, "a#0");
        assert_eq!(restored[1].name, "b#0 input 2");
        let a: Vec<_> = restored[0].batches.iter().flat_map(|b| b.elements.iter()).collect();
        assert_eq!(a.len(), 5);
        let Element::Record(r) = a[0] else { panic!() };
        assert_eq!(r.event, record(Some("k1"), "{\"n\":1}", 1).event);
        assert_eq!((r.position.to_string(), r.key_group), ("channels-test.jsonl line 1".to_string(), 17));
        assert!(matches!(a[1], Element::Watermark(Watermark::EventTime(15))));
        let Element::Record(r) = a[2] else { panic!() };
        assert_eq!(r.event.key, None);
        assert!(matches!(a[3], Element::Watermark(Watermark::Idle)));
        assert_eq!(restored[1].batches[0].records, 1);
    }

    #[test]
    fn nothing_in_flight_writes_no_file_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChannelState::new(vec!["a#0".into()]).write(dir.path(), "x.ent").unwrap().is_none());
        let mut state = ChannelState::new(vec!["a#0".into()]);
        let mut batch = Batch::default();
        batch.push_record(record(Some("k"), "v", 1));
        state.record(0, &batch);
        let file = state.write(dir.path(), "x.ent").unwrap().unwrap();
        let path = dir.path().join(&file.path);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(ChannelState::read(&path).is_err());
    }
}
