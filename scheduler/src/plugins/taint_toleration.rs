//! TaintToleration (pkg/scheduler/framework/plugins/tainttoleration): NoSchedule/NoExecute taints
//! the pod does not tolerate rule a node out; untolerated PreferNoSchedule taints count against
//! it in scoring (fewer is better, so the normalization is reversed).

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::{Code, MAX_NODE_SCORE, Status, default_normalize_score};
use crate::cache::NodeInfo;

pub const NAME: &str = "TaintToleration";
/// v1.37 no longer names the taint in the reason (taint_toleration.go Filter).
pub const ERR_REASON_UNTOLERATED: &str = "node(s) had untolerated taint(s)";

/// `Toleration.ToleratesTaint` (k8s.io/api/core/v1/toleration.go).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

pub fn tolerations_tolerate_taint(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// `FindMatchingUntoleratedTaint` with `DoNotScheduleTaintsFilterFunc`.
pub fn find_untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations_tolerate_taint(tolerations, t))
}

pub fn filter(pod: &Pod, node: &NodeInfo) -> Option<Status> {
    find_untolerated(taints(node), tolerations(pod)).map(|_| {
        Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            ERR_REASON_UNTOLERATED,
        )
    })
}

/// Raw score: untolerated PreferNoSchedule taints, counting only tolerations whose effect is
/// empty or PreferNoSchedule (`getAllTolerationPreferNoSchedule`).
pub fn score(pod: &Pod, node: &NodeInfo) -> i64 {
    let prefer: Vec<Toleration> = tolerations(pod)
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations_tolerate_taint(&prefer, t))
        .count() as i64
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize_score(MAX_NODE_SCORE, true, scores);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};
    use serde_json::{Value, json};

    fn scores(p: &Pod, nodes: &[Value]) -> Vec<i64> {
        let mut s: Vec<i64> = nodes.iter().map(|n| score(p, &node(n.clone()))).collect();
        normalize(&mut s);
        s
    }

    // TestTaintTolerationScore in taint_toleration_test.go.
    #[test]
    fn a_node_with_a_tolerated_prefer_no_schedule_taint_scores_like_an_untainted_one() {
        let p = pod(
            json!({"tolerations": [{"key": "foo", "operator": "Equal", "value": "bar", "effect": "PreferNoSchedule"}]}),
        );
        let got = scores(
            &p,
            &[
                json!({"name": "nodeA", "taints": [{"key": "foo", "value": "bar", "effect": "PreferNoSchedule"}]}),
                json!({"name": "nodeB"}),
            ],
        );
        assert_eq!(got, vec![100, 100]);
    }

    #[test]
    fn more_untolerated_prefer_no_schedule_taints_score_lower() {
        let p = pod(
            json!({"tolerations": [{"key": "cpu-type", "operator": "Equal", "value": "arm64", "effect": "PreferNoSchedule"}]}),
        );
        let got = scores(
            &p,
            &[
                json!({"name": "nodeA"}),
                json!({"name": "nodeB", "taints": [{"key": "cpu-type", "value": "arm64", "effect": "PreferNoSchedule"}]}),
                json!({"name": "nodeC", "taints": [
                {"key": "cpu-type", "value": "arm64", "effect": "PreferNoSchedule"},
                {"key": "disk-type", "value": "ssd", "effect": "PreferNoSchedule"}]}),
            ],
        );
        assert_eq!(got, vec![100, 100, 0]);
    }

    #[test]
    fn only_prefer_no_schedule_taints_count_in_scoring() {
        let p = pod(
            json!({"tolerations": [{"key": "cpu-type", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]}),
        );
        let got = scores(
            &p,
            &[
                json!({"name": "nodeA"}),
                json!({"name": "nodeB", "taints": [{"key": "cpu-type", "value": "arm64", "effect": "NoSchedule"}]}),
                json!({"name": "nodeC", "taints": [{"key": "cpu-type", "value": "arm64", "effect": "PreferNoSchedule"}]}),
            ],
        );
        assert_eq!(got, vec![100, 100, 0]);
    }

    // TestTaintTolerationFilter in taint_toleration_test.go.
    #[test]
    fn a_pod_without_tolerations_does_not_fit_a_node_with_a_no_schedule_taint() {
        let s = filter(
            &pod(json!({})),
            &node(
                json!({"taints": [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}]}),
            ),
        );
        assert_eq!(
            s.map(|s| (s.code, s.reasons)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_UNTOLERATED.to_string()]
            ))
        );
    }

    #[test]
    fn a_pod_tolerating_the_taint_fits() {
        let p = pod(
            json!({"tolerations": [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            filter(
                &p,
                &node(
                    json!({"taints": [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}]})
                )
            ),
            None
        );
    }

    #[test]
    fn a_toleration_with_a_different_value_does_not_tolerate() {
        let p = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "user2", "effect": "NoSchedule"}]}),
        );
        assert!(filter(&p, &node(json!({"taints": [{"key": "dedicated", "value": "user1", "effect": "NoSchedule"}]}))).is_some());
    }

    #[test]
    fn an_exists_toleration_tolerates_any_value_of_its_key() {
        let p = pod(
            json!({"tolerations": [{"key": "foo", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            filter(
                &p,
                &node(json!({"taints": [{"key": "foo", "value": "bar", "effect": "NoSchedule"}]}))
            ),
            None
        );
    }

    #[test]
    fn a_toleration_with_another_effect_does_not_tolerate() {
        let p = pod(
            json!({"tolerations": [{"key": "foo", "operator": "Equal", "value": "bar", "effect": "PreferNoSchedule"}]}),
        );
        assert!(
            filter(
                &p,
                &node(json!({"taints": [{"key": "foo", "value": "bar", "effect": "NoSchedule"}]}))
            )
            .is_some()
        );
    }

    #[test]
    fn prefer_no_schedule_taints_never_filter() {
        assert_eq!(
            filter(
                &pod(json!({})),
                &node(
                    json!({"taints": [{"key": "foo", "value": "bar", "effect": "PreferNoSchedule"}]})
                )
            ),
            None
        );
    }

    #[test]
    fn an_empty_key_exists_toleration_tolerates_everything() {
        let p = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(
            filter(
                &p,
                &node(json!({"taints": [{"key": "a", "value": "b", "effect": "NoExecute"}]}))
            ),
            None
        );
    }
}
