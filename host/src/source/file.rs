//! JSON lines from a file: one event per line, the raw line as the value.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use super::{JsonFields, Pacer, Source, SourceError, SourcePoll};
use crate::stream::{Event, Spares};

/// Reads a file of JSON objects, one per line. Blank lines are skipped.
pub struct FileSource {
    uid: String,
    label: Arc<str>,
    reader: BufReader<File>,
    line: Vec<u8>,
    line_number: i64,
    /// Bytes consumed so far: where a restored source seeks to.
    offset: u64,
    fields: JsonFields,
    pacer: Pacer,
    /// Records returned so far in this run, for pacing.
    returned: u64,
    /// The longest line read whole; a longer one is skipped without buffering it.
    max_record_bytes: usize,
    /// Inside an oversized line, skipping to its end.
    skipping: bool,
}

/// How much of an oversized line one poll skips, so that a line without end (a device,
/// a corrupt file) leaves the task responsive.
const SKIP_CHUNK: u64 = 1 << 20;

/// The default `max_record_bytes`: the largest value a state entry may hold.
pub const DEFAULT_MAX_RECORD_BYTES: usize = crate::operator::MAX_VALUE_BYTES;

impl FileSource {
    pub fn open(
        uid: &str,
        path: &Path,
        key_field: Option<String>,
        timestamp_field: Option<String>,
    ) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|e| SourceError {
            uid: uid.into(),
            message: format!("cannot open {}: {e}", path.display()),
        })?;
        Ok(FileSource::from_file(uid, &path.display().to_string(), file, key_field, timestamp_field))
    }

    /// Reads `file`, named `label` in positions and errors.
    pub fn from_file(
        uid: &str,
        label: &str,
        file: File,
        key_field: Option<String>,
        timestamp_field: Option<String>,
    ) -> Self {
        FileSource {
            uid: uid.into(),
            label: label.into(),
            reader: BufReader::with_capacity(1 << 16, file),
            line: Vec::new(),
            line_number: 0,
            offset: 0,
            fields: JsonFields { key_field, timestamp_field },
            pacer: Pacer::new(None),
            returned: 0,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            skipping: false,
        }
    }

    /// Reads at most `rate` lines per second.
    pub fn with_rate(mut self, rate: Option<f64>) -> Self {
        self.pacer = Pacer::new(rate);
        self
    }

    /// Lines longer than `bytes` are malformed records (never held in memory whole).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    fn read_failed(&self, error: std::io::Error, line: i64) -> SourceError {
        SourceError { uid: self.uid.clone(), message: format!("{} line {line}: read failed: {error}", self.label) }
    }

    /// Consumes up to [`SKIP_CHUNK`] bytes of an oversized line; `true` once its newline
    /// (or the end of the file) is passed.
    fn skip_line(&mut self) -> std::io::Result<bool> {
        let mut skipped = 0u64;
        while skipped < SKIP_CHUNK {
            let buffer = self.reader.fill_buf()?;
            if buffer.is_empty() {
                return Ok(true);
            }
            match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.reader.consume(at + 1);
                    self.offset += at as u64 + 1;
                    return Ok(true);
                }
                None => {
                    let len = buffer.len();
                    self.reader.consume(len);
                    self.offset += len as u64;
                    skipped += len as u64;
                }
            }
        }
        Ok(false)
    }

    /// The event of `line`, in an event of `spares` when there are any.
    fn parse(&self, line: &[u8], spares: Option<&mut Spares>) -> Result<Event, String> {
        let (key, timestamp) = self.fields.extract(line)?;
        let timestamp = Some(timestamp.unwrap_or_else(crate::clock::now_ms));
        Ok(match spares {
            Some(spares) => {
                let mut event = spares.take();
                event.refill(None, line, timestamp);
                event.key = key;
                event
            }
            None => Event { key, value: line.to_vec(), timestamp, headers: Vec::new() },
        })
    }

    /// The next line's event, filled into one of `spares` if given.
    fn read(&mut self, spares: Option<&mut Spares>) -> Result<SourcePoll, SourceError> {
        if let Some(wait) = self.pacer.wait(self.returned) {
            return Ok(SourcePoll::Pending(wait));
        }
        self.returned += 1;
        if self.skipping {
            let done = self.skip_line().map_err(|e| self.read_failed(e, self.line_number))?;
            if !done {
                return Ok(SourcePoll::Pending(std::time::Duration::ZERO));
            }
            self.skipping = false;
        }
        loop {
            self.line.clear();
            let limit = self.max_record_bytes as u64 + 1;
            let read = (&mut self.reader).take(limit).read_until(b'\n', &mut self.line);
            let read = read.map_err(|e| self.read_failed(e, self.line_number + 1))?;
            if read == 0 {
                return Ok(SourcePoll::End);
            }
            self.offset += read as u64;
            self.line_number += 1;
            if read as u64 == limit && self.line.last() != Some(&b'\n') {
                // Longer than allowed: say so now, and skip the rest of it from the next
                // poll on, a chunk at a time, without holding it.
                let line_number = self.line_number;
                self.skipping = true;
                // What a dead letter keeps of it: its beginning.
                let kept = self.line.len().min(crate::stream::DEAD_LETTER_MAX_BYTES);
                let record = Event { value: self.line[..kept].to_vec(), ..Event::default() };
                self.line.clear();
                self.line.shrink_to(1 << 16);
                let reason = format!(
                    "a line of more than {} bytes (the source's max_record_bytes); raise it or fix the input",
                    self.max_record_bytes
                );
                return Ok(SourcePoll::Malformed { offset: line_number, split: 0, reason, record });
            }
            let line = self.line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            let offset = self.line_number;
            return Ok(match self.parse(line, spares) {
                Ok(event) => SourcePoll::Record { event, offset, split: 0 },
                Err(reason) => {
                    SourcePoll::Malformed { offset, split: 0, reason, record: Event { value: line.to_vec(), ..Event::default() } }
                }
            });
        }
    }
}

impl Source for FileSource {
    fn label(&self) -> Arc<str> {
        self.label.clone()
    }

    fn unit(&self) -> &'static str {
        "line"
    }

    fn poll(&mut self) -> Result<SourcePoll, SourceError> {
        self.read(None)
    }

    fn poll_reusing(&mut self, spares: &mut Spares) -> Result<SourcePoll, SourceError> {
        self.read(Some(spares))
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "byte": self.offset, "line": self.line_number })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError> {
        let (Some(byte), Some(line)) = (position["byte"].as_u64(), position["line"].as_i64()) else {
            return Err(SourceError { uid: self.uid.clone(), message: format!("bad saved position {position}") });
        };
        self.reader.seek(SeekFrom::Start(byte)).map_err(|e| SourceError {
            uid: self.uid.clone(),
            message: format!("{}: cannot seek to byte {byte}: {e}", self.label),
        })?;
        self.offset = byte;
        self.line_number = line;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use crate::test_rng::Rng;

    /// A hostile line: random bytes (invalid UTF-8, NULs, lone quotes), a line longer
    /// than the limit, JSON nested thousands deep, a valid object with odd key and
    /// timestamp fields, or an object whose key or timestamp has the wrong type.
    fn hostile_line(rng: &mut Rng) -> (Vec<u8>, bool) {
        match rng.below(6) {
            0 => ((0..rng.below(200)).map(|_| rng.below(256) as u8).filter(|b| *b != b'\n').collect(), false),
            1 => (vec![b'{'; 5000], false),
            2 => {
                let depth = 1 + rng.below(20_000) as usize;
                let mut deep = "[".repeat(depth) + &"]".repeat(depth);
                deep = format!(r#"{{"k":"a","ts":1,"deep":{deep}}}"#);
                (deep.into_bytes(), false)
            }
            3 => (format!(r#"{{"k":"k{}","ts":{},"v":"\u00e9\ud83d\ude00"}}"#, rng.below(9), rng.below(1 << 40)).into_bytes(), true),
            4 => (format!(r#"{{"k":{{"nested":true}},"ts":"soon"}}"#).into_bytes(), false),
            _ => (vec![b'x'; 300], false),
        }
    }

    #[test]
    fn hostile_input_gives_events_or_malformed_records_and_never_a_panic() {
        // Property: whatever the bytes, each line becomes an event (valid objects) or a
        // malformed record naming its line, in order, and the source reaches the end.
        for seed in 0..40 {
            let mut rng = Rng::new(seed);
            let mut file = tempfile::NamedTempFile::new().unwrap();
            let mut expected = Vec::new();
            for _ in 0..50 {
                let (line, valid) = hostile_line(&mut rng);
                file.write_all(&line).unwrap();
                file.write_all(b"\n").unwrap();
                // Blank lines are skipped, not records.
                if !line.iter().all(u8::is_ascii_whitespace) {
                    expected.push(valid);
                }
            }
            let mut source = FileSource::open("f", file.path(), Some("k".into()), Some("ts".into()))
                .unwrap()
                .with_max_record_bytes(100_000);
            let mut seen = Vec::new();
            loop {
                match source.poll().unwrap() {
                    SourcePoll::Record { event, .. } => {
                        assert!(event.key.is_some() && event.timestamp.is_some(), "seed {seed}");
                        seen.push(true);
                    }
                    SourcePoll::Malformed { reason, .. } => {
                        assert!(!reason.is_empty(), "seed {seed}");
                        seen.push(false);
                    }
                    SourcePoll::End => break,
                    other => panic!("seed {seed}: {other:?}"),
                }
            }
            // Valid objects are events; the deep JSON and random bytes that happen to
            // parse are allowed to be events too, never the reverse.
            assert_eq!(seen.len(), expected.len(), "seed {seed}");
            for (i, (got, valid)) in seen.iter().zip(&expected).enumerate() {
                assert!(!valid || *got, "seed {seed}: line {} was valid", i + 1);
            }
        }
    }

    #[test]
    fn lines_longer_than_the_limit_are_skipped_without_buffering_them() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, r#"{{"a":1}}"#).unwrap();
        writeln!(file, "{}", "x".repeat(100_000)).unwrap();
        writeln!(file, r#"{{"a":3}}"#).unwrap();
        write!(file, "{}", "y".repeat(50)).unwrap();
        let mut source = FileSource::open("f", file.path(), None, None).unwrap().with_max_record_bytes(20);
        assert!(matches!(source.poll().unwrap(), SourcePoll::Record { offset: 1, .. }));
        match source.poll().unwrap() {
            SourcePoll::Malformed { offset: 2, reason, .. } => assert!(reason.contains("more than 20 bytes"), "{reason}"),
            _ => panic!("the long line is malformed"),
        }
        assert!(source.line.capacity() <= 1 << 16, "the long line was not kept");
        assert!(matches!(source.poll().unwrap(), SourcePoll::Record { offset: 3, .. }));
        assert!(matches!(source.poll().unwrap(), SourcePoll::Malformed { offset: 4, .. }), "no newline at the end");
        assert!(matches!(source.poll().unwrap(), SourcePoll::End));
        assert_eq!(source.position()["byte"].as_u64().unwrap(), std::fs::metadata(file.path()).unwrap().len());
    }

    #[test]
    fn reads_keys_timestamps_and_reports_malformed_lines() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, r#"{{"user":"ann","ts":1000}}"#).unwrap();
        writeln!(file).unwrap();
        writeln!(file, r#"{{"user":7,"ts":2000}}"#).unwrap();
        writeln!(file, r#"{{"user":"bob","ts":"#).unwrap();
        writeln!(file, r#"{{"user":"bob"}}"#).unwrap();
        let mut source =
            FileSource::open("in", file.path(), Some("user".into()), Some("ts".into())).unwrap();
        let SourcePoll::Record { event, offset: 1, .. } = source.poll().unwrap() else { panic!() };
        assert_eq!((event.key.as_deref(), event.timestamp), (Some(&b"ann"[..]), Some(1000)));
        let SourcePoll::Record { event, offset: 3, .. } = source.poll().unwrap() else { panic!() };
        assert_eq!(event.key.as_deref(), Some(&b"7"[..]));
        let SourcePoll::Malformed { offset: 4, reason, .. } = source.poll().unwrap() else { panic!() };
        assert!(reason.contains("invalid JSON"), "{reason}");
        let SourcePoll::Malformed { offset: 5, reason, .. } = source.poll().unwrap() else { panic!() };
        assert!(reason.contains("missing timestamp field `ts`"), "{reason}");
        assert!(matches!(source.poll().unwrap(), SourcePoll::End));
    }

    #[test]
    fn recycled_events_are_filled_exactly_as_new_ones() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, r#"{{"user":"ann","ts":1000,"x":[1,{{"y":null}}]}}"#).unwrap();
        writeln!(file, r#"{{"user":7,"ts":2000}}"#).unwrap();
        writeln!(file, r#"{{"ts":3}}"#).unwrap();
        writeln!(file, r#"{{"user":"a-much-longer-user-name-than-the-stale-key","ts":4000}}"#).unwrap();
        let open = || FileSource::open("in", file.path(), Some("user".into()), Some("ts".into())).unwrap();
        let (mut fresh, mut reusing) = (open(), open());
        // Stale events: keys, values and timestamps that must not show through (events
        // with headers are never kept as spares).
        let mut spares = Spares::default();
        spares.keep((0..4).map(|i| Event {
            key: Some(vec![b'k'; 40 + i]),
            value: vec![b'v'; 300],
            timestamp: Some(-1),
            headers: Vec::new(),
        }));
        assert_eq!(spares.len(), 4);
        loop {
            match (fresh.poll().unwrap(), reusing.poll_reusing(&mut spares).unwrap()) {
                (SourcePoll::End, SourcePoll::End) => break,
                (SourcePoll::Record { event: a, offset: x, .. }, SourcePoll::Record { event: b, offset: y, .. }) => {
                    assert_eq!((a.key, a.value, a.timestamp, a.headers), (b.key, b.value, b.timestamp, b.headers));
                    assert_eq!(x, y);
                }
                (SourcePoll::Malformed { reason: a, .. }, SourcePoll::Malformed { reason: b, .. }) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} != {b:?}"),
            }
        }
        // Only the records took a spare; the malformed line left its spare alone.
        assert_eq!(spares.len(), 1, "spares left");
    }

    #[test]
    fn a_restored_source_continues_after_its_position() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for i in 0..5 {
            writeln!(file, r#"{{"i":{i}}}"#).unwrap();
        }
        let mut first = FileSource::open("in", file.path(), None, None).unwrap();
        first.poll().unwrap();
        first.poll().unwrap();
        let position = first.position();
        let mut second = FileSource::open("in", file.path(), None, None).unwrap();
        second.restore(&position).unwrap();
        let SourcePoll::Record { event, offset, .. } = second.poll().unwrap() else { panic!() };
        assert_eq!((offset, event.value), (3, br#"{"i":2}"#.to_vec()));
    }
}
