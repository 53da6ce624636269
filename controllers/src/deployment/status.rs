//! The Deployment status from its ReplicaSets. Mirrors `calculateStatus` in kubernetes/kubernetes
//! `pkg/controller/deployment/sync.go`.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use k8s_openapi::jiff::Timestamp;

use super::progress::{
    AVAILABLE, MINIMUM_REPLICAS_AVAILABLE, MINIMUM_REPLICAS_UNAVAILABLE, new_condition,
    set_condition,
};
use super::util::{
    actual_replica_count, available_replica_count, d_replicas, max_unavailable,
    ready_replica_count, replica_count, terminating_replica_count,
};

/// Upstream `calculateStatus`: counts summed over the ReplicaSets, the observed generation, the
/// collision count and conditions carried over, and the Available condition set from whether
/// at least `replicas - maxUnavailable` replicas are available.
///
/// `terminatingReplicas` is set as upstream does with the `DeploymentReplicaSetTerminatingReplicas`
/// feature on (the v1.37 default): the sum of the ReplicaSets' counts, unknown if any ReplicaSet
/// does not report one.
pub fn calculate_status(
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available = available_replica_count(all);
    let total = replica_count(all);
    let unavailable = (total - available).max(0);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all)),
        updated_replicas: Some(actual_replica_count(new_rs)),
        ready_replicas: Some(ready_replica_count(all)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        terminating_replicas: terminating_replica_count(all),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if available >= d_replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "True",
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "False",
                MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    status
}

/// Whether two statuses differ in what the apiserver stores (Go's zero counters are omitted, so
/// `0` and unset read the same; an empty condition list and none too).
pub fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let g = |v: Option<i64>| v.unwrap_or(0);
    let c = |s: &DeploymentStatus| s.conditions.clone().unwrap_or_default();
    g(a.observed_generation) == g(b.observed_generation)
        && n(a.replicas) == n(b.replicas)
        && n(a.updated_replicas) == n(b.updated_replicas)
        && n(a.ready_replicas) == n(b.ready_replicas)
        && n(a.available_replicas) == n(b.available_replicas)
        && n(a.unavailable_replicas) == n(b.unavailable_replicas)
        && a.terminating_replicas == b.terminating_replicas
        && a.collision_count == b.collision_count
        && c(a) == c(b)
}

#[cfg(test)]
mod tests {
    use super::super::progress::get_condition;
    use super::super::util::fixtures::*;
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap_or_default()
    }

    #[test]
    fn counts_are_summed_and_updated_replicas_come_from_the_new_replica_set() {
        let mut d = deployment(4, int(1), int(1));
        d.metadata.generation = Some(3);
        let new = rs("new", 2, 2, 1);
        let old = rs("old", 1, 3, 3);
        let s = calculate_status(&[old, new.clone()], Some(&new), &d, now());
        assert_eq!(s.replicas, Some(5));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(4));
        assert_eq!(s.ready_replicas, Some(4));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(3));
        let c = get_condition(Some(&s), AVAILABLE)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.status.as_deref(), Some("True"));
        assert_eq!(c.reason.as_deref(), Some(MINIMUM_REPLICAS_AVAILABLE));
    }

    #[test]
    fn fewer_available_than_replicas_minus_max_unavailable_is_unavailable() {
        let d = deployment(4, int(1), int(1));
        let new = rs("new", 2, 4, 2);
        let s = calculate_status(std::slice::from_ref(&new), Some(&new), &d, now());
        let c = get_condition(Some(&s), AVAILABLE)
            .cloned()
            .unwrap_or_default();
        assert_eq!(c.status.as_deref(), Some("False"));
        assert_eq!(c.reason.as_deref(), Some(MINIMUM_REPLICAS_UNAVAILABLE));
        assert_eq!(
            c.message.as_deref(),
            Some("Deployment does not have minimum availability.")
        );
    }

    #[test]
    fn more_available_than_desired_is_never_negative_unavailability() {
        let d = deployment(1, int(1), int(1));
        let mut old = rs("old", 1, 1, 1);
        if let Some(s) = old.status.as_mut() {
            s.available_replicas = Some(3);
        }
        let s = calculate_status(&[old], None, &d, now());
        assert_eq!(s.unavailable_replicas, Some(0));
        assert_eq!(s.updated_replicas, Some(0));
    }

    #[test]
    fn zero_and_unset_counters_are_the_same_status() {
        let a = DeploymentStatus {
            replicas: Some(0),
            ..Default::default()
        };
        assert!(same_status(&a, &DeploymentStatus::default()));
    }
}
