//! Which pods a ReplicaSet deletes first when it scales down: upstream `ActivePodsWithRanks`
//! (`pkg/controller/controller_utils.go`) ranked by `getPodsRankedByRelatedPodsOnSameNode`
//! (`pkg/controller/replicaset/replica_set.go`), with the `PodDeletionCost` and
//! `LogarithmicScaleDown` feature gates on (their defaults since 1.22).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cache::Pod;
use jiff::Timestamp;

use crate::pod_util::{is_pod_active, is_pod_ready, ready_since};

/// Upstream `core.PodDeletionCost`.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Upstream `podPhaseToOrdinal`: Pending < Unknown < Running; any other phase counts as Pending.
fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Upstream `helper.GetDeletionCostFromPodAnnotations`: an int32 without a leading `+` or zeros;
/// anything invalid counts as 0 (upstream ignores the error).
pub fn deletion_cost(pod: &Pod) -> i32 {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST_ANNOTATION))
    else {
        return 0;
    };
    let first_ok = match value.as_bytes().first() {
        Some(b'-') | Some(b'1'..=b'9') => true,
        Some(b'0') => value == "0",
        _ => false,
    };
    if !first_ok {
        return 0;
    }
    value.parse::<i32>().unwrap_or(0)
}

/// Upstream `maxContainerRestarts`: the highest restart count of regular containers, and of
/// restartable init (sidecar) containers.
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .fold(0, i32::max);
    let sidecars: HashSet<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(c.name.as_str()))
        .map(|c| c.restart_count)
        .fold(0, i32::max);
    (regular, sidecar)
}

/// Upstream `afterOrZero`: a zero (missing) time sorts first, then the later time.
fn after_or_zero(t1: Option<Timestamp>, t2: Option<Timestamp>) -> bool {
    match (t1, t2) {
        (None, _) | (_, None) => t1.is_none(),
        (Some(a), Some(b)) => a > b,
    }
}

/// Upstream `logarithmicRankDiff`: compares floor(log2(age in ns)) of two times at `now`.
fn logarithmic_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    let rank = |t: Timestamp| {
        let d = now.duration_since(t).as_nanos();
        if d > 0 {
            // Go's int64(math.Log2(float64(d))): truncation toward zero of a positive value.
            (d as f64).log2() as i64
        } else {
            -1
        }
    };
    rank(t1) - rank(t2)
}

/// Compares two times the way steps 6 and 8 of upstream's `Less` do with `LogarithmicScaleDown`:
/// newer (or zero) first on a log2 scale of age, ties in the same bucket broken by UID.
fn newer_first(
    t1: Option<Timestamp>,
    t2: Option<Timestamp>,
    uid1: &str,
    uid2: &str,
    now: Option<Timestamp>,
) -> bool {
    match (now, t1, t2) {
        (Some(now), Some(a), Some(b)) => {
            let diff = logarithmic_rank_diff(a, b, now);
            if diff == 0 { uid1 < uid2 } else { diff < 0 }
        }
        _ => after_or_zero(t1, t2),
    }
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// A pod with its rank: the number of active related pods on its node.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub pod: Arc<Pod>,
    pub rank: usize,
}

/// Upstream `ActivePodsWithRanks.Less`: whether `i` should be deleted before `j`.
pub fn less(i: &Ranked, j: &Ranked, now: Option<Timestamp>) -> bool {
    let (pi, pj) = (i.pod.as_ref(), j.pod.as_ref());
    // 1. Unassigned < assigned.
    let (ni, nj) = (node_name(pi), node_name(pj));
    if ni != nj && (ni.is_empty() || nj.is_empty()) {
        return ni.is_empty();
    }
    // 2. Pending < Unknown < Running.
    if phase_ordinal(pi) != phase_ordinal(pj) {
        return phase_ordinal(pi) < phase_ordinal(pj);
    }
    // 3. Not ready < ready.
    let (ri, rj) = (is_pod_ready(pi), is_pod_ready(pj));
    if ri != rj {
        return !ri;
    }
    // 4. Lower pod-deletion-cost < higher.
    let (ci, cj) = (deletion_cost(pi), deletion_cost(pj));
    if ci != cj {
        return ci < cj;
    }
    // 5. Doubled up (more related pods on the same node) < not doubled up.
    if i.rank != j.rank {
        return i.rank > j.rank;
    }
    // 6. Been ready for a shorter time < longer.
    if ri && rj {
        let (ti, tj) = (ready_since(pi), ready_since(pj));
        if ti != tj {
            return newer_first(ti, tj, uid(pi), uid(pj), now);
        }
    }
    // 7. More container restarts < fewer (regular containers, then sidecars).
    let ((regi, sidei), (regj, sidej)) = (max_restarts(pi), max_restarts(pj));
    if regi != regj {
        return regi > regj;
    }
    if sidei != sidej {
        return sidei > sidej;
    }
    // 8. Newer (or no) creation time < older.
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let (ci, cj) = (created(pi), created(pj));
    if ci != cj {
        return newer_first(ci, cj, uid(pi), uid(pj), now);
    }
    false
}

/// Upstream `getPodsRankedByRelatedPodsOnSameNode`: ranks each pod by the number of active pods
/// among `related` on its node.
pub fn rank_by_related_pods_on_same_node(pods: &[Arc<Pod>], related: &[Arc<Pod>]) -> Vec<Ranked> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_pod_active(p)) {
        *on_node.entry(node_name(p)).or_default() += 1;
    }
    pods.iter()
        .map(|p| Ranked {
            pod: p.clone(),
            rank: on_node.get(node_name(p)).copied().unwrap_or(0),
        })
        .collect()
}

/// Sorts by [`less`], stably. A merge sort of our own: upstream's order is not guaranteed to be a
/// strict total order (the log-scale buckets), and the standard library's sort may panic on such
/// comparators.
pub fn sort_ranked(pods: &mut Vec<Ranked>, now: Option<Timestamp>) {
    if pods.len() < 2 {
        return;
    }
    let right = pods.split_off(pods.len() / 2);
    let mut left = std::mem::take(pods);
    let mut right = right;
    sort_ranked(&mut left, now);
    sort_ranked(&mut right, now);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        let take_right = match (l.peek(), r.peek()) {
            (Some(a), Some(b)) => less(b, a, now),
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right { r.next() } else { l.next() };
        out.extend(next);
    }
    *pods = out;
}

/// Upstream `getPodsToDelete`: the `diff` pods to delete first, ranked against `related` (pods of
/// every ReplicaSet with the same owner). No sorting when all go.
pub fn pods_to_delete(
    active: &[Arc<Pod>],
    related: &[Arc<Pod>],
    diff: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if diff >= active.len() {
        return active.to_vec();
    }
    let mut ranked = rank_by_related_pods_on_same_node(active, related);
    sort_ranked(&mut ranked, Some(now));
    ranked.into_iter().take(diff).map(|r| r.pod).collect()
}

/// Orders two pods as [`less`] does, for callers that want an `Ordering`.
pub fn compare(a: &Ranked, b: &Ranked, now: Option<Timestamp>) -> Ordering {
    if less(a, b, now) {
        Ordering::Less
    } else if less(b, a, now) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Container, ContainerStatus, PodSpec, PodStatus};
    use jiff::SignedDuration;
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn ago(d: SignedDuration) -> Timestamp {
        now().checked_sub(d).unwrap()
    }

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    /// A builder for pods in the shape upstream's TestSortingActivePodsWithRanks uses.
    #[derive(Clone, Default)]
    struct P {
        name: &'static str,
        node: Option<&'static str>,
        phase: Option<&'static str>,
        ready: Option<Option<Timestamp>>,
        cost: Option<&'static str>,
        restarts: i32,
        sidecar_restarts: i32,
        created: Option<Timestamp>,
    }

    impl P {
        fn build(self) -> Arc<Pod> {
            let mut pod = Pod::default();
            pod.metadata.name = Some(self.name.into());
            pod.metadata.uid = Some(self.name.into());
            pod.metadata.creation_timestamp = self.created.map(Time);
            if let Some(cost) = self.cost {
                pod.metadata.annotations = Some(
                    [(POD_DELETION_COST_ANNOTATION.to_owned(), cost.to_owned())]
                        .into_iter()
                        .collect(),
                );
            }
            pod.spec = Some(PodSpec {
                node_name: self.node.map(Into::into),
                init_containers: Some(vec![Container {
                    name: "sidecar".into(),
                    restart_policy: Some("Always".into()),
                }]),
                ..PodSpec::default()
            });
            let mut status = PodStatus {
                phase: self.phase.map(Into::into),
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    restart_count: self.restarts,
                    ..ContainerStatus::default()
                }]),
                init_container_statuses: Some(vec![ContainerStatus {
                    name: "sidecar".into(),
                    restart_count: self.sidecar_restarts,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            };
            if let Some(since) = self.ready {
                status.conditions = Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: since.map(Time),
                    ..PodCondition::default()
                }]);
            }
            pod.status = Some(status);
            Arc::new(pod)
        }

        fn ranked(self, rank: usize) -> Ranked {
            Ranked {
                pod: self.build(),
                rank,
            }
        }
    }

    fn running_ready_on(node: &'static str, name: &'static str) -> P {
        P {
            name,
            node: Some(node),
            phase: Some("Running"),
            ready: Some(Some(ago(secs(3600)))),
            created: Some(ago(secs(7200))),
            ..P::default()
        }
    }

    fn assert_before(lesser: Ranked, greater: Ranked, why: &str) {
        assert!(
            less(&lesser, &greater, Some(now())),
            "{why}: {:?} should sort before {:?}",
            lesser.pod.metadata.name,
            greater.pod.metadata.name
        );
        assert!(
            !less(&greater, &lesser, Some(now())),
            "{why}: {:?} should not sort before {:?}",
            greater.pod.metadata.name,
            lesser.pod.metadata.name
        );
    }

    #[test]
    fn unassigned_pods_sort_before_assigned_ones() {
        let unassigned = P {
            name: "a",
            phase: Some("Running"),
            ..running_ready_on("n", "a")
        };
        let unassigned = P {
            node: None,
            ..unassigned
        };
        assert_before(
            unassigned.ranked(0),
            running_ready_on("n", "b").ranked(0),
            "unassigned < assigned",
        );
    }

    #[test]
    fn pending_sorts_before_unknown_before_running() {
        let pending = P {
            phase: Some("Pending"),
            ..running_ready_on("n", "a")
        };
        let unknown = P {
            phase: Some("Unknown"),
            ..running_ready_on("n", "b")
        };
        assert_before(
            pending.clone().ranked(0),
            unknown.clone().ranked(0),
            "pending < unknown",
        );
        assert_before(
            unknown.ranked(0),
            running_ready_on("n", "c").ranked(0),
            "unknown < running",
        );
        let no_phase = P {
            phase: None,
            ..running_ready_on("n", "d")
        };
        assert_eq!(
            compare(&no_phase.ranked(0), &pending.ranked(0), Some(now())),
            Ordering::Equal,
            "an empty phase ranks like Pending"
        );
    }

    #[test]
    fn unready_pods_sort_before_ready_ones() {
        let unready = P {
            ready: None,
            ..running_ready_on("n", "a")
        };
        assert_before(
            unready.ranked(0),
            running_ready_on("n", "b").ranked(0),
            "not ready < ready",
        );
    }

    #[test]
    fn lower_deletion_cost_sorts_first_and_invalid_costs_count_as_zero() {
        let cheap = P {
            cost: Some("-10"),
            ..running_ready_on("n", "a")
        };
        let dear = P {
            cost: Some("10"),
            ..running_ready_on("n", "b")
        };
        assert_before(
            cheap.ranked(0),
            dear.clone().ranked(0),
            "cost -10 < cost 10",
        );
        let plus = P {
            cost: Some("+5"),
            ..running_ready_on("n", "c")
        };
        assert_before(plus.ranked(0), dear.ranked(0), "'+5' is invalid, so 0 < 10");
        for invalid in ["+5", "007", "x", "", "99999999999"] {
            let p = P {
                cost: Some(invalid),
                ..running_ready_on("n", "d")
            }
            .build();
            assert_eq!(deletion_cost(&p), 0, "{invalid:?}");
        }
    }

    #[test]
    fn pods_doubled_up_on_a_node_sort_before_lonely_ones() {
        assert_before(
            running_ready_on("n", "a").ranked(2),
            running_ready_on("m", "b").ranked(1),
            "rank 2 < rank 1",
        );
    }

    #[test]
    fn deletion_cost_outranks_being_doubled_up() {
        let cheap = P {
            cost: Some("1"),
            ..running_ready_on("m", "a")
        };
        let doubled = P {
            cost: Some("2"),
            ..running_ready_on("n", "b")
        };
        assert_before(
            cheap.ranked(1),
            doubled.ranked(5),
            "cost decides before rank",
        );
    }

    #[test]
    fn recently_ready_pods_sort_first_on_a_log_scale() {
        let recent = P {
            ready: Some(Some(ago(secs(10)))),
            ..running_ready_on("n", "z")
        };
        let old = P {
            ready: Some(Some(ago(secs(1000)))),
            ..running_ready_on("n", "a")
        };
        assert_before(recent.ranked(0), old.ranked(0), "ready 10s < ready 1000s");
        // 1000 s and 1001 s share a log2 bucket, so UID decides.
        let b1 = P {
            ready: Some(Some(ago(secs(1001)))),
            ..running_ready_on("n", "b")
        };
        let a1 = P {
            ready: Some(Some(ago(secs(1000)))),
            ..running_ready_on("n", "a")
        };
        assert_before(a1.ranked(0), b1.ranked(0), "same bucket: lower UID first");
    }

    #[test]
    fn a_ready_pod_without_a_transition_time_sorts_first() {
        let zero = P {
            ready: Some(None),
            ..running_ready_on("n", "z")
        };
        assert_before(
            zero.ranked(0),
            running_ready_on("n", "a").ranked(0),
            "zero ready time first",
        );
    }

    #[test]
    fn more_restarts_sort_first_then_more_sidecar_restarts() {
        let crashy = P {
            restarts: 3,
            ..running_ready_on("n", "z")
        };
        assert_before(
            crashy.ranked(0),
            running_ready_on("n", "a").ranked(0),
            "3 restarts < 0",
        );
        let crashy_sidecar = P {
            sidecar_restarts: 2,
            ..running_ready_on("n", "z")
        };
        assert_before(
            crashy_sidecar.ranked(0),
            running_ready_on("n", "a").ranked(0),
            "sidecar restarts decide on a tie",
        );
    }

    #[test]
    fn newer_pods_sort_first_and_same_log_bucket_falls_back_to_uid() {
        let newer = P {
            created: Some(ago(secs(60))),
            ..running_ready_on("n", "z")
        };
        let older = P {
            created: Some(ago(secs(6000))),
            ..running_ready_on("n", "a")
        };
        assert_before(newer.ranked(0), older.ranked(0), "created 60s < 6000s ago");
        let uncreated = P {
            created: None,
            ..running_ready_on("n", "z")
        };
        assert_before(
            uncreated.ranked(0),
            running_ready_on("n", "a").ranked(0),
            "no creation time first",
        );
        let b = P {
            created: Some(ago(secs(7201))),
            ..running_ready_on("n", "b")
        };
        assert_before(
            running_ready_on("n", "a").ranked(0),
            b.ranked(0),
            "same bucket: lower UID first",
        );
    }

    #[test]
    fn without_a_now_times_compare_exactly() {
        let a = P {
            created: Some(ago(secs(1000))),
            ..running_ready_on("n", "a")
        }
        .ranked(0);
        let b = P {
            created: Some(ago(secs(1001))),
            ..running_ready_on("n", "b")
        }
        .ranked(0);
        assert!(less(&a, &b, None));
    }

    /// Upstream TestSortingActivePodsWithRanks: a list of pods in the expected order, each strictly
    /// before every later one; sorting any permutation yields that order.
    #[test]
    fn sorting_active_pods_with_ranks_yields_upstream_order() {
        let expected = vec![
            P {
                name: "unscheduled",
                phase: Some("Pending"),
                created: Some(ago(secs(10))),
                ..P::default()
            }
            .ranked(0),
            P {
                name: "scheduled-pending",
                node: Some("n1"),
                phase: Some("Pending"),
                created: Some(ago(secs(10))),
                ..P::default()
            }
            .ranked(0),
            P {
                name: "unknown",
                node: Some("n1"),
                phase: Some("Unknown"),
                created: Some(ago(secs(10))),
                ..P::default()
            }
            .ranked(0),
            P {
                name: "running-unready",
                node: Some("n1"),
                phase: Some("Running"),
                created: Some(ago(secs(10))),
                ..P::default()
            }
            .ranked(0),
            P {
                cost: Some("-5"),
                ..running_ready_on("n1", "cheap")
            }
            .ranked(1),
            running_ready_on("n1", "doubled").ranked(3),
            P {
                ready: Some(Some(ago(secs(10)))),
                ..running_ready_on("n2", "ready-recently")
            }
            .ranked(1),
            P {
                restarts: 5,
                ..running_ready_on("n2", "restarting")
            }
            .ranked(1),
            P {
                created: Some(ago(secs(100))),
                ..running_ready_on("n2", "young")
            }
            .ranked(1),
            running_ready_on("n2", "old").ranked(1),
            P {
                cost: Some("5"),
                ..running_ready_on("n3", "dear")
            }
            .ranked(1),
        ];
        for (i, a) in expected.iter().enumerate() {
            for b in &expected[i + 1..] {
                assert!(
                    less(a, b, Some(now())) && !less(b, a, Some(now())),
                    "{:?} must sort before {:?}",
                    a.pod.metadata.name,
                    b.pod.metadata.name
                );
            }
        }
        let names = |v: &[Ranked]| -> Vec<String> {
            v.iter()
                .map(|r| r.pod.metadata.name.clone().unwrap_or_default())
                .collect()
        };
        let mut reversed: Vec<Ranked> = expected.iter().rev().cloned().collect();
        sort_ranked(&mut reversed, Some(now()));
        assert_eq!(names(&reversed), names(&expected));
        let mut rotated = expected.clone();
        rotated.rotate_left(4);
        sort_ranked(&mut rotated, Some(now()));
        assert_eq!(names(&rotated), names(&expected));
    }

    #[test]
    fn ranks_count_active_related_pods_per_node() {
        let mine = vec![
            running_ready_on("n1", "a").build(),
            running_ready_on("n2", "b").build(),
        ];
        let mut gone = (*running_ready_on("n2", "x").build()).clone();
        gone.metadata.deletion_timestamp = Some(Time(now()));
        let related = vec![
            mine[0].clone(),
            mine[1].clone(),
            running_ready_on("n1", "c").build(),
            Arc::new(gone),
        ];
        let ranked = rank_by_related_pods_on_same_node(&mine, &related);
        assert_eq!(ranked[0].rank, 2);
        assert_eq!(ranked[1].rank, 1);
    }

    #[test]
    fn pods_to_delete_picks_the_best_ranked_and_everything_when_all_go() {
        let pods = vec![
            running_ready_on("n1", "ready").build(),
            P {
                ready: None,
                ..running_ready_on("n1", "unready")
            }
            .build(),
            P {
                node: None,
                phase: Some("Pending"),
                ready: None,
                ..running_ready_on("n1", "unscheduled")
            }
            .build(),
        ];
        let pick = pods_to_delete(&pods, &pods, 2, now());
        let names: Vec<_> = pick.iter().map(|p| p.metadata.name.clone()).collect();
        assert_eq!(
            names,
            vec![Some("unscheduled".into()), Some("unready".into())]
        );
        assert_eq!(pods_to_delete(&pods, &pods, 3, now()).len(), 3);
        assert!(pods_to_delete(&pods, &pods, 0, now()).is_empty());
    }
}
