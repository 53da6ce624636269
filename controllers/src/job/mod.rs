//! The Job controller (upstream `pkg/controller/job/job_controller.go`): runs pods for every Job
//! until enough succeed or it fails, tracking each finished pod exactly once with the
//! `batch.kubernetes.io/job-tracking` finalizer and `status.uncountedTerminatedPods`.
//!
//! This file is the imperative shell: informer handlers map Job and pod changes to keys (pod
//! events batched by a second, as upstream's `enqueueSyncJobBatched`), a sync reads the caches,
//! asks the pure core (`sync`, `indexed`, `backoff`, `failure_policy`, `success_policy`) what to
//! do and does it; a second queue strips the tracking finalizer from orphaned pods.

pub mod backoff;
pub mod failure_policy;
pub mod indexed;
pub mod metrics;
pub mod success_policy;
pub mod sync;
pub mod tracking;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::expectations::ControllerExpectations;
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::Pod;
use crate::manager::ControllerContext;
use crate::pod_util::{Selector, controller_of, is_pod_ready, key_of};
use crate::replicaset::plan::{Owner, SLOW_START_INITIAL_BATCH_SIZE, claim, slow_start_batches};
use sync::{Manage, ManageOutcome, has_tracking_finalizer};

/// The full pod the controller creates and patches (the cache keeps only what controllers read).
type ApiPod = k8s_openapi::api::core::v1::Pod;

/// Canonical controller name (events' source, logs).
pub const NAME: &str = "job-controller";

/// Upstream `DefaultJobApiBackOff` / `MaxJobApiBackOff`: the queues' per-item backoff.
const API_BACKOFF: Duration = Duration::from_secs(1);
const MAX_API_BACKOFF: Duration = Duration::from_secs(60);

const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    #[error("invalid job key {0:?}: either namespace or name is missing")]
    Key(String),
    #[error("couldn't convert Job selector: {0}")]
    Selector(#[from] crate::pod_util::SelectorError),
    #[error("tracking status: {0}")]
    Tracking(String),
}

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
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    orphan_queue: WorkQueue<String>,
    expectations: ControllerExpectations,
    finalizer_expectations: tracking::FinalizerExpectations,
    backoff: backoff::BackoffStore,
    recorder: EventRecorder,
    metrics: metrics::JobMetrics,
}

/// What a sync did, for `job_sync_duration_seconds` / `job_syncs_total`: recorded only for syncs
/// that got past the preliminary checks, as upstream.
struct SyncTrace {
    completion_mode: Option<&'static str>,
    action: &'static str,
}

/// The controller's `StartFn`.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        jobs: ctx.informers.informer::<Job>(),
        pods: ctx.informers.informer::<Pod>(),
        queue: WorkQueue::new(
            "job",
            RateLimiter::item_exponential(API_BACKOFF, MAX_API_BACKOFF),
        )
        .with_metrics(&ctx.queue_metrics),
        orphan_queue: WorkQueue::new(
            "job_orphan_pod",
            RateLimiter::item_exponential(API_BACKOFF, MAX_API_BACKOFF),
        )
        .with_metrics(&ctx.queue_metrics),
        expectations: ControllerExpectations::new(),
        finalizer_expectations: tracking::FinalizerExpectations::default(),
        backoff: backoff::BackoffStore::default(),
        recorder: ctx.events.for_controller(NAME),
        metrics: ctx.registry.once(NAME, metrics::JobMetrics::register),
    });
    let s = shared.clone();
    shared.jobs.add_handler(move |change| match change {
        Change::Added(job) => {
            s.queue.add(key_of(&job.metadata));
            if let Some(controller) = sync::managed_by_external(job) {
                s.metrics
                    .by_external_controller
                    .get_or_create(&metrics::ControllerLabels {
                        controller_name: controller.to_owned(),
                    })
                    .inc();
            }
        }
        Change::Updated { old, new } => s.update_job(old, new),
        Change::Deleted(job) => {
            s.queue.add(key_of(&job.metadata));
            s.cleanup_pod_finalizers(job);
        }
    });
    let s = shared.clone();
    shared.pods.add_handler(move |change| match change {
        Change::Added(pod) => {
            s.record_finished_with_finalizer(None, Some(pod));
            s.add_pod(pod);
        }
        Change::Updated { old, new } => {
            s.record_finished_with_finalizer(Some(old), Some(new));
            s.update_pod(old, new);
        }
        Change::Deleted(pod) => {
            s.record_finished_with_finalizer(Some(pod), None);
            s.delete_pod(pod, true);
        }
    });
    let token = ctx.token.clone();
    // `--concurrent-job-syncs`.
    let workers = ctx.settings.concurrent_job_syncs;
    Ok(async move {
        let s = shared.clone();
        let jobs = run_workers(
            shared.queue.clone(),
            workers,
            token.clone(),
            move |key: String| {
                let s = s.clone();
                async move { s.sync(&key).await }
            },
        );
        let s = shared.clone();
        let orphans = run_workers(shared.orphan_queue.clone(), 1, token, move |key: String| {
            let s = s.clone();
            async move { s.sync_orphan_pod(&key).await }
        });
        futures::join!(jobs, orphans);
        Ok(())
    }
    .boxed())
}

impl Shared {
    /// Upstream `recordFinishedPodWithTrackingFinalizer`.
    fn record_finished_with_finalizer(&self, old: Option<&Pod>, new: Option<&Pod>) {
        let counted = |p: Option<&Pod>| {
            p.is_some_and(|p| has_tracking_finalizer(p) && crate::pod_util::is_pod_terminal(p))
        };
        let event = match (counted(old), counted(new)) {
            (false, true) => "add",
            (true, false) => "delete",
            _ => return,
        };
        self.metrics
            .tracking_finalizer
            .get_or_create(&metrics::EventLabels { event })
            .inc();
    }

    /// Upstream `enqueueSyncJobBatched`: pod events and status updates coalesce for a second.
    fn enqueue_batched(&self, job: &Job) {
        self.queue
            .add_after(key_of(&job.metadata), sync::SYNC_JOB_BATCH_PERIOD);
    }

    fn update_job(&self, old: &Job, cur: &Job) {
        let key = key_of(&cur.metadata);
        if old.metadata.generation == cur.metadata.generation {
            self.enqueue_batched(cur);
        } else {
            self.queue.add(key.clone());
        }
        if sync::is_finished(cur) {
            // A backup: finished Jobs should have no pod finalizers left.
            self.cleanup_pod_finalizers(cur);
        }
        // A changed activeDeadlineSeconds: sync exactly at the new deadline.
        let status_start = cur.status.as_ref().and_then(|s| s.start_time.as_ref());
        let cur_ads = cur.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let old_ads = old.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        if let (Some(start), Some(ads)) = (status_start, cur_ads)
            && old_ads != Some(ads)
        {
            let passed = Timestamp::now().duration_since(start.0);
            let left = jiff::SignedDuration::from_secs(ads) - passed;
            self.queue
                .add_after(key, Duration::try_from(left).unwrap_or(Duration::ZERO));
        }
    }

    /// Upstream `cleanupPodFinalizers`: owned pods of a finished or deleted Job lose the finalizer
    /// through the orphan queue.
    fn cleanup_pod_finalizers(&self, job: &Job) {
        let Ok(selector) =
            Selector::from_label_selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()))
        else {
            return;
        };
        let uid = job.metadata.uid.as_deref().unwrap_or("");
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        for pod in self.pods.list_namespace(ns) {
            if selector.matches(pod.metadata.labels.as_ref())
                && controller_of(&pod.metadata).is_some_and(|r| r.uid == uid)
                && has_tracking_finalizer(&pod)
            {
                self.orphan_queue.add(key_of(&pod.metadata));
            }
        }
    }

    fn resolve(&self, namespace: Option<&str>, r: &OwnerReference) -> Option<Arc<Job>> {
        if r.kind != "Job" {
            return None;
        }
        self.jobs
            .get(namespace, &r.name)
            .filter(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()))
    }

    /// Upstream `getPodJobs`: Jobs whose selector matches an orphan.
    fn matching_jobs(&self, pod: &Pod) -> Vec<Arc<Job>> {
        if pod.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            return Vec::new();
        }
        self.jobs
            .store()
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace == pod.metadata.namespace)
            .filter(|j| {
                Selector::from_label_selector(j.spec.as_ref().and_then(|s| s.selector.as_ref()))
                    .is_ok_and(|s| !s.is_empty() && s.matches(pod.metadata.labels.as_ref()))
            })
            .collect()
    }

    fn add_pod(&self, pod: &Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            self.delete_pod(pod, false);
            return;
        }
        if let Some(r) = controller_of(&pod.metadata) {
            if let Some(job) = self.resolve(pod.metadata.namespace.as_deref(), r) {
                self.expectations.creation_observed(&key_of(&job.metadata));
                self.enqueue_batched(&job);
            }
            return;
        }
        if has_tracking_finalizer(pod) {
            self.orphan_queue.add(key_of(&pod.metadata));
        }
        for job in self.matching_jobs(pod) {
            self.enqueue_batched(&job);
        }
    }

    fn update_pod(&self, old: &Pod, cur: &Pod) {
        if old.metadata.resource_version == cur.metadata.resource_version {
            return;
        }
        if cur.metadata.deletion_timestamp.is_some() {
            self.delete_pod(cur, false);
            return;
        }
        let finalizer_removed = !has_tracking_finalizer(cur);
        let cur_ref = controller_of(&cur.metadata);
        let old_ref = controller_of(&old.metadata);
        let ref_changed = cur_ref != old_ref;
        let cur_uid = cur.metadata.uid.as_deref().unwrap_or("");
        if ref_changed
            && let Some(r) = old_ref
            && let Some(job) = self.resolve(old.metadata.namespace.as_deref(), r)
        {
            if finalizer_removed {
                self.finalizer_expectations
                    .observed(&key_of(&job.metadata), cur_uid);
            }
            self.enqueue_batched(&job);
        }
        if let Some(r) = cur_ref {
            if let Some(job) = self.resolve(cur.metadata.namespace.as_deref(), r) {
                if finalizer_removed {
                    self.finalizer_expectations
                        .observed(&key_of(&job.metadata), cur_uid);
                }
                self.enqueue_batched(&job);
            }
            return;
        }
        if has_tracking_finalizer(cur) {
            self.orphan_queue.add(key_of(&cur.metadata));
        }
        if old.metadata.labels != cur.metadata.labels || ref_changed {
            for job in self.matching_jobs(cur) {
                self.enqueue_batched(&job);
            }
        }
    }

    /// Upstream `deletePod`; `final_delete` is a real removal, not a deletion timestamp.
    fn delete_pod(&self, pod: &Pod, final_delete: bool) {
        let has_finalizer = has_tracking_finalizer(pod);
        let Some(r) = controller_of(&pod.metadata) else {
            if has_finalizer {
                self.orphan_queue.add(key_of(&pod.metadata));
            }
            return;
        };
        let job = self.resolve(pod.metadata.namespace.as_deref(), r);
        let Some(job) = job.filter(|j| !sync::is_finished(j)) else {
            // The Job's syncs will not remove this finalizer.
            if has_finalizer {
                self.orphan_queue.add(key_of(&pod.metadata));
            }
            return;
        };
        let key = key_of(&job.metadata);
        self.expectations
            .deletion_observed(&key, &key_of(&pod.metadata));
        if final_delete || !has_finalizer {
            self.finalizer_expectations
                .observed(&key, pod.metadata.uid.as_deref().unwrap_or(""));
        }
        self.enqueue_batched(&job);
    }

    /// Upstream `syncOrphanPod`: strips the tracking finalizer from a pod no unfinished Job of
    /// this controller owns.
    async fn sync_orphan_pod(&self, key: &str) -> Result<(), SyncError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let Some(pod) = self.pods.get(Some(ns), name) else {
            return Ok(());
        };
        if let Some(r) = controller_of(&pod.metadata) {
            if r.kind != "Job" || r.api_version != "batch/v1" {
                return Ok(());
            }
            if let Some(job) = self.resolve(Some(ns), r)
                && (sync::managed_by_external(&job).is_some() || !sync::is_finished(&job))
            {
                return Ok(());
            }
        }
        match self.remove_finalizer(ns, name, &pod).await {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn remove_finalizer(&self, ns: &str, name: &str, pod: &Pod) -> Result<(), kube::Error> {
        if !has_tracking_finalizer(pod) {
            return Ok(());
        }
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [sync::TRACKING_FINALIZER]}});
        Api::<ApiPod>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map(|_| ())
    }

    /// Upstream `syncJob`.
    async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let started = std::time::Instant::now();
        let mut trace = SyncTrace {
            completion_mode: None,
            action: metrics::ACTION_RECONCILING,
        };
        let result = self.sync_job(key, &mut trace).await;
        if let Some(completion_mode) = trace.completion_mode {
            let labels = metrics::SyncLabels {
                completion_mode,
                result: if result.is_ok() { "success" } else { "error" },
                action: trace.action,
            };
            self.metrics
                .sync_duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            self.metrics.syncs.get_or_create(&labels).inc();
        }
        tracing::debug!(key, elapsed = ?started.elapsed(), "finished syncing job");
        result
    }

    async fn sync_job(&self, key: &str, trace: &mut SyncTrace) -> Result<(), SyncError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        if ns.is_empty() || name.is_empty() {
            return Err(SyncError::Key(key.to_owned()));
        }
        let Some(shared_job) = self.jobs.get(Some(ns), name) else {
            tracing::debug!(key, "job has been deleted");
            self.expectations.delete(key);
            self.finalizer_expectations.delete(key);
            self.backoff.remove(key);
            return Ok(());
        };
        if let Some(controller) = sync::managed_by_external(&shared_job) {
            tracing::debug!(
                key,
                controller,
                "skip syncing the job as it is managed by an external controller"
            );
            return Ok(());
        }
        if sync::is_finished(&shared_job) {
            self.backoff.remove(key);
            return Ok(());
        }
        let job: Job = (*shared_job).clone();
        if let Some(mode) = job.spec.as_ref().and_then(|s| s.completion_mode.as_deref())
            && mode != "NonIndexed"
            && mode != "Indexed"
        {
            self.recorder.warning(
                &job,
                "UnknownCompletionMode",
                "Skipped Job sync because completion mode is unknown",
            );
            return Ok(());
        }
        trace.completion_mode = Some(if sync::is_indexed(&job) {
            "Indexed"
        } else {
            "NonIndexed"
        });
        // Expectations before listing pods: a pod created after this check defers the decision.
        let satisfied = self.expectations.satisfied(key, Instant::now());
        let pods = self.pods_for_job(&job).await?;
        let expected_rm = self.finalizer_expectations.expected(key);
        let old_backoff = self.backoff.get(key);
        let now = Timestamp::now();
        let mut prep = sync::prepare(&sync::Input {
            job: &job,
            pods: &pods,
            now,
            satisfied_expectations: satisfied,
            expected_rm_finalizers: &expected_rm,
            backoff: &old_backoff,
        });
        if let Some(after) = prep.requeue_after {
            tracing::debug!(
                key,
                ?after,
                "job has activeDeadlineSeconds; will sync again"
            );
            self.queue.add_after(key.to_owned(), after);
        }
        trace.action = match &prep.manage {
            Manage::DeletePods(_) => metrics::ACTION_PODS_DELETED,
            Manage::Create { .. } | Manage::Backoff(_) => metrics::ACTION_PODS_CREATED,
            Manage::Nothing => metrics::ACTION_TRACKING,
            Manage::DeleteActive(_) | Manage::Skipped => metrics::ACTION_RECONCILING,
        };
        let (outcome, manage_error) = self.manage(key, &prep).await;
        let (needs_update, events) = sync::after_manage(&mut prep, outcome, Timestamp::now());
        for e in events {
            self.event(&job, &e);
        }
        self.track_status_and_remove_finalizers(key, prep, needs_update)
            .await?;
        manage_error.map_or(Ok(()), Err)
    }

    fn event(&self, job: &Job, e: &sync::Event) {
        if e.warning {
            self.recorder.warning(job, &e.reason, e.message.clone());
        } else {
            self.recorder.normal(job, &e.reason, e.message.clone());
        }
    }

    /// Upstream `getPodsForJob` (`PodControllerRefManager.ClaimPods` with the tracking
    /// finalizer): the Job's pods after adopting matching orphans (ownerRef and finalizer added)
    /// and releasing owned pods that stopped matching (ownerRef and finalizer removed).
    async fn pods_for_job(&self, job: &Job) -> Result<Vec<Arc<Pod>>, SyncError> {
        let selector =
            Selector::from_label_selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()))?;
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        let uid = job.metadata.uid.as_deref().unwrap_or("");
        let all = self.pods.list_namespace(ns);
        let owner = Owner {
            uid,
            namespace: ns,
            deleting: job.metadata.deletion_timestamp.is_some(),
            selector: &selector,
        };
        let claim = claim(&owner, &all);
        let mut pods = claim.owned;
        let api = Api::<ApiPod>::namespaced(self.client.clone(), ns);
        let params = PatchParams::default();
        let mut first_error: Option<SyncError> = None;
        let mut can_adopt: Option<Result<(), String>> = None;
        for pod in claim.adopt {
            if can_adopt.is_none() {
                can_adopt = Some(self.recheck_job(job).await);
            }
            if let Some(Err(e)) = &can_adopt {
                first_error.get_or_insert(SyncError::Tracking(format!(
                    "can't adopt Pod {ns}/{} ({}): {e}",
                    name_of(&pod),
                    pod.metadata.uid.as_deref().unwrap_or("")
                )));
                continue;
            }
            let patch = json!({"metadata": {
                "ownerReferences": [controller_ref(job)],
                "uid": pod.metadata.uid,
                "finalizers": [sync::TRACKING_FINALIZER],
            }});
            match api
                .patch(name_of(&pod), &params, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    // Count the adopted pod as tracked in this sync already.
                    let mut adopted = (*pod).clone();
                    let fins = adopted.metadata.finalizers.get_or_insert_with(Vec::new);
                    if !fins.iter().any(|f| f == sync::TRACKING_FINALIZER) {
                        fins.push(sync::TRACKING_FINALIZER.into());
                    }
                    pods.push(Arc::new(adopted));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(SyncError::Api(e));
                }
            }
        }
        for pod in claim.release {
            let patch = json!({"metadata": {
                "ownerReferences": [{"$patch": "delete", "uid": uid}],
                "uid": pod.metadata.uid,
                "$deleteFromPrimitiveList/finalizers": [sync::TRACKING_FINALIZER],
            }});
            match api
                .patch(name_of(&pod), &params, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) || is_invalid(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(SyncError::Api(e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(pods),
        }
    }

    /// Upstream `RecheckDeletionTimestamp`: an uncached read before adopting.
    async fn recheck_job(&self, job: &Job) -> Result<(), String> {
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        let name = job.metadata.name.as_deref().unwrap_or("");
        let fresh = Api::<Job>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .map_err(|e| api_message(&e))?;
        if fresh.metadata.uid != job.metadata.uid {
            return Err(format!(
                "original Job {ns}/{name} is gone: got uid {}, wanted {}",
                fresh.metadata.uid.unwrap_or_default(),
                job.metadata.uid.as_deref().unwrap_or("")
            ));
        }
        if let Some(at) = fresh.metadata.deletion_timestamp {
            return Err(format!("{ns}/{name} has just been deleted at {}", at.0));
        }
        Ok(())
    }

    /// Performs `manageJob`'s decision.
    async fn manage(&self, key: &str, prep: &sync::Prepared) -> (ManageOutcome, Option<SyncError>) {
        let job = &prep.job;
        match &prep.manage {
            Manage::DeleteActive(pods) => {
                let (deleted, ready, err) = self.delete_pods(job, key, pods, false).await;
                (
                    ManageOutcome {
                        deleted,
                        deleted_ready: ready,
                        created: 0,
                    },
                    err,
                )
            }
            Manage::DeletePods(pods) => {
                let uids = pods.iter().map(|p| key_of(&p.metadata));
                self.expectations
                    .expect_deletions(key, uids, Instant::now());
                let (deleted, ready, err) = self.delete_pods(job, key, pods, true).await;
                (
                    ManageOutcome {
                        deleted,
                        deleted_ready: ready,
                        created: 0,
                    },
                    err,
                )
            }
            Manage::Backoff(delay) => {
                self.queue
                    .add_after(key.to_owned(), (*delay).max(sync::SYNC_JOB_BATCH_PERIOD));
                (ManageOutcome::default(), None)
            }
            Manage::Create { count, indexes } => {
                tracing::debug!(key, count, ?indexes, "too few pods running; creating");
                let (created, err) = self.create_pods(key, prep, *count, indexes).await;
                (
                    ManageOutcome {
                        created,
                        ..ManageOutcome::default()
                    },
                    err,
                )
            }
            Manage::Nothing | Manage::Skipped => (ManageOutcome::default(), None),
        }
    }

    /// Upstream `deleteActivePods` (`strip` false: finalizers stay for tracking) and
    /// `deleteJobPods` (`strip` true). Returns deleted, deleted-and-ready, first error.
    async fn delete_pods(
        &self,
        job: &Job,
        key: &str,
        pods: &[Arc<Pod>],
        strip: bool,
    ) -> (i32, i32, Option<SyncError>) {
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        let results = futures::future::join_all(pods.iter().map(|pod| async move {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let fail = |e: kube::Error| {
                if strip {
                    // The informer will not see this deletion.
                    self.expectations
                        .deletion_observed(key, &key_of(&pod.metadata));
                }
                e
            };
            if strip && let Err(e) = self.remove_finalizer(ns, name, pod).await {
                let e = fail(e);
                if !is_not_found(&e) {
                    return (false, is_pod_ready(pod), Some(e));
                }
            }
            let res = Api::<ApiPod>::namespaced(self.client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await;
            match res {
                Ok(_) => {
                    self.recorder
                        .normal(job, "SuccessfulDelete", format!("Deleted pod: {name}"));
                    (true, is_pod_ready(pod), None)
                }
                Err(e) if is_not_found(&e) => {
                    let _ = fail(e);
                    (true, is_pod_ready(pod), None)
                }
                Err(e) => {
                    self.recorder.warning(
                        job,
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                    (false, is_pod_ready(pod), Some(fail(e)))
                }
            }
        }))
        .await;
        let mut deleted = 0;
        let mut ready = 0;
        let mut first = None;
        for (ok, was_ready, err) in results {
            if ok {
                deleted += 1;
                if was_ready {
                    ready += 1;
                }
            }
            if let Some(e) = err {
                first.get_or_insert(SyncError::Api(e));
            }
        }
        (deleted, ready, first)
    }

    /// The pod-creating half of upstream `manageJob`: slow-start batches, expectations lowered
    /// for failed and skipped creations.
    async fn create_pods(
        &self,
        key: &str,
        prep: &sync::Prepared,
        count: usize,
        indexes: &[i64],
    ) -> (i32, Option<SyncError>) {
        if count == 0 {
            return (0, None);
        }
        let job = &prep.job;
        self.expectations
            .expect_creations(key, count, Instant::now());
        let template = pod_template(job);
        let mut created = 0;
        let mut next = 0;
        let mut first_error = None;
        let batches = slow_start_batches(count, SLOW_START_INITIAL_BATCH_SIZE);
        for (n, size) in batches.iter().enumerate() {
            let batch: Vec<Option<i64>> = (next..next + size)
                .map(|i| indexes.get(i).copied())
                .collect();
            next += size;
            let results = futures::future::join_all(
                batch
                    .into_iter()
                    .map(|ix| self.create_pod(prep, &template, ix)),
            )
            .await;
            let mut failed = false;
            for r in results {
                match r {
                    Ok(true) => created += 1,
                    Ok(false) => {}
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        failed = true;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if failed {
                // The skipped creations will be retried by a later sync.
                let skipped: usize = batches[n + 1..].iter().sum();
                for _ in 0..skipped {
                    self.expectations.creation_observed(key);
                }
                break;
            }
        }
        (created, first_error.map(SyncError::Api))
    }

    /// Upstream `CreatePodsWithGenerateName` for one pod. `Ok(false)`: the namespace is
    /// terminating (quietly not created).
    async fn create_pod(
        &self,
        prep: &sync::Prepared,
        template: &PodTemplateSpec,
        index: Option<i64>,
    ) -> Result<bool, kube::Error> {
        let job = &prep.job;
        let pod = pod_for(job, template, index, |ix| {
            prep.delayed_deletion.get(&ix).map(|p| p.as_ref())
        });
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        match Api::<ApiPod>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(created) => {
                self.recorder.normal(
                    job,
                    "SuccessfulCreate",
                    format!(
                        "Created pod: {}",
                        created.metadata.name.as_deref().unwrap_or("")
                    ),
                );
                Ok(true)
            }
            Err(e) if is_namespace_terminating(&e) => Ok(false),
            Err(e) => {
                self.recorder.warning(
                    job,
                    "FailedCreate",
                    format!("Error creating: {}", api_message(&e)),
                );
                Err(e)
            }
        }
    }

    /// Upstream `updateJobStatus`: a PUT of the status subresource (the job-controller role may
    /// `update`, not `patch`, `jobs/status`) at the cached resourceVersion; a conflict requeues.
    async fn update_status(&self, job: &Job, status: &JobStatus) -> Result<Job, SyncError> {
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        let name = job.metadata.name.as_deref().unwrap_or("");
        let mut target = job.clone();
        target.status = Some(status.clone());
        Ok(Api::<Job>::namespaced(self.client.clone(), ns)
            .replace_status(name, &PostParams::default(), &target)
            .await?)
    }

    /// Upstream `trackJobStatusAndRemoveFinalizers` with `flushUncountedAndRemoveFinalizers`.
    async fn track_status_and_remove_finalizers(
        &self,
        key: &str,
        mut prep: sync::Prepared,
        needs_update: bool,
    ) -> Result<(), SyncError> {
        let mut tracking = sync::track(&mut prep, needs_update, Timestamp::now());
        let mut job = prep.job.clone();
        let mut status = prep.status.clone();
        let mut needs_flush = tracking.needs_flush;
        let mode = if sync::is_indexed(&job) {
            "Indexed"
        } else {
            "NonIndexed"
        };
        let counters = |st: Option<&JobStatus>| {
            st.map_or((0, 0), |s| {
                (
                    i64::from(s.succeeded.unwrap_or(0)),
                    i64::from(s.failed.unwrap_or(0)),
                )
            })
        };
        let mut old_counters = counters(job.status.as_ref());
        let mut record_counts = |written: &Job| {
            let now = counters(written.status.as_ref());
            self.metrics
                .pods_finished(mode, now.0 - old_counters.0, now.1 - old_counters.1);
            old_counters = now;
        };
        // 1. Record newly finished pods (and the interim condition) before touching finalizers.
        if needs_flush {
            job = self.update_status(&job, &status).await.map_err(|e| {
                SyncError::Tracking(format!("adding uncounted pods to status: {e}"))
            })?;
            status = job.status.clone().unwrap_or_default();
            record_counts(&job);
            self.backoff.update(key, prep.new_backoff.clone());
            needs_flush = false;
        }
        for (action, n) in &tracking.failure_policy_actions {
            self.metrics
                .failure_policy_actions
                .get_or_create(&metrics::ActionLabels { action })
                .inc_by(*n);
        }
        // 2. Remove the finalizers of the recorded pods.
        let mut rm_error = None;
        if !tracking.remove_finalizer.is_empty() {
            let pods = std::mem::take(&mut tracking.remove_finalizer);
            self.finalizer_expectations.expect_removed(
                key,
                pods.iter().map(|p| p.metadata.uid.as_deref().unwrap_or("")),
            );
            let ns = job.metadata.namespace.as_deref().unwrap_or("");
            let results = futures::future::join_all(pods.iter().map(|p| async move {
                let name = p.metadata.name.as_deref().unwrap_or("");
                (p, self.remove_finalizer(ns, name, p).await)
            }))
            .await;
            for (p, r) in results {
                let uid = p.metadata.uid.as_deref().unwrap_or("");
                match r {
                    Ok(()) => {
                        tracking.uids_with_finalizer.remove(uid);
                    }
                    Err(e) => {
                        // No update will confirm this removal.
                        self.finalizer_expectations.observed(key, uid);
                        if is_not_found(&e) {
                            tracking.uids_with_finalizer.remove(uid);
                        } else {
                            tracing::warn!(key, pod = name_of(p), error = %e, "removing tracking finalizer");
                            rm_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        // 3. Count the pods whose finalizer is gone.
        if sync::clean_uncounted(&mut status, &tracking.uids_with_finalizer) {
            needs_flush = true;
        }
        if let Some(e) = rm_error {
            if needs_flush {
                self.update_status(&job, &status).await.map_err(|e| {
                    SyncError::Tracking(format!("removing uncounted pods from status: {e}"))
                })?;
            }
            return Err(SyncError::Tracking(api_message(&e)));
        }
        // 4. The final condition, once nothing is uncounted or terminating.
        let finished = !tracking.reached_max_uncounted
            && sync::enact_finished(
                &mut status,
                prep.finished.as_ref(),
                prep.terminating,
                Timestamp::now(),
            );
        if finished {
            needs_flush = true;
        }
        if needs_flush {
            let updated = self.update_status(&job, &status).await.map_err(|e| {
                SyncError::Tracking(format!("removing uncounted pods from status: {e}"))
            })?;
            record_counts(&updated);
            if finished && let Some(cond) = &prep.finished {
                let (result, reason) = if cond.type_ == sync::COMPLETE {
                    ("succeeded", String::new())
                } else {
                    ("failed", cond.reason.clone().unwrap_or_default())
                };
                self.metrics
                    .jobs_finished
                    .get_or_create(&metrics::FinishedLabels {
                        completion_mode: mode,
                        result,
                        reason,
                    })
                    .inc();
                let st = updated.status.clone().unwrap_or_default();
                for e in sync::finished_events(&updated, &st, cond) {
                    self.event(&updated, &e);
                }
            }
        }
        Ok(())
    }
}

fn name_of(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// The Job's pod template with the tracking finalizer and, for Indexed Jobs, the
/// `JOB_COMPLETION_INDEX` variable (upstream `addCompletionIndexEnvVariables`,
/// `appendJobCompletionFinalizerIfNotFound`).
pub fn pod_template(job: &Job) -> PodTemplateSpec {
    let mut t = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = t.metadata.get_or_insert_with(ObjectMeta::default);
    let fins = meta.finalizers.get_or_insert_with(Vec::new);
    if !fins.iter().any(|f| f == sync::TRACKING_FINALIZER) {
        fins.push(sync::TRACKING_FINALIZER.to_owned());
    }
    if sync::is_indexed(job)
        && let Some(spec) = t.spec.as_mut()
    {
        let containers = spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut());
        for c in containers {
            let env = c.env.get_or_insert_with(Vec::new);
            if env.iter().any(|v| v.name == indexed::COMPLETION_INDEX_ENV) {
                continue;
            }
            env.push(EnvVar {
                name: indexed::COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!(
                            "metadata.labels['{}']",
                            indexed::COMPLETION_INDEX_ANNOTATION
                        ),
                    }),
                    ..EnvVarSource::default()
                }),
            });
        }
    }
    t
}

/// Upstream `metav1.NewControllerRef(job, batch/v1 Job)`.
fn controller_ref(job: &Job) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream `getPodsPrefix`: `<name>-`, or the bare name when that would be too long.
fn pods_prefix(name: &str) -> String {
    let prefix = format!("{name}-");
    if prefix.len() > 253 {
        name.to_owned()
    } else {
        prefix
    }
}

/// Upstream `GetPodFromTemplate` plus the index annotation, label, hostname and generateName of
/// Indexed Jobs and the failure counts of backoffLimitPerIndex.
pub fn pod_for<'a>(
    job: &Job,
    template: &PodTemplateSpec,
    index: Option<i64>,
    replaced: impl Fn(i64) -> Option<&'a Pod>,
) -> ApiPod {
    let job_name = job.metadata.name.as_deref().unwrap_or("");
    let meta = template.metadata.clone().unwrap_or_default();
    let mut pod = ApiPod {
        metadata: ObjectMeta {
            generate_name: Some(pods_prefix(job_name)),
            namespace: job.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    if let Some(ix) = index {
        let value = ix.to_string();
        let annotations = pod
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert(indexed::COMPLETION_INDEX_ANNOTATION.into(), value.clone());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(indexed::COMPLETION_INDEX_ANNOTATION.into(), value);
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(format!("{job_name}-{ix}"));
        }
        pod.metadata.generate_name = Some(indexed::generate_name_with_index(job_name, ix));
        if job
            .spec
            .as_ref()
            .and_then(|s| s.backoff_limit_per_index)
            .is_some()
        {
            // Upstream `addIndexFailureCountAnnotation`.
            let prev = replaced(ix);
            let counted = prev.is_none_or(|p| {
                failure_policy::match_pod_failure_policy(
                    job.spec
                        .as_ref()
                        .and_then(|s| s.pod_failure_policy.as_ref()),
                    p,
                )
                .count_failed
            });
            let (failures, ignored) = indexed::new_index_failure_counts(prev, counted);
            let annotations = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(
                indexed::INDEX_FAILURE_COUNT_ANNOTATION.into(),
                failures.to_string(),
            );
            if ignored > 0 {
                annotations.insert(
                    indexed::INDEX_IGNORED_FAILURE_COUNT_ANNOTATION.into(),
                    ignored.to_string(),
                );
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn job(mode: &str, per_index: Option<i32>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("ns".into()),
                uid: Some("job-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completion_mode: Some(mode.into()),
                backoff_limit_per_index: per_index,
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_owned(), "pi".to_owned())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn pods_are_owned_by_the_job_and_carry_the_tracking_finalizer() {
        let j = job("NonIndexed", None);
        let pod = pod_for(&j, &pod_template(&j), None, |_| None);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-"));
        assert_eq!(
            pod.metadata.finalizers,
            Some(vec![sync::TRACKING_FINALIZER.to_owned()])
        );
        let r = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("Job", "job-uid", Some(true))
        );
        assert!(pod.spec.unwrap().containers[0].env.is_none());
    }

    #[test]
    fn indexed_pods_get_their_index_hostname_and_environment() {
        let j = job("Indexed", None);
        let pod = pod_for(&j, &pod_template(&j), Some(3), |_| None);
        let key = indexed::COMPLETION_INDEX_ANNOTATION;
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-3-"));
        assert_eq!(pod.metadata.annotations.as_ref().unwrap()[key], "3");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[key], "3");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "pi");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-3"));
        let env = spec.containers[0].env.clone().unwrap();
        assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['batch.kubernetes.io/job-completion-index']"
        );
    }

    #[test]
    fn a_replacement_within_an_index_carries_the_failure_count() {
        let j = job("Indexed", Some(3));
        let mut failed = Pod::default();
        failed.metadata.annotations = Some(
            [(
                indexed::INDEX_FAILURE_COUNT_ANNOTATION.to_owned(),
                "1".to_owned(),
            )]
            .into(),
        );
        let pod = pod_for(&j, &pod_template(&j), Some(0), |_| Some(&failed));
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[indexed::INDEX_FAILURE_COUNT_ANNOTATION],
            "2"
        );
        let first = pod_for(&j, &pod_template(&j), Some(1), |_| None);
        assert_eq!(
            first.metadata.annotations.as_ref().unwrap()[indexed::INDEX_FAILURE_COUNT_ANNOTATION],
            "0"
        );
    }
}
