//! SchedulingGates (pkg/scheduler/framework/plugins/schedulinggates): a pod with
//! `spec.schedulingGates` is held out of the active queue (PreEnqueue) until they are removed.

use k8s_openapi::api::core::v1::Pod;

pub const NAME: &str = "SchedulingGates";

/// The PreEnqueue verdict: `Some(message)` while the pod is gated, in upstream's words.
pub fn pre_enqueue(pod: &Pod) -> Option<String> {
    let gates: Vec<&str> = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    if gates.is_empty() {
        None
    } else {
        // Go's `%v` of a []string.
        Some(format!(
            "waiting for scheduling gates: [{}]",
            gates.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pod;
    use serde_json::json;

    #[test]
    fn a_pod_without_gates_is_enqueued() {
        assert_eq!(pre_enqueue(&pod(json!({}))), None);
    }

    #[test]
    fn a_pod_with_gates_waits_for_them() {
        let p = pod(json!({"schedulingGates": [{"name": "foo"}, {"name": "bar"}]}));
        assert_eq!(
            pre_enqueue(&p).as_deref(),
            Some("waiting for scheduling gates: [foo bar]")
        );
    }
}
