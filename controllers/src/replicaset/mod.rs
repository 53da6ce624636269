//! The ReplicaSet controller (upstream `pkg/controller/replicaset/replica_set.go`): keeps
//! `spec.replicas` pods running for every ReplicaSet, adopts matching orphans and releases pods
//! that stop matching, and reports counts and the `ReplicaFailure` condition in status.
//!
//! This file is the imperative shell: informer handlers map pod and ReplicaSet changes to keys,
//! and a sync reads the caches, asks the pure core (`plan`, `ranking`, `status`) what to do and does
//! it. Expectations keep a sync on a lagging cache from acting on its own creates and deletes twice.

pub mod plan;
pub mod ranking;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Pod;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::expectations::ControllerExpectations;
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio::time::Instant;

use crate::manager::ControllerContext;
use crate::pod_util::{
    Selector, controller_of, is_pod_active, is_pod_ready, is_pod_terminating, key_of,
};
use plan::{BURST_REPLICAS, Owner, SLOW_START_INITIAL_BATCH_SIZE, Scale, TemplateError};

/// Canonical controller name (events' source, logs).
pub const NAME: &str = "replicaset-controller";

/// Upstream `NamespaceTerminatingCause`: creates in a terminating namespace fail, quietly.
const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("original ReplicaSet {namespace}/{name} is gone: got uid {got}, wanted {wanted}")]
    Gone {
        namespace: String,
        name: String,
        got: String,
        wanted: String,
    },
    #[error("{namespace}/{name} has just been deleted at {at}")]
    JustDeleted {
        namespace: String,
        name: String,
        at: String,
    },
    /// Errors of several adoptions or releases (upstream `utilerrors.Aggregate`).
    #[error("{0}")]
    Claim(String),
}

/// What Go's `err.Error()` prints for an API error: the server's message.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_invalid())
}

fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d
        .causes
        .iter()
        .any(|c| c.reason == NAMESPACE_TERMINATING_CAUSE)))
}

struct Shared {
    client: kube::Client,
    rss: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    expectations: ControllerExpectations,
    recorder: EventRecorder,
}

/// The controller's `StartFn`.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        rss: ctx.informers.informer::<ReplicaSet>(),
        pods: ctx.informers.informer::<Pod>(),
        queue: WorkQueue::new("replicaset", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics),
        expectations: ControllerExpectations::new(),
        recorder: ctx.events.for_controller(NAME),
    });
    let s = shared.clone();
    shared.rss.add_handler(move |change| match change {
        Change::Added(rs) => s.enqueue(rs),
        Change::Updated { old, new } => {
            if old.metadata.uid != new.metadata.uid {
                s.delete_rs(old);
            }
            s.enqueue(new);
        }
        Change::Deleted(rs) => s.delete_rs(rs),
    });
    let s = shared.clone();
    shared.pods.add_handler(move |change| match change {
        Change::Added(pod) => s.add_pod(pod),
        Change::Updated { old, new } => s.update_pod(old, new),
        Change::Deleted(pod) => s.delete_pod(pod),
    });
    let token = ctx.token.clone();
    // `--concurrent-replicaset-syncs`.
    let workers = ctx.settings.concurrent_replicaset_syncs;
    Ok(async move {
        let queue = shared.queue.clone();
        run_workers(queue, workers, token, move |key: String| {
            let s = shared.clone();
            async move { s.sync(&key).await }
        })
        .await;
        Ok(())
    }
    .boxed())
}

impl Shared {
    fn enqueue(&self, rs: &ReplicaSet) {
        self.queue.add(key_of(&rs.metadata));
    }

    /// Upstream `deleteRS`: forget its expectations so a recreated ReplicaSet starts clean.
    fn delete_rs(&self, rs: &ReplicaSet) {
        let key = key_of(&rs.metadata);
        self.expectations.delete(&key);
        self.queue.add(key);
    }

    /// Upstream `resolveControllerRef`: the cached ReplicaSet a controllerRef points at, if it is
    /// still the same object.
    fn resolve(&self, namespace: Option<&str>, r: &OwnerReference) -> Option<Arc<ReplicaSet>> {
        if r.kind != "ReplicaSet" {
            return None;
        }
        self.rss
            .get(namespace, &r.name)
            .filter(|rs| rs.metadata.uid.as_deref() == Some(r.uid.as_str()))
    }

    /// Upstream `GetPodReplicaSets`: every ReplicaSet in the pod's namespace whose (non-empty)
    /// selector matches it.
    fn matching_rss(&self, pod: &Pod) -> Vec<Arc<ReplicaSet>> {
        if pod.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            return Vec::new();
        }
        self.rss
            .store()
            .state()
            .into_iter()
            .filter(|rs| rs.metadata.namespace == pod.metadata.namespace)
            .filter(|rs| {
                Selector::from_label_selector(Some(&rs.spec.selector))
                    .is_ok_and(|s| !s.is_empty() && s.matches(pod.metadata.labels.as_ref()))
            })
            .collect()
    }

    fn add_pod(&self, pod: &Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            // A restart of the controller may see a pod already being deleted.
            self.delete_pod(pod);
            return;
        }
        if let Some(r) = controller_of(&pod.metadata) {
            if let Some(rs) = self.resolve(pod.metadata.namespace.as_deref(), r) {
                let key = key_of(&rs.metadata);
                self.expectations.creation_observed(&key);
                self.queue.add(key);
            }
            return;
        }
        // An orphan: every matching ReplicaSet may want to adopt it.
        for rs in self.matching_rss(pod) {
            self.enqueue(&rs);
        }
    }

    fn update_pod(&self, old: &Pod, cur: &Pod) {
        if old.metadata.resource_version == cur.metadata.resource_version {
            return;
        }
        let labels_changed = old.metadata.labels != cur.metadata.labels;
        if cur.metadata.deletion_timestamp.is_some() {
            // Graceful deletion: count the deletion when the timestamp appears, not when the pod
            // is finally gone, so the ReplicaSet can make a replacement sooner.
            self.delete_pod(cur);
            if labels_changed {
                self.delete_pod(old);
            }
            return;
        }
        let cur_ref = controller_of(&cur.metadata);
        let old_ref = controller_of(&old.metadata);
        let ref_changed = cur_ref != old_ref;
        if ref_changed
            && let Some(r) = old_ref
            && let Some(rs) = self.resolve(old.metadata.namespace.as_deref(), r)
        {
            self.enqueue(&rs);
        }
        if let Some(r) = cur_ref {
            if let Some(rs) = self.resolve(cur.metadata.namespace.as_deref(), r) {
                self.enqueue(&rs);
                let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
                if !is_pod_ready(old) && is_pod_ready(cur) && min_ready > 0 {
                    // Upstream adds a second against millisecond skew in AddAfter.
                    let secs = u64::try_from(min_ready).unwrap_or(0) + 1;
                    self.queue
                        .add_after(key_of(&rs.metadata), Duration::from_secs(secs));
                }
            }
            return;
        }
        if labels_changed || ref_changed {
            for rs in self.matching_rss(cur) {
                self.enqueue(&rs);
            }
        }
    }

    fn delete_pod(&self, pod: &Pod) {
        let Some(r) = controller_of(&pod.metadata) else {
            return;
        };
        let Some(rs) = self.resolve(pod.metadata.namespace.as_deref(), r) else {
            return;
        };
        let key = key_of(&rs.metadata);
        self.expectations
            .deletion_observed(&key, &key_of(&pod.metadata));
        self.queue.add(key);
    }

    /// Upstream `syncReplicaSet`.
    async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let Some(rs) = self.rss.get(Some(namespace), name) else {
            tracing::debug!(key, "replica set deleted");
            self.expectations.delete(key);
            return Ok(());
        };
        let needs_sync = self.expectations.satisfied(key, Instant::now());
        let selector = match Selector::from_label_selector(Some(&rs.spec.selector)) {
            Ok(s) => s,
            Err(e) => {
                // Upstream only logs: the apiserver validates apps/v1 selectors, so this is a
                // corrupted object that no retry will fix.
                tracing::error!(key, error = %e, "error converting pod selector to selector");
                return Ok(());
            }
        };
        // Every pod of the namespace, including those that no longer match but still carry our
        // controllerRef (to release them).
        let all_pods: Vec<Arc<Pod>> = self.pods.list_namespace(namespace);
        let active: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| is_pod_active(p))
            .cloned()
            .collect();
        let claimed = self.claim_pods(&rs, &selector, &active).await?;

        let mut manage_error = None;
        if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            manage_error = self.manage_replicas(&rs, key, &claimed).await.err();
        }
        let rs_uid = rs.metadata.uid.as_deref().unwrap_or("");
        let terminating = all_pods
            .iter()
            .filter(|p| is_pod_terminating(p))
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == rs_uid))
            .filter(|p| selector.matches(p.metadata.labels.as_ref()))
            .count();
        let message = manage_error.as_ref().map(ToString::to_string);
        let new_status = status::calculate_status(
            &rs,
            &claimed,
            terminating,
            message.as_deref(),
            Timestamp::now(),
        );
        let new_status = if status::needs_update(&rs, &new_status) {
            let new_status = status::with_observed_generation(&rs, new_status);
            self.update_status(&rs, new_status.clone()).await?;
            new_status
        } else {
            new_status
        };
        if manage_error.is_none()
            && let Some(after) = status::resync_after(&rs, &new_status)
        {
            self.queue.add_after(key.to_owned(), after);
        }
        tracing::debug!(key, elapsed = ?started.elapsed(), "finished syncing");
        manage_error.map_or(Ok(()), Err)
    }

    /// Upstream `updateReplicaSetStatus`: a PUT of the status subresource (the
    /// `system:controller:replicaset-controller` role grants `update`, not `patch`, on
    /// `replicasets/status`, and the apiserver takes only `status` from the body there), with the
    /// cached resourceVersion; on failure, one retry on a fresh read (`statusUpdateRetries`).
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        new_status: k8s_openapi::api::apps::v1::ReplicaSetStatus,
    ) -> Result<(), SyncError> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or("");
        let name = rs.metadata.name.as_deref().unwrap_or("");
        let api = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace);
        let mut target = rs.clone();
        target.status = Some(new_status.clone());
        match api
            .replace_status(name, &PostParams::default(), &target)
            .await
        {
            Ok(_) => Ok(()),
            Err(first) => {
                tracing::debug!(namespace, name, error = %first, "status update failed; retrying on a fresh read");
                let mut fresh = api.get(name).await?;
                fresh.status = Some(new_status);
                api.replace_status(name, &PostParams::default(), &fresh)
                    .await?;
                Ok(())
            }
        }
    }

    /// Upstream `claimPods` (`PodControllerRefManager.ClaimPods`): the pods this ReplicaSet owns
    /// after adopting matching orphans and releasing owned pods that stopped matching.
    async fn claim_pods(
        &self,
        rs: &ReplicaSet,
        selector: &Selector,
        active: &[Arc<Pod>],
    ) -> Result<Vec<Arc<Pod>>, SyncError> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or("");
        let rs_uid = rs.metadata.uid.as_deref().unwrap_or("");
        let owner = Owner {
            uid: rs_uid,
            namespace,
            deleting: rs.metadata.deletion_timestamp.is_some(),
            selector,
        };
        let claim = plan::claim(&owner, active);
        let mut claimed = claim.owned;
        let mut errors: Vec<String> = Vec::new();
        let pods_api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let params = PatchParams::default();
        // Upstream `RecheckDeletionTimestamp`, done at most once per sync and only if needed.
        let mut can_adopt: Option<Result<(), String>> = None;
        for pod in claim.adopt {
            if can_adopt.is_none() {
                can_adopt = Some(self.recheck_owner(rs).await.map_err(|e| e.to_string()));
            }
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            let pod_uid = pod.metadata.uid.as_deref().unwrap_or("");
            if let Some(Err(e)) = &can_adopt {
                errors.push(format!(
                    "can't adopt Pod {namespace}/{pod_name} ({pod_uid}): {e}"
                ));
                continue;
            }
            let patch = plan::adopt_patch(rs, pod_uid);
            match pods_api
                .patch(pod_name, &params, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => claimed.push(pod.clone()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => errors.push(api_message(&e)),
            }
        }
        for pod in claim.release {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            let patch = plan::release_patch(rs_uid, pod.metadata.uid.as_deref().unwrap_or(""));
            match pods_api
                .patch(pod_name, &params, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                // Gone, or no longer ours / a different pod of the same name.
                Err(e) if is_not_found(&e) || is_invalid(&e) => {}
                Err(e) => errors.push(api_message(&e)),
            }
        }
        match errors.len() {
            0 => Ok(claimed),
            1 => Err(SyncError::Claim(errors.remove(0))),
            _ => Err(SyncError::Claim(format!("[{}]", errors.join(", ")))),
        }
    }

    /// An uncached read of the ReplicaSet before adopting: it must still exist with the same UID
    /// and not be in deletion (upstream kubernetes#42639).
    async fn recheck_owner(&self, rs: &ReplicaSet) -> Result<(), SyncError> {
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let fresh = Api::<ReplicaSet>::namespaced(self.client.clone(), &namespace)
            .get(&name)
            .await?;
        if fresh.metadata.uid != rs.metadata.uid {
            return Err(SyncError::Gone {
                namespace,
                name,
                got: fresh.metadata.uid.unwrap_or_default(),
                wanted: rs.metadata.uid.clone().unwrap_or_default(),
            });
        }
        if let Some(at) = fresh.metadata.deletion_timestamp {
            return Err(SyncError::JustDeleted {
                namespace,
                name,
                at: at.0.to_string(),
            });
        }
        Ok(())
    }

    /// Upstream `manageReplicas`.
    async fn manage_replicas(
        &self,
        rs: &ReplicaSet,
        key: &str,
        claimed: &[Arc<Pod>],
    ) -> Result<(), SyncError> {
        let replicas = rs.spec.replicas;
        match plan::scale(claimed.len(), replicas, BURST_REPLICAS) {
            Scale::Steady => Ok(()),
            Scale::Create(n) => {
                tracing::debug!(key, creating = n, "too few replicas");
                // Expect every create before issuing any, so pods seen in the meantime count.
                self.expectations.expect_creations(key, n, Instant::now());
                let (ok, err) = plan::slow_start_batch(n, SLOW_START_INITIAL_BATCH_SIZE, || {
                    self.create_pod(rs)
                })
                .await;
                // Skipped and failed creates will never be observed.
                for _ in ok..n {
                    self.expectations.creation_observed(key);
                }
                err.map_or(Ok(()), Err)
            }
            Scale::Delete(n) => {
                tracing::debug!(key, deleting = n, "too many replicas");
                let related = self.indirectly_related_pods(rs);
                let doomed = ranking::pods_to_delete(claimed, &related, n, Timestamp::now());
                // Snapshot the keys so each deletion counts once, whether seen as a deletion
                // timestamp or as the final delete.
                self.expectations.expect_deletions(
                    key,
                    doomed.iter().map(|p| key_of(&p.metadata)),
                    Instant::now(),
                );
                let results =
                    futures::future::join_all(doomed.iter().map(|p| self.delete_pod_api(rs, p)))
                        .await;
                let mut first = None;
                for (pod, result) in doomed.iter().zip(results) {
                    if let Err(e) = result {
                        self.expectations
                            .deletion_observed(key, &key_of(&pod.metadata));
                        if !is_not_found(&e) {
                            first.get_or_insert(SyncError::Api(e));
                        }
                    }
                }
                first.map_or(Ok(()), Err)
            }
        }
    }

    /// Upstream `RealPodControl.CreatePods` for one pod, with the ReplicaSet's events.
    async fn create_pod(&self, rs: &ReplicaSet) -> Result<(), SyncError> {
        let pod = plan::pod_from_template(rs)?;
        let namespace = rs.metadata.namespace.as_deref().unwrap_or("");
        match Api::<k8s_openapi::api::core::v1::Pod>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(created) => {
                self.recorder.normal(
                    rs,
                    "SuccessfulCreate",
                    format!(
                        "Created pod: {}",
                        created.metadata.name.as_deref().unwrap_or("")
                    ),
                );
                Ok(())
            }
            // Every create in a terminating namespace fails; nothing to report or retry.
            Err(e) if is_namespace_terminating(&e) => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    rs,
                    status::FAILED_CREATE,
                    format!("Error creating: {}", api_message(&e)),
                );
                Err(SyncError::Api(e))
            }
        }
    }

    /// Upstream `RealPodControl.DeletePod`, with the ReplicaSet's events.
    async fn delete_pod_api(&self, rs: &ReplicaSet, pod: &Pod) -> Result<(), kube::Error> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or("");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        match Api::<Pod>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                self.recorder
                    .normal(rs, "SuccessfulDelete", format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(e),
            Err(e) => {
                self.recorder.warning(
                    rs,
                    status::FAILED_DELETE,
                    format!("Error deleting: {}", api_message(&e)),
                );
                Err(e)
            }
        }
    }

    /// Upstream `getIndirectlyRelatedPods`: pods selected by any ReplicaSet with the same
    /// controller (e.g. every ReplicaSet of one Deployment), each pod once.
    fn indirectly_related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        let related: Vec<Arc<ReplicaSet>> = match controller_of(&rs.metadata) {
            None => vec![Arc::new(rs.clone())],
            Some(owner) => self
                .rss
                .list_namespace(namespace)
                .into_iter()
                .filter(|other| controller_of(&other.metadata).is_some_and(|r| r.uid == owner.uid))
                .collect(),
        };
        let pods: Vec<Arc<Pod>> = self.pods.list_namespace(namespace);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for other in related {
            let Ok(sel) = Selector::from_label_selector(Some(&other.spec.selector)) else {
                continue;
            };
            for p in pods
                .iter()
                .filter(|p| sel.matches(p.metadata.labels.as_ref()))
            {
                if seen.insert(p.metadata.uid.clone()) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}
