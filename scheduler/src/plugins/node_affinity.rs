//! NodeAffinity (pkg/scheduler/framework/plugins/nodeaffinity, matching from
//! k8s.io/component-helpers/scheduling/corev1/nodeaffinity): `spec.nodeSelector` and required
//! node affinity filter; preferred terms score by the sum of the weights of matching terms.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, Pod};

use super::{Code, MAX_NODE_SCORE, Status, default_normalize_score};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
/// `errReasonEnforced`: the profile's `addedAffinity` rejected the node.
pub const ERR_REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";
/// `errReasonConflict`: required terms naming nodes by `metadata.name` that no node satisfies.
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

/// PreFilter: when every required term names nodes with `matchFields` `metadata.name In`
/// (as DaemonSet pods do), only those nodes are worth filtering (`PreFilterResult`). `Ok(None)`
/// means all nodes; an empty intersection rejects the pod outright.
pub fn pre_filter(pod: &Pod) -> Result<Option<BTreeSet<String>>, Status> {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    if terms.is_empty() {
        return Ok(None);
    }
    let mut names: BTreeSet<String> = BTreeSet::new();
    for t in terms {
        let mut term_names: Option<BTreeSet<String>> = None;
        for r in t.match_fields.iter().flatten() {
            if r.key == "metadata.name" && r.operator == "In" {
                let vals: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                term_names = Some(match term_names {
                    None => vals,
                    Some(prev) => prev.intersection(&vals).cloned().collect(),
                });
            }
        }
        let Some(term_names) = term_names else {
            return Ok(None);
        };
        names.extend(term_names);
    }
    if names.is_empty() {
        return Err(Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            ERR_REASON_CONFLICT,
        ));
    }
    Ok(Some(names))
}

/// One requirement against a label set; a malformed requirement matches nothing, as the
/// upstream parser rejects it.
fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let got = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => got.is_some_and(|v| values.contains(v)),
        "NotIn" => got.is_none_or(|v| !values.contains(v)),
        "Exists" => values.is_empty() && got.is_some(),
        "DoesNotExist" => values.is_empty() && got.is_none(),
        op @ ("Gt" | "Lt") => {
            let [want] = values else { return false };
            let (Some(got), Ok(want)) = (got, want.parse::<i64>()) else {
                return false;
            };
            let Ok(got) = got.parse::<i64>() else {
                return false;
            };
            if op == "Gt" { got > want } else { got < want }
        }
        _ => false,
    }
}

/// `matchFields` supports only `metadata.name` with In/NotIn.
fn field_matches(r: &NodeSelectorRequirement, node_name: &str) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => values.len() == 1 && values[0] == node_name,
        "NotIn" => values.len() == 1 && values[0] != node_name,
        _ => false,
    }
}

/// `nodeSelectorTerm.match`: every expression and field requirement must hold; an empty term
/// matches nothing.
pub fn term_matches(t: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = labels(node);
    exprs.iter().all(|r| requirement_matches(r, labels))
        && fields.iter().all(|r| field_matches(r, node.name()))
}

fn labels(node: &NodeInfo) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

/// `GetRequiredNodeAffinity(pod).Match(node)`: the nodeSelector and, when present, at least one
/// required term (terms are ORed).
pub fn required_matches(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = spec.node_selector.as_ref() {
        let labels = labels(node);
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

pub fn filter(pod: &Pod, node: &NodeInfo) -> Option<Status> {
    if required_matches(pod, node) {
        None
    } else {
        Some(Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            ERR_REASON_POD,
        ))
    }
}

/// Whether Score runs at all (PreScore skips pods without preferred terms).
pub fn has_preferred_terms(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty())
}

/// Sum of the weights of matching preferred terms; zero-weight and empty terms are ignored
/// (`NewPreferredSchedulingTerms`).
pub fn score(pod: &Pod, node: &NodeInfo) -> i64 {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    terms
        .iter()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// NodeAffinityArgs' `addedAffinity` in Filter: its required terms (ORed) must match too,
/// checked before the pod's own.
pub fn added_filter(added: &NodeAffinity, node: &NodeInfo) -> Option<Status> {
    let required = added
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    if required
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
    {
        return None;
    }
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        NAME,
        ERR_REASON_ENFORCED,
    ))
}

/// Whether `addedAffinity` has preferred terms, which make Score run for every pod.
pub fn added_has_preferred_terms(added: &NodeAffinity) -> bool {
    added
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .is_some_and(|t| !t.is_empty())
}

/// `addedPrefSchedTerms.Score`: the weights of the matching added preferred terms, added to
/// the pod's own.
pub fn added_score(added: &NodeAffinity, node: &NodeInfo) -> i64 {
    added
        .preferred_during_scheduling_ignored_during_execution
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize_score(MAX_NODE_SCORE, false, scores);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};
    use serde_json::{Value, json};

    fn fits(spec: Value, labels: Value) -> bool {
        filter(
            &pod(spec),
            &node(json!({"name": "node1", "labels": labels})),
        )
        .is_none()
    }

    fn required(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    // Cases of TestNodeAffinity in node_affinity_test.go.
    #[test]
    fn no_selector_fits_any_node() {
        assert!(fits(json!({}), json!({})));
    }

    #[test]
    fn a_node_selector_needs_every_label() {
        assert!(!fits(json!({"nodeSelector": {"foo": "bar"}}), json!({})));
        assert!(fits(
            json!({"nodeSelector": {"foo": "bar"}}),
            json!({"foo": "bar", "baz": "blah"})
        ));
        assert!(!fits(
            json!({"nodeSelector": {"foo": "bar", "a": "b"}}),
            json!({"foo": "bar"})
        ));
    }

    #[test]
    fn in_and_not_in_match_on_values() {
        let t = |op: &str| {
            required(
                json!([{"matchExpressions": [{"key": "foo", "operator": op, "values": ["value1", "value2"]}]}]),
            )
        };
        assert!(fits(t("In"), json!({"foo": "value1"})));
        assert!(!fits(t("In"), json!({"foo": "value3"})));
        assert!(!fits(t("NotIn"), json!({"foo": "value1"})));
        assert!(fits(t("NotIn"), json!({})));
    }

    #[test]
    fn gt_and_lt_compare_integers() {
        let t = |op: &str| {
            required(
                json!([{"matchExpressions": [{"key": "kernel-version", "operator": op, "values": ["0204"]}]}]),
            )
        };
        assert!(fits(t("Gt"), json!({"kernel-version": "0206"})));
        assert!(!fits(t("Gt"), json!({"kernel-version": "0200"})));
        assert!(fits(t("Lt"), json!({"kernel-version": "0200"})));
        assert!(!fits(t("Gt"), json!({"kernel-version": "abc"})));
    }

    #[test]
    fn exists_and_does_not_exist_check_the_key() {
        let t =
            |op: &str| required(json!([{"matchExpressions": [{"key": "GPU", "operator": op}]}]));
        assert!(fits(t("Exists"), json!({"GPU": "NVIDIA-GRID-K1"})));
        assert!(!fits(t("DoesNotExist"), json!({"GPU": "NVIDIA-GRID-K1"})));
        assert!(fits(t("DoesNotExist"), json!({})));
    }

    #[test]
    fn an_empty_term_list_or_empty_term_matches_nothing() {
        assert!(!fits(required(json!([])), json!({"foo": "bar"})));
        assert!(!fits(required(json!([{}])), json!({"foo": "bar"})));
        assert!(!fits(
            required(json!([{"matchExpressions": []}])),
            json!({"foo": "bar"})
        ));
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let terms = json!([
            {"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}, {"key": "x", "operator": "Exists"}]},
            {"matchExpressions": [{"key": "diffkey", "operator": "In", "values": ["wrong", "value2"]}]}
        ]);
        assert!(fits(required(terms.clone()), json!({"diffkey": "value2"})));
        assert!(!fits(required(terms.clone()), json!({"foo": "bar"})));
        assert!(fits(required(terms), json!({"foo": "bar", "x": "1"})));
    }

    #[test]
    fn node_selector_and_affinity_must_both_match() {
        let mut spec =
            required(json!([{"matchExpressions": [{"key": "foo", "operator": "Exists"}]}]));
        spec["nodeSelector"] = json!({"foo": "bar"});
        assert!(fits(spec.clone(), json!({"foo": "bar"})));
        assert!(!fits(spec, json!({"foo": "baz"})));
    }

    #[test]
    fn match_fields_select_by_node_name() {
        let t = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node1"]}]}]),
        );
        assert!(fits(t.clone(), json!({})));
        assert!(filter(&pod(t), &node(json!({"name": "node2"}))).is_some());
    }

    #[test]
    fn a_rejection_carries_upstreams_reason() {
        let s = filter(
            &pod(json!({"nodeSelector": {"foo": "bar"}})),
            &node(json!({})),
        );
        assert_eq!(
            s.map(|s| (s.code, s.reasons)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_POD.to_string()]
            ))
        );
    }

    // TestNodeAffinityPriority in node_affinity_test.go.
    #[test]
    fn preferred_terms_score_by_weight_normalized_to_the_best_node() {
        let affinity = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}]}},
            {"weight": 4, "preference": {"matchExpressions": [{"key": "key", "operator": "In", "values": ["value"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [
                {"key": "foo", "operator": "In", "values": ["bar"]},
                {"key": "key", "operator": "In", "values": ["value"]},
                {"key": "az", "operator": "In", "values": ["az1"]}]}},
        ]}}});
        let p = pod(affinity);
        let nodes = [
            json!({"name": "node1", "labels": {"foo": "bar"}}),
            json!({"name": "node5", "labels": {"foo": "bar", "key": "value", "az": "az1"}}),
            json!({"name": "node2", "labels": {"key": "value"}}),
        ];
        let mut s: Vec<i64> = nodes.iter().map(|n| score(&p, &node(n.clone()))).collect();
        assert_eq!(s, vec![2, 11, 4]);
        normalize(&mut s);
        assert_eq!(s, vec![18, 100, 36]);
    }

    // TestNodeAffinity's PreFilterResult cases.
    #[test]
    fn match_fields_on_node_names_narrow_the_nodes_to_filter() {
        let t = |terms: Value| pre_filter(&pod(required(terms)));
        let names = |v: &[&str]| {
            Ok(Some(
                v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            ))
        };
        assert_eq!(
            t(
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node1"]}]}])
            ),
            names(&["node1"])
        );
        assert_eq!(
            t(json!([
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node1", "node2"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node3"]}]}])),
            names(&["node1", "node2", "node3"])
        );
        assert_eq!(
            t(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["node1", "node2"]},
                {"key": "metadata.name", "operator": "In", "values": ["node2", "node3"]}]}])),
            names(&["node2"])
        );
        assert_eq!(
            t(json!([
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node1"]}]},
                {"matchExpressions": [{"key": "foo", "operator": "Exists"}]}])),
            Ok(None),
            "a term without node names can match any node"
        );
        assert_eq!(pre_filter(&pod(json!({}))), Ok(None));
        let conflict = t(json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["node1"]},
            {"key": "metadata.name", "operator": "In", "values": ["node2"]}]}]));
        assert_eq!(
            conflict.map_err(|s| s.reasons),
            Err(vec![ERR_REASON_CONFLICT.to_string()])
        );
    }

    #[test]
    fn a_pod_without_preferences_skips_scoring() {
        assert!(!has_preferred_terms(&pod(json!({}))));
    }

    #[test]
    fn scheduler_enforced_affinity_must_match_as_well_as_the_pods_own() {
        let added: NodeAffinity = serde_json::from_value(json!({
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}],
        }))
        .expect("affinity");
        let in_a = node(json!({"name": "n1", "labels": {"zone": "a", "disk": "ssd"}}));
        let in_b = node(json!({"name": "n2", "labels": {"zone": "b"}}));
        assert_eq!(added_filter(&added, &in_a), None);
        assert_eq!(
            added_filter(&added, &in_b).map(|s| s.reasons),
            Some(vec![ERR_REASON_ENFORCED.to_string()])
        );
        assert!(added_has_preferred_terms(&added));
        assert_eq!(added_score(&added, &in_a), 5);
        assert_eq!(added_score(&added, &in_b), 0);
    }
}
