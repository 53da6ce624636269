//! PodTopologySpread (pkg/scheduler/framework/plugins/podtopologyspread): `DoNotSchedule`
//! constraints in PreFilter/Filter, `ScheduleAnyway` constraints (or the system defaults for pods
//! of a Service/RC/RS/StatefulSet) in PreScore/Score/NormalizeScore.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service, TopologySpreadConstraint};

use super::{Code, MAX_NODE_SCORE, Status, node_affinity, taint_toleration};
use crate::cache::{NodeInfo, PodInfo};
use crate::selector::{Requirement, Selector, labels_of};

pub const NAME: &str = "PodTopologySpread";
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// `systemDefaultConstraints` (topology key, maxSkew), both `ScheduleAnyway`.
pub const SYSTEM_DEFAULT_CONSTRAINTS: [(&str, i32); 2] =
    [(LABEL_HOSTNAME, 3), (LABEL_TOPOLOGY_ZONE, 5)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    DoNotSchedule,
    ScheduleAnyway,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::DoNotSchedule => "DoNotSchedule",
            Action::ScheduleAnyway => "ScheduleAnyway",
        }
    }
}

/// `topologySpreadConstraint`: the API constraint with its selector parsed and defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub selector: Selector,
    pub min_domains: i32,
    /// `nodeAffinityPolicy: Honor` (the default).
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore).
    pub honor_node_taints: bool,
}

impl Constraint {
    /// `matchNodeInclusionPolicies`.
    fn includes_node(&self, pod: &Pod, node: &NodeInfo) -> bool {
        if self.honor_node_affinity && !node_affinity::required_matches(pod, node) {
            return false;
        }
        if self.honor_node_taints {
            let taints = node
                .node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default();
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            if taint_toleration::find_untolerated(taints, tolerations).is_some() {
                return false;
            }
        }
        true
    }
}

/// `filterTopologySpreadConstraints`: the pod's constraints for `action`, with matchLabelKeys
/// merged into the selector.
fn filter_constraints(
    constraints: &[TopologySpreadConstraint],
    pod_labels: &BTreeMap<String, String>,
    action: Action,
) -> Result<Vec<Constraint>, String> {
    let mut out = Vec::new();
    for c in constraints
        .iter()
        .filter(|c| c.when_unsatisfiable == action.as_str())
    {
        let mut selector = Selector::from_label_selector(c.label_selector.as_ref())?;
        let keys = c.match_label_keys.as_deref().unwrap_or_default();
        let matched: Vec<Requirement> = keys
            .iter()
            .filter_map(|k| {
                pod_labels
                    .get(k)
                    .map(|v| Requirement::In(k.clone(), vec![v.clone()]))
            })
            .collect();
        if !matched.is_empty() {
            // `mergeLabelSetWithSelector`: the set's requirements plus the selector's; a
            // `Nothing` selector has no requirements to add.
            let mut merged = Selector::Requirements(matched);
            merged.add(selector.requirements().iter().cloned());
            selector = merged;
        }
        out.push(Constraint {
            max_skew: c.max_skew,
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}

/// The objects `helper.DefaultSelector` consults for one pod: the Services of its namespace and
/// its controller when that is an RC, RS or StatefulSet the scheduler knows.
#[derive(Clone, Debug, Default)]
pub struct OwnerObjects<'a> {
    pub services: Vec<&'a Service>,
    pub replication_controller: Option<&'a ReplicationController>,
    pub replica_set: Option<&'a ReplicaSet>,
    pub stateful_set: Option<&'a StatefulSet>,
}

/// `helper.DefaultSelector`: the Services' selectors that match the pod, merged, plus the
/// controller's selector.
pub fn default_selector(pod: &Pod, owners: &OwnerObjects<'_>) -> Selector {
    let pod_labels = labels_of(&pod.metadata);
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    for svc in &owners.services {
        // A Service without a selector matches nothing, not everything.
        let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            continue;
        };
        if Selector::from_set(sel).matches(pod_labels) {
            set.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    if let Some(rc) = owners.replication_controller
        && let Some(sel) = rc.spec.as_ref().and_then(|s| s.selector.as_ref())
    {
        set.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut selector = Selector::from_set(&set);
    let controller_selector = owners
        .replica_set
        .map(|rs| &rs.spec.selector)
        .or_else(|| owners.stateful_set.map(|ss| &ss.spec.selector));
    if let Some(sel) = controller_selector
        && let Ok(other) = Selector::from_label_selector(Some(sel))
    {
        selector.add(other.requirements().iter().cloned());
    }
    selector
}

/// The pod's constraints for `action`, or the system defaults when it declares none
/// (`getConstraints` / `buildDefaultConstraints`).
pub fn constraints_for(
    pod: &Pod,
    action: Action,
    default_selector: &Selector,
) -> Result<Vec<Constraint>, String> {
    constraints_for_with(None, pod, action, default_selector)
}

/// [`constraints_for`] with the profile's PodTopologySpreadArgs: `None` is `defaultingType:
/// System`, `Some` the `List` of `defaultConstraints`, each given the pod's default selector
/// (`buildDefaultConstraints`).
pub fn constraints_for_with(
    defaults: Option<&[TopologySpreadConstraint]>,
    pod: &Pod,
    action: Action,
    default_selector: &Selector,
) -> Result<Vec<Constraint>, String> {
    let declared = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default();
    if !declared.is_empty() {
        return filter_constraints(declared, labels_of(&pod.metadata), action);
    }
    if let Some(list) = defaults {
        let mut constraints = filter_constraints(list, labels_of(&pod.metadata), action)?;
        if constraints.is_empty() || default_selector.is_empty() {
            return Ok(Vec::new());
        }
        for c in &mut constraints {
            c.selector = default_selector.clone();
        }
        return Ok(constraints);
    }
    if action != Action::ScheduleAnyway || default_selector.is_empty() {
        return Ok(Vec::new());
    }
    Ok(SYSTEM_DEFAULT_CONSTRAINTS
        .iter()
        .map(|(key, skew)| Constraint {
            max_skew: *skew,
            topology_key: key.to_string(),
            selector: default_selector.clone(),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect())
}

fn node_labels(node: &NodeInfo) -> &BTreeMap<String, String> {
    labels_of(&node.node.metadata)
}

/// `nodeLabelsMatchSpreadConstraints`.
fn has_all_keys(labels: &BTreeMap<String, String>, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// `countPodsMatchSelector`: pods of the namespace, not terminating, matching the selector.
fn count_matching(pods: &[PodInfo], selector: &Selector, ns: &str) -> i64 {
    pods.iter()
        .filter(|p| {
            p.pod.metadata.deletion_timestamp.is_none()
                && p.pod.metadata.namespace.as_deref().unwrap_or_default() == ns
                && selector.matches(labels_of(&p.pod.metadata))
        })
        .count() as i64
}

/// `criticalPaths`: the two domains with the fewest matching pods; `[0]` holds the minimum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriticalPaths([(String, i64); 2]);

impl CriticalPaths {
    fn new() -> Self {
        CriticalPaths([
            (String::new(), i64::from(i32::MAX)),
            (String::new(), i64::from(i32::MAX)),
        ])
    }

    fn update(&mut self, value: &str, num: i64) {
        let p = &mut self.0;
        let i = if value == p[0].0 {
            Some(0)
        } else if value == p[1].0 {
            Some(1)
        } else {
            None
        };
        match i {
            Some(i) => {
                p[i].1 = num;
                if p[0].1 > p[1].1 {
                    p.swap(0, 1);
                }
            }
            None => {
                if num < p[0].1 {
                    p[1] = p[0].clone();
                    p[0] = (value.to_string(), num);
                } else if num < p[1].1 {
                    p[1] = (value.to_string(), num);
                }
            }
        }
    }

    pub fn min(&self) -> i64 {
        self.0[0].1
    }
}

/// What PreFilter computes once per cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreFilterState {
    pub constraints: Vec<Constraint>,
    pub critical_paths: Vec<CriticalPaths>,
    /// Per constraint: topology value → matching pods.
    pub tp_value_to_match_num: Vec<HashMap<String, i64>>,
}

impl PreFilterState {
    /// `minMatchNum`: fewer eligible domains than minDomains makes the global minimum 0.
    fn min_match_num(&self, i: usize, min_domains: i32) -> i64 {
        if (self.tp_value_to_match_num[i].len() as i64) < i64::from(min_domains) {
            0
        } else {
            self.critical_paths[i].min()
        }
    }
}

fn error_status(e: String) -> Status {
    Status::new(Code::UnschedulableAndUnresolvable, NAME, e)
}

/// PreFilter over all nodes. `Ok(None)` is upstream's Skip (no DoNotSchedule constraint).
pub fn pre_filter(
    pod: &Pod,
    all_nodes: &[&NodeInfo],
    default_selector: &Selector,
) -> Result<Option<PreFilterState>, Status> {
    pre_filter_with(None, pod, all_nodes, default_selector)
}

/// [`pre_filter`] with the profile's default constraints (see [`constraints_for_with`]).
pub fn pre_filter_with(
    defaults: Option<&[TopologySpreadConstraint]>,
    pod: &Pod,
    all_nodes: &[&NodeInfo],
    default_selector: &Selector,
) -> Result<Option<PreFilterState>, Status> {
    let constraints = constraints_for_with(defaults, pod, Action::DoNotSchedule, default_selector)
        .map_err(|e| error_status(format!("get constraints from pod: {e}")))?;
    if constraints.is_empty() {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for node in all_nodes {
        let labels = node_labels(node);
        if !has_all_keys(labels, &constraints) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !c.includes_node(pod, node) {
                continue;
            }
            let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
            *counts[i].entry(value).or_default() += count_matching(&node.pods, &c.selector, ns);
        }
    }
    let critical_paths = counts
        .iter()
        .map(|m| {
            let mut p = CriticalPaths::new();
            // Sorted, so ties resolve the same way every time (Go iterates maps randomly).
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort();
            for (v, n) in entries {
                p.update(v, *n);
            }
            p
        })
        .collect();
    Ok(Some(PreFilterState {
        constraints,
        critical_paths,
        tp_value_to_match_num: counts,
    }))
}

/// `updateWithPod` (the AddPod/RemovePod PreFilter extensions): preemption's dry run and the
/// nominated pods change a node's pods after PreFilter, so the counts of the updated pod's
/// domain move by `delta` (pods of other namespaces never count).
pub fn update_with_pod(
    state: &mut PreFilterState,
    updated: &Pod,
    preemptor: &Pod,
    node: &NodeInfo,
    delta: i64,
) {
    if updated.metadata.namespace != preemptor.metadata.namespace {
        return;
    }
    let labels = node_labels(node);
    if !has_all_keys(labels, &state.constraints) {
        return;
    }
    let pod_labels = labels_of(&updated.metadata);
    for i in 0..state.constraints.len() {
        let c = &state.constraints[i];
        if !c.selector.matches(pod_labels) || !c.includes_node(preemptor, node) {
            continue;
        }
        let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
        let n = state.tp_value_to_match_num[i]
            .entry(value.clone())
            .or_default();
        *n += delta;
        let n = *n;
        state.critical_paths[i].update(&value, n);
    }
}

/// Filter: `matching pods in the node's domain + self-match − global minimum ≤ maxSkew`.
pub fn filter(pod: &Pod, state: Option<&PreFilterState>, node: &NodeInfo) -> Option<Status> {
    let s = state?;
    let labels = node_labels(node);
    let pod_labels = labels_of(&pod.metadata);
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            return Some(Status::new(
                Code::UnschedulableAndUnresolvable,
                NAME,
                ERR_REASON_NODE_LABEL_NOT_MATCH,
            ));
        };
        let min = s.min_match_num(i, c.min_domains);
        let self_match = i64::from(c.selector.matches(pod_labels));
        let matching = s.tp_value_to_match_num[i].get(value).copied().unwrap_or(0);
        if matching + self_match - min > i64::from(c.max_skew) {
            return Some(Status::new(
                Code::Unschedulable,
                NAME,
                ERR_REASON_CONSTRAINTS_NOT_MATCH,
            ));
        }
    }
    None
}

/// What PreScore computes once per cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct PreScoreState {
    pub constraints: Vec<Constraint>,
    /// Feasible nodes lacking a topology key; they score 0.
    pub ignored_nodes: HashSet<String>,
    /// Per constraint (hostname constraints stay empty): topology value → matching pods.
    pub topology_value_to_pod_counts: Vec<HashMap<String, i64>>,
    pub topology_normalizing_weight: Vec<f64>,
}

/// `topologyNormalizingWeight`.
fn topology_normalizing_weight(size: usize) -> f64 {
    ((size + 2) as f64).ln()
}

/// `scoreForCount`.
fn score_for_count(count: i64, max_skew: i32, weight: f64) -> f64 {
    count as f64 * weight + f64::from(max_skew - 1)
}

/// PreScore over the feasible nodes, counting pods on all nodes. `None` is upstream's Skip.
/// `system_defaulted` is true for the default profile (`defaultingType: System`).
pub fn pre_score(
    pod: &Pod,
    feasible: &[&NodeInfo],
    all_nodes: &[&NodeInfo],
    default_selector: &Selector,
    system_defaulted: bool,
) -> Option<PreScoreState> {
    pre_score_with(
        None,
        pod,
        feasible,
        all_nodes,
        default_selector,
        system_defaulted,
    )
}

/// [`pre_score`] with the profile's default constraints; a `List` is never system-defaulted.
pub fn pre_score_with(
    defaults: Option<&[TopologySpreadConstraint]>,
    pod: &Pod,
    feasible: &[&NodeInfo],
    all_nodes: &[&NodeInfo],
    default_selector: &Selector,
    system_defaulted: bool,
) -> Option<PreScoreState> {
    let system_defaulted = system_defaulted && defaults.is_none();
    if all_nodes.is_empty() {
        return None;
    }
    let declared = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    // Only non-system-default rules need every topology label: nodes without a zone label
    // still get hostname spreading.
    let require_all = declared || !system_defaulted;
    // A constraint error was reported by PreFilter already; scoring skips.
    let constraints =
        constraints_for_with(defaults, pod, Action::ScheduleAnyway, default_selector).ok()?;
    if constraints.is_empty() {
        return None;
    }
    let mut ignored = HashSet::new();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for node in feasible {
        let labels = node_labels(node);
        if require_all && !has_all_keys(labels, &constraints) {
            ignored.insert(node.name().to_string());
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key == LABEL_HOSTNAME {
                continue;
            }
            // A missing label is the "" domain, as Go's map lookup gives.
            let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
            counts[i].entry(value).or_insert(0);
        }
    }
    let weights = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == LABEL_HOSTNAME {
                feasible.len() - ignored.len()
            } else {
                counts[i].len()
            };
            topology_normalizing_weight(size)
        })
        .collect();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    for node in all_nodes {
        let labels = node_labels(node);
        if require_all && !has_all_keys(labels, &constraints) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !c.includes_node(pod, node) {
                continue;
            }
            let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
            // Only domains of feasible nodes are counted; hostname counts happen in Score.
            if let Some(n) = counts[i].get_mut(&value) {
                *n += count_matching(&node.pods, &c.selector, ns);
            }
        }
    }
    Some(PreScoreState {
        constraints,
        ignored_nodes: ignored,
        topology_value_to_pod_counts: counts,
        topology_normalizing_weight: weights,
    })
}

/// Score: the weighted matching pods of the node's domains (more is worse).
pub fn score(pod: &Pod, state: &PreScoreState, node: &NodeInfo) -> i64 {
    if state.ignored_nodes.contains(node.name()) {
        return 0;
    }
    let labels = node_labels(node);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut total = 0.0;
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            continue;
        };
        let count = if c.topology_key == LABEL_HOSTNAME {
            count_matching(&node.pods, &c.selector, ns)
        } else {
            state.topology_value_to_pod_counts[i]
                .get(value)
                .copied()
                .unwrap_or(0)
        };
        total += score_for_count(count, c.max_skew, state.topology_normalizing_weight[i]);
    }
    total.round() as i64
}

/// NormalizeScore: fewer matching pods score higher; ignored nodes score 0.
pub fn normalize(state: &PreScoreState, names: &[&str], scores: &mut [i64]) {
    let mut min = i64::MAX;
    let mut max = 0;
    let ignored: Vec<bool> = names
        .iter()
        .map(|n| state.ignored_nodes.contains(*n))
        .collect();
    for (s, ign) in scores.iter().zip(&ignored) {
        if *ign {
            continue;
        }
        min = min.min(*s);
        max = max.max(*s);
    }
    for (s, ign) in scores.iter_mut().zip(&ignored) {
        *s = if *ign {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *s) / max
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{labelled_pod, node_with};
    use serde_json::{Value, json};

    const ZONE: &str = LABEL_TOPOLOGY_ZONE;

    /// A node `name` in `zone` (no zone label when `None`) with the given pods.
    fn zoned(name: &str, zone: Option<&str>, pods: Vec<Pod>) -> NodeInfo {
        let mut labels = json!({LABEL_HOSTNAME: name});
        if let Some(z) = zone {
            labels[ZONE] = json!(z);
        }
        let mut placed = pods;
        for p in &mut placed {
            p.spec.as_mut().expect("spec").node_name = Some(name.to_string());
        }
        node_with(json!({"name": name, "labels": labels}), placed)
    }

    fn foo(name: &str) -> Pod {
        labelled_pod(name, "ns", json!({"foo": ""}), json!({}))
    }

    fn constraint(key: &str, skew: i32, when: &str, extra: Value) -> Value {
        let mut c = json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    fn incoming(constraints: Vec<Value>, extra_spec: Value) -> Pod {
        let mut spec = json!({"topologySpreadConstraints": constraints});
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            s.extend(extra.clone());
        }
        labelled_pod("incoming", "ns", json!({"foo": ""}), spec)
    }

    /// Each node's verdict: None (fits) or the reason.
    fn verdicts(pod: &Pod, nodes: &[NodeInfo]) -> Vec<Option<String>> {
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let state = pre_filter(pod, &refs, &Selector::everything()).expect("pre-filter");
        nodes
            .iter()
            .map(|n| filter(pod, state.as_ref(), n).map(|s| s.reasons.join(",")))
            .collect()
    }

    const SKEW: &str = ERR_REASON_CONSTRAINTS_NOT_MATCH;

    #[test]
    fn listed_default_constraints_apply_with_the_pods_default_selector() {
        // A profile's List default: zones may differ by at most 1 (DoNotSchedule).
        let defaults: Vec<TopologySpreadConstraint> = vec![
            serde_json::from_value(json!({"maxSkew": 1, "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule"}))
            .expect("constraint"),
        ];
        let nodes = [
            zoned("a", Some("z1"), vec![foo("x"), foo("y")]),
            zoned("b", Some("z2"), vec![foo("w")]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let incoming = foo("p");
        // The default selector (its Services' / controller's) matches the foo pods.
        let sel = Selector::from_set(&BTreeMap::from([("foo".to_string(), String::new())]));
        let state = pre_filter_with(Some(&defaults), &incoming, &refs, &sel)
            .expect("pre-filter")
            .expect("constraints apply");
        let got: Vec<bool> = nodes
            .iter()
            .map(|n| filter(&incoming, Some(&state), n).is_none())
            .collect();
        assert_eq!(got, vec![false, true]);
        // Without a default selector (no owner, no Service) the defaults do not apply, and the
        // system defaults never add DoNotSchedule constraints.
        assert_eq!(
            pre_filter_with(Some(&defaults), &incoming, &refs, &Selector::default()),
            Ok(None)
        );
        assert_eq!(pre_filter(&incoming, &refs, &sel), Ok(None));
    }

    #[test]
    fn without_existing_pods_every_node_fits() {
        let nodes = [
            zoned("a", Some("z1"), vec![]),
            zoned("x", Some("z2"), vec![]),
        ];
        let p = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        assert_eq!(verdicts(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn a_zone_already_ahead_by_max_skew_rejects_the_pod() {
        // zone1: 2 matching pods, zone2: 1 → zone1 would be 3 vs 1.
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1")]),
            zoned("b", Some("z1"), vec![foo("b1")]),
            zoned("x", Some("z2"), vec![foo("x1")]),
            zoned("y", Some("z2"), vec![]),
        ];
        let p = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        assert_eq!(
            verdicts(&p, &nodes),
            vec![Some(SKEW.into()), Some(SKEW.into()), None, None]
        );
    }

    #[test]
    fn pods_of_other_namespaces_terminating_pods_and_non_matching_pods_do_not_count() {
        let mut terminating = foo("t");
        terminating.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).expect("time"));
        let nodes = [
            zoned(
                "a",
                Some("z1"),
                vec![
                    labelled_pod("other-ns", "other", json!({"foo": ""}), json!({})),
                    terminating,
                    labelled_pod("unlabelled", "ns", json!({"bar": ""}), json!({})),
                ],
            ),
            zoned("x", Some("z2"), vec![]),
        ];
        let p = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        assert_eq!(verdicts(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn a_pod_its_own_selector_does_not_match_does_not_count_itself() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1")]),
            zoned("x", Some("z2"), vec![]),
        ];
        let mut p = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        p.metadata.labels = None;
        // 1 + 0 − 0 ≤ 1 on zone1.
        assert_eq!(verdicts(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn fewer_domains_than_min_domains_make_the_global_minimum_zero() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1")]),
            zoned("x", Some("z2"), vec![foo("x1")]),
        ];
        let p = incoming(
            vec![constraint(
                ZONE,
                1,
                "DoNotSchedule",
                json!({"minDomains": 3}),
            )],
            json!({}),
        );
        // 1 + 1 − 0 > 1 everywhere.
        assert_eq!(
            verdicts(&p, &nodes),
            vec![Some(SKEW.into()), Some(SKEW.into())]
        );
        let p = incoming(
            vec![constraint(
                ZONE,
                1,
                "DoNotSchedule",
                json!({"minDomains": 2}),
            )],
            json!({}),
        );
        assert_eq!(verdicts(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn a_node_without_the_topology_label_is_unresolvable() {
        let nodes = [
            zoned("a", Some("z1"), vec![]),
            zoned("nolabel", None, vec![foo("n1"), foo("n2")]),
        ];
        let p = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let state = pre_filter(&p, &refs, &Selector::everything()).expect("ok");
        let s = filter(&p, state.as_ref(), &nodes[1]).expect("rejected");
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![ERR_REASON_NODE_LABEL_NOT_MATCH.to_string()]);
        // Its pods are not counted in any domain.
        assert_eq!(filter(&p, state.as_ref(), &nodes[0]), None);
    }

    #[test]
    fn node_affinity_policy_honor_leaves_out_nodes_the_pod_cannot_land_on() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1"), foo("a2"), foo("a3")]),
            zoned("x", Some("z2"), vec![]),
        ];
        let selector = json!({"nodeSelector": {ZONE: "z1"}});
        let honor = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            selector.clone(),
        );
        // Only zone1 counts: 3 + 1 − 3 ≤ 1.
        assert_eq!(verdicts(&honor, &nodes)[0], None);
        let ignore = incoming(
            vec![constraint(
                ZONE,
                1,
                "DoNotSchedule",
                json!({"nodeAffinityPolicy": "Ignore"}),
            )],
            selector,
        );
        // zone2's empty domain counts: 3 + 1 − 0 > 1.
        assert_eq!(verdicts(&ignore, &nodes)[0], Some(SKEW.into()));
    }

    #[test]
    fn node_taints_policy_honor_leaves_out_tainted_nodes() {
        let mut tainted = zoned("x", Some("z2"), vec![]);
        let mut n = (*tainted.node).clone();
        n.spec = Some(
            serde_json::from_value(json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}))
                .expect("spec"),
        );
        tainted.node = std::sync::Arc::new(n);
        let nodes = [zoned("a", Some("z1"), vec![foo("a1"), foo("a2")]), tainted];
        let ignore = incoming(
            vec![constraint(ZONE, 1, "DoNotSchedule", json!({}))],
            json!({}),
        );
        assert_eq!(verdicts(&ignore, &nodes)[0], Some(SKEW.into()));
        let honor = incoming(
            vec![constraint(
                ZONE,
                1,
                "DoNotSchedule",
                json!({"nodeTaintsPolicy": "Honor"}),
            )],
            json!({}),
        );
        assert_eq!(verdicts(&honor, &nodes)[0], None);
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_own_values() {
        let rev = |name: &str, hash: &str| {
            labelled_pod(
                name,
                "ns",
                json!({"foo": "", "pod-template-hash": hash}),
                json!({}),
            )
        };
        let nodes = [
            zoned("a", Some("z1"), vec![rev("old1", "v1"), rev("old2", "v1")]),
            zoned("x", Some("z2"), vec![]),
        ];
        let mut p = incoming(
            vec![constraint(
                ZONE,
                1,
                "DoNotSchedule",
                json!({"matchLabelKeys": ["pod-template-hash"]}),
            )],
            json!({}),
        );
        p.metadata.labels =
            serde_json::from_value(json!({"foo": "", "pod-template-hash": "v2"})).expect("labels");
        assert_eq!(verdicts(&p, &nodes), vec![None, None]);
    }

    #[test]
    fn every_do_not_schedule_constraint_must_hold_and_schedule_anyway_ones_are_ignored() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1")]),
            zoned("b", Some("z1"), vec![]),
            zoned("x", Some("z2"), vec![]),
        ];
        let p = incoming(
            vec![
                constraint(ZONE, 2, "DoNotSchedule", json!({})),
                constraint(LABEL_HOSTNAME, 1, "DoNotSchedule", json!({})),
                constraint(ZONE, 1, "ScheduleAnyway", json!({})),
            ],
            json!({}),
        );
        // Hostname: a has 1 + 1 − 0 > 1.
        assert_eq!(verdicts(&p, &nodes), vec![Some(SKEW.into()), None, None]);
    }

    #[test]
    fn a_pod_without_hard_constraints_skips_the_filter() {
        let nodes = [zoned("a", Some("z1"), vec![])];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = incoming(
            vec![constraint(ZONE, 1, "ScheduleAnyway", json!({}))],
            json!({}),
        );
        assert_eq!(pre_filter(&p, &refs, &Selector::everything()), Ok(None));
    }

    #[test]
    fn critical_paths_keep_the_two_smallest_domains() {
        let mut p = CriticalPaths::new();
        p.update("a", 3);
        p.update("b", 1);
        p.update("c", 2);
        assert_eq!(p.min(), 1);
        // Raising the minimum swaps the paths; [1] is not necessarily the second minimum
        // ("a" with 3 was dropped earlier), as upstream's CAVEAT says.
        p.update("b", 4);
        assert_eq!(p.0[0], ("c".to_string(), 2));
        assert_eq!(p.0[1], ("b".to_string(), 4));
    }

    // --- scoring ---

    fn scores(pod: &Pod, feasible: &[&NodeInfo], all: &[&NodeInfo], sel: &Selector) -> Vec<i64> {
        let state = pre_score(pod, feasible, all, sel, true).expect("scored");
        let mut s: Vec<i64> = feasible.iter().map(|n| score(pod, &state, n)).collect();
        let names: Vec<&str> = feasible.iter().map(|n| n.name()).collect();
        normalize(&state, &names, &mut s);
        s
    }

    #[test]
    fn with_no_matching_pods_every_node_scores_the_maximum() {
        let nodes = [
            zoned("a", Some("z1"), vec![]),
            zoned("b", Some("z1"), vec![]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = incoming(
            vec![constraint(LABEL_HOSTNAME, 1, "ScheduleAnyway", json!({}))],
            json!({}),
        );
        assert_eq!(
            scores(&p, &refs, &refs, &Selector::everything()),
            vec![100, 100]
        );
    }

    #[test]
    fn fewer_matching_pods_on_a_host_score_higher() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1"), foo("a2")]),
            zoned("b", Some("z1"), vec![foo("b1")]),
            zoned("c", Some("z1"), vec![]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = incoming(
            vec![constraint(LABEL_HOSTNAME, 1, "ScheduleAnyway", json!({}))],
            json!({}),
        );
        // weight ln(3 + 2): raw 2·1.609 → 3, 1.609 → 2, 0; normalized 100·(3 + 0 − s)/3.
        assert_eq!(
            scores(&p, &refs, &refs, &Selector::everything()),
            vec![0, 33, 100]
        );
    }

    #[test]
    fn zone_counts_include_pods_on_nodes_that_are_not_feasible() {
        let nodes = [
            zoned("a", Some("z1"), vec![]),
            zoned("full", Some("z1"), vec![foo("f1"), foo("f2"), foo("f3")]),
            zoned("x", Some("z2"), vec![foo("x1")]),
        ];
        let all: Vec<&NodeInfo> = nodes.iter().collect();
        let feasible = [&nodes[0], &nodes[2]];
        let p = incoming(
            vec![constraint(ZONE, 1, "ScheduleAnyway", json!({}))],
            json!({}),
        );
        // weight ln(2 + 2) = 1.386: zone1 3 → 4, zone2 1 → 1; normalized 100·(4 + 1 − s)/4.
        assert_eq!(
            scores(&p, &feasible, &all, &Selector::everything()),
            vec![25, 100]
        );
    }

    #[test]
    fn feasible_nodes_missing_a_declared_topology_key_score_zero() {
        let nodes = [
            zoned("a", Some("z1"), vec![foo("a1")]),
            zoned("nolabel", None, vec![]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let p = incoming(
            vec![constraint(ZONE, 1, "ScheduleAnyway", json!({}))],
            json!({}),
        );
        let state = pre_score(&p, &refs, &refs, &Selector::everything(), true).expect("state");
        assert!(state.ignored_nodes.contains("nolabel"));
        assert_eq!(
            scores(&p, &refs, &refs, &Selector::everything()),
            vec![100, 0]
        );
    }

    fn rs_owned(name: &str) -> Pod {
        let mut p = labelled_pod(name, "ns", json!({"app": "web"}), json!({}));
        p.metadata.owner_references = Some(
            serde_json::from_value(json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web", "uid": "rs-uid", "controller": true}]))
            .expect("owner"),
        );
        p
    }

    #[test]
    fn the_default_selector_merges_matching_services_and_the_controllers_selector() {
        let svc = |sel: Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "s", "namespace": "ns"}, "spec": {"selector": sel}}),
            )
            .expect("svc")
        };
        let matching = svc(json!({"app": "web"}));
        let other = svc(json!({"app": "db"}));
        let none: Service =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {}})).expect("svc");
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                "template": {}}}))
        .expect("rs");
        let p = rs_owned("p");
        let owners = OwnerObjects {
            services: vec![&matching, &other, &none],
            replica_set: Some(&rs),
            ..Default::default()
        };
        let sel = default_selector(&p, &owners);
        assert_eq!(
            sel.requirements(),
            &[
                Requirement::In("app".into(), vec!["web".into()]),
                Requirement::In("app".into(), vec!["web".into()]),
            ]
        );
        assert!(default_selector(&p, &OwnerObjects::default()).is_empty());
    }

    #[test]
    fn system_default_constraints_apply_only_to_pods_with_a_default_selector() {
        let p = rs_owned("p");
        let sel = Selector::from_set(&[("app".to_string(), "web".to_string())].into());
        let cs = constraints_for(&p, Action::ScheduleAnyway, &sel).expect("ok");
        assert_eq!(
            cs.iter()
                .map(|c| (c.topology_key.as_str(), c.max_skew))
                .collect::<Vec<_>>(),
            vec![(LABEL_HOSTNAME, 3), (LABEL_TOPOLOGY_ZONE, 5)]
        );
        assert!(
            constraints_for(&p, Action::DoNotSchedule, &sel)
                .expect("ok")
                .is_empty()
        );
        assert!(
            constraints_for(&p, Action::ScheduleAnyway, &Selector::everything())
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn system_default_spreading_still_spreads_by_hostname_on_nodes_without_zones() {
        let web = |n: &str| rs_owned(n);
        let nodes = [
            zoned("a", None, vec![web("a1"), web("a2"), web("a3"), web("a4")]),
            zoned("b", None, vec![]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let sel = Selector::from_set(&[("app".to_string(), "web".to_string())].into());
        let p = rs_owned("new");
        let state = pre_score(&p, &refs, &refs, &sel, true).expect("state");
        assert!(state.ignored_nodes.is_empty());
        // hostname: weight ln(4): a 4·1.386 + 2 → 8, b 0 + 2 → 2; zone: no label, no credit.
        let raw: Vec<i64> = refs.iter().map(|n| score(&p, &state, n)).collect();
        assert_eq!(raw, vec![8, 2]);
        assert_eq!(scores(&p, &refs, &refs, &sel), vec![25, 100]);
    }
}
