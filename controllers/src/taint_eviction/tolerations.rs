//! Which pods a node's NoExecute taints evict, and when (upstream `processPodOnNode`,
//! `GetMatchingTolerations`, `getMinTolerationTime` and `Toleration.ToleratesTaint`).
//!
//! A pod that does not tolerate every NoExecute taint of its node is deleted at once. One that
//! tolerates them all is deleted after the shortest `tolerationSeconds` among the tolerations
//! used, or never if none of them has a time.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cache::Pod;

/// `Toleration.ToleratesTaint` with the TaintTolerationComparisonOperators gate off (its v1.37
/// default): `Lt` and `Gt` tolerate nothing.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// `GetMatchingTolerations`: for every taint the first toleration that tolerates it, or None when
/// some taint is not tolerated.
pub fn matching_tolerations<'a>(
    taints: &[Taint],
    tolerations: &'a [Toleration],
) -> Option<Vec<&'a Toleration>> {
    taints
        .iter()
        .map(|taint| tolerations.iter().find(|t| tolerates(t, taint)))
        .collect()
}

/// `getMinTolerationTime`: the shortest `tolerationSeconds` (zero or less: at once), or None for
/// "forever" when no used toleration has a time. No tolerations at all means at once.
pub fn min_toleration_time(used: &[&Toleration]) -> Option<Duration> {
    if used.is_empty() {
        return Some(Duration::ZERO);
    }
    let mut min: Option<i64> = None;
    for t in used {
        if let Some(secs) = t.toleration_seconds {
            if secs <= 0 {
                return Some(Duration::ZERO);
            }
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    min.map(|s| Duration::from_secs(s.unsigned_abs()))
}

/// The NoExecute taints among `taints`.
pub fn no_execute(taints: &[Taint]) -> Vec<Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect()
}

/// What to do with one pod on a node with NoExecute taints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not every taint is tolerated: cancel any scheduled deletion and delete now.
    EvictNow,
    /// Tolerated forever: cancel any scheduled deletion.
    Cancel,
    /// A deletion already scheduled comes no later: keep it.
    Keep,
    /// Schedule the deletion (replacing the one scheduled, if `replace`); the timer runs for
    /// `fire_at - created_at`.
    Schedule {
        created_at: Instant,
        fire_at: Instant,
        replace: bool,
    },
}

/// `processPodOnNode` for a pod with `tolerations` on a node with the NoExecute `taints` (never
/// empty), at `now`, given when the pod's pending timed deletion (if any) was scheduled.
pub fn decide(
    tolerations: &[Toleration],
    taints: &[Taint],
    scheduled_at: Option<Instant>,
    now: Instant,
) -> Decision {
    let Some(used) = matching_tolerations(taints, tolerations) else {
        return Decision::EvictNow;
    };
    let Some(min) = min_toleration_time(&used) else {
        return Decision::Cancel;
    };
    let trigger = now + min;
    match scheduled_at {
        // Upstream keeps the earlier deadline, counted from when it was first scheduled.
        Some(created) if created + min < trigger => Decision::Keep,
        Some(created) => Decision::Schedule {
            created_at: created,
            fire_at: trigger,
            replace: true,
        },
        None => Decision::Schedule {
            created_at: now,
            fire_at: trigger,
            replace: false,
        },
    }
}

pub const DISRUPTION_REASON: &str = "DeletionByTaintManager";
pub const DISRUPTION_MESSAGE: &str = "Taint manager: deleting due to NoExecute taint";

/// The status patch that adds the `DisruptionTarget` condition before the deletion
/// (`addConditionAndDeletePod`), or None when the pod already has it as it would be set.
/// `UpdatePodCondition` semantics: the transition time moves only with the status.
pub fn disruption_patch(pod: &Pod, now: Timestamp) -> Option<Value> {
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"));
    let transition = match previous {
        Some(p) if p.status == "True" => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    if let Some(p) = previous
        && p.status == "True"
        && p.reason.as_deref() == Some(DISRUPTION_REASON)
        && p.message.as_deref() == Some(DISRUPTION_MESSAGE)
        && p.last_probe_time.is_none()
    {
        return None;
    }
    let generation = pod.metadata.generation.unwrap_or_default();
    let mut cond = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": DISRUPTION_REASON,
        "message": DISRUPTION_MESSAGE,
        "lastTransitionTime": transition,
    });
    // PodObservedGenerationTracking is GA.
    if generation != 0 {
        cond["observedGeneration"] = json!(generation);
    }
    Some(json!({
        "metadata": {"uid": pod.metadata.uid},
        "status": {"conditions": [cond]},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str, secs: Option<i64>) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            toleration_seconds: secs,
        }
    }

    const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

    #[test]
    fn toleration_matching_follows_key_operator_value_and_effect() {
        let t = taint("k", "v", "NoExecute");
        assert!(tolerates(&tol("k", "Equal", "v", "NoExecute", None), &t));
        assert!(tolerates(&tol("k", "", "v", "", None), &t));
        assert!(!tolerates(&tol("k", "Equal", "w", "NoExecute", None), &t));
        assert!(tolerates(&tol("k", "Exists", "", "", None), &t));
        assert!(
            tolerates(&tol("", "Exists", "", "", None), &t),
            "tolerates everything"
        );
        assert!(!tolerates(&tol("k", "Exists", "", "NoSchedule", None), &t));
        assert!(!tolerates(&tol("other", "Exists", "", "", None), &t));
        // Comparison operators are behind an alpha gate that is off.
        let n = taint("k", "5", "NoExecute");
        assert!(!tolerates(&tol("k", "Gt", "3", "", None), &n));
        assert!(!tolerates(&tol("k", "Bogus", "5", "", None), &n));
    }

    #[test]
    fn every_taint_must_be_tolerated() {
        let taints = [taint("a", "", "NoExecute"), taint("b", "", "NoExecute")];
        let only_a = [tol("a", "Exists", "", "", None)];
        assert!(matching_tolerations(&taints, &only_a).is_none());
        assert!(matching_tolerations(&taints, &[]).is_none());
        let both = [
            tol("a", "Exists", "", "", Some(30)),
            tol("b", "Exists", "", "", None),
        ];
        assert_eq!(
            matching_tolerations(&taints, &both).map(|v| v.len()),
            Some(2)
        );
    }

    #[test]
    fn the_shortest_toleration_time_wins_and_no_time_is_forever() {
        let a = tol("a", "Exists", "", "", Some(300));
        let b = tol("b", "Exists", "", "", Some(5));
        let c = tol("c", "Exists", "", "", None);
        let z = tol("d", "Exists", "", "", Some(-1));
        assert_eq!(
            min_toleration_time(&[&a, &b, &c]),
            Some(Duration::from_secs(5))
        );
        assert_eq!(min_toleration_time(&[&c]), None);
        assert_eq!(min_toleration_time(&[&a, &z]), Some(Duration::ZERO));
        assert_eq!(min_toleration_time(&[]), Some(Duration::ZERO));
    }

    #[test]
    fn an_untolerated_taint_evicts_at_once() {
        let now = Instant::now();
        let taints = [taint(UNREACHABLE, "", "NoExecute")];
        let other = [tol(
            "node.kubernetes.io/not-ready",
            "Exists",
            "",
            "NoExecute",
            Some(300),
        )];
        assert_eq!(decide(&other, &taints, None, now), Decision::EvictNow);
    }

    #[test]
    fn a_timed_toleration_schedules_the_deletion_and_a_forever_one_cancels_it() {
        let now = Instant::now();
        let taints = [taint(UNREACHABLE, "", "NoExecute")];
        let timed = [tol(UNREACHABLE, "Exists", "", "NoExecute", Some(5))];
        assert_eq!(
            decide(&timed, &taints, None, now),
            Decision::Schedule {
                created_at: now,
                fire_at: now + Duration::from_secs(5),
                replace: false
            }
        );
        let forever = [tol(UNREACHABLE, "Exists", "", "NoExecute", None)];
        assert_eq!(decide(&forever, &taints, None, now), Decision::Cancel);
    }

    #[test]
    fn an_earlier_scheduled_deletion_is_kept() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(2);
        let taints = [taint(UNREACHABLE, "", "NoExecute")];
        let timed = [tol(UNREACHABLE, "Exists", "", "NoExecute", Some(5))];
        assert_eq!(decide(&timed, &taints, Some(t0), later), Decision::Keep);
        // Scheduled this very instant: replaced with the same deadline.
        assert_eq!(
            decide(&timed, &taints, Some(later), later),
            Decision::Schedule {
                created_at: later,
                fire_at: later + Duration::from_secs(5),
                replace: true
            }
        );
    }

    #[test]
    fn only_no_execute_taints_count() {
        let taints = [
            taint("a", "", "NoSchedule"),
            taint("b", "", "NoExecute"),
            taint("c", "", "PreferNoSchedule"),
        ];
        assert_eq!(no_execute(&taints), vec![taint("b", "", "NoExecute")]);
    }

    fn pod(conditions: Value, generation: i64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": generation},
            "spec": {"containers": []},
            "status": {"conditions": conditions},
        }))
        .expect("pod")
    }

    #[test]
    fn the_disruption_target_condition_is_added_with_upstream_reason_and_generation() {
        let now: Timestamp = "2026-02-01T00:00:00Z".parse().expect("time");
        let patch = disruption_patch(&pod(json!([]), 3), now).expect("patch");
        assert_eq!(
            patch,
            json!({"metadata": {"uid": "u1"}, "status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": "2026-02-01T00:00:00Z",
                "observedGeneration": 3}]}})
        );
    }

    #[test]
    fn an_identical_disruption_target_condition_is_not_written_again() {
        let existing = json!([{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        assert!(disruption_patch(&pod(existing, 1), Timestamp::UNIX_EPOCH).is_none());
        let other = json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let patch = disruption_patch(&pod(other, 1), Timestamp::UNIX_EPOCH).expect("patch");
        // Same status: the transition time stays.
        assert_eq!(
            patch["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }
}
