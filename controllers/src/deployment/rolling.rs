//! Rolling update decisions. Mirrors kubernetes/kubernetes
//! `pkg/controller/deployment/rolling.go`.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::sync::ScaleTo;
use super::util::{
    UtilError, available_replica_count, by_creation_timestamp, d_replicas, max_unavailable, name,
    new_rs_new_replicas, replica_count, rs_available, rs_replicas, set_rs_replicas,
};

/// Upstream `reconcileNewReplicaSet`: the new ReplicaSet's next size, if it changes — down to
/// the desired count when above it, else up as far as max surge allows.
pub fn reconcile_new_replica_set(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<Option<ScaleTo>, UtilError> {
    let want = d_replicas(d);
    let have = rs_replicas(new_rs);
    if have == want {
        return Ok(None);
    }
    if have > want {
        return Ok(Some(ScaleTo::record(new_rs, want)));
    }
    let next = new_rs_new_replicas(d, all, new_rs)?;
    Ok((next != have).then(|| ScaleTo::record(new_rs, next)))
}

/// Upstream `reconcileOldReplicaSets`: how far the old ReplicaSets may shrink without going
/// below `replicas - maxUnavailable` available pods, counting the new ReplicaSet's unavailable
/// pods. Unhealthy old replicas go first (`cleanupUnhealthyReplicas`), then available ones
/// (`scaleDownOldReplicaSetsForRollingUpdate`).
pub fn reconcile_old_replica_sets(
    d: &Deployment,
    all: &[ReplicaSet],
    old_active: &[ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<Vec<ScaleTo>, UtilError> {
    if replica_count(old_active) == 0 {
        return Ok(Vec::new());
    }
    let all_pods = replica_count(all);
    let min_available = d_replicas(d) - max_unavailable(d);
    let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(Vec::new());
    }
    let mut old = old_active.to_vec();
    let mut plan = cleanup_unhealthy_replicas(&mut old, max_scaled_down)?;
    let mut all_now: Vec<ReplicaSet> = old.clone();
    all_now.push(new_rs.clone());
    plan.extend(scale_down_old_replica_sets_for_rolling_update(
        d, &all_now, &mut old,
    )?);
    Ok(plan)
}

/// Upstream `cleanupUnhealthyReplicas`: scales old ReplicaSets (oldest first) down by their
/// unavailable replicas, at most `max_cleanup` in total. `old` is updated with the new sizes.
pub fn cleanup_unhealthy_replicas(
    old: &mut [ReplicaSet],
    max_cleanup: i32,
) -> Result<Vec<ScaleTo>, UtilError> {
    old.sort_by(by_creation_timestamp);
    let mut total = 0;
    let mut plan = Vec::new();
    for rs in old.iter_mut() {
        if total >= max_cleanup {
            break;
        }
        let have = rs_replicas(rs);
        if have == 0 || have == rs_available(rs) {
            continue;
        }
        let count = (max_cleanup - total).min(have - rs_available(rs));
        let next = have - count;
        if next > have {
            return Err(UtilError::InvalidScaleDown {
                name: name(&rs.metadata).to_owned(),
                from: have,
                to: next,
            });
        }
        plan.push(ScaleTo::record(rs, next));
        set_rs_replicas(rs, next);
        total += count;
    }
    Ok(plan)
}

/// Upstream `scaleDownOldReplicaSetsForRollingUpdate`: scales old ReplicaSets (oldest first)
/// down by as many available replicas as exceed `replicas - maxUnavailable`.
pub fn scale_down_old_replica_sets_for_rolling_update(
    d: &Deployment,
    all: &[ReplicaSet],
    old: &mut [ReplicaSet],
) -> Result<Vec<ScaleTo>, UtilError> {
    let min_available = d_replicas(d) - max_unavailable(d);
    let available = available_replica_count(all);
    if available <= min_available {
        return Ok(Vec::new());
    }
    old.sort_by(by_creation_timestamp);
    let want_down = available - min_available;
    let mut total = 0;
    let mut plan = Vec::new();
    for rs in old.iter_mut() {
        if total >= want_down {
            break;
        }
        let have = rs_replicas(rs);
        if have == 0 {
            continue;
        }
        let count = have.min(want_down - total);
        let next = have - count;
        if next > have {
            return Err(UtilError::InvalidScaleDown {
                name: name(&rs.metadata).to_owned(),
                from: have,
                to: next,
            });
        }
        plan.push(ScaleTo::record(rs, next));
        set_rs_replicas(rs, next);
        total += count;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::util::fixtures::*;
    use super::*;

    fn sizes(plan: &[ScaleTo]) -> Vec<(String, i32)> {
        plan.iter().map(|s| (s.name.clone(), s.replicas)).collect()
    }

    // Upstream TestDeploymentController_reconcileNewReplicaSet.
    #[test]
    fn the_new_replica_set_grows_up_to_replicas_plus_surge() {
        let cases = [
            // (deployment replicas, max surge, old replicas, new replicas, expected new)
            (10, int(0), 10, 0, None),
            (10, int(2), 10, 0, Some(2)),
            (10, int(2), 5, 0, Some(7)),
            (10, int(2), 0, 0, Some(10)),
            (10, int(2), 2, 8, Some(10)),
            (10, int(2), 0, 12, Some(10)),
        ];
        for (replicas, surge, old_n, new_n, want) in cases {
            let d = deployment(replicas, surge.clone(), int(0));
            let new = rs("new", 2, new_n, 0);
            let old = rs("old", 1, old_n, old_n);
            let got = reconcile_new_replica_set(&d, &[old, new.clone()], &new)
                .ok()
                .flatten()
                .map(|s| s.replicas);
            assert_eq!(
                got, want,
                "replicas {replicas} surge {surge:?} old {old_n} new {new_n}"
            );
        }
    }

    // Upstream TestDeploymentController_reconcileOldReplicaSets.
    #[test]
    fn old_replica_sets_shrink_only_as_far_as_max_unavailable_allows() {
        let cases = [
            // (replicas, max unavailable, old replicas, new replicas, ready pods, scaled down to)
            (10, int(0), 10, 0, 10, None),
            (10, int(2), 10, 0, 10, Some(8)),
            (10, int(2), 10, 0, 8, Some(8)),
            (10, int(2), 10, 0, 7, Some(8)),
            (10, int(2), 10, 2, 10, Some(8)),
            (10, int(2), 8, 2, 8, None),
        ];
        for (replicas, unavailable, old_n, new_n, ready, want) in cases {
            let d = deployment(replicas, int(1), unavailable.clone());
            let new = rs("new", 2, new_n, 0);
            let old = rs("old", 1, old_n, ready);
            let all = vec![old.clone(), new.clone()];
            let plan = reconcile_old_replica_sets(&d, &all, &[old], &new).unwrap_or_default();
            let got = plan.last().map(|s| s.replicas);
            assert_eq!(
                got, want,
                "replicas {replicas} unavailable {unavailable:?} old {old_n} new {new_n} ready {ready}"
            );
        }
    }

    // Upstream TestDeploymentController_cleanupUnhealthyReplicas.
    #[test]
    fn unhealthy_old_replicas_are_removed_first_up_to_the_cleanup_budget() {
        let cases = [
            // (old replicas, ready, max cleanup, cleaned up)
            (10, 8, 1, 1),
            (10, 10, 3, 0),
            (10, 2, 10, 8),
            (10, 2, 6, 6),
        ];
        for (replicas, ready, max, want) in cases {
            let mut old = vec![rs("old", 1, replicas, ready)];
            let plan = cleanup_unhealthy_replicas(&mut old, max).unwrap_or_default();
            let got: i32 = plan.iter().map(|s| replicas - s.replicas).sum();
            assert_eq!(got, want, "replicas {replicas} ready {ready} max {max}");
        }
    }

    // After upstream TestDeploymentController_scaleDownOldReplicaSetsForRollingUpdate.
    #[test]
    fn available_old_replicas_beyond_the_minimum_are_scaled_down() {
        let cases = [
            // (max unavailable, old available, new available, expected old size)
            (int(2), 10, 0, Some(8)),
            (int(2), 8, 0, None),
            (int(0), 10, 5, Some(5)),
            (pct("20%"), 10, 10, Some(0)),
        ];
        for (unavailable, old_ready, new_ready, want) in cases {
            let d = deployment(10, int(1), unavailable.clone());
            let old = rs("old", 1, 10, old_ready);
            let new = rs("new", 2, new_ready, new_ready);
            let all = vec![old.clone(), new];
            let mut olds = vec![old];
            let plan = scale_down_old_replica_sets_for_rolling_update(&d, &all, &mut olds)
                .unwrap_or_default();
            assert_eq!(
                plan.first().map(|s| s.replicas),
                want,
                "unavailable {unavailable:?} old ready {old_ready} new ready {new_ready}"
            );
        }
    }

    #[test]
    fn old_replica_sets_are_scaled_down_oldest_first() {
        let d = deployment(4, int(0), int(1));
        let older = rs("older", 1, 2, 2);
        let old = rs("old", 2, 2, 2);
        let new = rs("new", 3, 1, 1);
        let all = vec![old.clone(), older.clone(), new.clone()];
        // available 5, min available 3 → 2 down, all from the oldest.
        let plan = reconcile_old_replica_sets(&d, &all, &[old, older], &new).unwrap_or_default();
        assert_eq!(sizes(&plan), [("older".into(), 0)]);
    }
}
