//! # Bundles
//!
//! A bundle is one file that deploys a job: a manifest (`weir-bundle.toml`: name,
//! version, the job file, each component with its sha256, size and the contract world it
//! implements, and the largest limits its operators ask for), the job file and the
//! components, packed as a gzip-compressed tar. `weir bundle pack` builds one from a
//! directory, `verify` checks everything before anything runs, `inspect` prints it.
//!
//! Opening a bundle never trusts it: entries must be regular files at plain relative
//! paths (no `..`, no absolute paths, no links), every part has a size cap checked
//! before it is read, and the number of entries is bounded. A bundle that fails a check
//! is refused with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component as PathPart, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::job::spec::JobSpec;
use crate::plugin::window::FunctionKind;
use crate::plugin::{Limits, MAX_COMPONENT_BYTES, Runtime};

/// The manifest's name inside a bundle.
pub const MANIFEST: &str = "weir-bundle.toml";
/// The largest manifest or job file.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;
/// The largest bundle, uncompressed.
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;
/// The most entries a bundle may hold.
pub const MAX_ENTRIES: usize = 256;
/// The contract package of the worlds recorded in manifests.
const PACKAGE: &str = "weir:operator";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{0}")]
    Io(String),
}

fn refused(path: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::Refused { path: path.to_path_buf(), reason: reason.into() }
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The job file, by its path inside the bundle.
    pub job: String,
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentEntry>,
    /// The largest limits any operator of the job asks for.
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    /// Its path inside the bundle, as the job file names it.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    /// The world it implements, such as `weir:operator/operator@0.2.0`.
    pub world: String,
}

/// The most a bundle's operators may ask for on this host.
#[derive(Debug, Clone, Copy)]
pub struct HostMaximums(pub Limits);

impl Default for HostMaximums {
    fn default() -> Self {
        HostMaximums(Limits {
            memory_mib: 4096,
            call_timeout_ms: 600_000,
            state_mib: 64 << 10,
            key_state_mib: 1024,
            timers: 100_000_000,
            timers_per_key: 10_000_000,
        })
    }
}

impl HostMaximums {
    /// The limits of `asked` beyond these maximums, named.
    fn exceeded(&self, asked: &Limits) -> Vec<String> {
        let max = self.0;
        [
            ("memory_mib", asked.memory_mib, max.memory_mib),
            ("call_timeout_ms", asked.call_timeout_ms, max.call_timeout_ms),
            ("state_mib", asked.state_mib, max.state_mib),
            ("key_state_mib", asked.key_state_mib, max.key_state_mib),
            ("timers", asked.timers, max.timers),
            ("timers_per_key", asked.timers_per_key, max.timers_per_key),
        ]
        .into_iter()
        .filter(|(_, asked, max)| asked > max)
        .map(|(name, asked, max)| format!("limits.{name} = {asked} (this host allows at most {max})"))
        .collect()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A path inside a bundle: relative, plain names only.
fn inner_path(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|part| matches!(part, PathPart::Normal(_)));
    plain.then(|| path.to_path_buf())
}

/// The components a job names, with the world each must implement: operators' and
/// window functions'.
fn job_components(spec: &JobSpec) -> Vec<(String, Option<FunctionKind>)> {
    let mut components = Vec::new();
    for op in &spec.operators {
        if let Some(component) = &op.component {
            components.push((component.clone(), None));
        }
        if let Some(window) = &op.window {
            components.extend(window.components().into_iter().map(|(name, kind)| (name.to_string(), Some(kind))));
        }
    }
    components
}

/// The world a component implements, checked by compiling and linking it.
fn world_of(runtime: &Runtime, path: &Path, kind: Option<FunctionKind>) -> Result<String, String> {
    match kind {
        None => {
            let plugin = runtime.load(path).map_err(|e| e.to_string())?;
            Ok(format!("{PACKAGE}/operator@{}", plugin.contract()))
        }
        Some(kind) => {
            runtime.load_function(path, kind).map_err(|e| e.to_string())?;
            Ok(format!("{PACKAGE}/{}@0.2.0", kind.world()))
        }
    }
}

/// The largest of every operator's limits.
fn largest_limits(spec: &JobSpec) -> Limits {
    let mut limits = Limits::default();
    for op in &spec.operators {
        let l = op.limits;
        limits.memory_mib = limits.memory_mib.max(l.memory_mib);
        limits.call_timeout_ms = limits.call_timeout_ms.max(l.call_timeout_ms);
        limits.state_mib = limits.state_mib.max(l.state_mib);
        limits.key_state_mib = limits.key_state_mib.max(l.key_state_mib);
        limits.timers = limits.timers.max(l.timers);
        limits.timers_per_key = limits.timers_per_key.max(l.timers_per_key);
    }
    limits
}

/// Packs the job file `job` and the components it names (which must be inside its
/// directory) into the bundle `output`, as `name` (the job's) at `version`.
pub fn pack(job: &Path, version: &str, output: &Path, runtime: &Runtime) -> Result<Manifest, BundleError> {
    let spec = JobSpec::load(job).map_err(|e| refused(job, e.to_string()))?;
    let dir = job.parent().unwrap_or(Path::new("."));
    let job_name = job.file_name().and_then(|n| n.to_str()).ok_or_else(|| refused(job, "no file name"))?;
    let mut components = Vec::new();
    let mut contents = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, kind) in job_components(&spec) {
        if inner_path(&name).is_none() {
            return Err(refused(job, format!("component `{name}` must be a relative path inside {}", dir.display())));
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| refused(job, format!("component `{name}`: {e}")))?;
        let world = world_of(runtime, &path, kind).map_err(|e| refused(job, e))?;
        components.push(ComponentEntry { path: name, sha256: sha256_hex(&bytes), bytes: bytes.len() as u64, world });
        contents.push(bytes);
    }
    let manifest = Manifest {
        name: spec.name.clone(),
        version: version.to_string(),
        job: job_name.to_string(),
        components,
        limits: largest_limits(&spec),
    };
    let io = |e: std::io::Error| BundleError::Io(format!("writing {}: {e}", output.display()));
    let file = std::fs::File::create(output).map_err(io)?;
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        archive.append_data(&mut header, name, bytes)
    };
    let text = toml::to_string(&manifest).map_err(|e| BundleError::Io(e.to_string()))?;
    add(MANIFEST, text.as_bytes()).map_err(io)?;
    add(job_name, &std::fs::read(job).map_err(io)?).map_err(io)?;
    // The bytes that were digested are the bytes packed.
    for (component, bytes) in manifest.components.iter().zip(&contents) {
        add(&component.path, bytes).map_err(io)?;
    }
    archive.into_inner().and_then(|gz| gz.finish()).map_err(io)?;
    Ok(manifest)
}

/// Unpacks the bundle `file` into the empty directory `into`, refusing unsafe entries
/// and oversized parts before writing them, and returns its manifest (unchecked: see
/// [`verify`]).
pub fn unpack(file: &Path, into: &Path) -> Result<Manifest, BundleError> {
    let io = |e: std::io::Error| refused(file, format!("unreadable: {e}"));
    let reader = std::fs::File::open(file).map_err(io)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut total = 0u64;
    let mut count = 0;
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(refused(file, format!("more than {MAX_ENTRIES} entries")));
        }
        let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(refused(file, format!("entry `{name}` is not a regular file ({kind:?})")));
        }
        let path = inner_path(&name).ok_or_else(|| refused(file, format!("entry `{name}` escapes the bundle")))?;
        let size = entry.header().size().map_err(io)?;
        let cap = if name.ends_with(".wasm") { MAX_COMPONENT_BYTES } else { MAX_TEXT_BYTES };
        if size > cap {
            return Err(refused(file, format!("entry `{name}` is {size} bytes, more than {cap}")));
        }
        total += size;
        if total > MAX_TOTAL_BYTES {
            return Err(refused(file, format!("more than {MAX_TOTAL_BYTES} bytes unpacked")));
        }
        let target = into.join(&path);
        if target.exists() {
            return Err(refused(file, format!("entry `{name}` appears twice")));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry).take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 != size {
            return Err(refused(file, format!("entry `{name}` is not the size its header says")));
        }
        std::fs::write(&target, bytes).map_err(io)?;
    }
    let text = std::fs::read_to_string(into.join(MANIFEST)).map_err(|_| refused(file, format!("no {MANIFEST}")))?;
    toml::from_str(&text).map_err(|e| refused(file, format!("{MANIFEST}: {e}")))
}

/// Checks an unpacked bundle in `dir` (from `file`): every component listed with its
/// digest and size, nothing unlisted, the job naming exactly the listed components, each
/// implementing its world, and the limits within `maximums`.
pub fn check(
    file: &Path,
    dir: &Path,
    manifest: &Manifest,
    runtime: &Runtime,
    maximums: &HostMaximums,
) -> Result<JobSpec, BundleError> {
    let job_path = inner_path(&manifest.job).ok_or_else(|| refused(file, "the manifest's job path escapes the bundle"))?;
    let spec = JobSpec::load(&dir.join(job_path)).map_err(|e| refused(file, format!("job: {e}")))?;
    let listed: BTreeMap<&str, &ComponentEntry> = manifest.components.iter().map(|c| (c.path.as_str(), c)).collect();
    let mut named = BTreeSet::new();
    for (name, kind) in job_components(&spec) {
        let Some(entry) = listed.get(name.as_str()) else {
            return Err(refused(file, format!("the job names component `{name}`, which the manifest does not list")));
        };
        if named.insert(name.clone()) {
            let relative = inner_path(&entry.path)
                .ok_or_else(|| refused(file, format!("component `{name}`: its path escapes the bundle")))?;
            let (path, bytes) = read_inside(dir, &relative, MAX_COMPONENT_BYTES)
                .map_err(|reason| refused(file, format!("component `{name}` {reason}")))?;
            if bytes.len() as u64 != entry.bytes || sha256_hex(&bytes) != entry.sha256 {
                return Err(refused(file, format!("component `{name}` does not match its sha256 in the manifest")));
            }
            let world = world_of(runtime, &path, kind).map_err(|e| refused(file, format!("component `{name}`: {e}")))?;
            if world != entry.world {
                return Err(refused(
                    file,
                    format!("component `{name}` implements {world}, but the manifest says {}", entry.world),
                ));
            }
        }
    }
    if let Some(extra) = listed.keys().find(|c| !named.contains(**c)) {
        return Err(refused(file, format!("the manifest lists component `{extra}`, which the job does not use")));
    }
    let expected: BTreeSet<PathBuf> = [PathBuf::from(MANIFEST), PathBuf::from(&manifest.job)]
        .into_iter()
        .chain(manifest.components.iter().map(|c| PathBuf::from(&c.path)))
        .collect();
    for found in files_under(dir).map_err(|e| BundleError::Io(e.to_string()))? {
        if !expected.contains(&found) {
            return Err(refused(file, format!("entry `{}` is not in the manifest", found.display())));
        }
    }
    let exceeded: Vec<String> = spec.operators.iter().flat_map(|op| maximums.exceeded(&op.limits)).collect();
    if !exceeded.is_empty() {
        return Err(refused(file, format!("asks for more than this host allows: {}", exceeded.join(", "))));
    }
    Ok(spec)
}

/// Reads the regular file `relative` of the bundle directory `dir`, at most `cap`
/// bytes: the path must resolve inside `dir` after symlinks, and a device, pipe or
/// directory is refused before a byte of it is read. Returns the resolved path too.
fn read_inside(dir: &Path, relative: &Path, cap: u64) -> Result<(PathBuf, Vec<u8>), String> {
    let root = dir.canonicalize().map_err(|e| format!("cannot be read: the bundle directory: {e}"))?;
    let path = dir.join(relative).canonicalize().map_err(|_| "is missing".to_string())?;
    if !path.starts_with(&root) {
        return Err("resolves outside the bundle".into());
    }
    let mut reader = std::fs::File::open(&path).map_err(|e| format!("cannot be read: {e}"))?;
    let metadata = reader.metadata().map_err(|e| format!("cannot be read: {e}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file".into());
    }
    if metadata.len() > cap {
        return Err(format!("is {} bytes, more than {cap}", metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut reader, cap + 1), &mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("grew past {cap} bytes while read"));
    }
    Ok((path, bytes))
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    Ok(files)
}

/// Unpacks `file` into `into` (an empty directory) and checks it; the manifest and job
/// of a bundle that passes.
pub fn verify(file: &Path, into: &Path, runtime: &Runtime, maximums: &HostMaximums) -> Result<(Manifest, JobSpec), BundleError> {
    let manifest = unpack(file, into)?;
    let spec = check(file, into, &manifest, runtime, maximums)?;
    Ok((manifest, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_paths_are_plain_and_relative() {
        assert!(inner_path("a.wasm").is_some());
        assert!(inner_path("lib/a.wasm").is_some());
        for bad in ["", "/etc/passwd", "../a.wasm", "lib/../../a", "./a"] {
            assert!(inner_path(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_regular_files_inside_the_bundle_are_read() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.wasm"), b"not yours").unwrap();
        let bundle = tempfile::tempdir().unwrap();
        std::fs::write(bundle.path().join("a.wasm"), b"mine").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.wasm"), bundle.path().join("link.wasm")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", bundle.path().join("zero.wasm")).unwrap();
        std::fs::create_dir(bundle.path().join("dir.wasm")).unwrap();
        let read = |name: &str| read_inside(bundle.path(), Path::new(name), 16);
        assert_eq!(read("a.wasm").unwrap().1, b"mine");
        assert_eq!(read("link.wasm").unwrap_err(), "resolves outside the bundle");
        assert_eq!(read("zero.wasm").unwrap_err(), "resolves outside the bundle");
        assert_eq!(read("dir.wasm").unwrap_err(), "is not a regular file");
        assert_eq!(read("gone.wasm").unwrap_err(), "is missing");
        std::fs::write(bundle.path().join("big.wasm"), [0u8; 17]).unwrap();
        assert_eq!(read("big.wasm").unwrap_err(), "is 17 bytes, more than 16");
    }

    #[test]
    fn limits_beyond_the_hosts_maximums_are_named() {
        let asked = Limits { memory_mib: 8192, timers: 5, ..Limits::default() };
        let exceeded = HostMaximums::default().exceeded(&asked);
        assert_eq!(exceeded, vec!["limits.memory_mib = 8192 (this host allows at most 4096)".to_string()]);
    }
}
