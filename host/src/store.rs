//! Object stores by URL (`s3://bucket/prefix`, `gs://`, `az://`, `file://`), through the
//! `object_store` crate: what checkpoints in object storage and the part-file sink
//! share. Options come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as the
//! cloud tools read them) and from the job file's `store_options`, which may not hold
//! secrets (the job file is shared and logged).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

/// Objects up to this size are uploaded in one request; larger ones in parts this
/// large (S3 takes parts of 5 MiB and more).
pub const PART_BYTES: usize = 8 << 20;

/// Options that hold secrets: read from the environment (`AWS_SECRET_ACCESS_KEY`, ...),
/// never from the job file.
const SECRET_OPTIONS: &[&str] = &["secret", "token", "password", "key"];

/// Whether `dir` names an object store rather than a local directory.
pub fn is_url(dir: &str) -> bool {
    dir.contains("://")
}

/// Opens the store at `url`: the store and the key of the URL's path in it.
pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<(Arc<dyn ObjectStore>, Key), String> {
    if let Some(secret) = options.keys().find(|k| SECRET_OPTIONS.iter().any(|s| k.to_lowercase().contains(s))) {
        return Err(format!(
            "store option `{secret}` is a secret: set it in the environment (e.g. AWS_SECRET_ACCESS_KEY), \
             not in the job file"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let env = std::env::vars().filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p)));
    let all = env.chain(options.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (store, prefix) = object_store::parse_url_opts(&parsed, all).map_err(|e| e.to_string())?;
    Ok((store.into(), prefix))
}

/// A runtime for blocking on a store's futures from a task's thread.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting an I/O runtime: {e}"))
}

/// Uploads what `reader` holds (`size` bytes) to `key`: in one request when small, else
/// in parts of [`PART_BYTES`] (at most two in flight), never whole in memory.
pub async fn upload(store: &dyn ObjectStore, key: &Key, reader: &mut dyn Read, size: u64) -> object_store::Result<()> {
    let local = |e: std::io::Error| object_store::Error::Generic { store: "local", source: e.into() };
    if size <= PART_BYTES as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        reader.read_to_end(&mut bytes).map_err(local)?;
        store.put(key, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, PART_BYTES);
    let mut buffer = vec![0u8; PART_BYTES];
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) => {
                upload.abort().await?;
                return Err(local(e));
            }
        };
        upload.wait_for_capacity(2).await?;
        upload.write(&buffer[..read]);
    }
    upload.finish().await?;
    Ok(())
}

/// Streams object `key` into `writer`, chunk by chunk; returns the bytes written.
pub async fn download(store: &dyn ObjectStore, key: &Key, writer: &mut dyn Write) -> Result<u64, String> {
    let mut stream = store.get(key).await.map_err(|e| e.to_string())?.into_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.try_next().await.map_err(|e| e.to_string())? {
        writer.write_all(&chunk).map_err(|e| e.to_string())?;
        written += chunk.len() as u64;
    }
    Ok(written)
}
