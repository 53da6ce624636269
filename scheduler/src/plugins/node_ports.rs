//! NodePorts (pkg/scheduler/framework/plugins/nodeports): a host port may be used once per
//! protocol and address, where 0.0.0.0 conflicts with every address.

use k8s_openapi::api::core::v1::Pod;

use super::{Code, Status};
use crate::cache::{HostPort, NodeInfo, host_ports};

pub const NAME: &str = "NodePorts";
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// `HostPortInfo.CheckConflict`.
fn conflicts(want: &HostPort, used: &HostPort) -> bool {
    want.port == used.port
        && want.protocol == used.protocol
        && (want.ip == "0.0.0.0" || used.ip == "0.0.0.0" || want.ip == used.ip)
}

pub fn filter(pod: &Pod, node: &NodeInfo) -> Option<Status> {
    let wanted = host_ports(pod);
    let clash = wanted
        .iter()
        .any(|w| node.used_ports.iter().any(|u| conflicts(w, u)));
    clash.then(|| Status::new(Code::Unschedulable, NAME, ERR_REASON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node_with, pod};
    use serde_json::{Value, json};

    fn with_ports(ports: Value) -> Pod {
        pod(json!({"containers": [{"name": "c", "ports": ports}]}))
    }

    fn port(ip: &str, proto: &str, p: i32) -> Value {
        json!({"containerPort": p, "hostPort": p, "hostIP": ip, "protocol": proto})
    }

    fn fits(want: Value, used: Value) -> bool {
        filter(
            &with_ports(want),
            &node_with(json!({}), vec![with_ports(used)]),
        )
        .is_none()
    }

    // Cases of TestNodePorts in node_ports_test.go.
    #[test]
    fn a_pod_without_host_ports_always_fits() {
        assert!(filter(&pod(json!({})), &node_with(json!({}), vec![])).is_none());
    }

    #[test]
    fn different_ports_or_protocols_do_not_conflict() {
        assert!(fits(
            json!([port("127.0.0.1", "UDP", 8080)]),
            json!([port("127.0.0.1", "UDP", 9090)])
        ));
        assert!(fits(
            json!([port("127.0.0.1", "TCP", 8080)]),
            json!([port("127.0.0.1", "UDP", 8080)])
        ));
        assert!(fits(
            json!([port("127.0.0.2", "TCP", 8080)]),
            json!([port("127.0.0.1", "TCP", 8080)])
        ));
    }

    #[test]
    fn the_same_port_protocol_and_ip_conflict() {
        assert!(!fits(
            json!([port("127.0.0.1", "UDP", 8080)]),
            json!([port("127.0.0.1", "UDP", 8080)])
        ));
        assert!(!fits(
            json!([
                port("127.0.0.1", "TCP", 8001),
                port("127.0.0.1", "UDP", 8080)
            ]),
            json!([port("127.0.0.1", "UDP", 8080)])
        ));
    }

    #[test]
    fn the_wildcard_address_conflicts_with_every_address() {
        assert!(!fits(
            json!([port("0.0.0.0", "TCP", 8001)]),
            json!([port("127.0.0.1", "TCP", 8001)])
        ));
        assert!(!fits(
            json!([port("10.0.10.10", "TCP", 8001)]),
            json!([port("0.0.0.0", "TCP", 8001)])
        ));
        assert!(fits(
            json!([port("0.0.0.0", "UDP", 8001)]),
            json!([port("127.0.0.1", "TCP", 8001)])
        ));
    }

    #[test]
    fn an_empty_host_ip_and_protocol_mean_all_addresses_and_tcp() {
        assert!(!fits(
            json!([{"containerPort": 80, "hostPort": 8080}]),
            json!([port("10.0.0.1", "TCP", 8080)])
        ));
    }

    #[test]
    fn a_conflict_is_resolvable_with_upstreams_reason() {
        let s = filter(
            &with_ports(json!([port("", "", 80)])),
            &node_with(json!({}), vec![with_ports(json!([port("", "", 80)]))]),
        );
        assert_eq!(
            s.map(|s| (s.code, s.reasons)),
            Some((Code::Unschedulable, vec![ERR_REASON.to_string()]))
        );
    }
}
