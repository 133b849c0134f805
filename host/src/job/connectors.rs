//! Connectors from their job file specs: the job layer knows both the job file and
//! the connectors, so building one from the other happens here, and the connectors
//! depend on nothing above them.

use std::path::Path;

use super::spec::{SinkSpec, SourceSpec};
use crate::sink::{Delivery, Discard, KafkaSink, LineSink, PartFileSink, Sink, SinkError, TransactionalFileSink};
use crate::source::{FileSource, FilesSource, GeneratorSource, KafkaSource, Source, SourceError};

/// Checks a configured rate.
fn check_rate(uid: &str, rate: Option<f64>) -> Result<(), SourceError> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(SourceError { uid: uid.into(), message: "`rate` must be a positive number of events per second".into() });
    }
    Ok(())
}

/// Opens the source a job file describes for job `job`; relative paths resolve
/// against `base`.
pub fn open_source(spec: &SourceSpec, job: &str, base: &std::path::Path) -> Result<Box<dyn Source>, SourceError> {
    match spec {
        SourceSpec::File { uid, path, key_field, timestamp_field, rate, max_record_bytes, .. } => {
            check_rate(uid, *rate)?;
            if *max_record_bytes == Some(0) {
                return Err(SourceError { uid: uid.clone(), message: "`max_record_bytes` must be positive".into() });
            }
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            let source = FileSource::open(uid, &path, key_field.clone(), timestamp_field.clone())?;
            let limit = max_record_bytes.unwrap_or(crate::source::DEFAULT_MAX_RECORD_BYTES);
            Ok(Box::new(source.with_rate(*rate).with_max_record_bytes(limit)))
        }
        SourceSpec::Files { uid, dir, key_field, timestamp_field, rate, max_record_bytes, monitor_ms, store_options, .. } => {
            check_rate(uid, *rate)?;
            if *max_record_bytes == Some(0) {
                return Err(SourceError { uid: uid.clone(), message: "`max_record_bytes` must be positive".into() });
            }
            let dir = match crate::store::is_url(dir) {
                true => dir.clone(),
                false => base.join(dir).display().to_string(),
            };
            let limit = max_record_bytes.unwrap_or(crate::source::DEFAULT_MAX_RECORD_BYTES);
            let source = FilesSource::open(
                uid,
                &dir,
                store_options,
                key_field.clone(),
                timestamp_field.clone(),
                *rate,
                limit,
                *monitor_ms,
            )?;
            Ok(Box::new(source))
        }
        SourceSpec::Generator { uid, count, rate, keys, seed, start_ms, step_ms, payload_bytes, .. } => {
            check_rate(uid, *rate)?;
            let source = GeneratorSource::new(uid, *count, *rate, *keys, *seed, *start_ms, *step_ms)?;
            Ok(Box::new(source.with_payload(payload_bytes.unwrap_or(0))))
        }
        SourceSpec::Kafka(kafka) => {
            check_rate(&kafka.uid, kafka.rate)?;
            let mut kafka = kafka.clone();
            if let Some(schema) = kafka.schema.as_mut().filter(|s| s.is_relative()) {
                *schema = base.join(&*schema);
            }
            Ok(Box::new(KafkaSource::open(&kafka, job)?))
        }
    }
}

/// Opens the sink a job file describes for job `job`; relative paths resolve against
/// `base`.
pub fn open_sink(spec: &SinkSpec, job: &str, base: &Path, delivery: Delivery<'_>) -> Result<Box<dyn Sink>, SinkError> {
    match spec {
        SinkSpec::File { uid, path, format } => {
            let path = if path.is_absolute() { path.clone() } else { base.join(path) };
            match delivery {
                Delivery::Direct { append } => Ok(Box::new(LineSink::file(uid, path, *format, append)?)),
                Delivery::Fresh => Ok(Box::new(TransactionalFileSink::open(uid, path, *format, None)?)),
                Delivery::Restore(state) => {
                    Ok(Box::new(TransactionalFileSink::open(uid, path, *format, Some(state))?))
                }
                Delivery::Continue => {
                    // Everything already in the file counts as committed.
                    let committed = std::fs::metadata(&path).map_or(0, |m| m.len());
                    let state = serde_json::json!({ "committed": committed, "pending": [] });
                    Ok(Box::new(TransactionalFileSink::open(uid, path, *format, Some(&state))?))
                }
            }
        }
        SinkSpec::Stdout { uid, format } => Ok(Box::new(LineSink::stdout(uid, *format))),
        SinkSpec::Discard { .. } => Ok(Box::new(Discard)),
        SinkSpec::Kafka(kafka) => Ok(Box::new(KafkaSink::open(kafka, job, delivery)?)),
        #[cfg(feature = "postgres")]
        SinkSpec::Postgres(postgres) => {
            let mut postgres = postgres.clone();
            if let Some(file) = postgres.password_file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
            Ok(Box::new(crate::sink::PostgresSink::open(&postgres, job, delivery)?))
        }
        #[cfg(not(feature = "postgres"))]
        SinkSpec::Postgres(postgres) => {
            let _ = delivery;
            Err(SinkError { uid: postgres.uid.clone(), message: crate::sink::postgres::POSTGRES_ABSENT.into() })
        }
        SinkSpec::Files(files) => {
            let dir = match crate::store::is_url(&files.dir) {
                true => files.dir.clone(),
                false => base.join(&files.dir).display().to_string(),
            };
            Ok(Box::new(PartFileSink::open(files, &dir, job, delivery)?))
        }
    }
}
