//! Live upgrades as the job keeps them: which component each operator runs now, the
//! probation of the newest upgrade, and the history of every upgrade with its outcome,
//! kept in `<work dir>/upgrades.json` so that it outlives the process.
//!
//! An upgrade completes (every subtask swapped, the rollback point written) and then
//! stands on probation: any failure of the job before the probation ends, or the process
//! ending, rolls the job back to the rollback point with the component it replaced. While
//! on probation the checkpoint coordinator holds back the commits of exactly-once sinks
//! and of source offsets, so a rollback repeats nothing there (see `docs/upgrades.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::checkpoint::coordinator::{JobLifecycle, Staged};
use crate::operator::OperatorLogic;
use crate::plugin::Plugin;
use crate::task::JobControl;

/// The file, in the job's work directory.
pub const HISTORY_FILE: &str = "upgrades.json";

/// A component, as the history names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRef {
    pub path: PathBuf,
    pub digest: String,
}

impl ComponentRef {
    pub fn of(plugin: &Plugin) -> Self {
        ComponentRef { path: plugin.path().to_path_buf(), digest: plugin.digest().to_string() }
    }
}

/// How an upgrade ended (so far).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Running the new component, on probation until `until_ms` (ms since the epoch).
    Probation { until_ms: i64 },
    /// The probation passed (or there was none): the new component stays.
    Done,
    /// The new component failed on probation; the job went back to the rollback point
    /// with the old one.
    RolledBack { reason: String },
}

/// One live upgrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeRecord {
    /// The upgrade's number in this job's history, from 1.
    pub number: u64,
    pub operator: String,
    pub from: ComponentRef,
    pub to: ComponentRef,
    /// When it completed, ms since the epoch.
    pub at_ms: i64,
    /// Who asked (the token's name under `weir serve`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// How long the sources were paused, barrier to every subtask swapped.
    pub pause_ms: f64,
    /// The in-place savepoint: the rollback point.
    pub savepoint: PathBuf,
    /// A canary upgrade: how many of the operator's subtasks ran the new version first,
    /// and whether the others followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub subtasks: usize,
    pub of: usize,
    /// The canary passed its probation and every subtask runs the new version.
    pub proceeded: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct History {
    upgrades: Vec<UpgradeRecord>,
}

/// What going back needs: where, and with which component.
#[derive(Debug, Clone)]
pub struct Rollback {
    pub operator: String,
    pub savepoint: PathBuf,
    pub reason: String,
}

/// The job's upgrades: shared by the job's attempts, the coordinator (through
/// [`UpgradeLifecycle`]) and the control API.
pub struct Upgrades {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    history: History,
    /// Per operator: the component it runs now, when an upgrade changed it (a restart
    /// runs it rather than the job file's).
    live: BTreeMap<String, Arc<Plugin>>,
    /// The component each operator ran before its newest upgrade (for a rollback).
    replaced: BTreeMap<String, Option<Arc<Plugin>>>,
    /// The upgrade on probation: its history index and when the probation ends.
    probation: Option<(usize, Instant)>,
    /// A canary's component, until the operator's other subtasks run it too.
    pending: Option<Arc<Plugin>>,
}

impl Upgrades {
    /// The history in `work_dir`, read back (a missing file is an empty history).
    pub fn open(work_dir: &Path) -> Result<Upgrades, String> {
        let path = work_dir.join(HISTORY_FILE);
        let history = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => History::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let inner = Inner { history, live: BTreeMap::new(), replaced: BTreeMap::new(), probation: None, pending: None };
        Ok(Upgrades { path, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every upgrade so far, oldest first.
    pub fn history(&self) -> Vec<UpgradeRecord> {
        self.lock().history.upgrades.clone()
    }

    /// The component `operator` runs now, if an upgrade changed it.
    pub fn live(&self, operator: &str) -> Option<Arc<Plugin>> {
        self.lock().live.get(operator).cloned()
    }

    /// The component `operator` ran before its newest upgrade that stayed (for
    /// `weir upgrade --to-previous`).
    pub fn previous(&self, operator: &str) -> Option<ComponentRef> {
        let inner = self.lock();
        let last = inner.history.upgrades.iter().rev().find(|r| r.operator == operator && r.outcome == Outcome::Done)?;
        Some(last.from.clone())
    }

    /// After a restore from a checkpoint: the live components of earlier runs. An
    /// upgrade that passed its probation stays, as long as the job file still names the
    /// component it replaced (a job file that names another one wins); one whose process
    /// ended on probation is to be rolled back.
    pub fn resume(&self, job_file: &BTreeMap<String, ComponentRef>, load: impl Fn(&Path) -> Result<Plugin, String>) -> Result<Option<Rollback>, String> {
        let mut inner = self.lock();
        let mut rollback = None;
        let mut current: BTreeMap<String, ComponentRef> = job_file.clone();
        for (index, record) in inner.history.upgrades.iter().enumerate() {
            let runs = current.get(&record.operator);
            match &record.outcome {
                Outcome::Done if runs == Some(&record.from) => {
                    current.insert(record.operator.clone(), record.to.clone());
                }
                Outcome::Probation { .. } if runs == Some(&record.from) => {
                    rollback = Some((index, record.clone()));
                }
                _ => {}
            }
        }
        for (operator, component) in &current {
            if job_file.get(operator) == Some(component) {
                continue;
            }
            let plugin = load(&component.path)?;
            if plugin.digest() != component.digest {
                return Err(format!(
                    "operator `{operator}` was upgraded live to {}, which has changed since (its digest is not \
                     {}); name the component to run in the job file",
                    component.path.display(),
                    component.digest
                ));
            }
            tracing::info!(%operator, component = %component.path.display(), "running the component a live upgrade installed, not the job file's");
            inner.live.insert(operator.clone(), Arc::new(plugin));
        }
        let Some((index, record)) = rollback else { return Ok(None) };
        let reason = "the process ended while the upgrade was on probation".to_string();
        inner.history.upgrades[index].outcome = Outcome::RolledBack { reason: reason.clone() };
        if job_file.get(&record.operator) == Some(&record.from) {
            inner.live.remove(&record.operator);
        } else {
            let plugin = load(&record.from.path)?;
            inner.live.insert(record.operator.clone(), Arc::new(plugin));
        }
        self.save(&inner);
        Ok(Some(Rollback { operator: record.operator, savepoint: record.savepoint, reason }))
    }

    /// The job starts afresh or from a savepoint, with the job file's components: an
    /// upgrade a process left on probation did not stay.
    pub fn started_afresh(&self) {
        let mut inner = self.lock();
        let mut changed = false;
        for record in &mut inner.history.upgrades {
            if matches!(record.outcome, Outcome::Probation { .. }) {
                let reason = "the process ended on probation, and the job started again without its checkpoints".into();
                record.outcome = Outcome::RolledBack { reason };
                changed = true;
            }
        }
        if changed {
            self.save(&inner);
        }
    }

    /// An upgrade completed: `component` runs `operator` now, on probation for
    /// `probation` (none: it is done at once).
    /// With a canary (`swapped` fewer than all subtasks), the operator counts as
    /// running the new component only once the others followed ([`Upgrades::proceeded`]).
    #[allow(clippy::too_many_arguments)]
    pub fn completed(
        &self,
        operator: &str,
        from: ComponentRef,
        component: Arc<Plugin>,
        savepoint: &Path,
        pause: Duration,
        probation: Duration,
        swapped: (usize, usize),
        by: Option<String>,
    ) {
        let mut inner = self.lock();
        let number = inner.history.upgrades.len() as u64 + 1;
        let outcome = match probation.is_zero() {
            true => Outcome::Done,
            false => Outcome::Probation { until_ms: crate::clock::now_ms() + probation.as_millis() as i64 },
        };
        inner.history.upgrades.push(UpgradeRecord {
            number,
            operator: operator.to_string(),
            from,
            to: ComponentRef::of(&component),
            at_ms: crate::clock::now_ms(),
            by,
            pause_ms: pause.as_secs_f64() * 1e3,
            savepoint: savepoint.to_path_buf(),
            canary: (swapped.0 < swapped.1).then_some(Canary { subtasks: swapped.0, of: swapped.1, proceeded: false }),
            outcome,
        });
        let before = inner.live.get(operator).cloned();
        inner.replaced.insert(operator.to_string(), before);
        if swapped.0 >= swapped.1 {
            inner.live.insert(operator.to_string(), component);
        } else {
            inner.pending = Some(component);
        }
        if !probation.is_zero() {
            inner.probation = Some((inner.history.upgrades.len() - 1, Instant::now() + probation));
        }
        self.save(&inner);
    }

    /// A canary passed its probation and the operator's other subtasks swapped too:
    /// the operator runs the new component.
    pub fn proceeded(&self, operator: &str) {
        let mut inner = self.lock();
        let Some(component) = inner.pending.take() else { return };
        inner.live.insert(operator.to_string(), component);
        if let Some(canary) = inner.history.upgrades.last_mut().and_then(|r| r.canary.as_mut()) {
            canary.proceeded = true;
        }
        self.save(&inner);
    }

    /// The probation passed: the new component stays.
    pub fn passed(&self) {
        let mut inner = self.lock();
        let Some((index, _)) = inner.probation.take() else { return };
        let record = &mut inner.history.upgrades[index];
        record.outcome = Outcome::Done;
        tracing::info!(operator = %record.operator, component = %record.to.path.display(), "the upgrade passed its probation");
        self.save(&inner);
    }

    /// The job failed with `cause`: if an upgrade is on probation, it is rolled back
    /// (the old component runs again), and the job must restart from the returned
    /// rollback point.
    pub fn failed(&self, cause: &str) -> Option<Rollback> {
        let mut inner = self.lock();
        let (index, _) = inner.probation.take()?;
        let reason = format!("failed on probation: {cause}");
        let record = &mut inner.history.upgrades[index];
        record.outcome = Outcome::RolledBack { reason: reason.clone() };
        let rollback = Rollback { operator: record.operator.clone(), savepoint: record.savepoint.clone(), reason };
        inner.pending = None;
        match inner.replaced.remove(&rollback.operator).flatten() {
            Some(previous) => inner.live.insert(rollback.operator.clone(), previous),
            None => inner.live.remove(&rollback.operator),
        };
        self.save(&inner);
        Some(rollback)
    }

    /// Writes the history (atomically: a temporary file renamed over it). A history
    /// that cannot be written is logged; the job goes on.
    fn save(&self, inner: &Inner) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&inner.history)?)?;
            std::fs::rename(&tmp, &self.path)
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %e, "could not write the upgrade history");
        }
    }
}

/// The coordinator's view of the job, with upgrades recorded in [`Upgrades`].
pub struct UpgradeLifecycle {
    pub control: Arc<JobControl>,
    pub upgrades: Arc<Upgrades>,
    /// The component each operator runs in this attempt.
    pub running: BTreeMap<String, Arc<Plugin>>,
}

impl JobLifecycle for UpgradeLifecycle {
    fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }
    fn stop(&self) {
        JobLifecycle::stop(&*self.control)
    }
    fn fail_checkpointing(&self, reason: String) {
        self.control.fail_checkpointing(reason)
    }
    fn fence(&self, reason: String) {
        self.control.fence(reason)
    }
    fn upgraded(
        &self,
        operator: &str,
        component: &Staged,
        dir: &Path,
        pause: Duration,
        probation: Duration,
        swapped: (usize, usize),
        by: Option<String>,
    ) {
        let Ok(plugin) = component.clone().downcast::<Plugin>() else { return };
        let from = self.upgrades.live(operator).or_else(|| self.running.get(operator).cloned());
        let Some(from) = from else { return };
        self.upgrades.completed(operator, ComponentRef::of(&from), plugin, dir, pause, probation, swapped, by);
    }
    fn canary_passed(&self, operator: &str) {
        self.upgrades.proceeded(operator);
    }
    fn probation_passed(&self) {
        self.upgrades.passed();
    }
}

/// The compatibility of every operator of `job` that has saved state in `savepoint` with
/// the job file's component for it (see [`crate::savepoint::compat`]): its declared
/// layout once it has opened over a sample of the saved state (a sixteenth of the key
/// groups, or all of them for small state), and, when its state version is newer, `migrate` tried on up to
/// [`MIGRATION_SAMPLE`] saved keys. Nothing runs and nothing is written.
pub fn check_upgrade_from(
    job: &super::Job,
    savepoint: &crate::savepoint::Savepoint,
) -> Result<Vec<(String, Vec<crate::savepoint::compat::Finding>)>, String> {
    use crate::checkpoint::TaskState;
    use crate::savepoint::compat::{Finding, StateLayout, compare};
    let spec = job.spec();
    let mut verdicts = Vec::new();
    for op in &spec.operators {
        let Some(plugin) = job.plugins.get(&op.uid) else { continue };
        let saved = savepoint.manifest.tasks.iter().find_map(|(task, state)| match state {
            TaskState::Operator { state_version, states, .. } if task.rsplit_once('#').is_some_and(|(u, _)| u == op.uid) => {
                Some(StateLayout::new(*state_version, states))
            }
            _ => None,
        });
        let Some(mut saved) = saved else { continue };
        let max = savepoint.manifest.max_parallelism;
        // A sixteenth of the key groups, or all of them when that holds too few keys.
        let mut restored = None;
        for share in [max.min(16), 1] {
            let sample = crate::keygroup::KeyGroupRange::for_subtask(0, max, share);
            let read = savepoint.read_operator(&op.uid, sample).map_err(|e| e.to_string())?;
            let enough = read.keys.len() >= MIGRATION_SAMPLE;
            restored = Some(read);
            if enough {
                break;
            }
        }
        let restored = restored.expect("read at least once");
        for (k, _) in &restored.entries {
            if let Some(d) = crate::state::key::decode(k).filter(|d| d.uid == op.uid) {
                saved.states.insert((d.kind.to_string(), d.name.to_string()));
            }
        }
        let info = crate::operator::OperatorInfo {
            uid: op.uid.as_str().into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: max,
            config: op.config_strings(),
        };
        let state = crate::state::KeyedState::new(&op.uid, Box::new(crate::state::MemoryBackend::from_entries(restored.entries)));
        let ctx = crate::operator::OperatorContext::new(info, state, Default::default());
        let failed = |what: &str, e: &dyn std::fmt::Display| format!("operator `{}`: {what}: {e}", op.uid);
        let mut logic = plugin.instantiate(ctx, op.limits).map_err(|e| failed("instantiating the component", &e))?;
        logic.open().map_err(|e| failed("opening the component", &e))?;
        let version = logic.state_version().map_err(|e| failed("reading its state version", &e))?;
        let new = StateLayout::new(version, &logic.context().state.declared());
        let mut findings = compare(&saved, &new);
        if version > saved.version {
            let from = saved.version;
            match crate::task::migration::Migration::start(&mut logic, from) {
                Err(e) => findings.push(Finding::MigrationFailed { from, key: String::new(), error: e.to_string() }),
                Ok(None) => {}
                Ok(Some(mut migration)) => match migration.some(&mut logic, MIGRATION_SAMPLE) {
                    Ok(_) => findings.push(Finding::Migrated { from, keys: migration.migrated() as usize }),
                    Err(e) => findings.push(Finding::MigrationFailed {
                        from,
                        key: String::from_utf8_lossy(&e.key).into_owned(),
                        error: e.failure.to_string(),
                    }),
                },
            }
        }
        verdicts.push((op.uid.clone(), findings));
    }
    Ok(verdicts)
}

/// Saved keys `weir check --upgrade-from` migrates, at most, per operator.
pub const MIGRATION_SAMPLE: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &Path) -> Result<Plugin, String> {
        crate::plugin::Runtime::new().map_err(|e| e.to_string())?.load(path).map_err(|e| e.to_string())
    }

    #[test]
    fn the_history_follows_probation_rollback_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (load(Path::new(weir_test_guests::COUNTER_V1)).unwrap(), load(Path::new(weir_test_guests::COUNTER_V2)).unwrap());
        let (v1_ref, v2) = (ComponentRef::of(&v1), Arc::new(v2));
        let job_file: BTreeMap<String, ComponentRef> = [("count".to_string(), v1_ref.clone())].into();
        let second = Duration::from_secs(1);

        // On probation: a failure rolls back to the job file's component.
        let upgrades = Upgrades::open(dir.path()).unwrap();
        upgrades.completed("count", v1_ref.clone(), v2.clone(), Path::new("sp1"), second, second, (2, 2), None);
        assert!(upgrades.live("count").is_some());
        let rollback = upgrades.failed("a trap").expect("on probation");
        assert_eq!((rollback.operator.as_str(), rollback.savepoint.as_path()), ("count", Path::new("sp1")));
        assert!(upgrades.live("count").is_none() && upgrades.failed("again").is_none());

        // Passed: the new component stays, also for a new process restoring a checkpoint.
        upgrades.completed("count", v1_ref.clone(), v2.clone(), Path::new("sp2"), second, second, (2, 2), Some("me".into()));
        upgrades.passed();
        let reopened = Upgrades::open(dir.path()).unwrap();
        let outcomes: Vec<Outcome> = reopened.history().into_iter().map(|r| r.outcome).collect();
        assert!(matches!(&outcomes[..], [Outcome::RolledBack { reason }, Outcome::Done] if reason.contains("a trap")), "{outcomes:?}");
        assert_eq!(reopened.resume(&job_file, load).unwrap().map(|r| r.savepoint), None);
        assert_eq!(reopened.live("count").map(|p| p.digest().to_string()), Some(v2.digest().to_string()));
        assert_eq!(reopened.previous("count"), Some(v1_ref.clone()));
        // A job file that names another component wins.
        let other: BTreeMap<String, ComponentRef> = [("count".to_string(), ComponentRef::of(&v2))].into();
        let fresh = Upgrades::open(dir.path()).unwrap();
        fresh.resume(&other, load).unwrap();
        assert!(fresh.live("count").is_none());

        // A process that ended on probation: the next start rolls back, or, starting
        // afresh, records that the upgrade did not stay.
        reopened.completed("count", ComponentRef::of(&v2), Arc::new(load(Path::new(weir_test_guests::COUNTER_V1)).unwrap()), Path::new("sp3"), second, second, (2, 2), None);
        let after_crash = Upgrades::open(dir.path()).unwrap();
        let rollback = after_crash.resume(&job_file, load).unwrap().expect("rolled back at restart");
        assert_eq!(rollback.savepoint, Path::new("sp3"));
        assert_eq!(after_crash.live("count").map(|p| p.digest().to_string()), Some(v2.digest().to_string()), "back to v2");
        after_crash.completed("count", ComponentRef::of(&v2), v2.clone(), Path::new("sp4"), second, second, (2, 2), None);
        let afresh = Upgrades::open(dir.path()).unwrap();
        afresh.started_afresh();
        assert!(matches!(afresh.history().last().unwrap().outcome, Outcome::RolledBack { .. }));
    }
}
