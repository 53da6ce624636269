//! Deployment conditions and progress estimation. Mirrors kubernetes/kubernetes
//! `pkg/controller/deployment/progress.go` and the condition helpers of
//! `pkg/controller/deployment/util/deployment_util.go`.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::util::{d_replicas, name, progress_deadline};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

// Upstream reasons (deployment_util.go).
pub const NEW_RS_NEW_REPLICAS_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const PAUSED_DEPLOY_REASON: &str = "DeploymentPaused";
pub const RESUMED_DEPLOY_REASON: &str = "DeploymentResumed";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Upstream `NewDeploymentCondition`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream `GetDeploymentCondition`.
pub fn get_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

/// Upstream `SetDeploymentCondition`: a condition with the same status and reason is left as is;
/// with the same status only, its transition time is kept.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let type_ = cond.type_.clone().unwrap_or_default();
    if let Some(cur) = get_condition(Some(status), &type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

/// Upstream `RemoveDeploymentCondition`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

/// Upstream `DeploymentComplete`: every replica is updated and available, and the controller
/// has observed the latest spec.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = d_replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Upstream `DeploymentProgressing`: more updated, ready or available replicas, or fewer old
/// ones, than the last recorded status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Upstream `DeploymentTimedOut`: no progress reported for longer than the deadline.
pub fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = get_condition(Some(new), PROGRESSING) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => return false,
        Some(TIMED_OUT_REASON) => return true,
        _ => {}
    }
    let Some(from) = cond.last_update_time.as_ref() else {
        return false;
    };
    from.0
        .checked_add(SignedDuration::from_secs(i64::from(deadline)))
        .is_ok_and(|t| t < now)
}

/// Upstream `ReplicaSetToDeploymentCondition`.
fn rs_failure_conditions(rs: &ReplicaSet) -> Vec<DeploymentCondition> {
    rs.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_.as_deref() == Some(REPLICA_FAILURE))
        .map(|c| DeploymentCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            last_transition_time: c.last_transition_time.clone(),
            last_update_time: c.last_transition_time.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

/// Upstream `getReplicaFailures`: the new ReplicaSet's failure first, else any ReplicaSet's.
pub fn replica_failures(
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> Vec<DeploymentCondition> {
    if let Some(n) = new_rs {
        let c = rs_failure_conditions(n);
        if !c.is_empty() {
            return c;
        }
    }
    all.iter().flat_map(rs_failure_conditions).collect()
}

/// Upstream `syncRolloutStatus`'s decisions: the status with the Progressing (and
/// ReplicaFailure) conditions estimated from `calculated` (the output of `calculate_status`).
pub fn rollout_status(
    d: &Deployment,
    mut new: DeploymentStatus,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let has_deadline = progress_deadline(d).is_some();
    if !has_deadline {
        remove_condition(&mut new, PROGRESSING);
    }
    let current = get_condition(d.status.as_ref(), PROGRESSING).cloned();
    let complete_already = new.replicas == new.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE_REASON));
    let d_name = name(&d.metadata);
    let subject = |what: &str| match new_rs {
        Some(rs) => format!("ReplicaSet {:?} {what}", name(&rs.metadata)),
        None => format!("Deployment {d_name:?} {what}"),
    };
    if has_deadline && !complete_already {
        if deployment_complete(d, &new) {
            let msg = subject("has successfully progressed.");
            set_condition(
                &mut new,
                new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE_REASON, msg, now),
            );
        } else if deployment_progressing(d, &new) {
            let msg = subject("is progressing.");
            let mut cond = new_condition(PROGRESSING, "True", RS_UPDATED_REASON, msg, now);
            // Unlike other conditions, progress refreshes lastUpdateTime even with the same
            // reason; only a True → True change keeps the transition time.
            if let Some(cur) = &current {
                if cur.status.as_deref() == Some("True") {
                    cond.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut new, PROGRESSING);
            }
            set_condition(&mut new, cond);
        } else if deployment_timed_out(d, &new, now) {
            let msg = subject("has timed out progressing.");
            set_condition(
                &mut new,
                new_condition(PROGRESSING, "False", TIMED_OUT_REASON, msg, now),
            );
        }
    }
    match replica_failures(all, new_rs).into_iter().next() {
        Some(c) => set_condition(&mut new, c),
        None => remove_condition(&mut new, REPLICA_FAILURE),
    }
    new
}

/// What to do after a status that needed no write (upstream `requeueStuckDeployment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    No,
    /// Less than a second left: requeue rate-limited now.
    RateLimited,
    After(Duration),
}

/// Upstream `requeueStuckDeployment`: a rollout that shows no progress is checked again when its
/// deadline passes, so it times out without waiting for a resync.
pub fn requeue_stuck(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Requeue {
    let Some(deadline) = progress_deadline(d) else {
        return Requeue::No;
    };
    let Some(cur) = get_condition(d.status.as_ref(), PROGRESSING) else {
        return Requeue::No;
    };
    if deployment_complete(d, new) || cur.reason.as_deref() == Some(TIMED_OUT_REASON) {
        return Requeue::No;
    }
    let Some(updated) = cur.last_update_time.as_ref() else {
        return Requeue::No;
    };
    let Ok(due) = updated
        .0
        .checked_add(SignedDuration::from_secs(i64::from(deadline)))
    else {
        return Requeue::No;
    };
    let after = due.duration_since(now);
    if after < SignedDuration::from_secs(1) {
        return Requeue::RateLimited;
    }
    // Plus a second against clock skew in the delay, as upstream.
    Requeue::After(Duration::from_secs(after.as_secs().unsigned_abs() + 1))
}

/// Upstream `checkPausedConditions`: the Progressing condition to record when a Deployment is
/// paused or resumed, if any (never over a reported timeout).
pub fn paused_condition(d: &Deployment, now: Timestamp) -> Option<DeploymentCondition> {
    progress_deadline(d)?;
    let cond = get_condition(d.status.as_ref(), PROGRESSING);
    let reason = cond.and_then(|c| c.reason.as_deref());
    if reason == Some(TIMED_OUT_REASON) {
        return None;
    }
    let paused_exists = reason == Some(PAUSED_DEPLOY_REASON);
    let paused = d.spec.paused.unwrap_or(false);
    if paused && !paused_exists {
        Some(new_condition(
            PROGRESSING,
            "Unknown",
            PAUSED_DEPLOY_REASON,
            "Deployment is paused",
            now,
        ))
    } else if !paused && paused_exists {
        Some(new_condition(
            PROGRESSING,
            "Unknown",
            RESUMED_DEPLOY_REASON,
            "Deployment is resumed",
            now,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::util::fixtures::*;
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap_or_default()
    }

    fn with_deadline(mut d: Deployment, secs: i32) -> Deployment {
        {
            let s = &mut d.spec;
            s.progress_deadline_seconds = Some(secs);
        }
        d
    }

    fn status(replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            observed_generation: Some(0),
            ..Default::default()
        }
    }

    fn with_progressing(mut s: DeploymentStatus, reason: &str, at: i64) -> DeploymentStatus {
        let status = if reason == TIMED_OUT_REASON {
            "False"
        } else {
            "True"
        };
        set_condition(
            &mut s,
            new_condition(PROGRESSING, status, reason, "", t(at)),
        );
        s
    }

    fn reason(s: &DeploymentStatus) -> Option<String> {
        get_condition(Some(s), PROGRESSING).and_then(|c| c.reason.clone())
    }

    #[test]
    fn setting_a_condition_with_same_status_and_reason_changes_nothing() {
        let mut s = DeploymentStatus::default();
        set_condition(&mut s, new_condition(AVAILABLE, "True", "A", "m", t(0)));
        set_condition(&mut s, new_condition(AVAILABLE, "True", "A", "other", t(5)));
        let c = get_condition(Some(&s), AVAILABLE)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.message.as_deref(), Some("m"));
        set_condition(&mut s, new_condition(AVAILABLE, "True", "B", "m", t(9)));
        let c = get_condition(Some(&s), AVAILABLE)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.last_transition_time, Some(Time(t(0))));
        assert_eq!(c.last_update_time, Some(Time(t(9))));
        set_condition(&mut s, new_condition(AVAILABLE, "False", "B", "m", t(10)));
        let c = get_condition(Some(&s), AVAILABLE)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.last_transition_time, Some(Time(t(10))));
        assert_eq!(s.conditions.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn a_complete_rollout_reports_new_replica_set_available() {
        let mut d = with_deadline(deployment(3, int(1), int(1)), 600);
        d.status = Some(with_progressing(status(4, 3, 3), RS_UPDATED_REASON, 0));
        let new = rs("foo-abc", 1, 3, 3);
        let s = rollout_status(
            &d,
            status(3, 3, 3),
            std::slice::from_ref(&new),
            Some(&new),
            t(10),
        );
        assert_eq!(reason(&s).as_deref(), Some(NEW_RS_AVAILABLE_REASON));
        let msg = get_condition(Some(&s), PROGRESSING).and_then(|c| c.message.clone());
        assert_eq!(
            msg.as_deref(),
            Some("ReplicaSet \"foo-abc\" has successfully progressed.")
        );
    }

    #[test]
    fn progress_refreshes_the_update_time_and_keeps_the_transition_time() {
        let mut d = with_deadline(deployment(3, int(1), int(1)), 600);
        d.status = Some(with_progressing(status(4, 1, 2), RS_UPDATED_REASON, 0));
        let s = rollout_status(&d, status(4, 2, 2), &[], None, t(50));
        let c = get_condition(Some(&s), PROGRESSING)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.reason.as_deref(), Some(RS_UPDATED_REASON));
        assert_eq!(c.last_update_time, Some(Time(t(50))));
        assert_eq!(c.last_transition_time, Some(Time(t(0))));
        assert_eq!(
            c.message.as_deref(),
            Some("Deployment \"foo\" is progressing.")
        );
    }

    #[test]
    fn no_progress_past_the_deadline_times_out() {
        let mut d = with_deadline(deployment(3, int(1), int(1)), 10);
        d.status = Some(with_progressing(status(4, 1, 2), RS_UPDATED_REASON, 0));
        let s = rollout_status(
            &d,
            with_progressing(status(4, 1, 2), RS_UPDATED_REASON, 0),
            &[],
            None,
            t(5),
        );
        assert_eq!(reason(&s).as_deref(), Some(RS_UPDATED_REASON));
        let s = rollout_status(
            &d,
            with_progressing(status(4, 1, 2), RS_UPDATED_REASON, 0),
            &[],
            None,
            t(11),
        );
        assert_eq!(reason(&s).as_deref(), Some(TIMED_OUT_REASON));
        let c = get_condition(Some(&s), PROGRESSING)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.status.as_deref(), Some("False"));
    }

    #[test]
    fn without_a_deadline_the_progressing_condition_is_removed() {
        let mut d = deployment(3, int(1), int(1));
        {
            let s = &mut d.spec;
            s.progress_deadline_seconds = Some(i32::MAX);
        }
        let s = rollout_status(
            &d,
            with_progressing(status(3, 3, 3), RS_UPDATED_REASON, 0),
            &[],
            None,
            t(1),
        );
        assert_eq!(reason(&s), None);
    }

    #[test]
    fn a_stuck_rollout_is_requeued_at_its_deadline() {
        let mut d = with_deadline(deployment(3, int(1), int(1)), 60);
        d.status = Some(with_progressing(status(4, 1, 2), RS_UPDATED_REASON, 0));
        assert_eq!(
            requeue_stuck(&d, &status(4, 1, 2), t(20)),
            Requeue::After(Duration::from_secs(41))
        );
        assert_eq!(
            requeue_stuck(&d, &status(4, 1, 2), t(60)),
            Requeue::RateLimited
        );
        assert_eq!(requeue_stuck(&d, &status(3, 3, 3), t(20)), Requeue::No);
        d.status = Some(with_progressing(status(4, 1, 2), TIMED_OUT_REASON, 0));
        assert_eq!(requeue_stuck(&d, &status(4, 1, 2), t(20)), Requeue::No);
    }

    #[test]
    fn pausing_and_resuming_record_unknown_progress_but_never_over_a_timeout() {
        let mut d = with_deadline(deployment(3, int(1), int(1)), 60);
        {
            let s = &mut d.spec;
            s.paused = Some(true);
        }
        let c = paused_condition(&d, t(0));
        assert_eq!(
            c.as_ref().and_then(|c| c.reason.as_deref()),
            Some(PAUSED_DEPLOY_REASON)
        );
        d.status = Some(DeploymentStatus {
            conditions: c.map(|c| vec![c]),
            ..Default::default()
        });
        assert!(paused_condition(&d, t(1)).is_none());
        {
            let s = &mut d.spec;
            s.paused = Some(false);
        }
        let c = paused_condition(&d, t(2));
        assert_eq!(
            c.as_ref().and_then(|c| c.reason.as_deref()),
            Some(RESUMED_DEPLOY_REASON)
        );
        assert_eq!(c.and_then(|c| c.status), Some("Unknown".to_string()));
        d.status = Some(with_progressing(status(1, 1, 1), TIMED_OUT_REASON, 0));
        {
            let s = &mut d.spec;
            s.paused = Some(true);
        }
        assert!(paused_condition(&d, t(3)).is_none());
    }

    #[test]
    fn a_replica_set_failure_is_surfaced_and_cleared() {
        let d = with_deadline(deployment(3, int(1), int(1)), 60);
        let mut bad = rs("foo-abc", 1, 3, 0);
        if let Some(s) = bad.status.as_mut() {
            s.conditions = Some(vec![k8s_openapi::api::apps::v1::ReplicaSetCondition {
                type_: Some(REPLICA_FAILURE.into()),
                status: Some("True".into()),
                reason: Some("FailedCreate".into()),
                ..Default::default()
            }]);
        }
        let s = rollout_status(&d, status(0, 0, 0), &[bad.clone()], Some(&bad), t(0));
        assert!(get_condition(Some(&s), REPLICA_FAILURE).is_some());
        let mut with = status(0, 0, 0);
        set_condition(
            &mut with,
            new_condition(REPLICA_FAILURE, "True", "x", "", t(0)),
        );
        let s = rollout_status(&d, with, &[], None, t(0));
        assert!(get_condition(Some(&s), REPLICA_FAILURE).is_none());
    }
}
