//! # Plugins: operators as Wasm components
//!
//! A [`Plugin`] is a component compiled once per job and checked against an
//! `operator` world at load time; [`Plugin::instantiate`] makes one [`WasmOperator`]
//! per subtask, each in its own store with its own memory limit, call deadline and
//! captured stdout/stderr. Guests get no ambient authority: no files, no environment,
//! no network — only the imports of the contract and WASI's clocks and random.
//!
//! The contract is versioned, one folder per version, each holding its generated
//! bindings (the only place generated WIT types appear) and its host interfaces:
//! [`v0_3`] (`wit/v0.3/operator.wit`, one crossing per batch, flat buffers, state
//! that travels with the batch), [`v0_2`] (`wit/operator.wit`, batches with a host
//! call per element) and [`v0_1`] (`wit/v0.1/operator.wit`, one call per element). A component is matched to the newest version it implements, so
//! components built for 0.1 keep running unchanged beside 0.2 ones.

pub mod cache;
mod host;
mod instance;
mod limiter;
mod sleep;
mod stdio;
pub mod v0_1;
pub mod v0_2;
pub mod v0_3;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::Engine;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use cache::{CompileCache, Compiled};
pub use host::StateHandle;
pub use instance::WasmOperator;

use crate::operator::OperatorContext;

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-operator sandbox limits, from the job file's `limits` table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory a guest instance may grow to, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    pub memory_mib: u64,
    /// Longest a single call into the guest may run, in ms.
    #[serde(default = "Limits::default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Keyed state one subtask may hold, in MiB (memory backend: keys and values in
    /// memory; RocksDB: the database's size on disk, checked every few thousand writes).
    #[serde(default = "Limits::default_state_mib")]
    pub state_mib: u64,
    /// Largest state entry, in MiB: a value, one key's whole list, or a map entry.
    #[serde(default = "Limits::default_key_state_mib")]
    pub key_state_mib: u64,
    /// Timers one subtask may have pending.
    #[serde(default = "Limits::default_timers")]
    pub timers: u64,
    /// Timers one key may have pending.
    #[serde(default = "Limits::default_timers_per_key")]
    pub timers_per_key: u64,
}

impl Limits {
    fn default_memory_mib() -> u64 {
        256
    }

    fn default_call_timeout_ms() -> u64 {
        10_000
    }

    fn default_state_mib() -> u64 {
        1024
    }

    fn default_key_state_mib() -> u64 {
        64
    }

    fn default_timers() -> u64 {
        1_000_000
    }

    fn default_timers_per_key() -> u64 {
        10_000
    }

    /// The state budget these limits give a subtask.
    pub fn state_budget(&self) -> crate::state::StateBudget {
        crate::state::StateBudget { bytes: self.state_mib << 20, entry_bytes: self.key_state_mib << 20 }
    }

    /// The timer budget these limits give a subtask.
    pub fn timer_budget(&self) -> crate::operator::TimerBudget {
        crate::operator::TimerBudget { timers: self.timers, per_key: self.timers_per_key }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: Self::default_memory_mib(),
            call_timeout_ms: Self::default_call_timeout_ms(),
            state_mib: Self::default_state_mib(),
            key_state_mib: Self::default_key_state_mib(),
            timers: Self::default_timers(),
            timers_per_key: Self::default_timers_per_key(),
        }
    }
}

/// A component that cannot be used as an operator.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("component {path}: cannot read or compile it: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error(
        "component {path} does not implement the weir:operator/operator world of any \
         contract version this host runs (0.3.0, 0.2.0, 0.1.0); build it with the weir guest SDK \
         or against wit/operator.wit: {reason}"
    )]
    NotAnOperator { path: PathBuf, reason: String },
    #[error(
        "component {path} does not implement the weir:operator/{world} world (wit/window.wit); \
         build it with the weir guest SDK's window function exports: {reason}"
    )]
    NotAFunction { path: PathBuf, world: &'static str, reason: String },
    #[error("component {path} imports `{import}`, which this host does not provide to guests; {hint}")]
    MissingImport { path: PathBuf, import: String, hint: &'static str },
    #[error("operator `{uid}`: cannot instantiate {path}: {reason}")]
    Instantiate { uid: String, path: PathBuf, reason: String },
}

/// The store data of one guest instance.
pub struct HostState {
    pub ctx: OperatorContext,
    /// The epoch tick at which the current call, or element of a batch, began: the
    /// call deadline counts from there.
    started: u64,
    /// A WASI sleep of the current call (or element) was cut at its deadline: the
    /// deadline has passed, whatever the epoch ticker, which lags the wall clock on a
    /// busy machine, says.
    slept_past_deadline: bool,
    ticks: Arc<AtomicU64>,
    /// The call deadline (`limits.call_timeout_ms`).
    deadline: Duration,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: limiter::GuestLimiter,
    /// What a contract 0.3 batch did before the guest trapped (`batch.abandon`).
    abandoned: Option<Box<v0_3::bindings::weir::operator::types::BatchResult>>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The Wasm engine of a job, with an epoch ticker for call deadlines.
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Option<CompileCache>,
    /// Epoch ticks so far, readable by the deadline check (the engine's own counter is not).
    ticks: Arc<AtomicU64>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl Runtime {
    /// A runtime with the compile cache the environment asks for
    /// ([`CompileCache::from_env`]).
    pub fn new() -> anyhow::Result<Self> {
        Self::with_cache(CompileCache::from_env())
    }

    /// A runtime keeping compiled components in `cache` (none: always compile).
    pub fn with_cache(cache: Option<CompileCache>) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // `WEIR_WASM_PROFILE=perfmap` names guest functions for `perf` (/tmp/perf-<pid>.map);
        // docs/benchmarks.md profiles with it.
        if std::env::var_os("WEIR_WASM_PROFILE").is_some_and(|v| v == "perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("creating the Wasm engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        sleep::add_to_linker(&mut linker).map_err(anyhow::Error::from).context("linking the guest sleep")?;
        v0_3::bindings::Operator::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the operator interfaces of contract 0.3")?;
        v0_2::bindings::Operator::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the operator interfaces of contract 0.2")?;
        v0_1::bindings::Operator::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("linking the operator interfaces of contract 0.1")?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let (engine, stop, ticks) = (engine.clone(), stop.clone(), ticks.clone());
            std::thread::Builder::new()
                .name("weir-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        ticks.fetch_add(1, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                })
                .context("starting the epoch ticker")?
        };
        Ok(Runtime { engine, linker: Arc::new(linker), cache, ticks, ticker: Some((stop, ticker)) })
    }

    /// Compiles and checks the component at `path`.
    pub fn load(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = read_component(path).map_err(|reason| PluginError::Load { path: path.into(), reason })?;
        let loaded = match &self.cache {
            Some(cache) => cache.load(&self.engine, &bytes),
            None => Component::new(&self.engine, &bytes).map(|c| (c, Compiled::Fresh)),
        };
        let (component, compiled) =
            loaded.map_err(|e| PluginError::Load { path: path.into(), reason: format!("{e:#}") })?;
        tracing::debug!(component = %path.display(), ?compiled, "loaded component");
        let not_an_operator =
            |e: wasmtime::Error| PluginError::NotAnOperator { path: path.into(), reason: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component).map_err(|e| missing_import(path, &e).unwrap_or_else(|| not_an_operator(e)))?;
        // The newest contract the component implements.
        let pre = match v0_3::bindings::OperatorPre::new(pre.clone()) {
            Ok(pre) => Pre::V0_3(pre),
            Err(newest) => match v0_2::bindings::OperatorPre::new(pre.clone()) {
                Ok(pre) => Pre::V0_2(pre),
                Err(_) => match v0_1::bindings::OperatorPre::new(pre) {
                    Ok(pre) => Pre::V0_1(pre),
                    Err(_) => return Err(not_an_operator(newest)),
                },
            },
        };
        Ok(Plugin { path: path.into(), pre, digest: digest(&bytes), compiled, ticks: self.ticks.clone() })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

/// A compiled operator component, ready to instantiate once per subtask.
pub struct Plugin {
    path: PathBuf,
    pre: Pre,
    digest: String,
    compiled: Compiled,
    ticks: Arc<AtomicU64>,
}

/// A component linked against the contract version it implements.
enum Pre {
    V0_1(v0_1::bindings::OperatorPre<HostState>),
    V0_2(v0_2::bindings::OperatorPre<HostState>),
    V0_3(v0_3::bindings::OperatorPre<HostState>),
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("path", &self.path).field("digest", &self.digest).finish()
    }
}

impl Plugin {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the component was compiled for this load or came from the cache.
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    /// The contract version the component implements (`0.1.0`, `0.2.0`, `0.3.0`).
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::V0_1(_) => "0.1.0",
            Pre::V0_2(_) => "0.2.0",
            Pre::V0_3(_) => "0.3.0",
        }
    }

    /// A content digest of the component (FNV-1a 64, hex), for logs and manifests.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Instantiates the component for one subtask.
    pub fn instantiate(
        &self,
        ctx: OperatorContext,
        limits: Limits,
    ) -> Result<WasmOperator, PluginError> {
        WasmOperator::new(self, ctx, limits)
    }
}

/// The largest component file weir reads (components are a few MB; Python's ~20 MB).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Reads a component file, refusing what cannot be one before reading it whole: not a
/// regular file (a device such as `/dev/zero`, a FIFO), larger than
/// [`MAX_COMPONENT_BYTES`], or without the Wasm magic number. Errors never quote the
/// file's bytes: a path pointed at a secret must not leak it.
fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err(if metadata.is_dir() { "a directory, not a component file".into() } else { "not a regular file".into() });
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        return Err(format!("{} bytes, more than a component may have ({MAX_COMPONENT_BYTES})", metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_COMPONENT_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(bytes),
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(
            "a core WebAssembly module, not a component: build it for wasm32-wasip2 or with `weir build`".into(),
        ),
        _ => Err("not a WebAssembly component (no Wasm magic number)".into()),
    }
}

/// An import the linker lacks, named with its likely cause and fix.
fn missing_import(path: &Path, error: &wasmtime::Error) -> Option<PluginError> {
    let text = format!("{error:#}");
    let rest = text.split("component imports instance `").nth(1)?;
    let import = rest.split('`').next()?.to_string();
    let hint = if import.starts_with("wasi:http") {
        "componentize-js adds `wasi:http` by default: build with weir's JavaScript SDK \
         (`node guest-sdk/js/build.mjs app.js -o app.wasm`), or pass `disableFeatures: \
         ['http', 'fetch-event']` to componentize()"
    } else if import.starts_with("weir:operator") {
        "it was built against another version of weir's WIT; rebuild it against this host's \
         wit/ (contract 0.3.0 in wit/v0.3, 0.2.0 in wit/, or 0.1.0 in wit/v0.1)"
    } else {
        "guests get weir's operator interfaces and WASI's cli, clocks, random, io and \
         filesystem interfaces only; rebuild the component without it"
    };
    Some(PluginError::MissingImport { path: path.into(), import, hint })
}

fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}
