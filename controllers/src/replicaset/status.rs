//! ReplicaSet status, as pure functions: upstream `calculateStatus` and the no-change check of
//! `updateReplicaSetStatus` (`pkg/controller/replicaset/replica_set_utils.go`), and the
//! minReadySeconds resync of `syncReplicaSet`.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Pod;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pod_util::{Selector, is_pod_available, is_pod_ready};

/// Upstream `apps.ReplicaSetReplicaFailure`.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
/// Upstream `FailedCreatePodReason` / `FailedDeletePodReason` (also the condition reasons).
pub const FAILED_CREATE: &str = "FailedCreate";
pub const FAILED_DELETE: &str = "FailedDelete";

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Upstream `calculateStatus`: counts over the active pods the ReplicaSet owns, the terminating
/// ones it owns (`terminatingReplicas`, feature `DeploymentReplicaSetTerminatingReplicas`, beta and
/// on since 1.35), and the `ReplicaFailure` condition: added (once) when managing replicas failed,
/// removed once it succeeds. `observedGeneration` is set by [`with_observed_generation`].
pub fn calculate_status(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    terminating: usize,
    manage_error: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let mut status = rs.status.clone().unwrap_or_default();
    let spec = &rs.spec;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = Selector::from_labels(
        spec.template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
    );
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in active {
        if template_labels.matches(pod.metadata.labels.as_ref()) {
            fully_labeled += 1;
        }
        if is_pod_ready(pod) {
            ready += 1;
            if is_pod_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let has_failure = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_.as_deref() == Some(REPLICA_FAILURE));
    match manage_error {
        Some(message) if !has_failure => {
            let replicas = spec.replicas.unwrap_or(1);
            let diff = i64::from(count(active.len())) - i64::from(replicas);
            // Upstream leaves the reason empty when the counts already match (an error raced).
            let reason = match diff.signum() {
                -1 => FAILED_CREATE,
                1 => FAILED_DELETE,
                _ => "",
            };
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: Some(REPLICA_FAILURE.into()),
                    status: Some("True".into()),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(now)),
                });
        }
        None if has_failure => {
            if let Some(conditions) = status.conditions.as_mut() {
                conditions.retain(|c| c.type_.as_deref() != Some(REPLICA_FAILURE));
            }
        }
        _ => {}
    }
    status.replicas = count(active.len());
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.terminating_replicas = Some(count(terminating));
    status
}

/// The apiserver drops zero-valued optional counters; compare them as upstream's int32 fields.
fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Upstream `updateReplicaSetStatus`'s early return: nothing to write when the counts, conditions
/// and observed generation are already what the cache holds.
pub fn needs_update(rs: &ReplicaSet, new: &ReplicaSetStatus) -> bool {
    let old = rs.status.clone().unwrap_or_default();
    let conditions = |s: &ReplicaSetStatus| s.conditions.clone().unwrap_or_default();
    !(old.replicas == new.replicas
        && n(old.fully_labeled_replicas) == n(new.fully_labeled_replicas)
        && n(old.ready_replicas) == n(new.ready_replicas)
        && n(old.available_replicas) == n(new.available_replicas)
        && old.terminating_replicas == new.terminating_replicas
        && rs.metadata.generation == old.observed_generation
        && conditions(&old) == conditions(new))
}

/// The status to write: `new` with `observedGeneration` = `metadata.generation`.
pub fn with_observed_generation(rs: &ReplicaSet, mut new: ReplicaSetStatus) -> ReplicaSetStatus {
    new.observed_generation = rs.metadata.generation;
    new
}

/// Upstream's "last line of defense" resync: with minReadySeconds, when every replica is ready but
/// not all are available yet, look again after minReadySeconds.
pub fn resync_after(rs: &ReplicaSet, status: &ReplicaSetStatus) -> Option<Duration> {
    let spec = &rs.spec;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1);
    if min_ready > 0
        && n(status.ready_replicas) == replicas
        && n(status.available_replicas) != replicas
    {
        return Some(Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodStatus;
    use jiff::SignedDuration;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use std::collections::BTreeMap;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "fe")])),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
            },
            status: None,
        }
    }

    fn pod(full_labels: bool, ready_for: Option<i64>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.labels = Some(if full_labels {
            labels(&[("app", "web"), ("tier", "fe")])
        } else {
            labels(&[("app", "web")])
        });
        p.status = Some(PodStatus {
            conditions: ready_for.map(|s| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(
                        now().checked_sub(SignedDuration::from_secs(s)).unwrap(),
                    )),
                    ..PodCondition::default()
                }]
            }),
            ..PodStatus::default()
        });
        Arc::new(p)
    }

    #[test]
    fn counts_replicas_fully_labeled_ready_and_available_pods() {
        let pods = vec![
            pod(true, Some(100)),
            pod(true, Some(1)),
            pod(false, Some(100)),
            pod(true, None),
        ];
        let s = calculate_status(&rs(4, 10), &pods, 2, None, now());
        assert_eq!(s.replicas, 4);
        assert_eq!(s.fully_labeled_replicas, Some(3));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.terminating_replicas, Some(2));
        assert_eq!(s.conditions, None);
    }

    #[test]
    fn a_create_error_adds_a_failed_create_condition_once() {
        let s = calculate_status(&rs(3, 0), &[pod(true, None)], 0, Some("quota"), now());
        let c = &s.conditions.clone().unwrap()[0];
        assert_eq!(c.type_.as_deref(), Some(REPLICA_FAILURE));
        assert_eq!(c.status.as_deref(), Some("True"));
        assert_eq!(c.reason.as_deref(), Some(FAILED_CREATE));
        assert_eq!(c.message.as_deref(), Some("quota"));
        // Upstream keeps the first condition (and its time and message) while errors continue.
        let mut again = rs(3, 0);
        again.status = Some(s.clone());
        let later = now().checked_add(SignedDuration::from_secs(60)).unwrap();
        let s2 = calculate_status(&again, &[pod(true, None)], 0, Some("other"), later);
        assert_eq!(s2.conditions, s.conditions);
    }

    #[test]
    fn a_delete_error_adds_a_failed_delete_condition() {
        let pods = vec![pod(true, None), pod(true, None)];
        let s = calculate_status(&rs(1, 0), &pods, 0, Some("forbidden"), now());
        assert_eq!(
            s.conditions.unwrap()[0].reason.as_deref(),
            Some(FAILED_DELETE)
        );
    }

    #[test]
    fn success_clears_the_replica_failure_condition() {
        let mut failing = rs(1, 0);
        failing.status = Some(calculate_status(&failing, &[], 0, Some("quota"), now()));
        let s = calculate_status(&failing, &[pod(true, None)], 0, None, now());
        assert_eq!(s.conditions, Some(vec![]));
    }

    #[test]
    fn an_unchanged_status_with_current_generation_is_not_written() {
        let mut r = rs(1, 0);
        let s = with_observed_generation(
            &r,
            calculate_status(&r, &[pod(true, Some(5))], 0, None, now()),
        );
        assert!(needs_update(&r, &s));
        r.status = Some(s.clone());
        assert!(!needs_update(&r, &s));
        r.metadata.generation = Some(3);
        assert!(needs_update(&r, &s), "a new generation must be observed");
    }

    #[test]
    fn ready_but_not_yet_available_replicas_resync_after_min_ready_seconds() {
        let r = rs(2, 30);
        let s = calculate_status(
            &r,
            &[pod(true, Some(100)), pod(true, Some(1))],
            0,
            None,
            now(),
        );
        assert_eq!(resync_after(&r, &s), Some(Duration::from_secs(30)));
        let all = calculate_status(
            &r,
            &[pod(true, Some(100)), pod(true, Some(90))],
            0,
            None,
            now(),
        );
        assert_eq!(resync_after(&r, &all), None);
        let r0 = rs(2, 0);
        assert_eq!(resync_after(&r0, &s), None);
    }
}
