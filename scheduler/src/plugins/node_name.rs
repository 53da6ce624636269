//! NodeName (pkg/scheduler/framework/plugins/nodename): a pod naming a node fits only there.

use k8s_openapi::api::core::v1::Pod;

use super::{Code, Status};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(pod: &Pod, node: &NodeInfo) -> Option<Status> {
    let wanted = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    match wanted {
        Some(n) if !n.is_empty() && n != node.name() => Some(Status::new(
            Code::UnschedulableAndUnresolvable,
            NAME,
            ERR_REASON,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};
    use serde_json::json;

    #[test]
    fn no_host_specified_fits_any_node() {
        assert_eq!(filter(&pod(json!({})), &node(json!({"name": "foo"}))), None);
    }

    #[test]
    fn host_matches_the_node() {
        assert_eq!(
            filter(
                &pod(json!({"nodeName": "foo"})),
                &node(json!({"name": "foo"}))
            ),
            None
        );
    }

    #[test]
    fn host_does_not_match_the_node() {
        let s = filter(
            &pod(json!({"nodeName": "bar"})),
            &node(json!({"name": "foo"})),
        );
        assert_eq!(
            s.map(|s| (s.code, s.reasons)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON.to_string()]
            ))
        );
    }
}
