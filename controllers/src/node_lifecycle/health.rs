//! Node health judgement (upstream `tryUpdateNodeHealth`).
//!
//! The controller never trusts the timestamps a kubelet writes: it remembers, per node, when it
//! itself last *saw* a sign of life — a Ready condition with a new `lastHeartbeatTime`, or a node
//! Lease whose `renewTime` moved forward — and calls that the probe timestamp. A node whose probe
//! timestamp is older than the grace period (`--node-monitor-grace-period`, or
//! `--node-startup-grace-period` while the node never posted a Ready condition) gets its Ready,
//! MemoryPressure, DiskPressure and PIDPressure conditions set to `Unknown`.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/nodelifecycle/node_lifecycle_controller.go.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// What the controller remembers about a node between passes (upstream `nodeHealthData`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeHealth {
    /// When the controller last saw the node alive (local observation time).
    pub probe: Timestamp,
    /// When the controller saw the Ready condition last change.
    pub ready_transition: Timestamp,
    /// The node's Ready condition as last taken in (None: its status had none).
    pub ready: Option<NodeCondition>,
    /// The node's Lease as last taken in.
    pub lease: Option<LeaseSeen>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSeen {
    pub renew_time: Option<Timestamp>,
    pub resource_version: String,
}

impl LeaseSeen {
    pub fn of(lease: &Lease) -> Self {
        LeaseSeen {
            renew_time: lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// The grace periods.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    pub monitor: SignedDuration,
    pub startup: SignedDuration,
}

/// The outcome of looking at a node.
#[derive(Clone, Debug)]
pub struct Observation {
    /// What to remember from now on.
    pub health: NodeHealth,
    /// The grace period the node is entitled to.
    pub grace: SignedDuration,
    /// The Ready condition as the node carried it (a made-up Unknown one when it has none).
    pub observed_ready: NodeCondition,
    /// The node's Ready condition now.
    pub current_ready: Option<NodeCondition>,
    /// No sign of life for longer than the grace period: the node is to be marked Unknown.
    pub stale: bool,
}

pub fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    condition(node, "Ready")
}

fn created(node: &Node) -> Timestamp {
    node.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// Takes in what the node and its Lease say at `now`, given what was remembered (`saved`).
pub fn observe(
    node: &Node,
    saved: Option<&NodeHealth>,
    lease: Option<&Lease>,
    grace: Grace,
    now: Timestamp,
) -> Observation {
    let current = ready_condition(node).cloned();
    let mut health = saved.cloned();
    let (observed_ready, grace_period) = match &current {
        None => {
            // Never posted: pretend an Unknown condition from the node's creation, so that the
            // startup grace period counts from then.
            let created = Time(created(node));
            let fake = NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                last_heartbeat_time: Some(created.clone()),
                last_transition_time: Some(created.clone()),
                ..NodeCondition::default()
            };
            match health.as_mut() {
                Some(h) => h.ready = None,
                None => {
                    health = Some(NodeHealth {
                        probe: created.0,
                        ready_transition: created.0,
                        ready: None,
                        lease: None,
                    })
                }
            }
            (fake, grace.startup)
        }
        Some(c) => (c.clone(), grace.monitor),
    };
    let saved_ready = health.as_ref().and_then(|h| h.ready.clone());
    let saved_lease = health.as_ref().and_then(|h| h.lease.clone());
    let fresh = |ready: Option<NodeCondition>, transition: Timestamp| NodeHealth {
        probe: now,
        ready_transition: transition,
        ready,
        lease: None,
    };
    let mut health = match (health, &saved_ready, &current) {
        // First sight of the node, e.g. after a restart: assume it was alive just now.
        (None, _, _) => fresh(current.clone(), now),
        // The node posted its first Ready condition, or dropped it (an error upstream treats
        // the same way).
        (Some(_), None, Some(_)) | (Some(_), Some(_), None) => fresh(current.clone(), now),
        (Some(h), Some(s), Some(c)) if s.last_heartbeat_time != c.last_heartbeat_time => {
            let transition = if s.last_transition_time != c.last_transition_time {
                now
            } else {
                h.ready_transition
            };
            fresh(current.clone(), transition)
        }
        (Some(h), _, _) => h,
    };
    // A renewed Lease is a sign of life too, whatever the status says.
    if let Some(lease) = lease {
        let seen = LeaseSeen::of(lease);
        let renewed = match &saved_lease {
            None => true,
            Some(old) => matches!((old.renew_time, seen.renew_time), (Some(a), Some(b)) if a < b),
        };
        if renewed {
            health.lease = Some(seen);
            health.probe = now;
        }
    }
    let stale = health
        .probe
        .checked_add(grace_period)
        .is_ok_and(|deadline| now > deadline);
    Observation {
        health,
        grace: grace_period,
        observed_ready,
        current_ready: current,
        stale,
    }
}

/// The conditions the controller sets to Unknown (NetworkUnavailable is the control plane's).
pub const UNKNOWN_CONDITION_TYPES: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The node's conditions once marked Unknown.
#[derive(Clone, Debug, PartialEq)]
pub struct MarkedUnknown {
    /// Every condition of the node afterwards.
    pub conditions: Vec<NodeCondition>,
    /// The conditions that changed or were added: what the status patch writes.
    pub changed: Vec<NodeCondition>,
    pub ready: Option<NodeCondition>,
}

/// Sets the kubelet-owned conditions to Unknown at `now`: missing ones are added as
/// `NodeStatusNeverUpdated`, known ones not already Unknown become `NodeStatusUnknown`.
pub fn mark_unknown(node: &Node, now: Timestamp) -> MarkedUnknown {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = Vec::new();
    for type_ in UNKNOWN_CONDITION_TYPES {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            None => {
                let c = NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: Some(Time(created(node))),
                    last_transition_time: Some(Time(now)),
                };
                changed.push(c.clone());
                conditions.push(c);
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed.push(c.clone());
            }
            Some(_) => {}
        }
    }
    let ready = conditions.iter().find(|c| c.type_ == "Ready").cloned();
    MarkedUnknown {
        conditions,
        changed,
        ready,
    }
}

/// The status patch that writes `changed` (strategic merge: conditions merge by type), under a
/// resourceVersion precondition, as upstream's UpdateStatus of the cached node would conflict.
pub fn status_patch(resource_version: &str, changed: &[NodeCondition]) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"conditions": changed},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const GRACE: Grace = Grace {
        monitor: SignedDuration::from_secs(50),
        startup: SignedDuration::from_secs(60),
    };

    fn node(ready: Option<(&str, &str, &str)>) -> Node {
        let conditions: Vec<Value> = ready
            .into_iter()
            .map(|(status, heartbeat, transition)| {
                json!({"type": "Ready", "status": status, "lastHeartbeatTime": heartbeat,
                       "lastTransitionTime": transition})
            })
            .chain([json!({"type": "MemoryPressure", "status": "False",
                           "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                           "lastTransitionTime": "2026-01-01T00:00:00Z"})])
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "resourceVersion": "5",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": conditions},
        }))
        .expect("node")
    }

    fn lease(renew: &str, rv: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": rv},
            "spec": {"holderIdentity": "n1", "renewTime": renew},
        }))
        .expect("lease")
    }

    #[test]
    fn a_node_seen_for_the_first_time_counts_as_alive_now() {
        let now = t("2026-01-01T01:00:00Z");
        let n = node(Some((
            "True",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        )));
        let o = observe(&n, None, None, GRACE, now);
        assert_eq!(o.health.probe, now);
        assert_eq!(o.grace, GRACE.monitor);
        assert!(!o.stale);
        assert_eq!(o.current_ready.map(|c| c.status), Some("True".into()));
    }

    #[test]
    fn without_a_new_heartbeat_or_lease_renewal_the_node_goes_stale_after_the_grace_period() {
        let start = t("2026-01-01T01:00:00Z");
        let n = node(Some((
            "True",
            "2026-01-01T00:59:59Z",
            "2026-01-01T00:00:00Z",
        )));
        let first = observe(&n, None, None, GRACE, start);
        let at_grace = observe(
            &n,
            Some(&first.health),
            None,
            GRACE,
            t("2026-01-01T01:00:50Z"),
        );
        assert!(
            !at_grace.stale,
            "exactly at the grace period is not yet stale"
        );
        assert_eq!(at_grace.health.probe, start);
        let after = observe(
            &n,
            Some(&first.health),
            None,
            GRACE,
            t("2026-01-01T01:00:51Z"),
        );
        assert!(after.stale);
    }

    #[test]
    fn a_new_heartbeat_refreshes_the_probe_and_a_new_transition_time_the_transition() {
        let n1 = node(Some((
            "True",
            "2026-01-01T00:00:10Z",
            "2026-01-01T00:00:00Z",
        )));
        let first = observe(&n1, None, None, GRACE, t("2026-01-01T00:01:00Z"));
        let n2 = node(Some((
            "True",
            "2026-01-01T00:01:30Z",
            "2026-01-01T00:00:00Z",
        )));
        let second = observe(
            &n2,
            Some(&first.health),
            None,
            GRACE,
            t("2026-01-01T00:01:40Z"),
        );
        assert_eq!(second.health.probe, t("2026-01-01T00:01:40Z"));
        assert_eq!(second.health.ready_transition, t("2026-01-01T00:01:00Z"));
        let n3 = node(Some((
            "False",
            "2026-01-01T00:02:00Z",
            "2026-01-01T00:02:00Z",
        )));
        let third = observe(
            &n3,
            Some(&second.health),
            None,
            GRACE,
            t("2026-01-01T00:02:05Z"),
        );
        assert_eq!(third.health.ready_transition, t("2026-01-01T00:02:05Z"));
    }

    #[test]
    fn a_renewed_lease_keeps_the_node_alive_without_status_updates() {
        let n = node(Some((
            "True",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        )));
        let l1 = lease("2026-01-01T00:00:10.000000Z", "100");
        let mut h = observe(&n, None, Some(&l1), GRACE, t("2026-01-01T00:00:10Z")).health;
        // Renewed every 10 s for five minutes: never stale.
        for i in 1..30 {
            let now = t("2026-01-01T00:00:10Z") + SignedDuration::from_secs(10 * i);
            let renew = now.to_string();
            let l = lease(&renew, &(100 + i).to_string());
            let o = observe(&n, Some(&h), Some(&l), GRACE, now);
            assert!(!o.stale, "stale at {now}");
            assert_eq!(o.health.probe, now);
            h = o.health;
        }
        // The kubelet stops: the same lease seen again is no sign of life.
        let last = h.lease.clone().expect("lease remembered");
        let l = lease(
            &last.renew_time.expect("renew").to_string(),
            &last.resource_version,
        );
        let later = h.probe + SignedDuration::from_secs(51);
        assert!(observe(&n, Some(&h), Some(&l), GRACE, later).stale);
    }

    #[test]
    fn a_lease_renewed_backwards_is_no_sign_of_life() {
        let n = node(Some((
            "True",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        )));
        let l1 = lease("2026-01-01T00:01:00.000000Z", "2");
        let h = observe(&n, None, Some(&l1), GRACE, t("2026-01-01T00:01:00Z")).health;
        let l0 = lease("2026-01-01T00:00:30.000000Z", "3");
        let o = observe(&n, Some(&h), Some(&l0), GRACE, t("2026-01-01T00:02:00Z"));
        assert_eq!(o.health.probe, t("2026-01-01T00:01:00Z"));
        assert!(o.stale);
    }

    #[test]
    fn a_node_that_never_posted_status_gets_the_startup_grace_from_its_creation() {
        let n = node(None);
        let o = observe(&n, None, None, GRACE, t("2026-01-01T00:00:59Z"));
        assert_eq!(o.grace, GRACE.startup);
        assert_eq!(o.observed_ready.status, "Unknown");
        assert!(o.current_ready.is_none());
        // The probe timestamp is the node's creation, so the startup grace runs from then.
        assert_eq!(o.health.probe, t("2026-01-01T00:00:00Z"));
        assert!(!o.stale);
        let later = observe(&n, Some(&o.health), None, GRACE, t("2026-01-01T00:02:00Z"));
        assert!(later.stale);
    }

    #[test]
    fn marking_unknown_sets_reasons_and_adds_missing_conditions() {
        let now = t("2026-01-01T00:05:00Z");
        let n = node(Some((
            "True",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        )));
        let m = mark_unknown(&n, now);
        let ready = m.ready.clone().expect("ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(t("2026-01-01T00:00:00Z")))
        );
        let types: Vec<&str> = m.changed.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
        );
        let disk = m
            .changed
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .expect("disk");
        assert_eq!(disk.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert_eq!(
            disk.message.as_deref(),
            Some("Kubelet never posted node status.")
        );
        assert_eq!(
            disk.last_heartbeat_time,
            Some(Time(t("2026-01-01T00:00:00Z")))
        );
        assert_eq!(m.conditions.len(), 4);
    }

    #[test]
    fn conditions_already_unknown_are_not_rewritten() {
        let n = node(Some((
            "Unknown",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        )));
        let m = mark_unknown(&n, t("2026-01-01T00:05:00Z"));
        assert!(m.changed.iter().all(|c| c.type_ != "Ready"));
        assert_eq!(
            m.ready.and_then(|c| c.last_transition_time),
            Some(Time(t("2026-01-01T00:00:00Z")))
        );
    }

    #[test]
    fn the_status_patch_merges_conditions_under_a_precondition() {
        let m = mark_unknown(&node(None), t("2026-01-01T00:05:00Z"));
        let p = status_patch("5", &m.changed);
        assert_eq!(p["metadata"]["resourceVersion"], "5");
        assert_eq!(p["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(p["status"]["conditions"][0]["status"], "Unknown");
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:05:00Z"
        );
    }
}
