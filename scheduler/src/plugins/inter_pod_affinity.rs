//! InterPodAffinity (pkg/scheduler/framework/plugins/interpodaffinity): required pod
//! (anti-)affinity in PreFilter/Filter, preferred terms (the incoming pod's and, symmetrically,
//! the existing pods') in PreScore/Score/NormalizeScore.
//!
//! The per-cycle state is computed once over every node (upstream's CycleState); the filters
//! and scores then only look the node's topology pairs up.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::{Code, MAX_NODE_SCORE, Status};
use crate::cache::{NodeInfo, PodInfo};
use crate::selector::{Selector, labels_of};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't match pod anti-affinity rules";

/// `args.HardPodAffinityWeight` of the default InterPodAffinityArgs.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// Namespace name → labels, what the Namespace lister gives upstream.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// `framework.AffinityTerm`: a parsed `PodAffinityTerm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityTerm {
    pub namespaces: BTreeSet<String>,
    pub selector: Selector,
    pub topology_key: String,
    pub namespace_selector: Selector,
}

impl AffinityTerm {
    /// `newAffinityTerm`: without namespaces and namespaceSelector the term is about the owning
    /// pod's namespace (`getNamespacesFromPodAffinityTerm`).
    pub fn new(owner: &Pod, t: &PodAffinityTerm) -> Result<Self, String> {
        let selector = Selector::from_label_selector(t.label_selector.as_ref())?;
        let namespace_selector = Selector::from_label_selector(t.namespace_selector.as_ref())?;
        let listed = t.namespaces.as_deref().unwrap_or_default();
        let namespaces = if listed.is_empty() && t.namespace_selector.is_none() {
            BTreeSet::from([owner.metadata.namespace.clone().unwrap_or_default()])
        } else {
            listed.iter().cloned().collect()
        };
        Ok(AffinityTerm {
            namespaces,
            selector,
            topology_key: t.topology_key.clone(),
            namespace_selector,
        })
    }

    /// `AffinityTerm.Matches`: the pod is in one of the term's namespaces (listed, or selected
    /// through the labels of the pod's namespace) and its labels match.
    pub fn matches(&self, pod: &Pod, ns_labels: Option<&BTreeMap<String, String>>) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        (self.namespaces.contains(ns)
            || self.namespace_selector.matches(ns_labels.unwrap_or(&EMPTY)))
            && self.selector.matches(labels_of(&pod.metadata))
    }

    /// `mergeAffinityTermNamespacesIfNotEmpty`: the incoming pod's namespaceSelector is
    /// resolved once into namespace names, and then selects nothing more.
    fn merge_namespaces(&mut self, namespaces: &NamespaceLabels) {
        if self.namespace_selector.is_empty() {
            return;
        }
        for (name, labels) in namespaces {
            if self.namespace_selector.matches(labels) {
                self.namespaces.insert(name.clone());
            }
        }
        self.namespace_selector = Selector::Nothing;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i64,
}

/// The parsed pod (anti-)affinity of a pod (`PodInfo.Required*Terms`/`Preferred*Terms`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodAffinityTerms {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
}

impl PodAffinityTerms {
    /// `NewPodInfo`'s term parsing; an invalid selector is an error.
    pub fn parse(pod: &Pod) -> Result<Self, String> {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |ts: Option<&Vec<PodAffinityTerm>>| -> Result<Vec<AffinityTerm>, String> {
            ts.into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(pod, t))
                .collect()
        };
        let preferred = |ts: Option<&Vec<WeightedPodAffinityTerm>>| -> Result<Vec<WeightedAffinityTerm>, String> {
            ts.into_iter()
                .flatten()
                .map(|w| {
                    Ok(WeightedAffinityTerm {
                        term: AffinityTerm::new(pod, &w.pod_affinity_term)?,
                        weight: i64::from(w.weight),
                    })
                })
                .collect()
        };
        Ok(PodAffinityTerms {
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            preferred_affinity: preferred(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            preferred_anti_affinity: preferred(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
        })
    }

    /// Whether the pod has podAffinity or podAntiAffinity at all (`PodsWithAffinity`).
    pub fn declared(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
    }
}

type TopologyPair = (String, String);
type TopologyCounts = HashMap<TopologyPair, i64>;

fn node_labels(node: &NodeInfo) -> &BTreeMap<String, String> {
    labels_of(&node.node.metadata)
}

fn add_pair(counts: &mut TopologyCounts, node: &NodeInfo, key: &str, value: i64) {
    if let Some(v) = node_labels(node).get(key) {
        *counts.entry((key.to_string(), v.clone())).or_default() += value;
    }
}

/// `podMatchesAllAffinityTerms`: the incoming pod's namespaceSelectors are merged already.
fn pod_matches_all(terms: &[AffinityTerm], pod: &Pod) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, None))
}

/// What PreFilter computes once per cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreFilterState {
    /// Pairs where existing pods' required anti-affinity terms match the incoming pod.
    pub existing_anti_affinity_counts: TopologyCounts,
    /// Pairs where existing pods match all the incoming pod's required affinity terms.
    pub affinity_counts: TopologyCounts,
    /// Pairs where existing pods match the incoming pod's required anti-affinity terms.
    pub anti_affinity_counts: TopologyCounts,
    pub terms: PodAffinityTerms,
    pub pod: Pod,
    /// The labels of the incoming pod's namespace, for existing pods' namespaceSelectors.
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

/// PreFilter. `Ok(None)` is upstream's Skip: neither the pod nor any existing pod has required
/// (anti-)affinity that could reject a node.
pub fn pre_filter(
    pod: &Pod,
    nodes: &[&NodeInfo],
    namespaces: &NamespaceLabels,
) -> Result<Option<PreFilterState>, Status> {
    let mut terms = PodAffinityTerms::parse(pod).map_err(|e| {
        Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            format!("parsing pod: {e}"),
        )
    })?;
    for t in terms
        .required_affinity
        .iter_mut()
        .chain(terms.required_anti_affinity.iter_mut())
    {
        t.merge_namespaces(namespaces);
    }
    let ns_labels = namespaces.get(pod.metadata.namespace.as_deref().unwrap_or_default());

    let mut existing_anti = TopologyCounts::new();
    for node in nodes {
        for pi in &node.pods {
            let Some(existing) = pi.affinity.as_deref() else {
                continue;
            };
            for t in &existing.required_anti_affinity {
                if t.matches(pod, ns_labels) {
                    add_pair(&mut existing_anti, node, &t.topology_key, 1);
                }
            }
        }
    }

    let mut affinity_counts = TopologyCounts::new();
    let mut anti_counts = TopologyCounts::new();
    if !terms.required_affinity.is_empty() || !terms.required_anti_affinity.is_empty() {
        for node in nodes {
            for pi in &node.pods {
                if pod_matches_all(&terms.required_affinity, &pi.pod) {
                    for t in &terms.required_affinity {
                        add_pair(&mut affinity_counts, node, &t.topology_key, 1);
                    }
                }
                for t in &terms.required_anti_affinity {
                    if t.matches(&pi.pod, None) {
                        add_pair(&mut anti_counts, node, &t.topology_key, 1);
                    }
                }
            }
        }
    }

    if existing_anti.is_empty()
        && terms.required_affinity.is_empty()
        && terms.required_anti_affinity.is_empty()
    {
        return Ok(None);
    }
    Ok(Some(PreFilterState {
        existing_anti_affinity_counts: existing_anti,
        affinity_counts,
        anti_affinity_counts: anti_counts,
        terms,
        pod: pod.clone(),
        namespace_labels: ns_labels.cloned(),
    }))
}

fn count(counts: &TopologyCounts, key: &str, value: &str) -> i64 {
    counts
        .get(&(key.to_string(), value.to_string()))
        .copied()
        .unwrap_or(0)
}

/// `satisfyPodAffinity`, including the first pod of a group whose affinity matches itself.
fn satisfies_pod_affinity(s: &PreFilterState, node: &NodeInfo) -> bool {
    let labels = node_labels(node);
    let mut pods_exist = true;
    for t in &s.terms.required_affinity {
        match labels.get(&t.topology_key) {
            Some(v) => {
                if count(&s.affinity_counts, &t.topology_key, v) <= 0 {
                    pods_exist = false;
                }
            }
            // Every topology label must exist on the node.
            None => return false,
        }
    }
    pods_exist
        || (s.affinity_counts.is_empty() && pod_matches_all(&s.terms.required_affinity, &s.pod))
}

fn satisfies_pod_anti_affinity(s: &PreFilterState, node: &NodeInfo) -> bool {
    if s.anti_affinity_counts.is_empty() {
        return true;
    }
    let labels = node_labels(node);
    !s.terms.required_anti_affinity.iter().any(|t| {
        labels
            .get(&t.topology_key)
            .is_some_and(|v| count(&s.anti_affinity_counts, &t.topology_key, v) > 0)
    })
}

fn satisfies_existing_pods_anti_affinity(s: &PreFilterState, node: &NodeInfo) -> bool {
    if s.existing_anti_affinity_counts.is_empty() {
        return true;
    }
    !node_labels(node)
        .iter()
        .any(|(k, v)| count(&s.existing_anti_affinity_counts, k, v) > 0)
}

/// `topologyToMatchedTermCount.update`: an entry that drops to zero is removed, since the
/// filters test whether the maps are empty.
fn update_pair(counts: &mut TopologyCounts, node: &NodeInfo, key: &str, delta: i64) {
    if let Some(v) = node_labels(node).get(key) {
        let pair = (key.to_string(), v.clone());
        let n = counts.entry(pair.clone()).or_default();
        *n += delta;
        if *n == 0 {
            counts.remove(&pair);
        }
    }
}

/// `preFilterState.updateWithPod` (the AddPod/RemovePod PreFilter extensions): a pod added to
/// or removed from `node` after PreFilter (preemption's dry run, nominated pods).
pub fn update_with_pod(state: &mut PreFilterState, pi: &PodInfo, node: &NodeInfo, delta: i64) {
    if let Some(existing) = pi.affinity.as_deref() {
        for t in &existing.required_anti_affinity {
            if t.matches(&state.pod, state.namespace_labels.as_ref()) {
                update_pair(
                    &mut state.existing_anti_affinity_counts,
                    node,
                    &t.topology_key,
                    delta,
                );
            }
        }
    }
    if pod_matches_all(&state.terms.required_affinity, &pi.pod) {
        for t in &state.terms.required_affinity {
            update_pair(&mut state.affinity_counts, node, &t.topology_key, delta);
        }
    }
    for t in &state.terms.required_anti_affinity {
        if t.matches(&pi.pod, None) {
            update_pair(
                &mut state.anti_affinity_counts,
                node,
                &t.topology_key,
                delta,
            );
        }
    }
}

/// Filter; `None` state (PreFilter skipped) passes every node.
pub fn filter(state: Option<&PreFilterState>, node: &NodeInfo) -> Option<Status> {
    let s = state?;
    if !satisfies_pod_affinity(s, node) {
        return Some(Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            ERR_REASON_AFFINITY_RULES_NOT_MATCH,
        ));
    }
    if !satisfies_pod_anti_affinity(s, node) {
        return Some(Status::new(
            Code::Unschedulable,
            NAME,
            ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH,
        ));
    }
    if !satisfies_existing_pods_anti_affinity(s, node) {
        return Some(Status::new(
            Code::Unschedulable,
            NAME,
            ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH,
        ));
    }
    None
}

/// What PreScore computes: topology key → value → summed weight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreScoreState {
    pub topology_score: HashMap<String, HashMap<String, i64>>,
}

fn process_term(
    scores: &mut HashMap<String, HashMap<String, i64>>,
    term: &AffinityTerm,
    weight: i64,
    pod: &Pod,
    ns_labels: Option<&BTreeMap<String, String>>,
    node: &NodeInfo,
    multiplier: i64,
) {
    if term.matches(pod, ns_labels)
        && let Some(v) = node_labels(node).get(&term.topology_key)
    {
        *scores
            .entry(term.topology_key.clone())
            .or_default()
            .entry(v.clone())
            .or_default() += weight * multiplier;
    }
}

/// InterPodAffinityArgs' scoring knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoreArgs {
    /// `hardPodAffinityWeight`: what an existing pod's required affinity term matching the
    /// incoming pod adds (0 turns it off).
    pub hard_pod_affinity_weight: i64,
    /// `ignorePreferredTermsOfExistingPods`.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for ScoreArgs {
    fn default() -> Self {
        ScoreArgs {
            hard_pod_affinity_weight: HARD_POD_AFFINITY_WEIGHT,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

/// PreScore. `None` is upstream's Skip (every node then scores 0 for this plugin).
pub fn pre_score(
    pod: &Pod,
    feasible: usize,
    all_nodes: &[&NodeInfo],
    namespaces: &NamespaceLabels,
) -> Option<PreScoreState> {
    pre_score_with(ScoreArgs::default(), pod, feasible, all_nodes, namespaces)
}

/// PreScore with the profile's InterPodAffinityArgs.
pub fn pre_score_with(
    args: ScoreArgs,
    pod: &Pod,
    feasible: usize,
    all_nodes: &[&NodeInfo],
    namespaces: &NamespaceLabels,
) -> Option<PreScoreState> {
    if feasible == 0 {
        return None;
    }
    // An incoming pod whose terms cannot be parsed was rejected in PreFilter already.
    let mut terms = PodAffinityTerms::parse(pod).ok()?;
    let has_constraints =
        !terms.preferred_affinity.is_empty() || !terms.preferred_anti_affinity.is_empty();
    // Existing pods' preferences are optionally ignored, and then a pod without preferred
    // terms of its own has nothing to score.
    if args.ignore_preferred_terms_of_existing_pods && !has_constraints {
        return None;
    }
    for w in terms
        .preferred_affinity
        .iter_mut()
        .chain(terms.preferred_anti_affinity.iter_mut())
    {
        w.term.merge_namespaces(namespaces);
    }
    let ns_labels = namespaces.get(pod.metadata.namespace.as_deref().unwrap_or_default());
    let mut scores: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for node in all_nodes {
        // `processExistingPod` does nothing for a node without labels.
        if node_labels(node).is_empty() {
            continue;
        }
        for pi in &node.pods {
            // Without preferred terms of its own, only pods with affinity can contribute.
            if !has_constraints && pi.affinity.is_none() {
                continue;
            }
            for w in &terms.preferred_affinity {
                process_term(&mut scores, &w.term, w.weight, &pi.pod, None, node, 1);
            }
            for w in &terms.preferred_anti_affinity {
                process_term(&mut scores, &w.term, w.weight, &pi.pod, None, node, -1);
            }
            let Some(existing) = pi.affinity.as_deref() else {
                continue;
            };
            if args.hard_pod_affinity_weight > 0 {
                for t in &existing.required_affinity {
                    process_term(
                        &mut scores,
                        t,
                        args.hard_pod_affinity_weight,
                        pod,
                        ns_labels,
                        node,
                        1,
                    );
                }
            }
            if args.ignore_preferred_terms_of_existing_pods {
                continue;
            }
            for w in &existing.preferred_affinity {
                process_term(&mut scores, &w.term, w.weight, pod, ns_labels, node, 1);
            }
            for w in &existing.preferred_anti_affinity {
                process_term(&mut scores, &w.term, w.weight, pod, ns_labels, node, -1);
            }
        }
    }
    if scores.is_empty() {
        return None;
    }
    Some(PreScoreState {
        topology_score: scores,
    })
}

/// Score: the weights of the node's topology pairs.
pub fn score(state: &PreScoreState, node: &NodeInfo) -> i64 {
    let labels = node_labels(node);
    state
        .topology_score
        .iter()
        .filter_map(|(k, values)| labels.get(k).map(|v| values.get(v).copied().unwrap_or(0)))
        .sum()
}

/// NormalizeScore: min–max scaling onto [0, 100]; all equal → 0.
pub fn normalize(scores: &mut [i64]) {
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0);
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{labelled_pod, node_with};
    use serde_json::{Value, json};

    const ZONE: &str = "topology.kubernetes.io/zone";
    const HOST: &str = "kubernetes.io/hostname";

    fn zoned(name: &str, zone: Option<&str>, pods: Vec<Pod>) -> NodeInfo {
        let mut labels = json!({HOST: name});
        if let Some(z) = zone {
            labels[ZONE] = json!(z);
        }
        let mut placed = pods;
        for p in &mut placed {
            p.spec.as_mut().expect("spec").node_name = Some(name.to_string());
        }
        node_with(json!({"name": name, "labels": labels}), placed)
    }

    fn term(key: &str, sel: Value) -> Value {
        json!({"labelSelector": {"matchLabels": sel}, "topologyKey": key})
    }

    fn with_affinity(name: &str, labels: Value, affinity: Value) -> Pod {
        labelled_pod(name, "ns", labels, json!({"affinity": affinity}))
    }

    fn plain(name: &str, labels: Value) -> Pod {
        labelled_pod(name, "ns", labels, json!({}))
    }

    fn verdicts(
        pod: &Pod,
        nodes: &[NodeInfo],
        ns: &NamespaceLabels,
    ) -> Vec<Option<(Code, String)>> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let state = pre_filter(pod, &refs, ns).expect("pre-filter");
        nodes
            .iter()
            .map(|n| filter(state.as_ref(), n).map(|s| (s.code, s.reasons.join(","))))
            .collect()
    }

    fn affinity_rejected() -> Option<(Code, String)> {
        Some((
            Code::UnschedulableAndUnresolvable,
            ERR_REASON_AFFINITY_RULES_NOT_MATCH.into(),
        ))
    }

    fn anti_rejected() -> Option<(Code, String)> {
        Some((
            Code::Unschedulable,
            ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH.into(),
        ))
    }

    fn existing_anti_rejected() -> Option<(Code, String)> {
        Some((
            Code::Unschedulable,
            ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH.into(),
        ))
    }

    #[test]
    fn required_affinity_accepts_only_the_domains_of_matching_pods() {
        let nodes = [
            zoned("a", Some("z1"), vec![plain("db", json!({"app": "db"}))]),
            zoned("b", Some("z1"), vec![]),
            zoned("x", Some("z2"), vec![plain("web", json!({"app": "web"}))]),
            zoned("nozone", None, vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "db"}))]}}),
        );
        assert_eq!(
            verdicts(&p, &nodes, &NamespaceLabels::new()),
            vec![None, None, affinity_rejected(), affinity_rejected()]
        );
    }

    #[test]
    fn the_first_pod_of_a_group_with_affinity_to_itself_may_go_anywhere_with_the_topology_key() {
        let nodes = [
            zoned(
                "a",
                Some("z1"),
                vec![plain("other", json!({"app": "other"}))],
            ),
            zoned("nozone", None, vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({"app": "web"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))]}}),
        );
        assert_eq!(
            verdicts(&p, &nodes, &NamespaceLabels::new()),
            vec![None, affinity_rejected()]
        );
        // A pod whose terms do not match itself gets no such exception.
        let q = with_affinity(
            "q",
            json!({"app": "api"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))]}}),
        );
        assert_eq!(
            verdicts(&q, &nodes, &NamespaceLabels::new()),
            vec![affinity_rejected(), affinity_rejected()]
        );
    }

    #[test]
    fn once_a_group_has_a_member_the_rest_follow_it() {
        let nodes = [
            zoned("a", Some("z1"), vec![plain("web-0", json!({"app": "web"}))]),
            zoned("x", Some("z2"), vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({"app": "web"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))]}}),
        );
        assert_eq!(
            verdicts(&p, &nodes, &NamespaceLabels::new()),
            vec![None, affinity_rejected()]
        );
    }

    #[test]
    fn required_anti_affinity_rejects_domains_with_matching_pods() {
        let nodes = [
            zoned("a", Some("z1"), vec![plain("web-0", json!({"app": "web"}))]),
            zoned("b", Some("z1"), vec![]),
            zoned("nozone", None, vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(HOST, json!({"app": "web"}))]}}),
        );
        assert_eq!(
            verdicts(&p, &nodes, &NamespaceLabels::new()),
            vec![anti_rejected(), None, None]
        );
        let zone = with_affinity(
            "p",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))]}}),
        );
        // A node without the key cannot share a domain with anyone.
        assert_eq!(
            verdicts(&zone, &nodes, &NamespaceLabels::new()),
            vec![anti_rejected(), anti_rejected(), None]
        );
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let guard = with_affinity(
            "guard",
            json!({"app": "db"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))]}}),
        );
        let nodes = [
            zoned("a", Some("z1"), vec![guard]),
            zoned("b", Some("z1"), vec![]),
            zoned("x", Some("z2"), vec![]),
        ];
        let web = plain("p", json!({"app": "web"}));
        assert_eq!(
            verdicts(&web, &nodes, &NamespaceLabels::new()),
            vec![existing_anti_rejected(), existing_anti_rejected(), None]
        );
        let api = plain("p", json!({"app": "api"}));
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        assert_eq!(pre_filter(&api, &refs, &NamespaceLabels::new()), Ok(None));
    }

    #[test]
    fn terms_look_at_their_own_namespace_unless_they_name_or_select_others() {
        let other = labelled_pod("db", "other", json!({"app": "db"}), json!({}));
        let nodes = [
            zoned("a", Some("z1"), vec![other]),
            zoned("x", Some("z2"), vec![]),
        ];
        let mut namespaces = NamespaceLabels::new();
        namespaces.insert("ns".into(), BTreeMap::from([("team".into(), "a".into())]));
        namespaces.insert(
            "other".into(),
            BTreeMap::from([("team".into(), "b".into())]),
        );
        let with_term = |extra: Value| {
            let mut t = term(ZONE, json!({"app": "db"}));
            if let (Some(t), Some(e)) = (t.as_object_mut(), extra.as_object()) {
                t.extend(e.clone());
            }
            with_affinity(
                "p",
                json!({}),
                json!({"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [t]}}),
            )
        };
        let same_ns = with_term(json!({}));
        assert_eq!(
            verdicts(&same_ns, &nodes, &namespaces),
            vec![affinity_rejected(), affinity_rejected()]
        );
        let named = with_term(json!({"namespaces": ["other"]}));
        assert_eq!(
            verdicts(&named, &nodes, &namespaces),
            vec![None, affinity_rejected()]
        );
        let selected = with_term(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}}));
        assert_eq!(
            verdicts(&selected, &nodes, &namespaces),
            vec![None, affinity_rejected()]
        );
        let all = with_term(json!({"namespaceSelector": {}}));
        assert_eq!(
            verdicts(&all, &nodes, &namespaces),
            vec![None, affinity_rejected()]
        );
    }

    #[test]
    fn an_existing_pods_namespace_selector_is_matched_against_the_incoming_pods_namespace_labels() {
        let mut t = term(HOST, json!({"app": "web"}));
        t["namespaceSelector"] = json!({"matchLabels": {"team": "a"}});
        let guard = labelled_pod(
            "guard",
            "other",
            json!({}),
            json!({"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [t]}}}),
        );
        let nodes = [
            zoned("a", Some("z1"), vec![guard]),
            zoned("b", Some("z1"), vec![]),
        ];
        let web = plain("p", json!({"app": "web"}));
        let mut namespaces = NamespaceLabels::new();
        namespaces.insert("ns".into(), BTreeMap::from([("team".into(), "a".into())]));
        assert_eq!(
            verdicts(&web, &nodes, &namespaces),
            vec![existing_anti_rejected(), None]
        );
        namespaces.insert("ns".into(), BTreeMap::from([("team".into(), "b".into())]));
        assert_eq!(verdicts(&web, &nodes, &namespaces), vec![None, None]);
    }

    #[test]
    fn an_invalid_selector_rejects_the_pod_in_pre_filter() {
        let p = with_affinity(
            "p",
            json!({}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": ZONE,
                "labelSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}]}}),
        );
        let err = pre_filter(&p, &[], &NamespaceLabels::new()).expect_err("invalid");
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        assert!(
            err.reasons[0].starts_with("parsing pod: "),
            "{:?}",
            err.reasons
        );
    }

    // --- scoring ---

    fn scores(pod: &Pod, nodes: &[NodeInfo]) -> Option<Vec<i64>> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let state = pre_score(pod, refs.len(), &refs, &NamespaceLabels::new())?;
        let mut s: Vec<i64> = refs.iter().map(|n| score(&state, n)).collect();
        normalize(&mut s);
        Some(s)
    }

    #[test]
    fn existing_pods_preferences_and_hard_affinity_follow_the_profile_args() {
        // An existing pod prefers, and requires, pods labelled app=web on its host.
        let existing = with_affinity(
            "e",
            json!({}),
            json!({"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term(HOST, json!({"app": "web"}))],
                "preferredDuringSchedulingIgnoredDuringExecution": [weighted(5, HOST, json!({"app": "web"}))]}}),
        );
        let nodes = [zoned("a", None, vec![existing]), zoned("b", None, vec![])];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let web = plain("p", json!({"app": "web"}));
        let ns = NamespaceLabels::new();
        let raw = |args: ScoreArgs| {
            pre_score_with(args, &web, refs.len(), &refs, &ns)
                .map(|st| refs.iter().map(|n| score(&st, n)).collect::<Vec<i64>>())
        };
        // Default: hard weight 1 plus the preference 5.
        assert_eq!(raw(ScoreArgs::default()), Some(vec![6, 0]));
        let no_hard = ScoreArgs {
            hard_pod_affinity_weight: 0,
            ..ScoreArgs::default()
        };
        assert_eq!(raw(no_hard), Some(vec![5, 0]));
        // Ignoring existing pods' preferences skips a pod without preferred terms outright.
        let ignore = ScoreArgs {
            ignore_preferred_terms_of_existing_pods: true,
            ..ScoreArgs::default()
        };
        assert_eq!(raw(ignore), None);
    }

    fn weighted(weight: i32, key: &str, sel: Value) -> Value {
        json!({"weight": weight, "podAffinityTerm": term(key, sel)})
    }

    #[test]
    fn preferred_affinity_favours_domains_with_matching_pods_by_weight() {
        let nodes = [
            zoned("a", Some("z1"), vec![plain("db", json!({"app": "db"}))]),
            zoned("b", Some("z1"), vec![]),
            zoned(
                "x",
                Some("z2"),
                vec![plain("cache", json!({"app": "cache"}))],
            ),
            zoned("y", Some("z3"), vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({}),
            json!({"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                weighted(8, ZONE, json!({"app": "db"})), weighted(2, ZONE, json!({"app": "cache"}))]}}),
        );
        assert_eq!(scores(&p, &nodes), Some(vec![100, 100, 25, 0]));
    }

    #[test]
    fn preferred_anti_affinity_favours_domains_without_matching_pods() {
        let nodes = [
            zoned("a", Some("z1"), vec![plain("web-0", json!({"app": "web"}))]),
            zoned("b", Some("z2"), vec![]),
        ];
        let p = with_affinity(
            "p",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [weighted(5, HOST, json!({"app": "web"}))]}}),
        );
        assert_eq!(scores(&p, &nodes), Some(vec![0, 100]));
    }

    #[test]
    fn existing_pods_preferred_and_required_terms_count_symmetrically() {
        let fan = with_affinity(
            "fan",
            json!({}),
            json!({
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [term(ZONE, json!({"app": "web"}))],
                    "preferredDuringSchedulingIgnoredDuringExecution": [weighted(3, HOST, json!({"app": "web"}))]},
            }),
        );
        let hater = with_affinity(
            "hater",
            json!({}),
            json!({"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [weighted(4, HOST, json!({"app": "web"}))]}}),
        );
        let nodes = [
            zoned("a", Some("z1"), vec![fan]),
            zoned("b", Some("z1"), vec![]),
            zoned("x", Some("z2"), vec![hater]),
            zoned("y", Some("z2"), vec![]),
        ];
        // a: hard weight 1 (zone) + 3 (host) = 4; b: 1; x: −4; y: 0 → min −4, max 4.
        let web = plain("p", json!({"app": "web"}));
        assert_eq!(scores(&web, &nodes), Some(vec![100, 62, 0, 50]));
    }

    #[test]
    fn without_any_pod_affinity_scoring_is_skipped() {
        let nodes = [zoned("a", Some("z1"), vec![plain("x", json!({}))])];
        assert_eq!(scores(&plain("p", json!({})), &nodes), None);
    }

    #[test]
    fn normalize_scales_between_the_lowest_and_highest_score() {
        let mut s = vec![-5, 0, 5];
        normalize(&mut s);
        assert_eq!(s, vec![0, 50, 100]);
        let mut same = vec![7, 7];
        normalize(&mut same);
        assert_eq!(same, vec![0, 0]);
    }
}
