//! What a ReplicaSet sync decides, as pure functions: which pods it claims, adopts and releases
//! (upstream `ControllerRefManager.ClaimPods` in `pkg/controller/controller_ref_manager.go`), how
//! many pods to create or delete (`manageReplicas` in `pkg/controller/replicaset/replica_set.go`),
//! the slow-start batches, and the pod built from the template (`GetPodFromTemplate` in
//! `pkg/controller/controller_utils.go`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::Pod;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::pod_util::{Selector, controller_of};

/// Upstream `BurstReplicas`: at most this many creates or deletes per sync.
pub const BURST_REPLICAS: usize = 500;

/// Upstream `SlowStartInitialBatchSize`.
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;

/// How a sync changes the number of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Already at `spec.replicas`.
    Steady,
    Create(usize),
    Delete(usize),
}

/// Upstream `manageReplicas`: the difference between active pods and `spec.replicas`, capped at
/// `burst`. A missing `spec.replicas` defaults to 1 (apps/v1 defaulting).
pub fn scale(active: usize, replicas: Option<i32>, burst: usize) -> Scale {
    let want = usize::try_from(replicas.unwrap_or(1)).unwrap_or(0);
    if active < want {
        Scale::Create((want - active).min(burst))
    } else if active > want {
        Scale::Delete((active - want).min(burst))
    } else {
        Scale::Steady
    }
}

/// Upstream `slowStartBatch`'s batch sizes: `initial`, then doubling, never past what remains.
pub fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = remaining.min(initial);
    while size > 0 {
        batches.push(size);
        remaining -= size;
        size = size.saturating_mul(2).min(remaining);
    }
    batches
}

/// Runs `f` `count` times in slow-start batches (each batch concurrently), stopping after the
/// first batch with a failure. Returns the number of successes and the first error, as upstream's
/// `slowStartBatch` does.
pub async fn slow_start_batch<F, Fut, E>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut successes = 0;
    for size in slow_start_batches(count, initial) {
        let results = futures::future::join_all((0..size).map(|_| f())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
    }
    (successes, None)
}

/// The ReplicaSet facts that claiming needs.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub deleting: bool,
    pub selector: &'a Selector,
}

/// What `ClaimPods` does with each pod.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Already ours and still matching.
    pub owned: Vec<Arc<Pod>>,
    /// Orphans to adopt (after re-checking the live owner).
    pub adopt: Vec<Arc<Pod>>,
    /// Ours but no longer matching: release.
    pub release: Vec<Arc<Pod>>,
}

/// Upstream `BaseControllerRefManager.ClaimObject` over every pod.
pub fn claim(owner: &Owner<'_>, pods: &[Arc<Pod>]) -> Claim {
    let mut out = Claim::default();
    for pod in pods {
        let matches = owner.selector.matches(pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid != owner.uid => {}
            Some(_) if matches => out.owned.push(pod.clone()),
            // Owned but not matching: released unless we are being deleted ourselves.
            Some(_) if !owner.deleting => out.release.push(pod.clone()),
            Some(_) => {}
            None => {
                if owner.deleting
                    || !matches
                    || pod.metadata.deletion_timestamp.is_some()
                    || (!owner.namespace.is_empty()
                        && pod.metadata.namespace.as_deref() != Some(owner.namespace))
                {
                    continue;
                }
                out.adopt.push(pod.clone());
            }
        }
    }
    out
}

/// Upstream `metav1.NewControllerRef(rs, apps/v1 ReplicaSet)`.
pub fn controller_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream `ownerRefControllerPatch`: the strategic merge patch that adopts a pod.
pub fn adopt_patch(rs: &ReplicaSet, pod_uid: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "ownerReferences": [controller_ref(rs)],
            "uid": pod_uid,
        }
    })
}

/// Upstream `GenerateDeleteOwnerRefStrategicMergeBytes`: removes our owner reference; the `uid`
/// precondition makes the patch fail on a recreated pod of the same name.
pub fn release_patch(owner_uid: &str, pod_uid: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
            "uid": pod_uid,
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unable to create pods, no labels")]
    NoLabels,
}

/// Upstream `getPodsPrefix`: `<name>-`, unless that is not a valid generateName prefix, in which
/// case the name alone.
fn pods_prefix(name: &str) -> String {
    let prefix = format!("{name}-");
    // ValidatePodName with prefix=true checks a DNS-1123 subdomain after trimming the trailing dash
    // for the check; a name long enough to leave no room for the suffix fails the length check.
    if prefix.len() > 253 {
        name.to_owned()
    } else {
        prefix
    }
}

/// Upstream `GetPodFromTemplate`: a pod from the ReplicaSet's template, owned by it.
pub fn pod_from_template(
    rs: &ReplicaSet,
) -> Result<k8s_openapi::api::core::v1::Pod, TemplateError> {
    let template = rs.spec.template.as_ref();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let labels: BTreeMap<String, String> = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    if labels.is_empty() {
        return Err(TemplateError::NoLabels);
    }
    Ok(k8s_openapi::api::core::v1::Pod {
        metadata: ObjectMeta {
            generate_name: Some(pods_prefix(rs.metadata.name.as_deref().unwrap_or(""))),
            namespace: rs.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.and_then(|m| m.annotations.clone()),
            finalizers: meta.and_then(|m| m.finalizers.clone()),
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use std::sync::Mutex;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn rs() -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("rs-uid".into()),
                ..ObjectMeta::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(3),
                selector: LabelSelector {
                    match_labels: Some(labels(&[("app", "web")])),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&[("app", "web"), ("tier", "fe")])),
                        annotations: Some(labels(&[("note", "x")])),
                        finalizers: Some(vec!["example.com/keep".into()]),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("nginx".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                }),
                min_ready_seconds: None,
            },
            status: None,
        }
    }

    fn pod(name: &str, pod_labels: &[(&str, &str)], owner: Option<&str>) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some(labels(pod_labels));
        if let Some(uid) = owner {
            p.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "x".into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
        }
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect()
    }

    #[test]
    fn too_few_pods_means_create_the_difference_capped_at_the_burst() {
        assert_eq!(scale(1, Some(3), BURST_REPLICAS), Scale::Create(2));
        assert_eq!(scale(0, Some(1000), BURST_REPLICAS), Scale::Create(500));
        assert_eq!(scale(0, None, BURST_REPLICAS), Scale::Create(1));
    }

    #[test]
    fn too_many_pods_means_delete_the_difference_capped_at_the_burst() {
        assert_eq!(scale(5, Some(3), BURST_REPLICAS), Scale::Delete(2));
        assert_eq!(scale(900, Some(0), BURST_REPLICAS), Scale::Delete(500));
        assert_eq!(scale(3, Some(3), BURST_REPLICAS), Scale::Steady);
    }

    #[test]
    fn slow_start_batches_double_from_one_and_end_with_the_remainder() {
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), vec![1]);
        assert_eq!(slow_start_batches(10, 1), vec![1, 2, 4, 3]);
        assert_eq!(
            slow_start_batches(500, 1),
            vec![1, 2, 4, 8, 16, 32, 64, 128, 245]
        );
        assert_eq!(slow_start_batches(7, 2), vec![2, 4, 1]);
    }

    #[tokio::test]
    async fn slow_start_stops_after_the_first_batch_with_an_error() {
        // Calls 1..=3 succeed (batches 1 and 2), the 4th fails within the batch of 4.
        let calls = Mutex::new(0usize);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = {
                let mut c = calls.lock().unwrap();
                *c += 1;
                *c
            };
            async move { if n == 4 { Err("quota") } else { Ok(()) } }
        })
        .await;
        assert_eq!(
            *calls.lock().unwrap(),
            7,
            "the failing batch of 4 runs to its end"
        );
        assert_eq!(ok, 6);
        assert_eq!(err, Some("quota"));
    }

    #[tokio::test]
    async fn slow_start_runs_every_call_when_all_succeed() {
        let calls = Mutex::new(0usize);
        let (ok, err) = slow_start_batch(10, 1, || {
            *calls.lock().unwrap() += 1;
            async { Ok::<(), ()>(()) }
        })
        .await;
        assert_eq!((ok, err, *calls.lock().unwrap()), (10, None, 10));
    }

    #[test]
    fn claim_keeps_owned_matching_pods_adopts_orphans_and_releases_non_matching_ones() {
        let sel = Selector::from_labels(Some(&labels(&[("app", "web")])));
        let owner = Owner {
            uid: "rs-uid",
            namespace: "shop",
            deleting: false,
            selector: &sel,
        };
        let mut deleted_orphan = (*pod("dying", &[("app", "web")], None)).clone();
        deleted_orphan.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let pods = vec![
            pod("mine", &[("app", "web")], Some("rs-uid")),
            pod("orphan", &[("app", "web")], None),
            pod("stray", &[("app", "other")], None),
            pod("moved", &[("app", "other")], Some("rs-uid")),
            pod("theirs", &[("app", "web")], Some("other-uid")),
            Arc::new(deleted_orphan),
        ];
        let c = claim(&owner, &pods);
        assert_eq!(names(&c.owned), vec!["mine"]);
        assert_eq!(names(&c.adopt), vec!["orphan"]);
        assert_eq!(names(&c.release), vec!["moved"]);
    }

    #[test]
    fn a_replica_set_being_deleted_neither_adopts_nor_releases() {
        let sel = Selector::from_labels(Some(&labels(&[("app", "web")])));
        let owner = Owner {
            uid: "rs-uid",
            namespace: "shop",
            deleting: true,
            selector: &sel,
        };
        let pods = vec![
            pod("mine", &[("app", "web")], Some("rs-uid")),
            pod("orphan", &[("app", "web")], None),
            pod("moved", &[("app", "other")], Some("rs-uid")),
        ];
        let c = claim(&owner, &pods);
        assert_eq!(names(&c.owned), vec!["mine"]);
        assert!(c.adopt.is_empty() && c.release.is_empty());
    }

    #[test]
    fn the_pod_template_becomes_a_pod_owned_by_the_replica_set() {
        let p = pod_from_template(&rs()).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            p.metadata.labels,
            Some(labels(&[("app", "web"), ("tier", "fe")]))
        );
        assert_eq!(p.metadata.annotations, Some(labels(&[("note", "x")])));
        assert_eq!(p.metadata.finalizers, Some(vec!["example.com/keep".into()]));
        let refs = p.metadata.owner_references.unwrap();
        assert_eq!(refs, vec![controller_ref(&rs())]);
        assert_eq!(refs[0].kind, "ReplicaSet");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(refs[0].block_owner_deletion, Some(true));
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }

    #[test]
    fn a_template_without_labels_cannot_make_pods() {
        let mut r = rs();
        if let Some(m) = r.spec.template.as_mut().and_then(|t| t.metadata.as_mut()) {
            m.labels = None;
        }
        assert_eq!(pod_from_template(&r), Err(TemplateError::NoLabels));
    }

    #[test]
    fn adopt_and_release_patches_match_upstream() {
        assert_eq!(
            adopt_patch(&rs(), "p-uid"),
            serde_json::json!({"metadata": {"ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid",
                "controller": true, "blockOwnerDeletion": true}], "uid": "p-uid"}})
        );
        assert_eq!(
            release_patch("rs-uid", "p-uid"),
            serde_json::json!({"metadata": {"ownerReferences": [{"$patch": "delete", "uid": "rs-uid"}], "uid": "p-uid"}})
        );
    }
}
