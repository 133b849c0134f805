//! # The compilation cache
//!
//! Compiling a component is the slow part of starting it (a 12 MB JavaScript component
//! takes seconds). Compiled code is kept in a directory of weir's own, one file per
//! component, named by the SHA-256 of the component's bytes together with the engine's
//! compatibility hash (wasmtime version, target and compiler settings), so a second
//! start of the same component with the same host deserializes instead of compiling,
//! and a changed component or host never picks up stale code.
//!
//! The directory is `$WEIR_COMPILE_CACHE`, else `$XDG_CACHE_HOME/weir/compiled`, else
//! `~/.cache/weir/compiled`; `WEIR_COMPILE_CACHE=off` turns the cache off. weir only
//! ever writes (and replaces) files it names `<digest>.cwasm` there.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now (and stored, when a cache is configured).
    Fresh,
    /// Deserialized from the cache.
    Cached,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The cache the environment asks for (see the module docs), if any.
    pub fn from_env() -> Option<Self> {
        match std::env::var_os("WEIR_COMPILE_CACHE") {
            Some(value) if value == "off" => None,
            Some(value) => Some(CompileCache::new(value)),
            None => {
                let base = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
                Some(CompileCache::new(base.join("weir").join("compiled")))
            }
        }
    }

    fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let mut digest = Sha256::new();
        digest.update(bytes);
        digest.update(engine_hash.finish().to_le_bytes());
        let name: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The compiled component for `bytes`: from the cache when it holds it, compiled
    /// (and stored) otherwise. A cache that cannot be read or written only costs time.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Compiled)> {
        let entry = self.entry(engine, bytes);
        if entry.is_file() {
            // SAFETY: the file was written by `Component::serialize` of this same engine
            // configuration (the name covers its compatibility hash) into weir's own
            // cache directory; wasmtime still checks its header and rejects a mismatch.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, Compiled::Cached)),
                Err(e) => tracing::warn!(entry = %entry.display(), error = %e, "unusable compile cache entry; recompiling"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&entry, &component) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the compile cache");
        }
        Ok((component, Compiled::Fresh))
    }

    fn store(&self, entry: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let serialized = component.serialize().map_err(anyhow::Error::from)?;
        let partial = entry.with_extension(format!("cwasm.{}.partial", std::process::id()));
        std::fs::write(&partial, serialized)?;
        std::fs::rename(&partial, entry)?;
        Ok(())
    }
}
