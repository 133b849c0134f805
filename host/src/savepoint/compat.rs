//! Whether a component can take over saved state: its state layout (the version it
//! declares and the states it declares when it opens) against the saved one, as Flink's
//! state schema compatibility check compares serializers before a restore. Used by
//! `weir check --upgrade-from` before anything runs, and by a live upgrade before the
//! swap goes on.

use std::collections::BTreeSet;
use std::fmt;

use crate::state::DeclaredState;

/// A state layout: the version and the states, as (kind, name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateLayout {
    pub version: u32,
    pub states: BTreeSet<(String, String)>,
}

impl StateLayout {
    pub fn new(version: u32, declared: &[DeclaredState]) -> Self {
        StateLayout { version, states: declared.iter().map(|d| (d.kind.clone(), d.name.clone())).collect() }
    }
}

/// One difference between a saved layout and a component's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A state the saved layout does not have: it starts empty.
    Added { kind: String, name: String },
    /// A saved state the component no longer declares, at the same version: its data
    /// stays in the state, unread.
    Removed { kind: String, name: String },
    /// A state that changed kind at the same version: the saved data is not read as the
    /// new kind, and the new state starts empty.
    KindChanged { name: String, from: String, to: String },
    /// The component's state version is older than the saved state's.
    VersionLowered { from: u32, to: u32 },
    /// The component's state version is newer: its `migrate` runs on every key.
    VersionBumped { from: u32, to: u32 },
    /// `migrate` failed on a saved key (tried on a sample before anything runs).
    MigrationFailed { from: u32, key: String, error: String },
    /// `migrate` went through on a sample of saved keys.
    Migrated { from: u32, keys: usize },
}

impl Finding {
    /// Whether the upgrade must be refused.
    pub fn refuses(&self) -> bool {
        matches!(self, Finding::KindChanged { .. } | Finding::VersionLowered { .. } | Finding::MigrationFailed { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Added { kind, name } => write!(f, "added: {kind} state `{name}` (starts empty)"),
            Finding::Removed { kind, name } => write!(
                f,
                "removed: {kind} state `{name}` is saved but no longer declared; its data stays, unread (to drop it, \
                 bump the state version and clear it in migrate)"
            ),
            Finding::KindChanged { name, from, to } => write!(
                f,
                "incompatible: state `{name}` was a {from} state and is now a {to} state at the same state version, \
                 so the saved data would be lost; bump the state version and move the data in migrate, or give the \
                 {to} state another name"
            ),
            Finding::VersionLowered { from, to } => write!(
                f,
                "incompatible: the saved state is at version {from} but the component declares version {to}, and \
                 cannot read newer state; use a component at version {from} or later"
            ),
            Finding::VersionBumped { from, to } => write!(f, "state version {from} -> {to}: migrate runs on every key"),
            Finding::MigrationFailed { from, key, error } => write!(
                f,
                "incompatible: migrate from version {from} failed on saved key {key:?}: {error}; implement migrate for \
                 version {from}"
            ),
            Finding::Migrated { from, keys } => write!(f, "migrate from version {from} went through on {keys} saved keys"),
        }
    }
}

/// How `new` differs from `saved`. A newer version may change anything (its `migrate`
/// is responsible, and is tried separately); at the same version, states may only be
/// added.
pub fn compare(saved: &StateLayout, new: &StateLayout) -> Vec<Finding> {
    use std::cmp::Ordering;
    let mut findings = Vec::new();
    match new.version.cmp(&saved.version) {
        Ordering::Less => findings.push(Finding::VersionLowered { from: saved.version, to: new.version }),
        Ordering::Greater => findings.push(Finding::VersionBumped { from: saved.version, to: new.version }),
        Ordering::Equal => {}
    }
    for (kind, name) in new.states.difference(&saved.states) {
        match saved.states.iter().find(|(_, n)| n == name) {
            Some((was, _)) if new.version == saved.version && !new.states.contains(&(was.clone(), name.clone())) => {
                findings.push(Finding::KindChanged { name: name.clone(), from: was.clone(), to: kind.clone() })
            }
            _ => findings.push(Finding::Added { kind: kind.clone(), name: name.clone() }),
        }
    }
    if new.version == saved.version {
        for (kind, name) in saved.states.difference(&new.states) {
            let changed = findings.iter().any(|f| matches!(f, Finding::KindChanged { name: n, .. } if n == name));
            if !changed {
                findings.push(Finding::Removed { kind: kind.clone(), name: name.clone() });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(version: u32, states: &[(&str, &str)]) -> StateLayout {
        StateLayout { version, states: states.iter().map(|(k, n)| (k.to_string(), n.to_string())).collect() }
    }

    #[test]
    fn same_version_may_only_add_states() {
        let saved = layout(0, &[("value", "count"), ("value", "sum")]);
        assert_eq!(compare(&saved, &saved), vec![]);
        let added = compare(&saved, &layout(0, &[("value", "count"), ("value", "sum"), ("map", "seen")]));
        assert_eq!(added, vec![Finding::Added { kind: "map".into(), name: "seen".into() }]);
        assert!(!added[0].refuses());
        let removed = compare(&saved, &layout(0, &[("value", "count")]));
        assert_eq!(removed, vec![Finding::Removed { kind: "value".into(), name: "sum".into() }]);
        assert!(!removed[0].refuses());
        let changed = compare(&saved, &layout(0, &[("list", "count"), ("value", "sum")]));
        assert_eq!(changed, vec![Finding::KindChanged { name: "count".into(), from: "value".into(), to: "list".into() }]);
        assert!(changed[0].refuses());
    }

    #[test]
    fn versions_may_only_go_up() {
        let saved = layout(1, &[("value", "stats")]);
        let lowered = compare(&saved, &layout(0, &[("value", "stats")]));
        assert_eq!(lowered, vec![Finding::VersionLowered { from: 1, to: 0 }]);
        assert!(lowered[0].refuses());
        // A newer version may reshape everything: migrate answers for it.
        let bumped = compare(&saved, &layout(2, &[("list", "stats")]));
        assert_eq!(bumped[0], Finding::VersionBumped { from: 1, to: 2 });
        assert!(bumped.iter().all(|f| !f.refuses()), "{bumped:?}");
    }
}
