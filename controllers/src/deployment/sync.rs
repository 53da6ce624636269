//! Scaling and history cleanup decisions. Mirrors `scale`, `isScalingEvent` and
//! `cleanupDeployment` in kubernetes/kubernetes `pkg/controller/deployment/sync.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::util::{
    by_revision, by_size_newer, by_size_older, d_replicas, desired_replicas_annotation,
    filter_active, find_active_or_latest, get_proportion, is_rolling_update, is_saturated,
    max_surge, name, replica_count, revision_history_limit, rs_replicas, rs_status_replicas,
};

/// One ReplicaSet resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleTo {
    pub name: String,
    pub replicas: i32,
    /// `Some(op)`: upstream `scaleReplicaSet` (writes even when only the replicas annotations are
    /// stale; `op` words the event). `None`: `scaleReplicaSetAndRecordEvent` (nothing to do when
    /// the size is already right).
    pub operation: Option<&'static str>,
}

impl ScaleTo {
    pub fn record(rs: &ReplicaSet, replicas: i32) -> Self {
        ScaleTo {
            name: name(&rs.metadata).to_owned(),
            replicas,
            operation: None,
        }
    }
}

/// Upstream `isScalingEvent`: an active ReplicaSet was last scaled for another Deployment size.
pub fn is_scaling_event(d: &Deployment, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
    let want = d_replicas(d);
    filter_active(old.iter().chain(new_rs))
        .iter()
        .filter_map(desired_replicas_annotation)
        .any(|desired| desired != want)
}

/// Upstream `scale`: the resizes for a Deployment whose size changed (or that is paused).
/// A single active (or the newest) ReplicaSet takes the whole size; a saturated new ReplicaSet
/// sends the old ones to zero; otherwise, for rolling updates, the difference is spread over the
/// active ReplicaSets in proportion to their size, leftovers to the largest.
pub fn scale(d: &Deployment, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Vec<ScaleTo> {
    let want = d_replicas(d);
    if let Some(rs) = find_active_or_latest(new_rs, old) {
        if rs_replicas(&rs) == want {
            return Vec::new();
        }
        return vec![ScaleTo::record(&rs, want)];
    }
    if is_saturated(d, new_rs) {
        return filter_active(old)
            .iter()
            .map(|rs| ScaleTo::record(rs, 0))
            .collect();
    }
    if !is_rolling_update(d) {
        return Vec::new();
    }
    let mut all = filter_active(old.iter().chain(new_rs));
    let current = replica_count(&all);
    let allowed = if want > 0 { want + max_surge(d) } else { 0 };
    let to_add = allowed - current;
    let operation = match to_add {
        n if n > 0 => {
            all.sort_by(by_size_newer);
            "up"
        }
        n if n < 0 => {
            all.sort_by(by_size_older);
            "down"
        }
        _ => "",
    };
    let mut added = 0;
    let mut sizes: BTreeMap<String, i32> = BTreeMap::new();
    for rs in &all {
        let size = if to_add != 0 {
            let p = get_proportion(rs, d, to_add, added);
            added += p;
            rs_replicas(rs) + p
        } else {
            rs_replicas(rs)
        };
        sizes.insert(name(&rs.metadata).to_owned(), size);
    }
    all.iter()
        .enumerate()
        .map(|(i, rs)| {
            let n = name(&rs.metadata).to_owned();
            let mut size = sizes.get(&n).copied().unwrap_or(0);
            if i == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            ScaleTo {
                name: n,
                replicas: size,
                operation: Some(operation),
            }
        })
        .collect()
}

/// Upstream `cleanupDeployment`: the old ReplicaSets to delete to keep `revisionHistoryLimit`,
/// oldest revision first; only ReplicaSets with no replicas (desired or running), whose last
/// change the ReplicaSet controller has observed and that are not being deleted.
pub fn cleanup(d: &Deployment, old: &[ReplicaSet]) -> Vec<ReplicaSet> {
    let Some(limit) = revision_history_limit(d) else {
        return Vec::new();
    };
    let mut cleanable: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let diff = i64::try_from(cleanable.len()).unwrap_or(i64::MAX) - i64::from(limit);
    if diff <= 0 {
        return Vec::new();
    }
    cleanable.sort_by(|a, b| by_revision(a, b));
    cleanable
        .into_iter()
        .take(usize::try_from(diff).unwrap_or(0))
        .filter(|rs| {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            rs_status_replicas(rs) == 0
                && rs_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::util::fixtures::*;
    use super::super::util::{
        DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, REVISION_ANNOTATION,
    };
    use super::*;

    fn sized(name: &str, created: i64, replicas: i32, max: i32) -> ReplicaSet {
        with_annotation(
            rs(name, created, replicas, replicas),
            MAX_REPLICAS_ANNOTATION,
            &max.to_string(),
        )
    }

    fn sizes(plan: &[ScaleTo]) -> Vec<(String, i32)> {
        plan.iter().map(|s| (s.name.clone(), s.replicas)).collect()
    }

    #[test]
    fn a_single_active_replica_set_takes_the_whole_size() {
        let d = deployment(5, int(1), int(0));
        let new = rs("new", 2, 3, 3);
        let old = vec![rs("old", 1, 0, 0)];
        assert_eq!(sizes(&scale(&d, Some(&new), &old)), [("new".into(), 5)]);
        let new = rs("new", 2, 5, 5);
        assert!(scale(&d, Some(&new), &old).is_empty());
    }

    #[test]
    fn with_nothing_active_the_newest_replica_set_is_scaled() {
        let d = deployment(2, int(1), int(0));
        let old = vec![rs("a", 1, 0, 0), rs("b", 2, 0, 0)];
        assert_eq!(sizes(&scale(&d, None, &old)), [("b".into(), 2)]);
    }

    #[test]
    fn a_saturated_new_replica_set_scales_old_ones_to_zero() {
        let d = deployment(3, int(1), int(0));
        let new = with_annotation(rs("new", 2, 3, 3), DESIRED_REPLICAS_ANNOTATION, "3");
        let old = vec![rs("old", 1, 1, 1), rs("older", 0, 2, 2)];
        assert_eq!(
            sizes(&scale(&d, Some(&new), &old)),
            [("old".into(), 0), ("older".into(), 0)]
        );
    }

    // Upstream TestScale "proportional scaling: 5 -> 10" style cases.
    #[test]
    fn scaling_up_mid_rollout_is_proportional() {
        // Was 10 (+3 surge = 13): new 5, old 8. Now 20 (+5 surge = 25): 12 more.
        let d = deployment(20, pct("25%"), int(0));
        let new = sized("new", 2, 5, 13);
        let old = vec![sized("old", 1, 8, 13)];
        let plan = scale(&d, Some(&new), &old);
        let mut got = sizes(&plan);
        got.sort();
        // old: 8*25/13 = 15.38 → 15 (+7); new: min(5*25/13=9.6→10 (+5), 5 left) = +5 → 10.
        assert_eq!(got, [("new".into(), 10), ("old".into(), 15)]);
        assert!(plan.iter().all(|s| s.operation == Some("up")));
    }

    #[test]
    fn scaling_down_mid_rollout_is_proportional_and_leftovers_go_to_the_largest() {
        // Was 10 with surge 3: new 5 + old 8 = 13; now 5 with surge 2 → 7 allowed, 6 fewer.
        let d = deployment(5, pct("25%"), int(0));
        let new = sized("new", 2, 5, 13);
        let old = vec![sized("old", 1, 8, 13)];
        let plan = scale(&d, Some(&new), &old);
        // old (largest): 8*7/13=4.3→4 (-4); new: 5*7/13=2.69→3 (-2) = -6 total.
        assert_eq!(sizes(&plan), [("old".into(), 4), ("new".into(), 3)]);
        assert!(plan.iter().all(|s| s.operation == Some("down")));
    }

    #[test]
    fn equal_sizes_scale_up_newer_first_and_down_older_first() {
        let d = deployment(7, int(0), int(1));
        let a = sized("a", 1, 3, 6);
        let b = sized("b", 2, 3, 6);
        let plan = scale(&d, Some(&b), std::slice::from_ref(&a));
        assert_eq!(plan.first().map(|s| s.name.as_str()), Some("b"));
        let d = deployment(5, int(0), int(1));
        let plan = scale(&d, Some(&b), std::slice::from_ref(&a));
        assert_eq!(plan.first().map(|s| s.name.as_str()), Some("a"));
        assert_eq!(sizes(&plan), [("a".into(), 2), ("b".into(), 3)]);
    }

    #[test]
    fn scaling_to_zero_empties_every_active_replica_set() {
        let d = deployment(0, pct("25%"), int(0));
        let new = sized("new", 2, 2, 13);
        let old = vec![sized("old", 1, 3, 13)];
        let mut got = sizes(&scale(&d, Some(&new), &old));
        got.sort();
        assert_eq!(got, [("new".into(), 0), ("old".into(), 0)]);
    }

    #[test]
    fn a_scaling_event_is_an_active_replica_set_annotated_for_another_size() {
        let d = deployment(5, int(1), int(0));
        let new = with_annotation(rs("new", 2, 2, 2), DESIRED_REPLICAS_ANNOTATION, "5");
        let old = vec![with_annotation(
            rs("old", 1, 3, 3),
            DESIRED_REPLICAS_ANNOTATION,
            "4",
        )];
        assert!(is_scaling_event(&d, Some(&new), &old));
        let old = vec![with_annotation(
            rs("old", 1, 0, 0),
            DESIRED_REPLICAS_ANNOTATION,
            "4",
        )];
        assert!(!is_scaling_event(&d, Some(&new), &old));
    }

    fn revision_rs(name: &str, rev: &str, replicas: i32) -> ReplicaSet {
        with_annotation(rs(name, 0, replicas, replicas), REVISION_ANNOTATION, rev)
    }

    #[test]
    fn cleanup_deletes_the_oldest_empty_revisions_beyond_the_limit() {
        let mut d = deployment(1, int(1), int(0));
        {
            let s = &mut d.spec;
            s.revision_history_limit = Some(1);
        }
        let old = vec![
            revision_rs("r3", "3", 0),
            revision_rs("r1", "1", 0),
            revision_rs("r2", "2", 1),
        ];
        let names: Vec<String> = cleanup(&d, &old)
            .iter()
            .map(|r| name(&r.metadata).to_owned())
            .collect();
        // r1 and r2 are beyond the limit; r2 still has a replica and is kept.
        assert_eq!(names, ["r1"]);
    }

    #[test]
    fn cleanup_keeps_replica_sets_with_running_pods_or_unobserved_changes_or_being_deleted() {
        let mut d = deployment(1, int(1), int(0));
        {
            let s = &mut d.spec;
            s.revision_history_limit = Some(0);
        }
        let mut running = revision_rs("a", "1", 0);
        if let Some(s) = running.status.as_mut() {
            s.replicas = 1;
        }
        let mut unobserved = revision_rs("b", "2", 0);
        unobserved.metadata.generation = Some(2);
        let mut deleting = revision_rs("c", "3", 0);
        deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
        assert!(cleanup(&d, &[running, unobserved, deleting]).is_empty());
    }

    #[test]
    fn without_a_history_limit_nothing_is_cleaned_up() {
        let mut d = deployment(1, int(1), int(0));
        {
            let s = &mut d.spec;
            s.revision_history_limit = None;
        }
        assert!(cleanup(&d, &[revision_rs("a", "1", 0)]).is_empty());
    }
}
