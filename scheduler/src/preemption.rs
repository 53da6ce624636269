//! DefaultPreemption, the default profile's PostFilter
//! (pkg/scheduler/framework/plugins/defaultpreemption/default_preemption.go and
//! pkg/scheduler/framework/preemption/preemption.go): when a pod fits nowhere, find nodes where
//! evicting lower-priority pods makes it fit, keep the fewest and least important victims, and
//! pick one node by upstream's criteria. Pure: the shell performs the evictions.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rand::Rng;

use crate::cache::{NodeInfo, Nominator, PodInfo, pod_priority};
use crate::framework::{CycleState, Diagnosis, FitError, run_filters_with_nominated};
use crate::plugins::{Code, Status};
use crate::resources::PodResources;
use crate::selector::{Selector, labels_of};

pub const NAME: &str = "DefaultPreemption";
/// `DefaultPreemptionArgs` defaults.
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NOT_ELIGIBLE_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
pub const NOT_ELIGIBLE_TERMINATING: &str =
    "not eligible due to a terminating pod on the nominated node.";

/// `v1.DisruptionTarget` and `v1.PodReasonPreemptionByScheduler`.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
pub const REASON_PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct Pdb {
    pub namespace: String,
    /// `None` when the selector is invalid; such a PDB matches no pod.
    pub selector: Option<Selector>,
    pub disruptions_allowed: i32,
    pub disrupted_pods: BTreeSet<String>,
}

impl Pdb {
    pub fn from_api(pdb: &PodDisruptionBudget) -> Self {
        Pdb {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: Selector::from_label_selector(
                pdb.spec.as_ref().and_then(|s| s.selector.as_ref()),
            )
            .ok(),
            disruptions_allowed: pdb
                .status
                .as_ref()
                .and_then(|s| s.disruptions_allowed)
                .unwrap_or(0),
            disrupted_pods: pdb
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// A node where the preemptor fits once `victims` (most important first) are gone.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
    pub num_pdb_violations: usize,
}

/// What PostFilter decided.
#[derive(Clone, Debug)]
pub enum PostFilterResult {
    /// The pod may not preempt (yet); its nomination stays as it is.
    Ineligible(String),
    /// No node can be freed: the message, and the pod's nomination is cleared
    /// (`NewPostFilterResultWithNominatedNode("")`).
    NoCandidate(String),
    /// Evict the candidate's victims and nominate the pod to its node.
    Nominate(Candidate),
}

impl PostFilterResult {
    /// The `preemption: …` suffix of the FailedScheduling message; empty on success.
    pub fn message(&self) -> String {
        match self {
            PostFilterResult::Ineligible(m) | PostFilterResult::NoCandidate(m) => {
                format!("preemption: {m}")
            }
            PostFilterResult::Nominate(_) => String::new(),
        }
    }
}

/// `util.GetPodStartTime`: pods not started yet count as starting now.
fn start_time(pod: &Pod, now: Timestamp) -> Timestamp {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| t.0)
}

/// `util.MoreImportantPod` as an ordering: higher priority first, then the longer-running.
fn importance(a: &Pod, b: &Pod, now: Timestamp) -> Ordering {
    pod_priority(b)
        .cmp(&pod_priority(a))
        .then_with(|| start_time(a, now).cmp(&start_time(b, now)))
}

/// `podTerminatingByPreemption`.
fn terminating_by_preemption(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == DISRUPTION_TARGET))
            .is_some_and(|c| {
                c.status == "True" && c.reason.as_deref() == Some(REASON_PREEMPTION_BY_SCHEDULER)
            })
}

/// `PodEligibleToPreemptOthers`: never with `preemptionPolicy: Never`; and not while a
/// lower-priority pod on the nominated node is still terminating from an earlier preemption,
/// unless the filters now call that node unresolvable.
pub fn eligible(
    pod: &Pod,
    nominated_node: Option<&NodeInfo>,
    nominated_status: Option<&Status>,
) -> Result<(), &'static str> {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Err(NOT_ELIGIBLE_NEVER);
    }
    let Some(node) = nominated_node else {
        return Ok(());
    };
    if nominated_status.is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable) {
        return Ok(());
    }
    let priority = pod_priority(pod);
    if node
        .pods
        .iter()
        .any(|p| p.priority() < priority && terminating_by_preemption(&p.pod))
    {
        return Err(NOT_ELIGIBLE_TERMINATING);
    }
    Ok(())
}

/// `filterPodsWithPDBViolation`: splits (order kept) the pods whose eviction would exceed a
/// matching PDB's allowed disruptions from the others; each PDB's budget is spent in order.
pub fn split_by_pdb_violation(pods: &[PodInfo], pdbs: &[Pdb]) -> (Vec<PodInfo>, Vec<PodInfo>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let (mut violating, mut non_violating) = (Vec::new(), Vec::new());
    for pi in pods {
        let labels = labels_of(&pi.pod.metadata);
        let mut violated = false;
        if !labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pi.pod.metadata.namespace.as_deref().unwrap_or_default() != pdb.namespace {
                    continue;
                }
                // An invalid, nil or empty selector matches nothing.
                let Some(sel) = pdb.selector.as_ref() else {
                    continue;
                };
                if sel.is_empty() || !sel.matches(labels) {
                    continue;
                }
                // Already processed by the API server: not a new disruption.
                let name = pi.pod.metadata.name.as_deref().unwrap_or_default();
                if pdb.disrupted_pods.contains(name) {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(pi.clone());
        } else {
            non_violating.push(pi.clone());
        }
    }
    (violating, non_violating)
}

/// `SelectVictimsOnNode`: remove every lower-priority pod; if the pod then fits, add them back
/// one by one (PDB-violating ones first, most important first) and keep as victims those
/// without which it no longer fits. The PreFilter state follows every removal and re-addition
/// (the AddPod/RemovePod extensions). Returns the victims, most important first, and how many
/// of them violate a PDB.
pub fn select_victims_on_node(
    pod: &Pod,
    res: &PodResources,
    state: &CycleState,
    node: &NodeInfo,
    nominated: &[PodInfo],
    pdbs: &[Pdb],
    now: Timestamp,
) -> Result<(Vec<Arc<Pod>>, usize), Status> {
    let priority = pod_priority(pod);
    let mut potential: Vec<PodInfo> = node
        .pods
        .iter()
        .filter(|p| p.priority() < priority)
        .cloned()
        .collect();
    // Checked before copying the node: the common case of a cluster of equal priorities.
    if potential.is_empty() {
        return Err(Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            NO_VICTIMS,
        ));
    }
    let mut node = node.clone();
    let mut state = state.clone();
    for pi in &potential {
        node.remove_pod(pi.uid());
        state.remove_pod(pod, pi, &node);
    }
    // Affinity of the preemptor to its victims is deliberately not considered (upstream).
    if let Some(status) = run_filters_with_nominated(pod, res, &node, &state, nominated) {
        return Err(status);
    }
    potential.sort_by(|a, b| importance(&a.pod, &b.pod, now));
    let (violating, non_violating) = split_by_pdb_violation(&potential, pdbs);
    let mut victims: Vec<PodInfo> = Vec::new();
    let mut reprieve = |pi: &PodInfo, node: &mut NodeInfo, state: &mut CycleState| -> bool {
        node.add_pod(pi.clone());
        state.add_pod(pod, pi, node);
        let fits = run_filters_with_nominated(pod, res, node, state, nominated).is_none();
        if !fits {
            node.remove_pod(pi.uid());
            state.remove_pod(pod, pi, node);
            victims.push(pi.clone());
        }
        fits
    };
    let mut num_violating = 0;
    for pi in &violating {
        if !reprieve(pi, &mut node, &mut state) {
            num_violating += 1;
        }
    }
    for pi in &non_violating {
        reprieve(pi, &mut node, &mut state);
    }
    if !violating.is_empty() && !non_violating.is_empty() {
        victims.sort_by(|a, b| importance(&a.pod, &b.pod, now));
    }
    Ok((
        victims.into_iter().map(|pi| pi.pod).collect(),
        num_violating,
    ))
}

/// `calculateNumCandidates`: 10% of the nodes, at least 100, at most all of them.
pub fn num_candidates(num_nodes: usize) -> usize {
    num_candidates_with(
        MIN_CANDIDATE_NODES_PERCENTAGE,
        MIN_CANDIDATE_NODES_ABSOLUTE,
        num_nodes,
    )
}

/// `calculateNumCandidates` with DefaultPreemptionArgs' `minCandidateNodesPercentage` and
/// `minCandidateNodesAbsolute`.
pub fn num_candidates_with(percentage: usize, absolute: usize, num_nodes: usize) -> usize {
    (num_nodes * percentage / 100).max(absolute).min(num_nodes)
}

/// `GetEarliestPodStartTime`: the earliest start among the highest-priority victims.
fn earliest_start_of_highest(victims: &[Arc<Pod>], now: Timestamp) -> Option<Timestamp> {
    let max = victims.iter().map(|p| pod_priority(p)).max()?;
    victims
        .iter()
        .filter(|p| pod_priority(p) == max)
        .map(|p| start_time(p, now))
        .min()
}

/// `pickOneNodeForPreemption`: among candidates (victims most important first), keep those
/// best by each criterion in turn — fewest PDB violations, lowest highest victim priority,
/// smallest sum of priorities, fewest victims, latest start of the highest-priority victims —
/// and take the first left.
pub fn pick_one_node_for_preemption(candidates: &[Candidate], now: Timestamp) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    type ScoreFn<'a> = Box<dyn Fn(&Candidate) -> i64 + 'a>;
    let criteria: Vec<ScoreFn> = vec![
        Box::new(|c| -(c.num_pdb_violations as i64)),
        Box::new(|c| {
            -i64::from(
                c.victims
                    .first()
                    .map(|p| pod_priority(p))
                    .unwrap_or_default(),
            )
        }),
        // Shifted by 2^31 so that more pods of negative priority never sum smaller.
        Box::new(|c| {
            -c.victims
                .iter()
                .map(|p| i64::from(pod_priority(p)) + (1_i64 << 31))
                .sum::<i64>()
        }),
        Box::new(|c| -(c.victims.len() as i64)),
        Box::new(move |c| {
            earliest_start_of_highest(&c.victims, now)
                .map_or(i64::MIN, |t| t.as_nanosecond() as i64)
        }),
    ];
    let mut remaining: Vec<usize> = (0..candidates.len()).collect();
    for f in &criteria {
        let scores: Vec<i64> = remaining.iter().map(|&i| f(&candidates[i])).collect();
        let best = scores.iter().copied().max().unwrap_or(i64::MIN);
        remaining = remaining
            .iter()
            .zip(&scores)
            .filter(|(_, s)| **s == best)
            .map(|(i, _)| *i)
            .collect();
        if remaining.len() == 1 {
            break;
        }
    }
    remaining.first().copied()
}

/// The inputs of one PostFilter run.
pub struct PreemptionInput<'a> {
    pub pod: &'a Pod,
    pub res: &'a PodResources,
    pub state: &'a CycleState,
    /// All nodes, in the cache's order.
    pub nodes: &'a [&'a NodeInfo],
    pub diagnosis: &'a Diagnosis,
    pub nominator: &'a Nominator,
    /// The pod's nominated node (status or in-memory), if any.
    pub nominated_node: Option<&'a str>,
    pub pdbs: &'a [Pdb],
    pub now: Timestamp,
}

/// `Evaluator.Preempt` without extenders: eligibility, candidates from the nodes that failed
/// with a resolvable status, a dry run from a random offset until enough candidates are found
/// (PDB-respecting ones preferred), then the best candidate.
pub fn preempt(input: &PreemptionInput<'_>, rng: &mut impl Rng) -> PostFilterResult {
    let PreemptionInput {
        pod,
        res,
        state,
        nodes,
        diagnosis,
        nominator,
        nominated_node,
        pdbs,
        now,
    } = *input;
    let candidates_for = |n: usize| {
        num_candidates_with(
            state.switches.min_candidate_nodes_percentage,
            state.switches.min_candidate_nodes_absolute,
            n,
        )
    };
    let status_of = |name: &str| {
        diagnosis
            .node_to_status
            .get(name)
            .or(diagnosis.absent_status.as_ref())
    };
    let nominated_info = nominated_node.and_then(|n| nodes.iter().find(|i| i.name() == n));
    if let Err(msg) = eligible(
        pod,
        nominated_info.copied(),
        nominated_node.and_then(status_of),
    ) {
        return PostFilterResult::Ineligible(msg.to_string());
    }
    // `NodesForStatusCode(Unschedulable)`: nodes without a status share the absent one.
    let potential: Vec<&NodeInfo> = nodes
        .iter()
        .copied()
        .filter(|n| status_of(n.name()).is_some_and(|s| s.code == Code::Unschedulable))
        .collect();
    let mut node_to_status = BTreeMap::new();
    let mut non_violating: Vec<Candidate> = Vec::new();
    let mut violating: Vec<Candidate> = Vec::new();
    if !potential.is_empty() {
        let offset = rng.random_range(0..potential.len());
        let wanted = candidates_for(potential.len());
        for i in 0..potential.len() {
            let node = potential[(offset + i) % potential.len()];
            let nominated = nominator.pods_for_node(node.name());
            match select_victims_on_node(pod, res, state, node, nominated, pdbs, now) {
                Ok((victims, violations)) if !victims.is_empty() => {
                    let c = Candidate {
                        node: node.name().to_string(),
                        victims,
                        num_pdb_violations: violations,
                    };
                    if violations == 0 {
                        non_violating.push(c);
                    } else {
                        violating.push(c);
                    }
                    if !non_violating.is_empty() && non_violating.len() + violating.len() >= wanted
                    {
                        break;
                    }
                }
                // A fit without victims cannot happen for a node that failed the filters.
                Ok(_) => {}
                Err(status) => {
                    node_to_status.insert(node.name().to_string(), status);
                }
            }
        }
    }
    non_violating.truncate(candidates_for(potential.len()));
    violating.truncate(candidates_for(potential.len()));
    let candidates: Vec<Candidate> = non_violating.into_iter().chain(violating).collect();
    let Some(best) = pick_one_node_for_preemption(&candidates, now) else {
        let fit = FitError {
            num_all_nodes: nodes.len(),
            diagnosis: Diagnosis {
                node_to_status,
                absent_status: Some(Status::new(
                    Code::UnschedulableAndUnresolvable,
                    NAME,
                    NOT_HELPFUL,
                )),
                pre_filter_msg: String::new(),
            },
            post_filter_msg: String::new(),
        };
        return PostFilterResult::NoCandidate(fit.to_string());
    };
    PostFilterResult::Nominate(candidates[best].clone())
}

/// `getLowerPriorityNominatedPods`: pods nominated to `node` that the preemptor outranks.
pub fn lower_priority_nominated(pod: &Pod, nominator: &Nominator, node: &str) -> Vec<Arc<Pod>> {
    let priority = pod_priority(pod);
    nominator
        .pods_for_node(node)
        .iter()
        .filter(|p| p.priority() < priority)
        .map(|p| p.pod.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::framework::Algorithm;
    use crate::resources::pod_resources;
    use crate::testutil::{pod_requesting, raw_node};
    use rand::SeedableRng;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().expect("time")
    }

    /// A pod with a priority, cpu request, labels and start time (seconds after `now() - 1h`).
    fn prio_pod(name: &str, priority: i32, milli_cpu: i64, labels: serde_json::Value) -> Pod {
        let mut p = pod_requesting(name, milli_cpu, 0);
        p.spec.as_mut().expect("spec").priority = Some(priority);
        p.metadata.labels = serde_json::from_value(labels).expect("labels");
        p
    }

    fn started(mut p: Pod, at: &str) -> Pod {
        p.status = Some(serde_json::from_value(json!({"startTime": at})).expect("status"));
        p
    }

    fn on(mut p: Pod, node: &str) -> Pod {
        p.spec.as_mut().expect("spec").node_name = Some(node.into());
        p
    }

    fn cache_with(nodes: &[&str], pods: Vec<Pod>) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.upsert_node(Arc::new(raw_node(json!({"name": n,
                "labels": {"kubernetes.io/hostname": n},
                "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}}))));
        }
        for p in pods {
            c.upsert_pod(Arc::new(p));
        }
        c
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    fn pdb(labels: serde_json::Value, allowed: i32) -> Pdb {
        Pdb::from_api(
            &serde_json::from_value(json!({
                "metadata": {"name": "pdb", "namespace": "ns"},
                "spec": {"selector": {"matchLabels": labels}},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0,
                    "expectedPods": 0},
            }))
            .expect("pdb"),
        )
    }

    fn victims_on(
        c: &Cache,
        node: &str,
        pod: &Pod,
        pdbs: &[Pdb],
    ) -> Result<(Vec<String>, usize), Status> {
        let n = c.node(node).expect("node");
        select_victims_on_node(
            pod,
            &pod_resources(pod),
            &CycleState::default(),
            n,
            c.nominator().pods_for_node(node),
            pdbs,
            now(),
        )
        .map(|(v, n)| (names(&v), n))
    }

    #[test]
    fn only_as_many_lower_priority_pods_as_needed_become_victims_least_important_first() {
        let c = cache_with(
            &["a"],
            vec![
                on(prio_pod("low", 1, 1000, json!({})), "a"),
                on(prio_pod("mid", 5, 1000, json!({})), "a"),
                on(prio_pod("high", 20, 2000, json!({})), "a"),
            ],
        );
        let p = prio_pod("p", 10, 1000, json!({}));
        assert_eq!(victims_on(&c, "a", &p, &[]), Ok((vec!["low".into()], 0)));
        let big = prio_pod("p", 10, 2000, json!({}));
        assert_eq!(
            victims_on(&c, "a", &big, &[]),
            Ok((vec!["mid".into(), "low".into()], 0)),
            "victims are listed most important first"
        );
    }

    #[test]
    fn a_node_without_lower_priority_pods_has_no_victims() {
        let c = cache_with(&["a"], vec![on(prio_pod("same", 10, 4000, json!({})), "a")]);
        let err = victims_on(&c, "a", &prio_pod("p", 10, 1000, json!({})), &[]).expect_err("none");
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(err.reasons, vec![NO_VICTIMS.to_string()]);
    }

    #[test]
    fn a_pod_that_does_not_fit_even_without_the_victims_reports_the_filter() {
        let c = cache_with(
            &["a"],
            vec![
                on(prio_pod("low", 1, 1000, json!({})), "a"),
                on(prio_pod("high", 20, 2500, json!({})), "a"),
            ],
        );
        let err =
            victims_on(&c, "a", &prio_pod("p", 10, 2000, json!({})), &[]).expect_err("no fit");
        assert_eq!(err.reasons, vec!["Insufficient cpu".to_string()]);
    }

    #[test]
    fn pdb_protected_pods_are_reprieved_first_and_counted_when_evicted() {
        let c = cache_with(
            &["a"],
            vec![
                on(prio_pod("guarded", 1, 2000, json!({"app": "db"})), "a"),
                on(prio_pod("free", 1, 2000, json!({"app": "web"})), "a"),
            ],
        );
        let pdbs = [pdb(json!({"app": "db"}), 0)];
        // Room for one: the guarded pod is reprieved first, so the free one goes.
        assert_eq!(
            victims_on(&c, "a", &prio_pod("p", 10, 2000, json!({})), &pdbs),
            Ok((vec!["free".into()], 0))
        );
        // Room for none: both go and one PDB is violated.
        let (v, violations) =
            victims_on(&c, "a", &prio_pod("p", 10, 4000, json!({})), &pdbs).expect("fits");
        assert_eq!((v.len(), violations), (2, 1));
    }

    #[test]
    fn pdb_budgets_are_spent_in_order_and_disrupted_pods_are_not_counted_again() {
        let pods: Vec<PodInfo> = ["x", "y", "z"]
            .iter()
            .map(|n| PodInfo::new(Arc::new(prio_pod(n, 1, 0, json!({"app": "db"})))))
            .collect();
        let mut budget = pdb(json!({"app": "db"}), 1);
        let (violating, ok) = split_by_pdb_violation(&pods, std::slice::from_ref(&budget));
        assert_eq!(ok.len(), 1);
        assert_eq!(violating.len(), 2);
        budget.disrupted_pods.insert("y".into());
        let (violating, _) = split_by_pdb_violation(&pods, &[budget]);
        assert_eq!(violating.len(), 1);
        let unlabelled = vec![PodInfo::new(Arc::new(prio_pod("u", 1, 0, json!({}))))];
        let empty_selector = pdb(json!({}), 0);
        assert!(
            split_by_pdb_violation(&unlabelled, &[empty_selector])
                .0
                .is_empty()
        );
    }

    fn cand(node: &str, violations: usize, victims: Vec<Pod>) -> Candidate {
        Candidate {
            node: node.into(),
            victims: victims.into_iter().map(Arc::new).collect(),
            num_pdb_violations: violations,
        }
    }

    // Table in the spirit of default_preemption_test.go TestPickOneNodeForPreemption.
    #[test]
    fn pick_one_node_for_preemption_applies_upstreams_criteria_in_order() {
        let p =
            |n: &str, prio: i32| started(prio_pod(n, prio, 0, json!({})), "2025-12-31T00:00:00Z");
        let late =
            |n: &str, prio: i32| started(prio_pod(n, prio, 0, json!({})), "2025-12-31T12:00:00Z");
        let cases: Vec<(&str, Vec<Candidate>, &str)> = vec![
            (
                "fewest PDB violations wins over everything else",
                vec![
                    cand("a", 1, vec![p("x", 1)]),
                    cand("b", 0, vec![p("y", 100), p("z", 100)]),
                ],
                "b",
            ),
            (
                "then the lowest highest-priority victim",
                vec![
                    cand("a", 0, vec![p("x", 50)]),
                    cand("b", 0, vec![p("y", 10), p("z", 10)]),
                ],
                "b",
            ),
            (
                "then the smallest sum of priorities",
                vec![
                    cand("a", 0, vec![p("x", 10), p("w", 9)]),
                    cand("b", 0, vec![p("y", 10), p("z", 1)]),
                ],
                "b",
            ),
            (
                "negative priorities do not make more victims cheaper",
                vec![
                    cand("a", 0, vec![p("x", -5), p("w", -5)]),
                    cand("b", 0, vec![p("y", -5)]),
                ],
                "b",
            ),
            (
                "then the fewest victims",
                vec![
                    cand("a", 0, vec![p("x", 0), p("w", 0)]),
                    cand("b", 0, vec![p("y", 0), p("z", 0)]),
                    cand("c", 0, vec![p("v", 0)]),
                ],
                "c",
            ),
            (
                "then the latest start of the highest-priority victims",
                vec![
                    cand("a", 0, vec![p("x", 3)]),
                    cand("b", 0, vec![late("y", 3)]),
                ],
                "b",
            ),
            (
                "then the first candidate",
                vec![cand("a", 0, vec![p("x", 3)]), cand("b", 0, vec![p("y", 3)])],
                "a",
            ),
        ];
        for (name, cands, want) in cases {
            let i = pick_one_node_for_preemption(&cands, now()).expect(name);
            assert_eq!(cands[i].node, want, "{name}");
        }
        assert_eq!(pick_one_node_for_preemption(&[], now()), None);
    }

    #[test]
    fn the_dry_run_looks_at_ten_percent_of_the_nodes_but_at_least_a_hundred() {
        assert_eq!(num_candidates(3), 3);
        assert_eq!(num_candidates(100), 100);
        assert_eq!(num_candidates(500), 100);
        assert_eq!(num_candidates(5000), 500);
        // DefaultPreemptionArgs 20% / at least 5.
        assert_eq!(num_candidates_with(20, 5, 3), 3);
        assert_eq!(num_candidates_with(20, 5, 10), 5);
        assert_eq!(num_candidates_with(20, 5, 100), 20);
    }

    #[test]
    fn never_preempting_pods_and_pods_waiting_for_their_victims_are_not_eligible() {
        let mut never = prio_pod("p", 10, 0, json!({}));
        never.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
        assert_eq!(eligible(&never, None, None), Err(NOT_ELIGIBLE_NEVER));

        let mut victim = on(prio_pod("v", 1, 0, json!({})), "a");
        victim.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        victim.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "PreemptionByScheduler"}]}))
            .expect("status"),
        );
        let c = cache_with(&["a"], vec![victim]);
        let node = c.node("a");
        let p = prio_pod("p", 10, 0, json!({}));
        let resolvable = Status::new(Code::Unschedulable, "X", "Insufficient cpu");
        assert_eq!(
            eligible(&p, node, Some(&resolvable)),
            Err(NOT_ELIGIBLE_TERMINATING)
        );
        let unresolvable = Status::new(Code::UnschedulableAndUnresolvable, "X", "gone");
        assert_eq!(eligible(&p, node, Some(&unresolvable)), Ok(()));
        assert_eq!(eligible(&p, None, None), Ok(()));
    }

    fn schedule(
        c: &Cache,
        p: &Pod,
        pdbs: Vec<Pdb>,
    ) -> Result<String, crate::framework::Unschedulable> {
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        alg.schedule_pod(
            p,
            c,
            &Selector::everything(),
            &|| pdbs.clone(),
            now(),
            &mut rng,
        )
        .map(|r| r.suggested_host)
    }

    #[test]
    fn a_full_cluster_preempts_on_the_node_whose_victims_matter_least() {
        let c = cache_with(
            &["a", "b"],
            vec![
                on(prio_pod("a-big", 5, 4000, json!({})), "a"),
                on(prio_pod("b-small", 1, 4000, json!({})), "b"),
            ],
        );
        let u = schedule(&c, &prio_pod("p", 10, 1000, json!({})), vec![]).expect_err("full");
        match u.post_filter {
            Some(PostFilterResult::Nominate(cand)) => {
                assert_eq!(cand.node, "b");
                assert_eq!(names(&cand.victims), vec!["b-small".to_string()]);
            }
            other => panic!("expected a nomination, got {other:?}"),
        }
        assert_eq!(
            u.error.to_string(),
            "0/2 nodes are available: 2 Insufficient cpu.",
            "a successful PostFilter adds nothing to the message"
        );
    }

    #[test]
    fn pdb_protected_victims_are_avoided_when_another_node_has_unprotected_ones() {
        let c = cache_with(
            &["a", "b"],
            vec![
                on(prio_pod("a-guarded", 1, 4000, json!({"app": "db"})), "a"),
                on(prio_pod("b-free", 5, 4000, json!({"app": "web"})), "b"),
            ],
        );
        let u = schedule(
            &c,
            &prio_pod("p", 10, 1000, json!({})),
            vec![pdb(json!({"app": "db"}), 0)],
        )
        .expect_err("full");
        match u.post_filter {
            Some(PostFilterResult::Nominate(cand)) => assert_eq!(cand.node, "b"),
            other => panic!("expected a nomination, got {other:?}"),
        }
    }

    #[test]
    fn without_lower_priority_pods_preemption_reports_no_victims_per_node() {
        let c = cache_with(
            &["a", "b", "c"],
            vec![
                on(prio_pod("x", 10, 4000, json!({})), "a"),
                on(prio_pod("y", 10, 4000, json!({})), "b"),
                on(prio_pod("z", 10, 4000, json!({})), "c"),
            ],
        );
        let u = schedule(&c, &prio_pod("p", 10, 1000, json!({})), vec![]).expect_err("full");
        assert!(matches!(
            u.post_filter,
            Some(PostFilterResult::NoCandidate(_))
        ));
        assert_eq!(
            u.error.to_string(),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn a_never_preempting_pod_says_so_and_keeps_its_nomination() {
        let c = cache_with(&["a"], vec![on(prio_pod("x", 1, 4000, json!({})), "a")]);
        let mut p = prio_pod("p", 10, 1000, json!({}));
        p.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
        let u = schedule(&c, &p, vec![]).expect_err("full");
        assert!(matches!(
            u.post_filter,
            Some(PostFilterResult::Ineligible(_))
        ));
        assert_eq!(
            u.error.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn nominated_pods_of_higher_or_equal_priority_hold_their_room_for_others() {
        let mut c = cache_with(&["a"], vec![on(prio_pod("x", 1, 2000, json!({})), "a")]);
        c.nominator_mut()
            .nominate(Arc::new(prio_pod("nominee", 10, 2000, json!({}))), "a");
        // Lower priority: the nominee's 2 CPUs count, so 1 CPU more does not fit.
        let mut low = prio_pod("low", 5, 1000, json!({}));
        low.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
        assert!(schedule(&c, &low, vec![]).is_err());
        // Higher priority: the nominee does not count.
        assert_eq!(
            schedule(&c, &prio_pod("high", 20, 2000, json!({})), vec![]).ok(),
            Some("a".into())
        );
        // The nominee itself fits on its nominated node.
        let nominee = prio_pod("nominee", 10, 2000, json!({}));
        assert_eq!(schedule(&c, &nominee, vec![]).ok(), Some("a".into()));
        // Once bound, it is no longer nominated.
        c.upsert_pod(Arc::new(on(nominee, "a")));
        assert!(c.nominator().pods_for_node("a").is_empty());
    }

    #[test]
    fn nominations_follow_the_pod_status_and_survive_unrelated_updates() {
        let mut n = Nominator::default();
        let p = Arc::new(prio_pod("p", 10, 0, json!({})));
        n.nominate(p.clone(), "a");
        n.observe_pending(Some(&p), &p);
        assert_eq!(
            n.node_of("p-uid"),
            Some("a"),
            "an in-memory nomination is kept"
        );
        let mut with = (*p).clone();
        with.status =
            Some(serde_json::from_value(json!({"nominatedNodeName": "b"})).expect("status"));
        let with = Arc::new(with);
        n.observe_pending(Some(&p), &with);
        assert_eq!(n.node_of("p-uid"), Some("b"));
        n.observe_pending(Some(&with), &p);
        assert_eq!(
            n.node_of("p-uid"),
            None,
            "a cleared status ends the nomination"
        );
    }

    #[test]
    fn removing_victims_updates_the_spread_state_so_the_pod_fits() {
        // One zone per node; the pod's spread constraint counts `app: web` pods. Node a has 2,
        // node b has 0 but is full of a higher-priority pod; with maxSkew 1 the pod only fits on
        // a once a lower-priority web pod is removed from it.
        let mut c = Cache::default();
        for (n, z) in [("a", "z1"), ("b", "z2")] {
            c.upsert_node(Arc::new(raw_node(json!({"name": n,
                "labels": {"topology.kubernetes.io/zone": z, "kubernetes.io/hostname": n}}))));
        }
        let web = |name: &str| {
            let mut p = prio_pod(name, 1, 100, json!({"app": "web"}));
            p.metadata.namespace = Some("ns".into());
            on(p, "a")
        };
        c.upsert_pod(Arc::new(web("w1")));
        c.upsert_pod(Arc::new(web("w2")));
        c.upsert_pod(Arc::new(on(prio_pod("blocker", 100, 4000, json!({})), "b")));
        let mut p = prio_pod("p", 10, 100, json!({"app": "web"}));
        p.spec.as_mut().expect("spec").topology_spread_constraints = Some(
            serde_json::from_value(json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]))
            .expect("constraints"),
        );
        let u = schedule(&c, &p, vec![]).expect_err("skew");
        match u.post_filter {
            Some(PostFilterResult::Nominate(cand)) => {
                assert_eq!(cand.node, "a");
                assert_eq!(
                    cand.victims.len(),
                    2,
                    "both web pods must go for skew 1 against zone z2's 0"
                );
            }
            other => panic!("expected a nomination, got {other:?}"),
        }
    }
}
