//! A scheduling validity checker: given the cluster's final state, is every bound pod of the
//! chosen namespaces placed where kube-scheduler's filters would have allowed it? Checked:
//! node resources never over-committed (sum of requests ≤ allocatable, pkg/scheduler/framework/
//! plugins/noderesources/fit.go), NoSchedule/NoExecute taints tolerated (tainttoleration),
//! nodeSelector and required node affinity (nodeaffinity), required inter-pod affinity and
//! anti-affinity over topology domains (interpodaffinity), and DoNotSchedule topology spread
//! (podtopologyspread). The core ([`check_state`]) is a pure function over lists of objects;
//! [`check`] reads them from the apiserver.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Result;
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint,
    Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};

/// One broken placement rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// `namespace/name` of the pod, or empty for a node-level violation.
    pub pod: String,
    pub node: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pod.is_empty() {
            write!(f, "node {}: {}", self.node, self.message)
        } else {
            write!(
                f,
                "pod {} on node {}: {}",
                self.pod, self.node, self.message
            )
        }
    }
}

/// Reads nodes, pods and namespaces and checks every bound pod of `namespaces`.
pub async fn check(client: &kube::Client, namespaces: &[String]) -> Result<Vec<Violation>> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let nss = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    Ok(check_state(&nodes, &pods, &nss, namespaces))
}

/// A pod the node holds: bound and not terminal (upstream's NodeInfo keeps terminating pods too).
fn is_bound(p: &Pod) -> bool {
    let terminal = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    !terminal && node_of(p).is_some()
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn ns_of(p: &Pod) -> &str {
    p.metadata.namespace.as_deref().unwrap_or("")
}

fn key_of(p: &Pod) -> String {
    format!("{}/{}", ns_of(p), p.metadata.name.as_deref().unwrap_or(""))
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

// Borrowed, not cloned: the checks run over every pair of pods of a benchmark's cluster.
fn labels_of(p: &Pod) -> &BTreeMap<String, String> {
    p.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

fn node_labels(n: &Node) -> &BTreeMap<String, String> {
    n.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
}

/// The pure core: checks every bound pod of `namespaces` against `nodes`, all `pods` of the
/// cluster and the cluster's `nss` (for namespace selectors). Sorted, without duplicates.
pub fn check_state(
    nodes: &[Node],
    pods: &[Pod],
    nss: &[Namespace],
    namespaces: &[String],
) -> Vec<Violation> {
    let nodes_by_name: BTreeMap<&str, &Node> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let bound: Vec<&Pod> = pods.iter().filter(|p| is_bound(p)).collect();
    let checked: Vec<&Pod> = bound
        .iter()
        .copied()
        .filter(|p| namespaces.iter().any(|n| n == ns_of(p)))
        .collect();
    let ns_labels: BTreeMap<String, BTreeMap<String, String>> = nss
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.clone()?,
                n.metadata.labels.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let mut out = Vec::new();

    // Resources, per node that holds a checked pod.
    let touched: BTreeSet<&str> = checked.iter().filter_map(|p| node_of(p)).collect();
    for name in &touched {
        let Some(node) = nodes_by_name.get(name) else {
            continue;
        };
        let on_node: Vec<&Pod> = bound
            .iter()
            .copied()
            .filter(|p| node_of(p) == Some(name))
            .collect();
        out.extend(overcommit(node, &on_node));
    }

    for p in &checked {
        let Some(node_name) = node_of(p) else {
            continue;
        };
        let violation = |message: String| Violation {
            pod: key_of(p),
            node: node_name.to_string(),
            message,
        };
        let Some(node) = nodes_by_name.get(node_name) else {
            out.push(violation("bound to a node that does not exist".into()));
            continue;
        };
        for t in untolerated_taints(p, node) {
            out.push(violation(format!(
                "does not tolerate taint {}={}:{}",
                t.key,
                t.value.as_deref().unwrap_or(""),
                t.effect
            )));
        }
        if let Some(why) = node_affinity_mismatch(p, node) {
            out.push(violation(why));
        }
        out.extend(
            inter_pod(p, node, &nodes_by_name, &bound, &ns_labels)
                .into_iter()
                .map(&violation),
        );
        out.extend(spread(p, node, nodes, &bound).into_iter().map(&violation));
    }
    out.sort();
    out.dedup();
    out
}

// ---------------------------------------------------------------------------------------------
// Resources (noderesources/fit.go; requests as computed by resourcehelper.PodRequests).

/// A quantity in thousandths of its unit (millicores for cpu, millibytes for memory), so every
/// suffix and fraction the API accepts compares exactly enough.
pub fn parse_quantity_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (num, exp10): (&str, i32) = match suffix {
        "" => (num, 0),
        "n" => (num, -9),
        "u" => (num, -6),
        "m" => (num, -3),
        "k" => (num, 3),
        "M" => (num, 6),
        "G" => (num, 9),
        "T" => (num, 12),
        "P" => (num, 15),
        "E" => (num, 18),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = match suffix {
                "Ki" => 1,
                "Mi" => 2,
                "Gi" => 3,
                "Ti" => 4,
                "Pi" => 5,
                _ => 6,
            };
            let v = parse_decimal_milli(num, 0)?;
            return v.checked_mul(1024i128.pow(power));
        }
        e if e.starts_with('e') || e.starts_with('E') => (num, e[1..].parse().ok()?),
        _ => return None,
    };
    parse_decimal_milli(num, exp10)
}

/// `num` × 10^`exp10` × 1000, rounded up as the API rounds quantities.
fn parse_decimal_milli(num: &str, exp10: i32) -> Option<i128> {
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let mut v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let mut scale = exp10 + 3 - frac.len() as i32;
    while scale > 0 {
        v = v.checked_mul(10)?;
        scale -= 1;
    }
    while scale < 0 {
        v = (v + 9) / 10;
        scale += 1;
    }
    Some(if neg { -v } else { v })
}

type Resources = BTreeMap<String, i128>;

fn add(into: &mut Resources, from: &Resources) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

fn max_into(into: &mut Resources, from: &Resources) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
}

fn container_requests(r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> Resources {
    r.and_then(|r| r.requests.as_ref())
        .map(|m| {
            m.iter()
                .filter_map(|(k, q)| Some((k.clone(), parse_quantity_milli(&q.0)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The pod's effective requests: regular containers plus restartable (sidecar) init containers,
/// or the largest init container's needs if that is more, plus the pod overhead.
pub fn pod_requests(p: &Pod) -> Resources {
    let Some(spec) = &p.spec else {
        return Resources::new();
    };
    let mut total = Resources::new();
    for c in &spec.containers {
        add(&mut total, &container_requests(c.resources.as_ref()));
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        let req = container_requests(c.resources.as_ref());
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &req);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut at = sidecars.clone();
            add(&mut at, &req);
            max_into(&mut init_peak, &at);
        }
    }
    add(&mut total, &sidecars);
    max_into(&mut total, &init_peak);
    if let Some(overhead) = &spec.overhead {
        let o: Resources = overhead
            .iter()
            .filter_map(|(k, q)| Some((k.clone(), parse_quantity_milli(&q.0)?)))
            .collect();
        add(&mut total, &o);
    }
    total
}

fn overcommit(node: &Node, on_node: &[&Pod]) -> Vec<Violation> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let allocatable: Resources = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|m| {
            m.iter()
                .filter_map(|(k, q)| Some((k.clone(), parse_quantity_milli(&q.0)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut requested = Resources::new();
    for p in on_node {
        add(&mut requested, &pod_requests(p));
    }
    requested.insert("pods".into(), on_node.len() as i128 * 1000);
    let mut out = Vec::new();
    for (resource, used) in &requested {
        let have = allocatable.get(resource).copied().unwrap_or(0);
        if *used > 0 && *used > have {
            out.push(Violation {
                pod: String::new(),
                node: name.clone(),
                message: format!(
                    "{resource} over-committed: pods request {} of {} allocatable ({} pods)",
                    show(resource, *used),
                    show(resource, have),
                    on_node.len()
                ),
            });
        }
    }
    out
}

fn show(resource: &str, milli: i128) -> String {
    match resource {
        "cpu" => format!("{milli}m"),
        "memory" | "ephemeral-storage" => format!("{}Mi", milli / 1000 / 1048576),
        _ => format!("{}", milli / 1000),
    }
}

// ---------------------------------------------------------------------------------------------
// Taints (tainttoleration; v1 helper ToleratesTaint).

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            // An empty key with Equal is invalid; only Exists matches every key.
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn untolerated_taints<'a>(p: &Pod, node: &'a Node) -> Vec<&'a Taint> {
    let tolerations: &[Toleration] = p
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Node affinity (nodeaffinity; component-helpers nodeaffinity.GetRequiredNodeAffinity).

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node_labels(node);
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    // An empty term selects no node.
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = if r.key == "metadata.name" {
                node.metadata.name.as_deref()
            } else {
                None
            };
            requirement_matches(r, v)
        })
}

/// Why the node does not satisfy the pod's nodeSelector / required node affinity, if it does not.
fn node_affinity_mismatch(p: &Pod, node: &Node) -> Option<String> {
    let spec = p.spec.as_ref()?;
    let labels = node_labels(node);
    for (k, v) in spec.node_selector.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Some(format!("nodeSelector {k}={v} not matched by the node"));
        }
    }
    let terms = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    if terms
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
    {
        None
    } else {
        Some("required node affinity not matched by the node".into())
    }
}

// ---------------------------------------------------------------------------------------------
// Label selectors.

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Inter-pod affinity (interpodaffinity; the final state, so every pod is an "existing" pod).

fn term_namespaces_match(
    term: &PodAffinityTerm,
    owner_ns: &str,
    other_ns: &str,
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or(&[]);
    if listed.iter().any(|n| n == other_ns) {
        return true;
    }
    match &term.namespace_selector {
        // A nil selector with no names means the pod's own namespace.
        None => listed.is_empty() && other_ns == owner_ns,
        Some(sel) => ns_labels
            .get(other_ns)
            .is_some_and(|l| selector_matches(sel, l)),
    }
}

fn term_selects(
    term: &PodAffinityTerm,
    owner: &Pod,
    other: &Pod,
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = &term.label_selector else {
        // A nil selector matches no pod.
        return false;
    };
    term_namespaces_match(term, ns_of(owner), ns_of(other), ns_labels)
        && selector_matches(sel, labels_of(other))
}

fn inter_pod(
    p: &Pod,
    node: &Node,
    nodes: &BTreeMap<&str, &Node>,
    bound: &[&Pod],
    ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let Some(affinity) = p.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
        return Vec::new();
    };
    let labels = node_labels(node);
    let same_domain = |other: &Pod, key: &str| -> bool {
        let Some(value) = labels.get(key) else {
            return false;
        };
        node_of(other)
            .and_then(|n| nodes.get(n))
            .is_some_and(|n| node_labels(n).get(key) == Some(value))
    };
    let mut out = Vec::new();
    let anti = affinity
        .pod_anti_affinity
        .as_ref()
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    for term in anti {
        for other in bound {
            if std::ptr::eq(*other, p) {
                continue;
            }
            if term_selects(term, p, other, ns_labels) && same_domain(other, &term.topology_key) {
                out.push(format!(
                    "required pod anti-affinity ({}) broken by pod {} on node {} in the same {} \
                     domain",
                    term.topology_key,
                    key_of(other),
                    node_of(other).unwrap_or(""),
                    labels.get(&term.topology_key).map_or("", String::as_str)
                ));
            }
        }
    }
    let aff = affinity
        .pod_affinity
        .as_ref()
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    for term in aff {
        if !labels.contains_key(&term.topology_key) {
            out.push(format!(
                "required pod affinity: the node has no {} label",
                term.topology_key
            ));
            continue;
        }
        // The pod itself counts: a group of pods with affinity to their own kind may start
        // anywhere (upstream's "first pod of the group" rule) but must then stay together.
        let held = bound
            .iter()
            .any(|o| term_selects(term, p, o, ns_labels) && same_domain(o, &term.topology_key));
        if !held {
            out.push(format!(
                "required pod affinity ({}) not held: no matching pod in domain {}",
                term.topology_key,
                labels.get(&term.topology_key).map_or("", String::as_str)
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Topology spread (podtopologyspread, DoNotSchedule constraints only).

fn node_eligible_for(p: &Pod, node: &Node, c: &TopologySpreadConstraint, keys: &[&str]) -> bool {
    let labels = node_labels(node);
    if !keys.iter().all(|k| labels.contains_key(*k)) {
        return false;
    }
    if c.node_affinity_policy.as_deref().unwrap_or("Honor") == "Honor"
        && node_affinity_mismatch(p, node).is_some()
    {
        return false;
    }
    if c.node_taints_policy.as_deref() == Some("Honor") && !untolerated_taints(p, node).is_empty() {
        return false;
    }
    true
}

fn spread(p: &Pod, node: &Node, nodes: &[Node], bound: &[&Pod]) -> Vec<String> {
    let constraints: Vec<&TopologySpreadConstraint> = p
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .collect();
    let keys: Vec<&str> = constraints
        .iter()
        .map(|c| c.topology_key.as_str())
        .collect();
    let my_labels = labels_of(p);
    let mut out = Vec::new();
    for c in constraints {
        let eligible: BTreeMap<&str, String> = nodes
            .iter()
            .filter(|n| node_eligible_for(p, n, c, &keys))
            .filter_map(|n| {
                Some((
                    n.metadata.name.as_deref()?,
                    node_labels(n).get(&c.topology_key)?.clone(),
                ))
            })
            .collect();
        let Some(my_domain) = node_labels(node).get(&c.topology_key).cloned() else {
            out.push(format!(
                "topology spread: the node has no {} label",
                c.topology_key
            ));
            continue;
        };
        let mut counts: BTreeMap<String, i64> = eligible.values().map(|d| (d.clone(), 0)).collect();
        let mut selector = c.label_selector.clone().unwrap_or_default();
        // matchLabelKeys narrows the selector to pods sharing the pod's values for those keys.
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = my_labels.get(k) {
                selector
                    .match_labels
                    .get_or_insert_with(Default::default)
                    .insert(k.clone(), v.clone());
            }
        }
        if c.label_selector.is_none() {
            continue;
        }
        for o in bound {
            if ns_of(o) != ns_of(p) || !selector_matches(&selector, labels_of(o)) {
                continue;
            }
            if let Some(d) = node_of(o).and_then(|n| eligible.get(n)) {
                *counts.entry(d.clone()).or_insert(0) += 1;
            }
        }
        let domains = counts.len() as i32;
        let min = if c.min_domains.is_some_and(|m| domains < m) {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        let mine = counts.get(&my_domain).copied().unwrap_or(0);
        if mine - min > i64::from(c.max_skew) {
            out.push(format!(
                "topology spread on {} broken: {} matching pods in domain {my_domain}, minimum {} \
                 over {} domains, maxSkew {}",
                c.topology_key, mine, min, domains, c.max_skew
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn node(name: &str, zone: &str, extra: Value) -> Node {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone}},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "3"}},
        });
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        serde_json::from_value(n).unwrap()
    }

    fn pod(name: &str, node: &str, labels: Value, spec: Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn run(nodes: &[Node], pods: &[Pod]) -> Vec<Violation> {
        check_state(nodes, pods, &[], &["ns".to_string()])
    }

    #[test]
    fn quantities_parse_with_decimal_and_binary_suffixes() {
        assert_eq!(parse_quantity_milli("100m"), Some(100));
        assert_eq!(parse_quantity_milli("1.5"), Some(1500));
        assert_eq!(parse_quantity_milli("2"), Some(2000));
        assert_eq!(parse_quantity_milli("1Ki"), Some(1_024_000));
        assert_eq!(parse_quantity_milli("500Mi"), Some(500 * 1048576 * 1000));
        assert_eq!(parse_quantity_milli("1k"), Some(1_000_000));
        assert_eq!(parse_quantity_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_quantity_milli("bogus"), None);
    }

    #[test]
    fn a_placement_within_every_rule_has_no_violations() {
        let nodes = [node("a", "z1", json!({})), node("b", "z2", json!({}))];
        let pods = [
            pod("p1", "a", json!({"app": "x"}), json!({})),
            pod("p2", "b", json!({"app": "x"}), json!({})),
        ];
        assert!(run(&nodes, &pods).is_empty());
    }

    #[test]
    fn cpu_requests_beyond_allocatable_are_an_overcommit() {
        let nodes = [node("a", "z1", json!({}))];
        let big =
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "600m"}}}]});
        let pods = [
            pod("p1", "a", json!({}), big.clone()),
            pod("p2", "a", json!({}), big),
        ];
        let v = run(&nodes, &pods);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("cpu over-committed"), "{v:?}");
    }

    #[test]
    fn more_pods_than_the_pods_allocatable_are_an_overcommit() {
        let nodes = [node("a", "z1", json!({}))];
        let pods: Vec<Pod> = (0..4)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    "a",
                    json!({}),
                    json!({"containers": [{"name": "c"}]}),
                )
            })
            .collect();
        let v = run(&nodes, &pods);
        assert!(
            v.iter().any(|v| v.message.contains("pods over-committed")),
            "{v:?}"
        );
    }

    #[test]
    fn the_largest_init_container_counts_when_it_exceeds_the_containers() {
        let p = pod(
            "p",
            "a",
            json!({}),
            json!({"initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
                   "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        assert_eq!(pod_requests(&p).get("cpu"), Some(&2000));
    }

    #[test]
    fn an_untolerated_no_schedule_taint_is_reported_and_a_tolerated_one_is_not() {
        let tainted = node(
            "a",
            "z1",
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        );
        let bad = pod("bad", "a", json!({}), json!({}));
        let good = pod(
            "good",
            "a",
            json!({}),
            json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v"}]}),
        );
        let v = run(std::slice::from_ref(&tainted), &[bad, good]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pod, "ns/bad");
    }

    #[test]
    fn prefer_no_schedule_taints_are_not_violations() {
        let n = node(
            "a",
            "z1",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        assert!(run(&[n], &[pod("p", "a", json!({}), json!({}))]).is_empty());
    }

    #[test]
    fn node_selector_and_required_node_affinity_must_match_the_node() {
        let nodes = [node("a", "z1", json!({}))];
        let sel = pod(
            "sel",
            "a",
            json!({}),
            json!({"nodeSelector": {"topology.kubernetes.io/zone": "z2"}}),
        );
        let aff = pod(
            "aff",
            "a",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                  "operator": "In", "values": ["z2", "z3"]}]}]}}}}),
        );
        let ok = pod(
            "ok",
            "a",
            json!({}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "nope", "operator": "Exists"}]},
                  {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        let v = run(&nodes, &[sel, aff, ok]);
        let pods: Vec<&str> = v.iter().map(|v| v.pod.as_str()).collect();
        assert_eq!(pods, ["ns/aff", "ns/sel"], "{v:?}");
    }

    fn anti(key: &str) -> Value {
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": key}]}}})
    }

    #[test]
    fn two_anti_affine_pods_on_one_host_are_both_reported() {
        let nodes = [node("a", "z1", json!({})), node("b", "z1", json!({}))];
        let pods = [
            pod(
                "p1",
                "a",
                json!({"app": "x"}),
                anti("kubernetes.io/hostname"),
            ),
            pod(
                "p2",
                "a",
                json!({"app": "x"}),
                anti("kubernetes.io/hostname"),
            ),
        ];
        let v = run(&nodes, &pods);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].message.contains("anti-affinity"), "{v:?}");
    }

    #[test]
    fn anti_affinity_holds_over_the_topology_domain_not_only_the_node() {
        let nodes = [
            node("a", "z1", json!({})),
            node("b", "z1", json!({})),
            node("c", "z2", json!({})),
        ];
        let spread_hosts = [
            pod(
                "p1",
                "a",
                json!({"app": "x"}),
                anti("kubernetes.io/hostname"),
            ),
            pod(
                "p2",
                "b",
                json!({"app": "x"}),
                anti("kubernetes.io/hostname"),
            ),
        ];
        assert!(run(&nodes, &spread_hosts).is_empty());
        let same_zone = [
            pod(
                "p1",
                "a",
                json!({"app": "x"}),
                anti("topology.kubernetes.io/zone"),
            ),
            pod(
                "p2",
                "b",
                json!({"app": "x"}),
                anti("topology.kubernetes.io/zone"),
            ),
        ];
        assert_eq!(run(&nodes, &same_zone).len(), 2);
    }

    #[test]
    fn required_pod_affinity_needs_a_matching_pod_in_the_domain_or_itself() {
        let nodes = [node("a", "z1", json!({})), node("b", "z2", json!({}))];
        let aff = |sel: &str| {
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": sel}}, "topologyKey": "topology.kubernetes.io/zone"}]}}})
        };
        let together = [
            pod("p1", "a", json!({"app": "x"}), aff("x")),
            pod("p2", "a", json!({"app": "x"}), aff("x")),
        ];
        assert!(run(&nodes, &together).is_empty());
        let apart = [
            pod("db", "a", json!({"app": "db"}), json!({})),
            pod("web", "b", json!({"app": "web"}), aff("db")),
        ];
        let v = run(&nodes, &apart);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pod, "ns/web");
    }

    fn spreading(max_skew: i32) -> Value {
        json!({"topologySpreadConstraints": [{"maxSkew": max_skew,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "s"}}}]})
    }

    #[test]
    fn topology_spread_beyond_max_skew_is_reported() {
        let nodes = [node("a", "z1", json!({})), node("b", "z2", json!({}))];
        let pods = [
            pod("p1", "a", json!({"app": "s"}), spreading(1)),
            pod("p2", "a", json!({"app": "s"}), spreading(1)),
        ];
        let v = run(&nodes, &pods);
        assert!(!v.is_empty());
        assert!(v[0].message.contains("topology spread"), "{v:?}");
        let balanced = [
            pod("p1", "a", json!({"app": "s"}), spreading(1)),
            pod("p2", "b", json!({"app": "s"}), spreading(1)),
        ];
        assert!(run(&nodes, &balanced).is_empty());
    }

    #[test]
    fn topology_spread_ignores_domains_the_pods_node_affinity_excludes() {
        let nodes = [node("a", "z1", json!({})), node("b", "z2", json!({}))];
        let mut spec = spreading(1);
        spec["nodeSelector"] = json!({"topology.kubernetes.io/zone": "z1"});
        let pods = [
            pod("p1", "a", json!({"app": "s"}), spec.clone()),
            pod("p2", "a", json!({"app": "s"}), spec),
        ];
        assert!(run(&nodes, &pods).is_empty());
    }

    #[test]
    fn pods_outside_the_checked_namespaces_count_on_nodes_but_are_not_checked() {
        let nodes = [node("a", "z1", json!({}))];
        let mut other = pod("o", "a", json!({}), json!({"nodeSelector": {"x": "y"}}));
        other.metadata.namespace = Some("elsewhere".into());
        assert!(run(&nodes, &[other]).is_empty());
    }
}
