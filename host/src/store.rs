//! Object stores by URL (`s3://bucket/prefix`, `gs://`, `az://`, `file://`), through the
//! `object_store` crate: what checkpoints in object storage and the part-file sink
//! share. Options come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as the
//! cloud tools read them) and from the job file's `store_options`, which may not hold
//! secrets (the job file is shared and logged).

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as Key;

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
