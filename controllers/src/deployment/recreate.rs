//! Recreate strategy decisions. Mirrors kubernetes/kubernetes
//! `pkg/controller/deployment/recreate.go`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::Pod;
use k8s_openapi::api::apps::v1::ReplicaSet;

use super::sync::ScaleTo;
use super::util::{actual_replica_count, rs_replicas};

/// Upstream `scaleDownOldReplicaSetsForRecreate`: every active old ReplicaSet goes to zero.
pub fn scale_down_old(old_active: &[ReplicaSet]) -> Vec<ScaleTo> {
    old_active
        .iter()
        .filter(|rs| rs_replicas(rs) != 0)
        .map(|rs| ScaleTo::record(rs, 0))
        .collect()
}

/// Upstream `oldPodsRunning`: whether old ReplicaSets still report pods, or any pod of a
/// ReplicaSet other than the new one has not reached a terminal phase. `pods_by_rs` maps a
/// ReplicaSet UID to the pods it controls.
pub fn old_pods_running(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    pods_by_rs: &BTreeMap<String, Vec<Arc<Pod>>>,
) -> bool {
    if actual_replica_count(old) > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(|rs| rs.metadata.uid.as_deref());
    pods_by_rs
        .iter()
        .filter(|(uid, _)| Some(uid.as_str()) != new_uid)
        .flat_map(|(_, pods)| pods)
        .any(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            // Unknown (deprecated) counts as running, as upstream.
            !matches!(phase, Some("Failed" | "Succeeded"))
        })
}

#[cfg(test)]
mod tests {
    use super::super::util::fixtures::*;
    use super::*;
    use crate::cache::PodStatus;

    fn pod(phase: &str) -> Arc<Pod> {
        Arc::new(Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn every_active_old_replica_set_goes_to_zero() {
        let plan = scale_down_old(&[rs("a", 1, 2, 2), rs("b", 2, 0, 0)]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan.first().map(|s| s.replicas), Some(0));
    }

    // Upstream TestOldPodsRunning.
    #[test]
    fn old_pods_run_until_they_are_gone_or_terminal() {
        let new = rs("new", 2, 1, 1);
        let old = vec![rs("old", 1, 0, 0)];
        let mut pods = BTreeMap::new();
        assert!(!old_pods_running(Some(&new), &old, &pods));
        pods.insert("new-uid".to_string(), vec![pod("Running")]);
        assert!(!old_pods_running(Some(&new), &old, &pods));
        pods.insert("old-uid".to_string(), vec![pod("Succeeded"), pod("Failed")]);
        assert!(!old_pods_running(Some(&new), &old, &pods));
        pods.insert("old-uid".to_string(), vec![pod("Failed"), pod("Pending")]);
        assert!(old_pods_running(Some(&new), &old, &pods));
        pods.insert("old-uid".to_string(), vec![pod("Unknown")]);
        assert!(old_pods_running(Some(&new), &old, &pods));
        let mut still = rs("old", 1, 0, 0);
        if let Some(s) = still.status.as_mut() {
            s.replicas = 1;
        }
        assert!(old_pods_running(Some(&new), &[still], &BTreeMap::new()));
    }
}
