//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets
//! (RollingUpdate or Recreate), scales them proportionally when the Deployment is resized
//! mid-rollout, keeps revision history, and reports status and conditions so that
//! `kubectl rollout status` reads as with stock.
//!
//! Mirrors kubernetes/kubernetes `pkg/controller/deployment/deployment_controller.go` (this
//! shell: handlers, sync loop, API writes); the decisions live in the pure modules
//! [`util`], [`sync`], [`rolling`], [`recreate`], [`rollback`], [`progress`] and [`status`].
//!
//! Writes are patches: ReplicaSet resizes are merge patches carrying the cached
//! `resourceVersion` (the optimistic concurrency upstream's `Update` gets), Deployment status goes
//! through the status subresource, adoption and release are strategic-merge patches on
//! `ownerReferences` with a UID precondition, as upstream's `ControllerRefManager`.

pub mod progress;
pub mod recreate;
pub mod rollback;
pub mod rolling;
pub mod status;
pub mod sync;
pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::Pod;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use crate::manager::ControllerContext;
use progress::{PROGRESSING, Requeue};
use sync::ScaleTo;
use util::{
    MAX_REV_HISTORY_LENGTH_IN_CHARS, REVISION_ANNOTATION, UtilError, annotation, controller_of,
    d_replicas, name, progress_deadline, rs_replicas, selector_matches, selects_everything,
};

pub const NAME: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Util(#[from] UtilError),
    #[error("deployment {0} has invalid label selector: {1}")]
    Selector(String, UtilError),
    #[error("hash collision creating replica set {0}; bumped collisionCount")]
    Collision(String),
    #[error("original deployment {0} is gone or being deleted; not adopting")]
    AdoptionRecheck(String),
    #[error("replica set {0} exists but is not in the cache yet")]
    NotCached(String),
    #[error("new replica set of {0} missing after creation")]
    NoNewReplicaSet(String),
}

/// Upstream `apierrors.HasStatusCause(err, NamespaceTerminatingCause)`.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn key_of(ns: Option<&str>, name: &str) -> String {
    format!("{}/{name}", ns.unwrap_or(""))
}

#[derive(Clone)]
struct Ctl {
    client: kube::Client,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    recorder: EventRecorder,
    queue: WorkQueue<String>,
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let queue: WorkQueue<String> = WorkQueue::new("deployment", RateLimiter::default_controller())
        .with_metrics(&ctx.queue_metrics);
    let ctl = Arc::new(Ctl {
        client: ctx.client.clone(),
        deployments: ctx.informers.informer::<Deployment>(),
        replica_sets: ctx.informers.informer::<ReplicaSet>(),
        pods: ctx.informers.informer::<Pod>(),
        recorder: ctx.events.for_controller(NAME),
        queue: queue.clone(),
    });
    {
        let q = queue.clone();
        ctl.deployments.add_handler(move |change| {
            let d = match change {
                Change::Added(d) | Change::Updated { new: d, .. } | Change::Deleted(d) => d,
            };
            q.add(key_of(d.metadata.namespace.as_deref(), name(&d.metadata)));
        });
    }
    {
        let c = ctl.clone();
        ctl.replica_sets
            .add_handler(move |change| c.on_replica_set(change));
    }
    {
        let c = ctl.clone();
        ctl.pods.add_handler(move |change| {
            if let Change::Deleted(p) = change {
                c.on_pod_deleted(p);
            }
        });
    }
    let token = ctx.token.clone();
    // `--concurrent-deployment-syncs`.
    let workers = ctx.settings.concurrent_deployment_syncs;
    Ok(async move {
        tracing::info!(controller = NAME, "starting controller");
        run_workers(queue, workers, token, move |key: String| {
            let c = ctl.clone();
            async move { c.sync(&key).await }
        })
        .await;
        Ok(())
    }
    .boxed())
}

impl Ctl {
    // -----------------------------------------------------------------------------------------
    // Handlers (upstream addReplicaSet / updateReplicaSet / deleteReplicaSet / deletePod)
    // -----------------------------------------------------------------------------------------

    /// The Deployment a controllerRef points at, if it is cached with that UID.
    fn resolve(
        &self,
        ns: Option<&str>,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<Deployment>> {
        if r.kind != "Deployment" {
            return None;
        }
        self.deployments
            .get(ns, &r.name)
            .filter(|d| d.metadata.uid.as_deref() == Some(r.uid.as_str()))
    }

    fn enqueue(&self, d: &Deployment) {
        self.queue
            .add(key_of(d.metadata.namespace.as_deref(), name(&d.metadata)));
    }

    /// Upstream `getDeploymentsForReplicaSet`: Deployments whose selector matches an orphan.
    fn enqueue_matching(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref();
        for d in self.deployments.store().state() {
            if d.metadata.namespace.as_deref() != ns {
                continue;
            }
            let sel = &d.spec.selector;
            if selects_everything(sel) {
                continue;
            }
            if selector_matches(sel, rs.metadata.labels.as_ref()).unwrap_or(false) {
                self.enqueue(&d);
            }
        }
    }

    fn on_replica_set(&self, change: Change<'_, ReplicaSet>) {
        match change {
            Change::Added(rs) => {
                let ns = rs.metadata.namespace.as_deref();
                if let Some(r) = controller_of(&rs.metadata) {
                    if let Some(d) = self.resolve(ns, r) {
                        self.enqueue(&d);
                    }
                    return;
                }
                if rs.metadata.deletion_timestamp.is_none() {
                    self.enqueue_matching(rs);
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let ns = new.metadata.namespace.as_deref();
                let old_ref = controller_of(&old.metadata);
                let new_ref = controller_of(&new.metadata);
                let ref_changed = old_ref != new_ref;
                if ref_changed
                    && let Some(r) = old_ref
                    && let Some(d) = self.resolve(ns, r)
                {
                    self.enqueue(&d);
                }
                if let Some(r) = new_ref {
                    if let Some(d) = self.resolve(ns, r) {
                        self.enqueue(&d);
                    }
                    return;
                }
                if old.metadata.labels != new.metadata.labels || ref_changed {
                    self.enqueue_matching(new);
                }
            }
            Change::Deleted(rs) => {
                if let Some(r) = controller_of(&rs.metadata)
                    && let Some(d) = self.resolve(rs.metadata.namespace.as_deref(), r)
                {
                    self.enqueue(&d);
                }
            }
        }
    }

    /// Upstream `deletePod`: a Recreate rollout waits for old pods to be gone. (Upstream only
    /// enqueues once the Deployment has no pods left; a sync per deletion is idempotent.)
    fn on_pod_deleted(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref();
        let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else {
            return;
        };
        let Some(rs) = self
            .replica_sets
            .get(ns, &r.name)
            .filter(|rs| rs.metadata.uid.as_deref() == Some(r.uid.as_str()))
        else {
            return;
        };
        if let Some(dr) = controller_of(&rs.metadata)
            && let Some(d) = self.resolve(ns, dr)
            && util::strategy_type(&d) == util::RECREATE
        {
            self.enqueue(&d);
        }
    }

    // -----------------------------------------------------------------------------------------
    // syncDeployment
    // -----------------------------------------------------------------------------------------

    async fn sync(&self, key: &str) -> Result<(), Error> {
        let (ns, nm) = key.split_once('/').unwrap_or(("", key));
        let Some(cached) = self.deployments.get(Some(ns), nm) else {
            return Ok(());
        };
        let mut d = (*cached).clone();
        let selector = d.spec.selector.clone();
        if selects_everything(&selector) {
            self.recorder.warning(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            let observed = d
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if observed < d.metadata.generation.unwrap_or(0) {
                let mut s = d.status.clone().unwrap_or_default();
                s.observed_generation = d.metadata.generation;
                d.status = Some(s);
                self.write_status(&mut d).await?;
            }
            return Ok(());
        }
        let rs_list = self.claim_replica_sets(&d, &selector).await?;
        let pod_map = self.pod_map(&d, &selector, &rs_list);

        if d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.all_replica_sets(&mut d, &rs_list, false).await?;
            return self
                .sync_deployment_status(&mut d, &old, new_rs.as_ref())
                .await;
        }
        if let Some(cond) = progress::paused_condition(&d, Timestamp::now()) {
            let mut s = d.status.clone().unwrap_or_default();
            progress::set_condition(&mut s, cond);
            d.status = Some(s);
            self.write_status(&mut d).await?;
        }
        if d.spec.paused.unwrap_or(false) {
            return self.sync_scale(&mut d, &rs_list).await;
        }
        if let Some(to) = rollback::rollback_to(&d) {
            return self.rollback(&mut d, &rs_list, to).await;
        }
        let (new_rs, old) = self.all_replica_sets(&mut d, &rs_list, false).await?;
        if sync::is_scaling_event(&d, new_rs.as_ref(), &old) {
            return self.sync_scale(&mut d, &rs_list).await;
        }
        match util::strategy_type(&d) {
            util::RECREATE => self.rollout_recreate(&mut d, &rs_list, &pod_map).await,
            util::ROLLING_UPDATE => self.rollout_rolling(&mut d, &rs_list).await,
            other => Err(UtilError::UnsupportedStrategy(other.to_owned()).into()),
        }
    }

    /// Upstream `getReplicaSetsForDeployment` with `ClaimReplicaSets`: the ReplicaSets this
    /// Deployment controls, adopting matching orphans and releasing owned ones that no longer
    /// match.
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let ns = d.metadata.namespace.as_deref();
        let d_uid = d.metadata.uid.clone().unwrap_or_default();
        let d_key = key_of(ns, name(&d.metadata));
        let mut claimed = Vec::new();
        let mut adoption_checked = false;
        let mut first_error: Option<Error> = None;
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns.unwrap_or(""));
        for rs in self.replica_sets.list_namespace(ns.unwrap_or_default()) {
            let matches = selector_matches(selector, rs.metadata.labels.as_ref())
                .map_err(|e| Error::Selector(d_key.clone(), e))?;
            let rs_uid = rs.metadata.uid.clone().unwrap_or_default();
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == d_uid => {
                    if matches {
                        claimed.push((*rs).clone());
                    } else if d.metadata.deletion_timestamp.is_none() {
                        let patch = serde_json::json!({"metadata": {
                            "ownerReferences": [{"$patch": "delete", "uid": d_uid}],
                            "uid": rs_uid,
                        }});
                        match api
                            .patch(
                                name(&rs.metadata),
                                &PatchParams::default(),
                                &Patch::Strategic(patch),
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(e) if is_not_found(&e) => {}
                            // A UID precondition failure means the object is gone.
                            Err(kube::Error::Api(s)) if s.code == 422 => {}
                            Err(e) => {
                                first_error.get_or_insert(e.into());
                            }
                        }
                    }
                }
                Some(_) => {}
                None => {
                    if d.metadata.deletion_timestamp.is_some()
                        || !matches
                        || rs.metadata.deletion_timestamp.is_some()
                    {
                        continue;
                    }
                    if !adoption_checked {
                        // Upstream `RecheckDeletionTimestamp`: adopt only for the live object.
                        let fresh =
                            Api::<Deployment>::namespaced(self.client.clone(), ns.unwrap_or(""))
                                .get(name(&d.metadata))
                                .await?;
                        if fresh.metadata.uid.as_deref() != Some(d_uid.as_str())
                            || fresh.metadata.deletion_timestamp.is_some()
                        {
                            return Err(Error::AdoptionRecheck(d_key));
                        }
                        adoption_checked = true;
                    }
                    let patch = serde_json::json!({"metadata": {
                        "ownerReferences": [util::controller_ref(d)],
                        "uid": rs_uid,
                    }});
                    match api
                        .patch(
                            name(&rs.metadata),
                            &PatchParams::default(),
                            &Patch::Strategic(patch),
                        )
                        .await
                    {
                        Ok(adopted) => claimed.push(adopted),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => {
                            first_error.get_or_insert(e.into());
                        }
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(claimed),
        }
    }

    /// Upstream `getPodMapForDeployment`: the Deployment's pods by the UID of the ReplicaSet
    /// that controls them.
    fn pod_map(
        &self,
        d: &Deployment,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        rs_list: &[ReplicaSet],
    ) -> BTreeMap<String, Vec<Arc<Pod>>> {
        let mut map: BTreeMap<String, Vec<Arc<Pod>>> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|u| (u, Vec::new()))
            .collect();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        for pod in self.pods.list_namespace(ns) {
            if !selector_matches(selector, pod.metadata.labels.as_ref()).unwrap_or(false) {
                continue;
            }
            if let Some(r) = controller_of(&pod.metadata)
                && let Some(v) = map.get_mut(&r.uid)
            {
                v.push(pod);
            }
        }
        map
    }

    // -----------------------------------------------------------------------------------------
    // getAllReplicaSetsAndSyncRevision / getNewReplicaSet
    // -----------------------------------------------------------------------------------------

    async fn all_replica_sets(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (_, old) = util::find_old_replica_sets(d, rs_list);
        let new_rs = self.new_replica_set(d, rs_list, &old, create).await?;
        Ok((new_rs, old))
    }

    async fn new_replica_set(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let new_revision = (util::max_revision(old) + 1).to_string();
        let min_ready = d.spec.min_ready_seconds;
        let now = Timestamp::now();

        if let Some(existing) = util::find_new_replica_set(d, rs_list) {
            let mut copy = existing.clone();
            let annotations_updated = util::set_new_replica_set_annotations(
                d,
                &mut copy,
                &new_revision,
                true,
                MAX_REV_HISTORY_LENGTH_IN_CHARS,
            );
            let rs_min_ready = copy.spec.min_ready_seconds;
            if annotations_updated || rs_min_ready.unwrap_or(0) != min_ready.unwrap_or(0) {
                let patch = serde_json::json!({
                    "metadata": {
                        "resourceVersion": copy.metadata.resource_version,
                        "annotations": copy.metadata.annotations,
                    },
                    "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
                });
                let updated = api
                    .patch(
                        name(&copy.metadata),
                        &PatchParams::default(),
                        &Patch::Merge(patch),
                    )
                    .await?;
                return Ok(Some(updated));
            }
            let rev = annotation(&copy.metadata, REVISION_ANNOTATION)
                .unwrap_or("")
                .to_owned();
            let revision_changed = util::set_deployment_revision(d, &rev);
            let mut needs_status = false;
            if progress_deadline(d).is_some()
                && progress::get_condition(d.status.as_ref(), PROGRESSING).is_none()
            {
                let msg = format!("Found new replica set {:?}", name(&copy.metadata));
                let mut s = d.status.clone().unwrap_or_default();
                progress::set_condition(
                    &mut s,
                    progress::new_condition(
                        PROGRESSING,
                        "True",
                        progress::FOUND_NEW_RS_REASON,
                        msg,
                        now,
                    ),
                );
                d.status = Some(s);
                needs_status = true;
            }
            if revision_changed {
                self.write_revision(d).await?;
            }
            if needs_status {
                self.write_status(d).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }

        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let mut new_rs = util::new_replica_set(d, collision_count);
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.push(new_rs.clone());
        let count = util::new_rs_new_replicas(d, &all, &new_rs)?;
        util::set_rs_replicas(&mut new_rs, count);
        util::set_new_replica_set_annotations(
            d,
            &mut new_rs,
            &new_revision,
            false,
            MAX_REV_HISTORY_LENGTH_IN_CHARS,
        );
        let rs_name = name(&new_rs.metadata).to_owned();
        let (created, already_exists) = match api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => (rs, false),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let Some(found) = self.replica_sets.get(Some(&ns), &rs_name) else {
                    return Err(Error::NotCached(rs_name));
                };
                let ours = controller_of(&found.metadata)
                    .is_some_and(|r| Some(r.uid.as_str()) == d.metadata.uid.as_deref());
                if ours && util::equal_ignore_hash(&util::template(d), &util::rs_template(&found)) {
                    ((*found).clone(), true)
                } else {
                    // Upstream: a different ReplicaSet holds the name; the next hash differs.
                    let mut s = d.status.clone().unwrap_or_default();
                    s.collision_count = Some(s.collision_count.unwrap_or(0) + 1);
                    d.status = Some(s);
                    if self.write_status(d).await.is_ok() {
                        tracing::info!(deployment = %name(&d.metadata), "found a hash collision; bumping collisionCount");
                    }
                    return Err(Error::Collision(rs_name));
                }
            }
            Err(e) if namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let msg = format!("Failed to create new replica set {rs_name:?}: {e}");
                if progress_deadline(d).is_some() {
                    let mut s = d.status.clone().unwrap_or_default();
                    progress::set_condition(
                        &mut s,
                        progress::new_condition(
                            PROGRESSING,
                            "False",
                            progress::FAILED_RS_CREATE_REASON,
                            msg.clone(),
                            now,
                        ),
                    );
                    d.status = Some(s);
                    let _ = self.write_status(d).await;
                }
                self.recorder
                    .warning(&*d, progress::FAILED_RS_CREATE_REASON, msg);
                return Err(e.into());
            }
        };
        if !already_exists && count > 0 {
            self.recorder.normal(
                &*d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {count}"),
            );
        }
        let revision_changed = util::set_deployment_revision(d, &new_revision);
        if revision_changed {
            self.write_revision(d).await?;
        }
        if !already_exists && progress_deadline(d).is_some() {
            let msg = format!("Created new replica set {rs_name:?}");
            let mut s = d.status.clone().unwrap_or_default();
            progress::set_condition(
                &mut s,
                progress::new_condition(
                    PROGRESSING,
                    "True",
                    progress::NEW_RS_NEW_REPLICAS_REASON,
                    msg,
                    now,
                ),
            );
            d.status = Some(s);
            self.write_status(d).await?;
        }
        Ok(Some(created))
    }

    // -----------------------------------------------------------------------------------------
    // Strategies
    // -----------------------------------------------------------------------------------------

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
    ) -> Result<(), Error> {
        let (new_rs, old) = self.all_replica_sets(d, rs_list, true).await?;
        let new_rs = new_rs.ok_or_else(|| Error::NoNewReplicaSet(name(&d.metadata).to_owned()))?;
        let mut all = old.clone();
        all.push(new_rs.clone());

        if let Some(step) = rolling::reconcile_new_replica_set(d, &all, &new_rs)?
            && self.execute(d, &all, vec![step]).await?
        {
            return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
        }
        let active_old = util::filter_active(&old);
        let plan = rolling::reconcile_old_replica_sets(d, &all, &active_old, &new_rs)?;
        if self.execute(d, &all, plan).await? {
            return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
        }
        if progress::deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, Some(&new_rs)).await
    }

    /// Upstream `rolloutRecreate`: old ReplicaSets to zero, wait until their pods are gone, then
    /// create / scale up the new one.
    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        pod_map: &BTreeMap<String, Vec<Arc<Pod>>>,
    ) -> Result<(), Error> {
        let (mut new_rs, mut old) = self.all_replica_sets(d, rs_list, false).await?;
        let mut all: Vec<ReplicaSet> = old.iter().cloned().chain(new_rs.clone()).collect();
        let active_old = util::filter_active(&old);
        if self
            .execute(d, &all, recreate::scale_down_old(&active_old))
            .await?
        {
            return self.sync_rollout_status(d, &all, new_rs.as_ref()).await;
        }
        if recreate::old_pods_running(new_rs.as_ref(), &old, pod_map) {
            return self.sync_rollout_status(d, &all, new_rs.as_ref()).await;
        }
        if new_rs.is_none() {
            (new_rs, old) = self.all_replica_sets(d, rs_list, true).await?;
            all = old.iter().cloned().chain(new_rs.clone()).collect();
        }
        if let Some(n) = &new_rs {
            self.execute(d, &all, vec![ScaleTo::record(n, d_replicas(d))])
                .await?;
        }
        if progress::deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, new_rs.as_ref()).await
    }

    /// Upstream `sync`: scaling only (paused Deployments and resizes), then history cleanup.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<(), Error> {
        let (new_rs, old) = self.all_replica_sets(d, rs_list, false).await?;
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new_rs.clone()).collect();
        self.execute(d, &all, sync::scale(d, new_rs.as_ref(), &old))
            .await?;
        // Upstream cleans up here only for a paused Deployment with no rollback pending.
        if d.spec.paused.unwrap_or(false) && rollback::rollback_to(d).is_none() {
            self.cleanup(d, &old).await?;
        }
        self.sync_deployment_status(d, &old, new_rs.as_ref()).await
    }

    /// Upstream `rollback`.
    async fn rollback(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        to: i64,
    ) -> Result<(), Error> {
        let (new_rs, old) = self.all_replica_sets(d, rs_list, true).await?;
        let all: Vec<ReplicaSet> = old.into_iter().chain(new_rs).collect();
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let outcome = rollback::rollback(d, &all, to);
        // Upstream `updateDeploymentAndClearRollbackTo` / `rollbackToTemplate`: one Update of the
        // Deployment (the role grants `update`, not `patch`, on deployments), guarded by the
        // resourceVersion we read.
        let (updated, done_message) = match outcome {
            rollback::Rollback::GiveUp { reason, message } => {
                self.recorder.warning(&*d, reason, message);
                let mut out = d.clone();
                if let Some(a) = out.metadata.annotations.as_mut() {
                    a.remove(util::DEPRECATED_ROLLBACK_TO);
                }
                (out, None)
            }
            rollback::Rollback::RollBack {
                deployment,
                message,
            } => (*deployment, Some(message)),
        };
        api.replace(name(&d.metadata), &PostParams::default(), &updated)
            .await?;
        if let Some(m) = done_message {
            self.recorder.normal(&*d, rollback::ROLLBACK_DONE, m);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------------

    /// Runs resizes in order, stopping at the first error (upstream returns at once and the
    /// Deployment is requeued). Returns whether any ReplicaSet changed size.
    async fn execute(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        plan: Vec<ScaleTo>,
    ) -> Result<bool, Error> {
        let mut scaled = false;
        // A plan may resize one ReplicaSet twice (unhealthy cleanup, then scale-down); the second
        // write starts from the first one's result, as upstream passes the updated object on.
        let mut current: Vec<ReplicaSet> = all.to_vec();
        for step in plan {
            let Some(rs) = current.iter_mut().find(|r| name(&r.metadata) == step.name) else {
                continue;
            };
            let op = match step.operation {
                Some(op) => op,
                None if rs_replicas(rs) == step.replicas => continue,
                None if rs_replicas(rs) < step.replicas => "up",
                None => "down",
            };
            let (changed, updated) = self.scale_replica_set(d, rs, step.replicas, op).await?;
            scaled |= changed;
            if let Some(u) = updated {
                *rs = u;
            }
        }
        Ok(scaled)
    }

    /// Upstream `scaleReplicaSet`: size and replicas annotations in one patch; the
    /// `ScalingReplicaSet` event when the size changed.
    async fn scale_replica_set(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        to: i32,
        op: &str,
    ) -> Result<(bool, Option<ReplicaSet>), Error> {
        let want = d_replicas(d);
        let max = want + util::max_surge(d);
        let from = rs_replicas(rs);
        let size_changes = from != to;
        if !size_changes && !util::replicas_annotations_need_update(rs, want, max) {
            return Ok((false, None));
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": rs.metadata.resource_version,
                "annotations": {
                    util::DESIRED_REPLICAS_ANNOTATION: want.to_string(),
                    util::MAX_REPLICAS_ANNOTATION: max.to_string(),
                },
            },
            "spec": {"replicas": to},
        });
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let updated = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .patch(
                name(&rs.metadata),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        if size_changes {
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!(
                    "Scaled {op} replica set {} from {from} to {to}",
                    name(&rs.metadata)
                ),
            );
        }
        Ok((size_changes, Some(updated)))
    }

    /// Upstream `cleanupDeployment`.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<(), Error> {
        for rs in sync::cleanup(d, old) {
            let ns = rs.metadata.namespace.as_deref().unwrap_or("");
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                .delete(name(&rs.metadata), &dp)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Upstream `syncDeploymentStatus`.
    async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<(), Error> {
        let all: Vec<ReplicaSet> = old.iter().cloned().chain(new_rs.cloned()).collect();
        let s = status::calculate_status(&all, new_rs, d, Timestamp::now());
        if status::same_status(&d.status.clone().unwrap_or_default(), &s) {
            return Ok(());
        }
        d.status = Some(s);
        self.write_status(d).await
    }

    /// Upstream `syncRolloutStatus`.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<(), Error> {
        let now = Timestamp::now();
        let calculated = status::calculate_status(all, new_rs, d, now);
        let s = progress::rollout_status(d, calculated, all, new_rs, now);
        if status::same_status(&d.status.clone().unwrap_or_default(), &s) {
            let key = key_of(d.metadata.namespace.as_deref(), name(&d.metadata));
            match progress::requeue_stuck(d, &s, now) {
                Requeue::No => {}
                Requeue::RateLimited => self.queue.add_rate_limited(key),
                Requeue::After(after) => self.queue.add_after(key, after),
            }
            return Ok(());
        }
        d.status = Some(s);
        self.write_status(d).await
    }

    /// The revision annotation on the Deployment. Upstream persists it with `UpdateStatus` (the
    /// status strategy keeps annotation changes), and so do we.
    async fn write_revision(&self, d: &mut Deployment) -> Result<(), Error> {
        self.write_status(d).await
    }

    /// Status (and the revision annotation) through the status subresource, as upstream's
    /// `UpdateStatus`: a PUT guarded by the resourceVersion we read. A PUT because the
    /// `system:controller:deployment-controller` role grants `update` but not `patch` on
    /// `deployments/status`; the status strategy takes nothing but status and metadata from it,
    /// so no spec field can be lost.
    async fn write_status(&self, d: &mut Deployment) -> Result<(), Error> {
        let api: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            d.metadata.namespace.as_deref().unwrap_or(""),
        );
        let out = api
            .replace_status(name(&d.metadata), &PostParams::default(), d)
            .await?;
        d.metadata.resource_version = out.metadata.resource_version;
        Ok(())
    }
}
