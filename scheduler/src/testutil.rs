//! Fixture builders for the unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::cache::{NodeInfo, PodInfo};

/// A pod named `p` in `ns` with the given spec (containers default to one empty container).
pub fn pod(spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "p-uid"},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("bad pod fixture: {e}"))
}

/// A pod requesting cpu (millicores) and memory (bytes) in one container.
pub fn pod_requesting(name: &str, milli_cpu: i64, memory: i64) -> Pod {
    let mut requests = serde_json::Map::new();
    if milli_cpu > 0 {
        requests.insert("cpu".into(), json!(format!("{milli_cpu}m")));
    }
    if memory > 0 {
        requests.insert("memory".into(), json!(format!("{memory}")));
    }
    let mut p = pod(json!({"containers": [{"name": "c", "resources": {"requests": requests}}]}));
    p.metadata.name = Some(name.to_string());
    p.metadata.uid = Some(format!("{name}-uid"));
    p
}

/// A node from a short description: name, labels, unschedulable, taints, allocatable, images.
pub fn node(desc: Value) -> NodeInfo {
    NodeInfo::new(Arc::new(raw_node(desc)))
}

pub fn raw_node(desc: Value) -> Node {
    let name = desc.get("name").cloned().unwrap_or(json!("node"));
    let allocatable = desc
        .get("allocatable")
        .cloned()
        .unwrap_or(json!({"cpu": "4", "memory": "32Gi", "pods": "110"}));
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": desc.get("labels").cloned().unwrap_or(json!({}))},
        "spec": {
            "unschedulable": desc.get("unschedulable").cloned().unwrap_or(Value::Null),
            "taints": desc.get("taints").cloned().unwrap_or(Value::Null),
        },
        "status": {"allocatable": allocatable, "capacity": allocatable,
            "images": desc.get("images").cloned().unwrap_or(Value::Null)},
    }))
    .unwrap_or_else(|e| panic!("bad node fixture: {e}"))
}

/// `node` with pods already placed on it.
pub fn node_with(desc: Value, pods: Vec<Pod>) -> NodeInfo {
    let mut n = node(desc);
    for p in pods {
        n.add_pod(PodInfo::new(Arc::new(p)));
    }
    n
}

/// A pod with a name, namespace and labels, and the given spec.
pub fn labelled_pod(name: &str, ns: &str, labels: Value, spec: Value) -> Pod {
    let mut p = pod(spec);
    p.metadata.name = Some(name.to_string());
    p.metadata.namespace = Some(ns.to_string());
    p.metadata.uid = Some(format!("{ns}-{name}-uid"));
    p.metadata.labels =
        serde_json::from_value(labels).unwrap_or_else(|e| panic!("bad labels fixture: {e}"));
    p
}
