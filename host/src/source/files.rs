//! JSON lines from every file under a directory or an object store prefix (`s3://`,
//! `gs://`, `az://`, `file://`), as Flink's `FileSource`: the files found at start in
//! name order, and, with `monitor_ms`, new files as they appear (Flink's
//! `monitorContinuously`). Each file is read as the file source reads one (one event
//! per line, `key_field`, `timestamp_field`, `max_record_bytes`).
//!
//! An object is copied to a local temporary file before it is read (streamed, never
//! whole in memory), so that a restore seeks in it as in a local file. The position
//! in a checkpoint is the names of the files read to the end, the file being read and
//! the byte and line in it: a restore skips the first, copies the second again and
//! seeks. Files are never deleted or moved.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::path::Path as Key;

use super::file::FileSource;
use super::{Source, SourceError, SourcePoll};
use crate::stream::Spares;

/// How often a bounded source that found nothing yet, or a monitoring one, lists.
const IDLE_POLL: Duration = Duration::from_millis(100);

pub struct FilesSource {
    uid: String,
    label: Arc<str>,
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
    key_field: Option<String>,
    timestamp_field: Option<String>,
    rate: Option<f64>,
    max_record_bytes: usize,
    /// Look for new files this often; `None`: read what is there at start and end.
    monitor: Option<Duration>,
    /// Files read to the end.
    done: BTreeSet<String>,
    /// Files found and not yet read, in name order.
    queue: VecDeque<String>,
    /// The file being read.
    current: Option<(String, FileSource)>,
    /// Where a restored source resumes in the first file it reads.
    resume: Option<(String, serde_json::Value)>,
    listed: Option<Instant>,
}

impl FilesSource {
    /// `dir` is a local directory or an object store URL.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        uid: &str,
        dir: &str,
        store_options: &BTreeMap<String, String>,
        key_field: Option<String>,
        timestamp_field: Option<String>,
        rate: Option<f64>,
        max_record_bytes: usize,
        monitor_ms: Option<u64>,
    ) -> Result<Self, SourceError> {
        let error = |message: String| SourceError { uid: uid.into(), message };
        let (store, prefix) = if crate::store::is_url(dir) {
            crate::store::open(dir, store_options).map_err(|e| error(format!("{dir}: {e}")))?
        } else {
            let local = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| error(format!("cannot read the directory {dir}: {e}")))?;
            (Arc::new(local) as Arc<dyn ObjectStore>, Key::default())
        };
        Ok(FilesSource {
            uid: uid.into(),
            label: dir.trim_end_matches('/').into(),
            store,
            prefix,
            runtime: crate::store::runtime().map_err(error)?,
            key_field,
            timestamp_field,
            rate,
            max_record_bytes,
            monitor: monitor_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
            done: BTreeSet::new(),
            queue: VecDeque::new(),
            current: None,
            resume: None,
            listed: None,
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> SourceError {
        SourceError { uid: self.uid.clone(), message: message.to_string() }
    }

    /// Adds the files not yet seen, in name order. Names starting with `.` or `_`
    /// (in-progress and marker files, as Hadoop's readers skip them) are left out.
    fn list(&mut self) -> Result<(), SourceError> {
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| self.error(format!("listing {}: {e}", self.label)))?;
        let mut names: Vec<String> = listed
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .filter(|name| !name.starts_with('.') && !name.starts_with('_'))
            .filter(|name| !self.done.contains(name) && !self.queue.contains(name))
            .filter(|name| self.current.as_ref().is_none_or(|(current, _)| current != name))
            .collect();
        names.sort();
        self.queue.extend(names);
        self.listed = Some(Instant::now());
        Ok(())
    }

    /// Copies `name` to a local temporary file and opens it.
    fn open_file(&self, name: &str) -> Result<FileSource, SourceError> {
        let key = self.prefix.clone().join(name);
        let mut file = tempfile::tempfile().map_err(|e| self.error(format!("cannot create a local copy: {e}")))?;
        let copied = self.runtime.block_on(crate::store::download(&*self.store, &key, &mut file));
        copied.map_err(|e| self.error(format!("reading {}/{name}: {e}", self.label)))?;
        use std::io::Seek;
        file.rewind().map_err(|e| self.error(e))?;
        let label = format!("{}/{name}", self.label);
        Ok(FileSource::from_file(&self.uid, &label, file, self.key_field.clone(), self.timestamp_field.clone())
            .with_rate(self.rate)
            .with_max_record_bytes(self.max_record_bytes))
    }

    fn read(&mut self, mut spares: Option<&mut Spares>) -> Result<SourcePoll, SourceError> {
        loop {
            if let Some((name, file)) = &mut self.current {
                let polled = match spares.as_deref_mut() {
                    Some(spares) => file.poll_reusing(spares)?,
                    None => file.poll()?,
                };
                match polled {
                    SourcePoll::End => {
                        let (name, _) = self.current.take().expect("reading");
                        self.done.insert(name);
                        continue;
                    }
                    SourcePoll::Malformed { offset, split, reason, record } => {
                        let reason = format!("{name} line {offset}: {reason}");
                        return Ok(SourcePoll::Malformed { offset, split, reason, record });
                    }
                    other => return Ok(other),
                }
            }
            if let Some(name) = self.queue.pop_front() {
                let mut file = self.open_file(&name)?;
                if let Some((_, position)) = self.resume.take_if(|(file, _)| *file == name) {
                    file.restore(&position)?;
                }
                self.current = Some((name, file));
                continue;
            }
            match (self.listed, self.monitor) {
                (None, _) => self.list()?,
                // Bounded: what was there at start is read.
                (Some(_), None) => return Ok(SourcePoll::End),
                (Some(at), Some(every)) if at.elapsed() >= every => self.list()?,
                (Some(at), Some(every)) => return Ok(SourcePoll::Pending((every - at.elapsed()).min(IDLE_POLL))),
            }
            if self.queue.is_empty() && self.monitor.is_some() {
                return Ok(SourcePoll::Pending(IDLE_POLL));
            }
        }
    }
}

impl Source for FilesSource {
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
        let current = self.current.as_ref().map(|(name, file)| serde_json::json!({ "name": name, "at": file.position() }));
        serde_json::json!({ "done": self.done, "current": current })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), SourceError> {
        let done: BTreeSet<String> = serde_json::from_value(position["done"].clone())
            .map_err(|e| self.error(format!("bad saved position {position}: {e}")))?;
        self.done = done;
        if let Some(name) = position["current"]["name"].as_str() {
            self.queue.push_front(name.to_string());
            self.resume = Some((name.to_string(), position["current"]["at"].clone()));
        }
        Ok(())
    }
}
