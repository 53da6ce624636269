//! NodeUnschedulable (pkg/scheduler/framework/plugins/nodeunschedulable): cordoned nodes take
//! only pods tolerating `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::taint_toleration::tolerations_tolerate_taint;
use super::{Code, Status};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// `v1.TaintNodeUnschedulable`.
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub fn filter(pod: &Pod, node: &NodeInfo) -> Option<Status> {
    let unschedulable = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !unschedulable {
        return None;
    }
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    };
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if tolerations_tolerate_taint(tolerations, &taint) {
        return None;
    }
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        NAME,
        ERR_REASON_UNSCHEDULABLE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn a_schedulable_node_admits_any_pod() {
        assert_eq!(
            filter(&pod(json!({})), &node(json!({"unschedulable": false}))),
            None
        );
        assert_eq!(filter(&pod(json!({})), &node(json!({}))), None);
    }

    #[test]
    fn an_unschedulable_node_rejects_a_pod_without_the_toleration() {
        let s = filter(&pod(json!({})), &node(json!({"unschedulable": true})));
        assert_eq!(
            s.map(|s| (s.code, s.reasons)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_UNSCHEDULABLE.to_string()]
            ))
        );
    }

    #[test]
    fn an_unschedulable_node_admits_a_pod_tolerating_the_unschedulable_taint() {
        let p = pod(
            json!({"tolerations": [{"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert_eq!(filter(&p, &node(json!({"unschedulable": true}))), None);
    }
}
