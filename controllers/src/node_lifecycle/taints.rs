//! Which taints a node should carry, and the taint-list edits that get it there.
//!
//! - `NoSchedule` taints mirror the node's conditions and `spec.unschedulable` (upstream
//!   `doNoScheduleTaintingPass` with `nodeConditionToTaintKeyStatusMap`);
//! - the `NoExecute` `not-ready` / `unreachable` pair mirrors the Ready condition and is mutually
//!   exclusive (upstream `doNoExecuteTaintingPass`, `processTaintBaseEviction`);
//! - taints are compared by key and effect (`Taint.MatchTaint`), and written as a whole list with a
//!   resourceVersion precondition (`PatchNodeTaints`: `spec.taints` has no merge key, so only the
//!   precondition keeps two writers from losing each other's taints);
//! - the beta OS/arch labels follow the stable ones (`reconcileNodeLabels`).
//!
//! Mirrors kubernetes/kubernetes pkg/controller/nodelifecycle/node_lifecycle_controller.go,
//! pkg/util/taints and pkg/controller/controller_utils.go.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// `nodeConditionToTaintKeyStatusMap`: the taint a condition in a status calls for.
pub fn condition_taint(condition_type: &str, status: &str) -> Option<&'static str> {
    Some(match (condition_type, status) {
        ("Ready", "False") => TAINT_NOT_READY,
        ("Ready", "Unknown") => TAINT_UNREACHABLE,
        ("MemoryPressure", "True") => TAINT_MEMORY_PRESSURE,
        ("DiskPressure", "True") => TAINT_DISK_PRESSURE,
        ("NetworkUnavailable", "True") => TAINT_NETWORK_UNAVAILABLE,
        ("PIDPressure", "True") => TAINT_PID_PRESSURE,
        _ => return None,
    })
}

/// `taintKeyToNodeConditionMap`: the keys this controller owns as condition taints.
fn is_condition_taint_key(key: &str) -> bool {
    matches!(
        key,
        TAINT_NOT_READY
            | TAINT_UNREACHABLE
            | TAINT_NETWORK_UNAVAILABLE
            | TAINT_MEMORY_PRESSURE
            | TAINT_DISK_PRESSURE
            | TAINT_PID_PRESSURE
    )
}

pub fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_owned(),
        effect: effect.to_owned(),
        ..Taint::default()
    }
}

/// `Taint.MatchTaint`: same key and effect (value and time are not compared).
pub fn matches(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.effect == b.effect
}

/// `TaintExists`.
pub fn exists(taints: &[Taint], t: &Taint) -> bool {
    taints.iter().any(|x| matches(x, t))
}

pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The NoSchedule taints the node's conditions and `spec.unschedulable` call for, in condition
/// order, the unschedulable taint last.
pub fn wanted_no_schedule(node: &Node) -> Vec<Taint> {
    let mut wanted: Vec<Taint> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| condition_taint(&c.type_, &c.status))
        .map(|key| taint(key, NO_SCHEDULE))
        .collect();
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        wanted.push(taint(TAINT_UNSCHEDULABLE, NO_SCHEDULE));
    }
    wanted
}

/// The NoSchedule taints this controller manages that the node carries now.
fn managed_no_schedule(node: &Node) -> Vec<Taint> {
    node_taints(node)
        .iter()
        .filter(|t| {
            t.effect == NO_SCHEDULE
                && (t.key == TAINT_UNSCHEDULABLE || is_condition_taint_key(&t.key))
        })
        .cloned()
        .collect()
}

/// `TaintSetDiff(wanted, current)`: what to add and what to remove.
pub fn set_diff(wanted: &[Taint], current: &[Taint]) -> (Vec<Taint>, Vec<Taint>) {
    let add = wanted
        .iter()
        .filter(|t| !exists(current, t))
        .cloned()
        .collect();
    let remove = current
        .iter()
        .filter(|t| !exists(wanted, t))
        .cloned()
        .collect();
    (add, remove)
}

/// The NoSchedule pass for one node: taints to add and to remove (both empty: nothing to do).
pub fn no_schedule_changes(node: &Node) -> (Vec<Taint>, Vec<Taint>) {
    set_diff(&wanted_no_schedule(node), &managed_no_schedule(node))
}

/// `taintutils.AddOrUpdateTaint`: replaces the taint with the same key and effect unless it is
/// identical (time included), else appends. None when nothing changes.
pub fn add_or_update(taints: &[Taint], t: &Taint) -> Option<Vec<Taint>> {
    let mut out = Vec::with_capacity(taints.len() + 1);
    let mut replaced = false;
    for existing in taints {
        if matches(t, existing) {
            if t == existing {
                return None;
            }
            out.push(t.clone());
            replaced = true;
        } else {
            out.push(existing.clone());
        }
    }
    if !replaced {
        out.push(t.clone());
    }
    Some(out)
}

/// `taintutils.RemoveTaint`: drops every taint with the same key and effect. None when there is
/// none.
pub fn remove(taints: &[Taint], t: &Taint) -> Option<Vec<Taint>> {
    if !exists(taints, t) {
        return None;
    }
    Some(taints.iter().filter(|x| !matches(x, t)).cloned().collect())
}

/// `SwapNodeControllerTaint` on a taint list: adds (stamped `timeAdded = now`, as upstream) and
/// removes. None when the list stays as it is.
pub fn swap(taints: &[Taint], add: &[Taint], del: &[Taint], now: Timestamp) -> Option<Vec<Taint>> {
    let mut current = taints.to_vec();
    let mut changed = false;
    for t in add {
        let stamped = Taint {
            time_added: Some(Time(now)),
            ..t.clone()
        };
        if let Some(next) = add_or_update(&current, &stamped) {
            current = next;
            changed = true;
        }
    }
    for t in del {
        if let Some(next) = remove(&current, t) {
            current = next;
            changed = true;
        }
    }
    changed.then_some(current)
}

/// `PatchNodeTaints`: a strategic-merge patch that replaces `spec.taints` and fails with a
/// conflict unless the node is still at `resource_version`.
pub fn taints_patch(resource_version: &str, taints: &[Taint]) -> Value {
    let taints = if taints.is_empty() {
        Value::Null
    } else {
        json!(taints)
    };
    json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"taints": taints},
    })
}

/// The NoExecute taint pair for a Ready condition status: (taint to add, its opposite to remove),
/// or None for a Ready node (upstream: "the Node is ready again, no need to taint it").
pub fn no_execute_swap(ready_status: &str) -> Option<(Taint, Taint)> {
    let not_ready = taint(TAINT_NOT_READY, NO_EXECUTE);
    let unreachable = taint(TAINT_UNREACHABLE, NO_EXECUTE);
    match ready_status {
        "False" => Some((not_ready, unreachable)),
        "Unknown" => Some((unreachable, not_ready)),
        _ => None,
    }
}

pub fn not_ready_no_execute() -> Taint {
    taint(TAINT_NOT_READY, NO_EXECUTE)
}

pub fn unreachable_no_execute() -> Taint {
    taint(TAINT_UNREACHABLE, NO_EXECUTE)
}

/// `labelReconcileInfo`: (stable label, beta label that follows it).
const LABELS_TO_RECONCILE: [(&str, &str); 2] = [
    ("kubernetes.io/os", "beta.kubernetes.io/os"),
    ("kubernetes.io/arch", "beta.kubernetes.io/arch"),
];

/// `reconcileNodeLabels`: the beta labels to set so they equal the stable ones (added when
/// missing, corrected when different).
pub fn labels_to_reconcile(node: &Node) -> BTreeMap<String, String> {
    let Some(labels) = node.metadata.labels.as_ref() else {
        return BTreeMap::new();
    };
    LABELS_TO_RECONCILE
        .iter()
        .filter_map(|(primary, secondary)| {
            let value = labels.get(*primary)?;
            (labels.get(*secondary) != Some(value))
                .then(|| ((*secondary).to_owned(), value.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: &[(&str, &str)], taints: &[(&str, &str)], unschedulable: bool) -> Node {
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(t, s)| json!({"type": t, "status": s}))
            .collect();
        let taints: Vec<Value> = taints
            .iter()
            .map(|(k, e)| json!({"key": k, "effect": e}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "7"},
            "spec": {"taints": taints, "unschedulable": unschedulable},
            "status": {"conditions": conditions},
        }))
        .expect("node fixture")
    }

    fn keys(taints: &[Taint]) -> Vec<(String, String)> {
        taints
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn a_ready_node_with_the_admission_not_ready_taint_loses_it() {
        let n = node(
            &[("Ready", "True"), ("MemoryPressure", "False")],
            &[(TAINT_NOT_READY, NO_SCHEDULE)],
            false,
        );
        let (add, del) = no_schedule_changes(&n);
        assert!(add.is_empty());
        assert_eq!(keys(&del), pairs(&[(TAINT_NOT_READY, NO_SCHEDULE)]));
    }

    #[test]
    fn every_condition_maps_to_its_no_schedule_taint() {
        let n = node(
            &[
                ("Ready", "False"),
                ("MemoryPressure", "True"),
                ("DiskPressure", "True"),
                ("PIDPressure", "True"),
                ("NetworkUnavailable", "True"),
            ],
            &[],
            true,
        );
        let (add, del) = no_schedule_changes(&n);
        assert!(del.is_empty());
        assert_eq!(
            keys(&add),
            pairs(&[
                (TAINT_NOT_READY, NO_SCHEDULE),
                (TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
                (TAINT_DISK_PRESSURE, NO_SCHEDULE),
                (TAINT_PID_PRESSURE, NO_SCHEDULE),
                (TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE),
                (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
            ])
        );
    }

    #[test]
    fn an_unknown_ready_condition_swaps_not_ready_for_unreachable() {
        let n = node(
            &[("Ready", "Unknown")],
            &[(TAINT_NOT_READY, NO_SCHEDULE)],
            false,
        );
        let (add, del) = no_schedule_changes(&n);
        assert_eq!(keys(&add), pairs(&[(TAINT_UNREACHABLE, NO_SCHEDULE)]));
        assert_eq!(keys(&del), pairs(&[(TAINT_NOT_READY, NO_SCHEDULE)]));
    }

    #[test]
    fn taints_the_controller_does_not_own_are_left_alone() {
        let n = node(
            &[("Ready", "True")],
            &[
                ("example.com/dedicated", NO_SCHEDULE),
                (TAINT_NOT_READY, NO_EXECUTE),
                ("node-role.kubernetes.io/control-plane", NO_SCHEDULE),
            ],
            false,
        );
        let (add, del) = no_schedule_changes(&n);
        assert!(add.is_empty() && del.is_empty());
    }

    #[test]
    fn a_pressure_condition_that_clears_lifts_its_taint() {
        let n = node(
            &[("Ready", "True"), ("MemoryPressure", "False")],
            &[(TAINT_MEMORY_PRESSURE, NO_SCHEDULE)],
            false,
        );
        let (add, del) = no_schedule_changes(&n);
        assert!(add.is_empty());
        assert_eq!(keys(&del), pairs(&[(TAINT_MEMORY_PRESSURE, NO_SCHEDULE)]));
    }

    #[test]
    fn swap_adds_with_a_time_and_removes_the_opposite() {
        let now: Timestamp = "2026-03-01T10:00:00Z".parse().expect("time");
        let current = vec![
            taint(TAINT_NOT_READY, NO_EXECUTE),
            taint("other", NO_SCHEDULE),
        ];
        let out = swap(
            &current,
            &[unreachable_no_execute()],
            &[not_ready_no_execute()],
            now,
        )
        .expect("changed");
        assert_eq!(
            keys(&out),
            pairs(&[("other", NO_SCHEDULE), (TAINT_UNREACHABLE, NO_EXECUTE)])
        );
        assert_eq!(out[1].time_added, Some(Time(now)));
    }

    #[test]
    fn removing_an_absent_taint_changes_nothing() {
        let current = vec![taint("other", NO_SCHEDULE)];
        assert_eq!(
            swap(
                &current,
                &[],
                &[unreachable_no_execute()],
                Timestamp::UNIX_EPOCH
            ),
            None
        );
        assert_eq!(remove(&current, &unreachable_no_execute()), None);
    }

    #[test]
    fn adding_an_identical_taint_is_no_change_but_a_new_time_replaces_it() {
        let t0 = Taint {
            time_added: Some(Time(Timestamp::UNIX_EPOCH)),
            ..unreachable_no_execute()
        };
        assert_eq!(add_or_update(std::slice::from_ref(&t0), &t0), None);
        let later: Timestamp = "2026-03-01T10:00:00Z".parse().expect("time");
        let out = swap(
            std::slice::from_ref(&t0),
            &[unreachable_no_execute()],
            &[],
            later,
        )
        .expect("changed");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].time_added, Some(Time(later)));
    }

    #[test]
    fn the_taint_patch_replaces_the_list_under_a_resource_version_precondition() {
        let p = taints_patch("42", &[taint("a", NO_SCHEDULE)]);
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "42"},
                   "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}})
        );
        let empty = taints_patch("42", &[]);
        assert_eq!(empty["spec"]["taints"], Value::Null);
    }

    #[test]
    fn no_execute_taints_follow_the_ready_status_and_are_mutually_exclusive() {
        let (add, del) = no_execute_swap("False").expect("not ready");
        assert_eq!(
            (add.key.as_str(), del.key.as_str()),
            (TAINT_NOT_READY, TAINT_UNREACHABLE)
        );
        let (add, del) = no_execute_swap("Unknown").expect("unknown");
        assert_eq!(
            (add.key.as_str(), del.key.as_str()),
            (TAINT_UNREACHABLE, TAINT_NOT_READY)
        );
        assert!(no_execute_swap("True").is_none());
    }

    #[test]
    fn beta_labels_follow_the_stable_ones() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n", "labels": {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "arm64",
            "beta.kubernetes.io/arch": "amd64",
        }}}))
        .expect("node");
        let want: BTreeMap<String, String> = [
            ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("beta.kubernetes.io/arch".to_owned(), "arm64".to_owned()),
        ]
        .into();
        assert_eq!(labels_to_reconcile(&n), want);
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node");
        assert!(labels_to_reconcile(&bare).is_empty());
    }
}
