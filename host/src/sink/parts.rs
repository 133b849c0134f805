//! Part files in a directory or an object store (`s3://`, `gs://`, `az://`, `file://`),
//! as Flink's `FileSink`: JSON lines or Parquet, rolled by size and time, visible only
//! once the checkpoint that covers them completes.
//!
//! - **The part being written** lives in an anonymous local temporary file (never in the
//!   store): a crash loses it, and the restore writes its rows again.
//! - **Rolling** (`roll_bytes`, `roll_ms`, and at every checkpoint barrier, as Flink's
//!   `OnCheckpointRollingPolicy` does for bulk formats) closes it as part
//!   `part-<job>-<uid>-<n>.<ext>`. With checkpoints it is uploaded under a hidden
//!   name beside it, `.part-<job>-<uid>-<n>.<ext>.pending` (readers such as Spark,
//!   Hive and pyarrow skip names starting with `.` or `_`), and the checkpoint's state
//!   lists it. When the checkpoint completes it is copied to its name and the hidden
//!   one removed.
//! - **A restore** publishes the pending parts its checkpoint lists (the checkpoint
//!   completed, whether or not the commit ran) and removes this sink's other pending
//!   parts: those of checkpoints that never completed. A fresh start removes this
//!   sink's pending parts and numbers new parts after the ones already published, so
//!   nothing published is overwritten. weir removes nothing else.
//! - Without checkpoints, a rolled part is uploaded under its name at once.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::{Delivery, Sink, SinkError, SinkFormat, encode_line};
use crate::stream::Event;

/// A `[[sink]]` with `type = "files"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSinkSpec {
    pub uid: String,
    /// A local directory, or an object store URL (`s3://bucket/prefix`, `gs://`,
    /// `az://`, `file://`).
    pub dir: String,
    #[serde(default)]
    pub format: PartFormat,
    /// A part rolls once it holds this many bytes (JSON lines; for Parquet, of the
    /// records before encoding).
    #[serde(default = "default_roll_bytes")]
    pub roll_bytes: u64,
    /// A part rolls once it has been open this long.
    #[serde(default = "default_roll_ms")]
    pub roll_ms: u64,
    /// Options of the object store (`aws_endpoint`, `aws_region`, ...); secrets come
    /// from the environment (`AWS_SECRET_ACCESS_KEY`, ...), never the job file.
    #[serde(default)]
    pub store_options: BTreeMap<String, String>,
    /// Parquet columns and their types (`int64`, `float64`, `utf8`, `bool`, ...); the
    /// fields of each record's JSON value fill them. Inferred from each part's records
    /// when absent.
    #[serde(default)]
    pub schema: BTreeMap<String, String>,
}

fn default_roll_bytes() -> u64 {
    128 << 20
}

fn default_roll_ms() -> u64 {
    60_000
}

/// What a part file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartFormat {
    /// JSON lines: each event's value.
    #[default]
    Value,
    /// JSON lines: key, timestamp, value and headers.
    Envelope,
    /// Parquet: the fields of each event's JSON value as columns.
    Parquet,
}

impl PartFormat {
    fn extension(self) -> &'static str {
        match self {
            PartFormat::Value | PartFormat::Envelope => "jsonl",
            PartFormat::Parquet => "parquet",
        }
    }
}

impl FilesSinkSpec {
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("sink `{}`", self.uid);
        if self.roll_bytes == 0 || self.roll_ms == 0 {
            return Err(format!("{what}: `roll_bytes` and `roll_ms` must be positive"));
        }
        if !self.schema.is_empty() && self.format != PartFormat::Parquet {
            return Err(format!("{what}: `schema` describes Parquet columns; set format = \"parquet\""));
        }
        #[cfg(not(feature = "parquet"))]
        if self.format == PartFormat::Parquet {
            return Err(format!("{what}: {PARQUET_ABSENT}"));
        }
        #[cfg(feature = "parquet")]
        for (column, ty) in &self.schema {
            parquet_type(ty).map_err(|e| format!("{what}: column `{column}`: {e}"))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingPart {
    /// The checkpoint it was rolled for (`None`: not yet pre-committed).
    checkpoint: Option<u64>,
    name: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PartsState {
    next_part: u64,
    pending: Vec<PendingPart>,
}

pub struct PartFileSink {
    uid: String,
    spec: FilesSinkSpec,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
    /// `part-<job>-<uid>-` (a cluster task's job name carries its partition).
    name_prefix: String,
    transactional: bool,
    next_part: u64,
    pending: Vec<PendingPart>,
    /// The part being written (a local file, buffered: one write per 64 KiB, not per
    /// record), its size, and when it was opened.
    in_progress: Option<(BufWriter<File>, u64, Instant)>,
    line: Vec<u8>,
    #[cfg(feature = "parquet")]
    schema: Option<arrow_schema::SchemaRef>,
}

impl PartFileSink {
    /// Opens the store and settles what an earlier run left pending (module docs).
    pub fn open(spec: &FilesSinkSpec, dir: &str, job: &str, delivery: Delivery<'_>) -> Result<Self, SinkError> {
        let error = |message: String| SinkError { uid: spec.uid.clone(), message };
        spec.validate().map_err(&error)?;
        let (store, prefix) = if crate::store::is_url(dir) {
            crate::store::open(dir, &spec.store_options).map_err(|e| error(format!("{dir}: {e}")))?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create {dir}: {e}")))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| error(format!("{dir}: {e}")))?;
            (Arc::new(local) as Arc<dyn ObjectStore>, Key::default())
        };
        #[cfg(feature = "parquet")]
        let schema = (!spec.schema.is_empty())
            .then(|| {
                let fields: Result<Vec<arrow_schema::Field>, String> = spec
                    .schema
                    .iter()
                    .map(|(name, ty)| Ok(arrow_schema::Field::new(name, parquet_type(ty)?, true)))
                    .collect();
                fields.map(|f| Arc::new(arrow_schema::Schema::new(f)))
            })
            .transpose()
            .map_err(&error)?;
        let mut sink = PartFileSink {
            uid: spec.uid.clone(),
            spec: spec.clone(),
            store,
            prefix,
            runtime: crate::store::runtime().map_err(&error)?,
            name_prefix: format!("part-{job}-{}-", spec.uid),
            transactional: !matches!(delivery, Delivery::Direct { .. }),
            next_part: 0,
            pending: Vec::new(),
            in_progress: None,
            line: Vec::new(),
            #[cfg(feature = "parquet")]
            schema,
        };
        let state: PartsState = match delivery {
            Delivery::Restore(state) if !state.is_null() => serde_json::from_value(state.clone())
                .map_err(|e| error(format!("unreadable checkpoint state: {e}")))?,
            _ => PartsState { next_part: sink.next_published()?, pending: Vec::new() },
        };
        // The restored checkpoint completed: its pending parts are published.
        for part in &state.pending {
            sink.publish(&part.name)?;
        }
        // Pending parts of this sink that it does not list are from checkpoints that
        // never completed (or a run this one does not continue).
        for stale in sink.list_ours()?.into_iter().filter(|n| n.starts_with('.') && n.ends_with(".pending")) {
            sink.delete(&stale)?;
            tracing::info!(uid = %sink.uid, part = %stale, "removed a part of a checkpoint that did not complete");
        }
        sink.next_part = state.next_part;
        Ok(sink)
    }

    fn error(&self, message: impl std::fmt::Display) -> SinkError {
        SinkError { uid: self.uid.clone(), message: message.to_string() }
    }

    fn key(&self, name: &str) -> Key {
        self.prefix.clone().join(name)
    }

    /// The names of this sink's objects directly under the prefix (published and pending).
    fn list_ours(&self) -> Result<Vec<String>, SinkError> {
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| self.error(format!("listing {}: {e}", self.prefix)))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .filter(|name| name.trim_start_matches('.').starts_with(&self.name_prefix))
            .collect())
    }

    /// The number after the highest part this sink published.
    fn next_published(&self) -> Result<u64, SinkError> {
        let numbers = self.list_ours()?.into_iter().filter(|n| !n.starts_with('.')).filter_map(|name| {
            name.strip_prefix(&self.name_prefix)?.split('.').next()?.parse::<u64>().ok()
        });
        Ok(numbers.max().map_or(0, |n| n + 1))
    }

    fn delete(&self, name: &str) -> Result<(), SinkError> {
        match self.runtime.block_on(self.store.delete(&self.key(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("deleting {name}: {e}"))),
        }
    }

    /// Makes pending part `name` visible: copied from its hidden name, which is then
    /// removed. Done already when the hidden one is gone.
    fn publish(&self, name: &str) -> Result<(), SinkError> {
        let hidden = self.key(&pending_name(name));
        match self.runtime.block_on(self.store.copy(&hidden, &self.key(name))) {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(self.error(format!("publishing {name}: {e}"))),
        }
        self.delete(&pending_name(name))
    }

    /// Closes the part being written, if it holds anything, and uploads it: under its
    /// hidden pending name with checkpoints, under its name without.
    fn roll(&mut self) -> Result<(), SinkError> {
        let Some((file, size, _)) = self.in_progress.take() else { return Ok(()) };
        if size == 0 {
            return Ok(());
        }
        let name = format!("{}{}.{}", self.name_prefix, self.next_part, self.spec.format.extension());
        self.next_part += 1;
        let mut file = file.into_inner().map_err(|e| self.error(format!("writing the local part: {}", e.error())))?;
        file.seek(SeekFrom::Start(0)).map_err(|e| self.error(format!("reading the part back: {e}")))?;
        let target = if self.transactional { pending_name(&name) } else { name.clone() };
        match self.spec.format {
            PartFormat::Parquet => {
                let encoded = self.parquet(&mut file).map_err(|e| self.error(format!("part {name}: {e}")))?;
                let length = encoded.len() as u64;
                self.upload(&target, &mut std::io::Cursor::new(encoded), length)?;
            }
            PartFormat::Value | PartFormat::Envelope => self.upload(&target, &mut file, size)?,
        }
        tracing::debug!(uid = %self.uid, part = %name, bytes = size, "rolled a part");
        if self.transactional {
            self.pending.push(PendingPart { checkpoint: None, name });
        }
        Ok(())
    }

    /// Uploads what `reader` holds (`size` bytes) to `name` ([`crate::store::upload`]).
    fn upload(&self, name: &str, reader: &mut dyn Read, size: u64) -> Result<(), SinkError> {
        let uploaded = self.runtime.block_on(crate::store::upload(&*self.store, &self.key(name), reader, size));
        uploaded.map_err(|e| self.error(format!("uploading {name} to {}: {e}", self.spec.dir)))
    }

    /// The JSON lines in `file` as one Parquet file.
    #[cfg(not(feature = "parquet"))]
    fn parquet(&self, _: &mut File) -> Result<Vec<u8>, String> {
        Err(PARQUET_ABSENT.into())
    }

    /// The JSON lines in `file` as one Parquet file.
    #[cfg(feature = "parquet")]
    fn parquet(&self, file: &mut File) -> Result<Vec<u8>, String> {
        use std::io::{BufRead, BufReader};
        let mut values = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| e.to_string())?;
            values.push(serde_json::from_str::<serde_json::Value>(&line).map_err(|e| format!("not JSON: {e}"))?);
        }
        let schema = match &self.schema {
            Some(schema) => schema.clone(),
            None => Arc::new(
                arrow_json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
                    .map_err(|e| format!("inferring a schema: {e}"))?,
            ),
        };
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .build_decoder()
            .map_err(|e| e.to_string())?;
        decoder.serialize(&values).map_err(|e| format!("a record does not fit the schema: {e}"))?;
        let mut out = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).map_err(|e| e.to_string())?;
        while let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn roll_if_due(&mut self) -> Result<(), SinkError> {
        let due = self.in_progress.as_ref().is_some_and(|(_, size, opened)| {
            *size >= self.spec.roll_bytes || opened.elapsed() >= Duration::from_millis(self.spec.roll_ms)
        });
        if due { self.roll() } else { Ok(()) }
    }

    fn publish_up_to(&mut self, checkpoint: u64) -> Result<(), SinkError> {
        while let Some(part) = self.pending.first().filter(|p| p.checkpoint.is_some_and(|c| c <= checkpoint)) {
            let name = part.name.clone();
            self.publish(&name)?;
            self.pending.remove(0);
        }
        Ok(())
    }
}

impl Sink for PartFileSink {
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        self.line.clear();
        let format = match self.spec.format {
            PartFormat::Envelope => SinkFormat::Envelope,
            PartFormat::Value | PartFormat::Parquet => SinkFormat::Value,
        };
        encode_line(format, event, &mut self.line).map_err(|m| self.error(m))?;
        if self.in_progress.is_none() {
            let file = tempfile::tempfile().map_err(|e| self.error(format!("cannot create a local part file: {e}")))?;
            self.in_progress = Some((BufWriter::with_capacity(1 << 16, file), 0, Instant::now()));
        }
        let (file, size, _) = self.in_progress.as_mut().expect("opened");
        file.write_all(&self.line).map_err(|e| SinkError { uid: self.uid.clone(), message: format!("writing the local part: {e}") })?;
        *size += self.line.len() as u64;
        self.roll_if_due()
    }

    /// The job is stopping. Without checkpoints the part being written is uploaded, as
    /// every sink writes what it received; with them it waits for the restore, which
    /// writes its records again.
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.transactional { Ok(()) } else { self.roll() }
    }

    fn flush_periodically(&mut self) -> Result<(), SinkError> {
        self.roll_if_due()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<serde_json::Value, SinkError> {
        self.roll()?;
        for part in &mut self.pending {
            part.checkpoint.get_or_insert(checkpoint);
        }
        let state = PartsState { next_part: self.next_part, pending: self.pending.clone() };
        Ok(serde_json::to_value(state).expect("serializable"))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), SinkError> {
        self.publish_up_to(checkpoint)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.roll()?;
        for part in &mut self.pending {
            part.checkpoint.get_or_insert(u64::MAX);
        }
        self.publish_up_to(u64::MAX)
    }

    fn abort(&mut self) {
        if self.transactional {
            // The local part goes with its file; pending parts wait for a restore.
            self.in_progress = None;
        } else if let Err(e) = self.roll() {
            tracing::warn!(uid = %self.uid, error = %e, "cannot upload the last part of a failed job");
        }
    }
}

fn pending_name(name: &str) -> String {
    format!(".{name}.pending")
}

/// Why a host built without the `parquet` feature cannot write Parquet.
pub const PARQUET_ABSENT: &str = "this weir was built without Parquet support (the `parquet` feature, left out of \
     the quick start's build): build it with `cargo build -p weir-host` (default features)";

/// A Parquet column type by name.
#[cfg(feature = "parquet")]
fn parquet_type(name: &str) -> Result<arrow_schema::DataType, String> {
    use arrow_schema::DataType;
    Ok(match name {
        "bool" | "boolean" => DataType::Boolean,
        "int32" => DataType::Int32,
        "int64" | "long" => DataType::Int64,
        "float32" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "utf8" | "string" => DataType::Utf8,
        other => {
            return Err(format!(
                "unknown type `{other}` (use bool, int32, int64, float32, float64 or utf8)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, format: PartFormat) -> FilesSinkSpec {
        FilesSinkSpec {
            uid: "out".into(),
            dir: dir.display().to_string(),
            format,
            roll_bytes: 1 << 20,
            roll_ms: 60_000,
            store_options: BTreeMap::new(),
            schema: BTreeMap::new(),
        }
    }

    fn event(i: u32) -> Event {
        Event { key: None, value: format!("{{\"i\":{i}}}").into_bytes(), timestamp: None, headers: vec![] }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn parts_are_hidden_until_their_checkpoint_completes() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), PartFormat::Value);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Fresh).unwrap();
        sink.write(&event(1)).unwrap();
        sink.write(&event(2)).unwrap();
        assert_eq!(names(dir.path()), Vec::<String>::new(), "the part being written is local");
        let state = sink.pre_commit(1).unwrap();
        assert_eq!(names(dir.path()), [".part-j-out-0.jsonl.pending"]);
        sink.write(&event(3)).unwrap();
        sink.commit(1).unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl"]);
        assert_eq!(std::fs::read_to_string(dir.path().join("part-j-out-0.jsonl")).unwrap(), "{\"i\":1}\n{\"i\":2}\n");

        // A part rolled for checkpoint 2, which never completes, and a restore of 1.
        sink.pre_commit(2).unwrap();
        assert_eq!(names(dir.path()), [".part-j-out-1.jsonl.pending", "part-j-out-0.jsonl"]);
        drop(sink);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Restore(&state)).unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl"], "checkpoint 2's part is removed");
        sink.write(&event(3)).unwrap();
        sink.finish().unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl", "part-j-out-1.jsonl"]);
        assert_eq!(std::fs::read_to_string(dir.path().join("part-j-out-1.jsonl")).unwrap(), "{\"i\":3}\n");
    }

    #[test]
    fn a_restore_publishes_the_parts_of_a_checkpoint_whose_commit_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), PartFormat::Value);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Fresh).unwrap();
        sink.write(&event(1)).unwrap();
        let state = sink.pre_commit(1).unwrap();
        drop(sink); // died before the commit
        PartFileSink::open(&spec, &spec.dir, "j", Delivery::Restore(&state)).unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl"]);
    }

    #[test]
    fn without_checkpoints_a_stop_uploads_the_part_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), PartFormat::Value);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Direct { append: false }).unwrap();
        sink.write(&event(1)).unwrap();
        sink.flush().unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl"]);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Fresh).unwrap();
        sink.write(&event(2)).unwrap();
        sink.flush().unwrap();
        assert_eq!(names(dir.path()), ["part-j-out-0.jsonl"], "with checkpoints the restore writes it again");
    }

    #[test]
    fn parts_roll_by_size_and_a_fresh_start_numbers_after_the_published_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(dir.path(), PartFormat::Value);
        spec.roll_bytes = 16;
        std::fs::write(dir.path().join("notes.txt"), "not ours").unwrap();
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Direct { append: false }).unwrap();
        for i in 0..4 {
            sink.write(&event(i)).unwrap();
        }
        sink.finish().unwrap();
        assert_eq!(names(dir.path()), ["notes.txt", "part-j-out-0.jsonl", "part-j-out-1.jsonl"]);
        let mut sink = PartFileSink::open(&spec, &spec.dir, "j", Delivery::Fresh).unwrap();
        sink.write(&event(9)).unwrap();
        sink.finish().unwrap();
        assert_eq!(names(dir.path()), ["notes.txt", "part-j-out-0.jsonl", "part-j-out-1.jsonl", "part-j-out-2.jsonl"]);
    }
}
