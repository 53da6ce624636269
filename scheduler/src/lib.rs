//! Ferrite's scheduler: the default profile's core of kube-scheduler (pkg/scheduler).
//!
//! - [`cache`]: nodes and the pods bound or assumed on them (backend/cache);
//! - [`queue`]: activeQ / backoffQ / unschedulable / gated (backend/queue);
//! - [`plugins`]: the default profile's filters and scores, as pure functions;
//! - [`framework`]: one scheduling attempt (schedule_one.go `schedulePod`) and `FitError`;
//! - this file: the shell — informer handlers feed the cache and queue, one loop runs the
//!   scheduling cycles, and bindings, status patches and events run asynchronously.
//!
//! Preemption ([`preemption`], DefaultPreemption's PostFilter) evicts lower-priority pods and
//! nominates the preemptor; the evictions run in their own task while the queue holds the
//! preemptor back, then activate it, as upstream's async preemption does.
//!
//! The volume plugins apply without CSI ([`plugins::volumes`]): unbound WaitForFirstConsumer
//! claims bind statically to matching volumes (Reserve assumes them, PreBind writes the claimRef
//! and waits for the PV controller); dynamic provisioning and NodeVolumeLimits are not covered.
//!
//! Profiles come from a `KubeSchedulerConfiguration` ([`config`]): each pod is scheduled by the
//! profile named in its `spec.schedulerName`, and pods for other schedulers are left alone.
//! `SchedulerProfile` objects ([`profiles`]) replace or add profiles while the scheduler runs:
//! a change applies from the next scheduling cycle on.
//!
//! Not yet covered: DRA and extenders.

pub mod cache;
pub mod config;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod profiles;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod selector;
#[cfg(test)]
mod testutil;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use ferrite_runtime::component::Context;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::live_config;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio::sync::Notify;

use crate::cache::Cache;
use crate::config::{Profile, SchedulerConfig};
use crate::framework::Algorithm;
use crate::metrics::Metrics;
use crate::plugins::pod_topology_spread::{self, OwnerObjects};
use crate::plugins::volumes::{self, StaticBinding};
use crate::preemption::{Candidate, Pdb, PostFilterResult};
use crate::profiles::SchedulerProfile;
use crate::queue::{SchedulingQueue, pod_key};
use crate::selector::Selector;

/// The default profile's name, which is also the events' reporting component.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Every API call of a binding cycle is bounded, so a hung connection cannot hold a pod forever.
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// `validation.NoteLengthLimit`: event messages longer than this are truncated
/// (`truncateMessage`).
const NOTE_LENGTH_LIMIT: usize = 1024;

/// Why a binding failed; the message is what upstream's status carries (the API error's).
#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    #[error("binding timed out after {0:?}")]
    Timeout(Duration),
    #[error("binding volumes: {0}")]
    Volumes(String),
}

/// VolumeBindingArgs' default `bindTimeoutSeconds`.
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `truncateMessage`.
fn truncate_message(msg: &str) -> String {
    if msg.len() <= NOTE_LENGTH_LIMIT {
        return msg.to_string();
    }
    let mut end = NOTE_LENGTH_LIMIT - " ...".len();
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ...", &msg[..end])
}

/// PodScheduled=False reasons (`v1.PodReasonUnschedulable`, `v1.PodReasonSchedulerError`).
const REASON_UNSCHEDULABLE: &str = "Unschedulable";
const REASON_SCHEDULER_ERROR: &str = "SchedulerError";

struct Shared {
    cache: Mutex<Cache>,
    queue: Mutex<SchedulingQueue>,
    wake: Notify,
    /// The schedulerNames of the profiles in force: the pods this scheduler is responsible for.
    profiles: RwLock<BTreeSet<String>>,
}

impl Shared {
    fn pending(&self, pod: &Pod) -> bool {
        let profiles = self.profiles.read().unwrap_or_else(|p| p.into_inner());
        pending(pod, &profiles)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pod's `spec.schedulerName` (defaulted by the API server; `default-scheduler` if unset).
fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER_NAME)
}

/// Whether one of this scheduler's profiles is responsible for the pod (`responsibleForPod`).
fn responsible(pod: &Pod, profiles: &BTreeSet<String>) -> bool {
    profiles.contains(scheduler_name(pod))
}

fn assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pending pod for this scheduler's queue.
fn pending(pod: &Pod, profiles: &BTreeSet<String>) -> bool {
    !assigned(pod) && !terminal(pod) && responsible(pod, profiles)
}

/// Node changes that can change a filter or score verdict; kubelet/kwok heartbeats do not.
fn node_changed_for_scheduling(old: &Node, new: &Node) -> bool {
    let spec = |n: &Node| n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable));
    let status = |n: &Node| {
        n.status
            .as_ref()
            .map(|s| (s.allocatable.clone(), s.images.clone()))
    };
    old.metadata.labels != new.metadata.labels
        || spec(old) != spec(new)
        || status(old) != status(new)
}

/// The listers PodTopologySpread's system-default constraints consult (`setListers`).
#[derive(Clone)]
struct SpreadListers {
    services: Informer<Service>,
    replication_controllers: Informer<ReplicationController>,
    replica_sets: Informer<ReplicaSet>,
    stateful_sets: Informer<StatefulSet>,
}

impl SpreadListers {
    /// `helper.DefaultSelector` over the informer caches; only pods without constraints of
    /// their own use it.
    fn default_selector(&self, pod: &Pod) -> Selector {
        let declared = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .is_some_and(|c| !c.is_empty());
        if declared {
            return Selector::everything();
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let services = self
            .services
            .store()
            .state_filter(|s| s.metadata.namespace.as_deref() == Some(ns));
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let (mut rc, mut rs, mut ss) = (None, None, None);
        if let Some(o) = controller {
            match (o.api_version.as_str(), o.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    rc = self.replication_controllers.get(Some(ns), &o.name)
                }
                ("apps/v1", "ReplicaSet") => rs = self.replica_sets.get(Some(ns), &o.name),
                ("apps/v1", "StatefulSet") => ss = self.stateful_sets.get(Some(ns), &o.name),
                _ => {}
            }
        }
        let owners = OwnerObjects {
            services: services.iter().map(|s| s.as_ref()).collect(),
            replication_controller: rc.as_deref(),
            replica_set: rs.as_deref(),
            stateful_set: ss.as_deref(),
        };
        pod_topology_spread::default_selector(pod, &owners)
    }
}

fn register_namespace_handler(shared: &Arc<Shared>, namespaces: &Informer<Namespace>) {
    let s = shared.clone();
    namespaces.add_handler(move |change| match change {
        Change::Added(ns) | Change::Updated { new: ns, .. } => {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            lock(&s.cache)
                .upsert_namespace(ns.metadata.name.as_deref().unwrap_or_default(), labels);
        }
        Change::Deleted(ns) => {
            lock(&s.cache).remove_namespace(ns.metadata.name.as_deref().unwrap_or_default());
        }
    });
}

/// PVCs, PVs and StorageClasses feed the volume plugins; any change may let a pod waiting on
/// them in (VolumeBinding, VolumeRestrictions and VolumeZone register these events).
fn register_volume_handlers(
    shared: &Arc<Shared>,
    claims: &Informer<PersistentVolumeClaim>,
    volumes: &Informer<PersistentVolume>,
    classes: &Informer<StorageClass>,
) {
    let s = shared.clone();
    claims.add_handler(move |change| {
        match change {
            Change::Added(c) | Change::Updated { new: c, .. } => {
                lock(&s.cache).volumes_mut().upsert_claim(c.clone())
            }
            Change::Deleted(c) => lock(&s.cache).volumes_mut().remove_claim(c),
        }
        lock(&s.queue).move_all_to_active_or_backoff(Instant::now());
        s.wake.notify_one();
    });
    let s = shared.clone();
    volumes.add_handler(move |change| {
        match change {
            Change::Added(v) | Change::Updated { new: v, .. } => {
                lock(&s.cache).volumes_mut().upsert_volume(v.clone())
            }
            Change::Deleted(v) => lock(&s.cache).volumes_mut().remove_volume(v),
        }
        lock(&s.queue).move_all_to_active_or_backoff(Instant::now());
        s.wake.notify_one();
    });
    let s = shared.clone();
    classes.add_handler(move |change| {
        match change {
            Change::Added(c) | Change::Updated { new: c, .. } => {
                lock(&s.cache).volumes_mut().upsert_class(c.clone())
            }
            Change::Deleted(c) => lock(&s.cache).volumes_mut().remove_class(c),
        }
        lock(&s.queue).move_all_to_active_or_backoff(Instant::now());
        s.wake.notify_one();
    });
}

fn register_handlers(shared: &Arc<Shared>, nodes: &Informer<Node>, pods: &Informer<Pod>) {
    let s = shared.clone();
    nodes.add_handler(move |change| {
        let now = Instant::now();
        match change {
            Change::Added(n) => {
                lock(&s.cache).upsert_node(n.clone());
                lock(&s.queue).move_all_to_active_or_backoff(now);
            }
            Change::Updated { old, new } => {
                if node_changed_for_scheduling(old, new) {
                    lock(&s.cache).upsert_node(new.clone());
                    lock(&s.queue).move_all_to_active_or_backoff(now);
                }
            }
            Change::Deleted(n) => {
                lock(&s.cache).remove_node(n.metadata.name.as_deref().unwrap_or_default());
            }
        }
        s.wake.notify_one();
    });
    let s = shared.clone();
    pods.add_handler(move |change| {
        let now = Instant::now();
        match change {
            Change::Added(p) => {
                if assigned(p) {
                    lock(&s.cache).upsert_pod(p.clone());
                    // AssignedPodAdd: a new pod can satisfy pod affinity or spreading.
                    lock(&s.queue).move_for_assigned_pod_event(now);
                } else if s.pending(p) {
                    lock(&s.cache).nominator_mut().observe_pending(None, p);
                    lock(&s.queue).add(p.clone(), now);
                }
            }
            Change::Updated { old, new } => {
                if assigned(new) {
                    lock(&s.cache).upsert_pod(new.clone());
                    if !assigned(old) {
                        lock(&s.queue).delete(&pod_key(new));
                    }
                    // AssignedPodAdd (a binding) and AssignedPodUpdate of labels can satisfy
                    // pod affinity or topology spreading (InterPodAffinity and
                    // PodTopologySpread EventsToRegister).
                    if !assigned(old) || old.metadata.labels != new.metadata.labels {
                        lock(&s.queue).move_for_assigned_pod_event(now);
                    }
                    // A pod finishing frees its node (AssignedPodDelete-like event upstream).
                    if terminal(new) && !terminal(old) {
                        lock(&s.queue).move_all_to_active_or_backoff(now);
                    }
                } else if s.pending(new) {
                    lock(&s.cache)
                        .nominator_mut()
                        .observe_pending(Some(old), new);
                    lock(&s.queue).update(new.clone(), now);
                } else {
                    let uid = new.metadata.uid.as_deref().unwrap_or_default();
                    lock(&s.cache).nominator_mut().remove(uid);
                    lock(&s.queue).delete(&pod_key(new));
                }
            }
            Change::Deleted(p) => {
                if assigned(p) {
                    lock(&s.cache).remove_pod(p);
                    lock(&s.queue).move_all_to_active_or_backoff(now);
                } else {
                    let uid = p.metadata.uid.as_deref().unwrap_or_default();
                    lock(&s.cache).nominator_mut().remove(uid);
                    lock(&s.queue).delete(&pod_key(p));
                }
            }
        }
        s.wake.notify_one();
    });
}

/// Runs the scheduler with the default profile until the context's token is cancelled.
pub async fn run(ctx: Context) -> Result<(), String> {
    run_with(ctx, SchedulerConfig::default()).await
}

/// The profiles in force and one algorithm (framework) per profile.
struct Profiles {
    algorithms: BTreeMap<String, Algorithm>,
}

impl Profiles {
    fn new(profiles: &[Arc<Profile>]) -> Self {
        Profiles {
            algorithms: profiles
                .iter()
                .map(|p| (p.scheduler_name.clone(), Algorithm::for_profile(p.clone())))
                .collect(),
        }
    }

    fn names(&self) -> BTreeSet<String> {
        self.algorithms.keys().cloned().collect()
    }

    /// Puts `next` in force from the next cycle on. Pending pods of an added profile are queued
    /// from the cache, those of a removed one leave the queue, and the unschedulable pods get
    /// another attempt, since the new plugins may admit them.
    fn update(&mut self, next: &[Arc<Profile>], binder: &Binder, events: &EventRecorder) {
        let old = self.names();
        let mut changed = old.len() != next.len();
        for p in next {
            match self.algorithms.get(&p.scheduler_name) {
                Some(a) if *a.profile == **p => {}
                _ => {
                    changed = true;
                    self.algorithms
                        .insert(p.scheduler_name.clone(), Algorithm::for_profile(p.clone()));
                }
            }
        }
        let names: BTreeSet<String> = next.iter().map(|p| p.scheduler_name.clone()).collect();
        self.algorithms.retain(|n, _| names.contains(n));
        if !changed {
            return;
        }
        tracing::info!(profiles = ?names, "scheduler profiles changed; the next cycles use them");
        {
            let mut recorders = binder.recorders.write().unwrap_or_else(|p| p.into_inner());
            for n in &names {
                recorders
                    .entry(n.clone())
                    .or_insert_with(|| events.for_controller(n));
            }
        }
        *binder
            .shared
            .profiles
            .write()
            .unwrap_or_else(|p| p.into_inner()) = names.clone();
        let now = Instant::now();
        for pod in binder.pods.store().state() {
            let name = scheduler_name(&pod);
            if names.contains(name) && !old.contains(name) && pending(&pod, &names) {
                lock(&binder.shared.cache)
                    .nominator_mut()
                    .observe_pending(None, &pod);
                lock(&binder.shared.queue).add(pod.clone(), now);
            } else if old.contains(name) && !names.contains(name) {
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                lock(&binder.shared.cache).nominator_mut().remove(uid);
                lock(&binder.shared.queue).delete(&pod_key(&pod));
            }
        }
        lock(&binder.shared.queue).move_all_to_active_or_backoff(now);
    }
}

/// Runs the scheduler with a configuration's profiles until the context's token is cancelled;
/// `SchedulerProfile` objects replace or add profiles while it runs.
pub async fn run_with(ctx: Context, config: SchedulerConfig) -> Result<(), String> {
    let metrics = ctx.registry.with(Metrics::register);
    let validate_config = config.clone();
    let mut profile_objects = live_config::watch::<SchedulerProfile, _, _>(
        ctx.client.clone(),
        ctx.token.clone(),
        ctx.events.for_controller("ferrite-scheduler"),
        move |obj: &SchedulerProfile| profiles::resolve(&validate_config, obj),
    );
    // The first answer decides the profiles of the first cycle.
    let first = tokio::select! {
        () = ctx.token.cancelled() => return Ok(()),
        s = profile_objects.synced() => s,
    };
    let mut in_force = Profiles::new(&profiles::in_force(&config, &first));
    let profile_names = in_force.names();
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        queue: Mutex::new(SchedulingQueue::with_backoff(
            config.pod_initial_backoff,
            config.pod_max_backoff,
        )),
        wake: Notify::new(),
        profiles: RwLock::new(profile_names.clone()),
    });
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    let pdbs = ctx.informers.informer::<PodDisruptionBudget>();
    register_handlers(&shared, &nodes, &pods);
    register_volume_handlers(
        &shared,
        &ctx.informers.informer::<PersistentVolumeClaim>(),
        &ctx.informers.informer::<PersistentVolume>(),
        &ctx.informers.informer::<StorageClass>(),
    );
    register_namespace_handler(&shared, &ctx.informers.informer::<Namespace>());
    let spread_listers = SpreadListers {
        services: ctx.informers.informer::<Service>(),
        replication_controllers: ctx.informers.informer::<ReplicationController>(),
        replica_sets: ctx.informers.informer::<ReplicaSet>(),
        stateful_sets: ctx.informers.informer::<StatefulSet>(),
    };
    ctx.informers.start(ctx.token.clone());
    ctx.informers.wait_for_cache_sync().await;
    ctx.health.set_ready(true);
    tracing::info!(profiles = ?profile_names, "scheduler started");

    // flushBackoffQCompleted (1 s) and flushUnschedulablePodsLeftover, plus the pending gauges.
    let ticker = {
        let shared = shared.clone();
        let metrics = metrics.clone();
        let token = ctx.token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let counts = {
                    let mut q = lock(&shared.queue);
                    q.flush(Instant::now());
                    q.counts()
                };
                metrics.set_pending(counts);
                shared.wake.notify_one();
            }
        })
    };

    // Each profile reports as its scheduler name (`profile.NewMap` gives every framework a
    // recorder for its `schedulerName`).
    let recorders: BTreeMap<String, EventRecorder> = profile_names
        .iter()
        .map(|n| (n.clone(), ctx.events.for_controller(n)))
        .collect();
    let binder = Binder {
        client: ctx.client.clone(),
        recorders: Arc::new(RwLock::new(recorders)),
        shared: shared.clone(),
        metrics: metrics.clone(),
        pods: pods.clone(),
        pdbs,
        spread_listers,
    };
    // `nextStartNodeIndex` belongs to the scheduler, shared by its profiles.
    let mut next_start_node_index = 0;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    profile_objects.applied(first.version);
    let mut watching = true;
    loop {
        // A profile change applies from the next cycle on.
        if watching && profile_objects.has_changed() {
            let snapshot = profile_objects.current();
            in_force.update(
                &profiles::in_force(&config, &snapshot),
                &binder,
                &ctx.events,
            );
            profile_objects.applied(snapshot.version);
        }
        let popped = lock(&shared.queue).pop(Instant::now());
        let Some(qp) = popped else {
            tokio::select! {
                _ = ctx.token.cancelled() => break,
                _ = shared.wake.notified() => {}
                changed = profile_objects.changed(), if watching => {
                    match changed {
                        Ok(()) => {
                            let snapshot = profile_objects.current();
                            in_force.update(&profiles::in_force(&config, &snapshot), &binder, &ctx.events);
                            profile_objects.applied(snapshot.version);
                        }
                        Err(_) => watching = false,
                    }
                }
            }
            continue;
        };
        let Some(algorithm) = in_force.algorithms.get_mut(scheduler_name(&qp.pod)) else {
            // Only pods of these profiles are queued; a changed schedulerName is dropped.
            lock(&shared.queue).done(&qp.key);
            lock(&shared.queue).delete(&qp.key);
            continue;
        };
        algorithm.next_start_node_index = next_start_node_index;
        binder.schedule_one(algorithm, &mut rng, qp);
        next_start_node_index = algorithm.next_start_node_index;
        // Let informer handlers and binding tasks run between cycles.
        tokio::task::yield_now().await;
    }
    ticker.abort();
    Ok(())
}

#[derive(Clone)]
struct Binder {
    client: kube::Client,
    /// One recorder per profile, reporting as its scheduler name (profiles come and go with
    /// `SchedulerProfile` objects).
    recorders: Arc<RwLock<BTreeMap<String, EventRecorder>>>,
    shared: Arc<Shared>,
    metrics: Metrics,
    pods: Informer<Pod>,
    pdbs: Informer<PodDisruptionBudget>,
    spread_listers: SpreadListers,
}

/// What a failed attempt does to the pod's `status.nominatedNodeName`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Nomination {
    Keep,
    Clear,
    Set(String),
}

impl Binder {
    /// The recorder of the profile scheduling `pod`.
    fn events(&self, pod: &Pod) -> Option<EventRecorder> {
        self.recorders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(scheduler_name(pod))
            .cloned()
    }

    /// The scheduling cycle (`scheduleOne`): synchronous over the cache; binding and failure
    /// reporting go to their own tasks so that the next cycle does not wait for the API.
    fn schedule_one(
        &self,
        algorithm: &mut Algorithm,
        rng: &mut impl rand::Rng,
        qp: queue::QueuedPod,
    ) {
        let start = Instant::now();
        let pod = qp.pod.clone();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // skipPodSchedule: being deleted, or already assumed by an earlier cycle.
        if pod.metadata.deletion_timestamp.is_some() || lock(&self.shared.cache).is_assumed(&uid) {
            lock(&self.shared.queue).done(&qp.key);
            return;
        }
        let default_selector = self.spread_listers.default_selector(&pod);
        let pdbs = || -> Vec<Pdb> {
            self.pdbs
                .store()
                .state()
                .iter()
                .map(|p| Pdb::from_api(p))
                .collect()
        };
        let result = {
            let cache = lock(&self.shared.cache);
            algorithm.schedule_pod(
                &pod,
                &cache,
                &default_selector,
                &pdbs,
                jiff::Timestamp::now(),
                rng,
            )
        };
        match result {
            Ok(r) => {
                let volumes = {
                    let mut cache = lock(&self.shared.cache);
                    // Reserve (VolumeBinding's `AssumePodVolumes`), then `assume`.
                    let volumes = cache
                        .node(&r.suggested_host)
                        .map(|n| volumes::static_bindings_for(&pod, cache.volumes(), n))
                        .unwrap_or_default();
                    cache.volumes_mut().assume(&volumes);
                    cache.assume(&pod, &r.suggested_host);
                    volumes
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.bind(qp, r.suggested_host, volumes, start).await;
                });
            }
            Err(u) => {
                let e = u.error;
                if u.post_filter.is_some() {
                    self.metrics.preemption_attempt();
                }
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let (nomination, candidate) = match u.post_filter {
                    Some(PostFilterResult::Nominate(c)) => {
                        lock(&self.shared.cache)
                            .nominator_mut()
                            .nominate(pod.clone(), &c.node);
                        (Nomination::Set(c.node.clone()), Some(c))
                    }
                    Some(PostFilterResult::NoCandidate(_)) => {
                        lock(&self.shared.cache).nominator_mut().remove(&uid);
                        (Nomination::Clear, None)
                    }
                    Some(PostFilterResult::Ineligible(_)) | None => (Nomination::Keep, None),
                };
                let lower_nominated = candidate
                    .as_ref()
                    .map(|c| {
                        let mut cache = lock(&self.shared.cache);
                        let lower =
                            preemption::lower_priority_nominated(&pod, cache.nominator(), &c.node);
                        for p in &lower {
                            cache
                                .nominator_mut()
                                .remove(p.metadata.uid.as_deref().unwrap_or_default());
                        }
                        lower
                    })
                    .unwrap_or_default();
                {
                    let mut q = lock(&self.shared.queue);
                    q.set_unschedulable_plugins(&qp.key, e.rejecting_plugins());
                    if candidate.is_some() {
                        q.start_preempting(&qp.key);
                    }
                    q.requeue_after_failure(&qp.key, true, Instant::now());
                }
                self.metrics.attempt(
                    metrics::UNSCHEDULABLE,
                    scheduler_name(&pod),
                    start.elapsed().as_secs_f64(),
                );
                let this = self.clone();
                let key = qp.key.clone();
                tokio::spawn(async move {
                    // The nomination is written first: the preemptor is held until its victims
                    // are evicted, so it cannot have been bound meanwhile.
                    this.report_failure(&pod, REASON_UNSCHEDULABLE, &e.to_string(), nomination)
                        .await;
                    if let Some(c) = candidate {
                        this.prepare_candidate(&pod, &c, &lower_nominated).await;
                        lock(&this.shared.queue).preemption_done(&key);
                        this.shared.wake.notify_one();
                    }
                });
            }
        }
    }

    /// `prepareCandidate`: each victim not already terminating gets the DisruptionTarget
    /// condition, is deleted, and gets a Preempted event; then lower-priority pods nominated to
    /// the node lose their nomination so that they look elsewhere sooner.
    async fn prepare_candidate(
        &self,
        preemptor: &Pod,
        c: &Candidate,
        lower_nominated: &[Arc<Pod>],
    ) {
        let scheduler_name = scheduler_name(preemptor);
        let preemptor_uid = preemptor.metadata.uid.as_deref().unwrap_or_default();
        for victim in &c.victims {
            if victim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ns = victim.metadata.namespace.clone().unwrap_or_default();
            let name = victim.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match tokio::time::timeout(
                API_TIMEOUT,
                self.add_disruption_target(&api, victim, scheduler_name),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => continue,
                Ok(Err(e)) => {
                    tracing::warn!(victim = %format!("{ns}/{name}"), error = %e, "adding DisruptionTarget failed");
                    continue;
                }
                Err(_) => continue,
            }
            let dp = DeleteParams::default();
            let del = api.delete(&name, &dp);
            match tokio::time::timeout(API_TIMEOUT, del).await {
                Ok(Ok(_)) => {}
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => continue,
                Ok(Err(e)) => {
                    tracing::warn!(victim = %format!("{ns}/{name}"), error = %e, "preempting failed");
                    continue;
                }
                Err(_) => continue,
            }
            if let Some(events) = self.events(preemptor) {
                events.normal(
                    victim.as_ref(),
                    "Preempted",
                    format!("Preempted by pod {preemptor_uid} on node {}", c.node),
                );
            }
        }
        self.metrics.preemption_victims(c.victims.len());
        for p in lower_nominated {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let patch = serde_json::json!({"status": {"nominatedNodeName": null}});
            let params = PatchParams::default();
            let strategic = Patch::Strategic(&patch);
            let call = api.patch_status(&name, &params, &strategic);
            if let Ok(Err(e)) = tokio::time::timeout(API_TIMEOUT, call).await {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "clearing nominatedNodeName failed");
            }
        }
    }

    /// The DisruptionTarget=True condition (reason PreemptionByScheduler), unless present.
    async fn add_disruption_target(
        &self,
        api: &Api<Pod>,
        victim: &Pod,
        scheduler_name: &str,
    ) -> Result<(), kube::Error> {
        let message = format!("{scheduler_name}: preempting to accommodate a higher priority pod");
        let existing = victim
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == preemption::DISRUPTION_TARGET));
        if existing.is_some_and(|c| {
            c.status == "True"
                && c.reason.as_deref() == Some(preemption::REASON_PREEMPTION_BY_SCHEDULER)
                && c.message.as_deref() == Some(message.as_str())
        }) {
            return Ok(());
        }
        let transition = match existing {
            Some(c) if c.status == "True" => c.last_transition_time.clone(),
            _ => None,
        }
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .unwrap_or_else(time_now);
        let patch = serde_json::json!({
            "status": {"conditions": [{
                "type": preemption::DISRUPTION_TARGET,
                "status": "True",
                "reason": preemption::REASON_PREEMPTION_BY_SCHEDULER,
                "message": message,
                "observedGeneration": victim.metadata.generation,
                "lastTransitionTime": transition,
            }]}
        });
        let name = victim.metadata.name.clone().unwrap_or_default();
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(|_| ())
    }

    /// The binding cycle: POST pods/binding (DefaultBinder). On failure the assumed pod is
    /// forgotten and the pod backs off.
    async fn bind(
        &self,
        qp: queue::QueuedPod,
        node: String,
        volumes: Vec<StaticBinding>,
        start: Instant,
    ) {
        let pod = qp.pod.clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // PreBind (VolumeBinding): the chosen volumes are bound before the pod.
        if let Err(e) = self.bind_volumes(&pod, &volumes).await {
            lock(&self.shared.cache).volumes_mut().forget(&volumes);
            self.binding_failed(&qp, &node, start, e).await;
            return;
        }
        let binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let pp = PostParams::default();
        let call = api.create_subresource::<_, serde_json::Value>("binding", &name, &pp, &binding);
        let outcome = match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BindError::Api(e)),
            Err(_) => Err(BindError::Timeout(API_TIMEOUT)),
        };
        match outcome {
            Ok(()) => {
                lock(&self.shared.queue).done(&qp.key);
                self.metrics.attempt(
                    metrics::SCHEDULED,
                    scheduler_name(&pod),
                    start.elapsed().as_secs_f64(),
                );
                if let Some(events) = self.events(&pod) {
                    events.normal(
                        pod.as_ref(),
                        "Scheduled",
                        format!("Successfully assigned {ns}/{name} to {node}"),
                    );
                }
            }
            Err(e) => self.binding_failed(&qp, &node, start, e).await,
        }
    }

    /// A failed binding cycle: the assumed pod is forgotten and the pod backs off.
    async fn binding_failed(
        &self,
        qp: &queue::QueuedPod,
        node: &str,
        start: Instant,
        e: BindError,
    ) {
        let uid = qp.pod.metadata.uid.clone().unwrap_or_default();
        tracing::warn!(pod = %qp.key, %node, error = %e, "binding failed");
        lock(&self.shared.cache).forget(&uid);
        lock(&self.shared.queue).requeue_after_failure(&qp.key, false, Instant::now());
        self.metrics.attempt(
            metrics::ERROR,
            scheduler_name(&qp.pod),
            start.elapsed().as_secs_f64(),
        );
        self.shared.wake.notify_one();
        self.report_failure(
            &qp.pod,
            REASON_SCHEDULER_ERROR,
            &e.to_string(),
            Nomination::Keep,
        )
        .await;
    }

    /// VolumeBinding PreBind (`BindPodVolumes`): each chosen volume gets the claim as its
    /// claimRef (guarded by the resourceVersion it was chosen at), then the PV controller must
    /// bind the claims, which is waited for, polling every second, up to `bindTimeout`.
    async fn bind_volumes(&self, pod: &Pod, volumes: &[StaticBinding]) -> Result<(), BindError> {
        if volumes.is_empty() {
            return Ok(());
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        for b in volumes {
            let mut patch = serde_json::json!({
                "metadata": {"annotations": {volumes::ANN_BOUND_BY_CONTROLLER: "yes"}},
                "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": b.namespace, "name": b.claim, "uid": b.claim_uid}},
            });
            if let Some(rv) = &b.volume_resource_version {
                patch["metadata"]["resourceVersion"] = serde_json::json!(rv);
            }
            let params = PatchParams::default();
            let merge = Patch::Merge(&patch);
            match tokio::time::timeout(API_TIMEOUT, api.patch(&b.volume, &params, &merge)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(BindError::Volumes(api_message(&e))),
                Err(_) => return Err(BindError::Timeout(API_TIMEOUT)),
            }
        }
        let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
        loop {
            let outcome = volumes::check_bindings(lock(&self.shared.cache).volumes(), volumes);
            match outcome {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(msg) => return Err(BindError::Volumes(msg)),
            }
            // A pod deleted meanwhile no longer needs its volumes.
            let ns = pod.metadata.namespace.as_deref();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            if self
                .pods
                .get(ns, name)
                .is_none_or(|p| p.metadata.uid != pod.metadata.uid)
            {
                return Err(BindError::Volumes("the pod was deleted".to_string()));
            }
            if Instant::now() >= deadline {
                return Err(BindError::Volumes("context deadline exceeded".to_string()));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// `handleSchedulingFailure`: event FailedScheduling and condition PodScheduled=False with
    /// `reason` (Unschedulable for rejections, SchedulerError for errors), the condition only
    /// when it changes.
    async fn report_failure(&self, pod: &Pod, reason: &str, message: &str, nomination: Nomination) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        // The pod may have been deleted or bound meanwhile.
        let Some(current) = self.pods.get(Some(&ns), &name) else {
            return;
        };
        if current.metadata.uid != pod.metadata.uid || assigned(&current) {
            return;
        }
        if let Some(events) = self.events(&current) {
            events.warning(
                current.as_ref(),
                "FailedScheduling",
                truncate_message(message),
            );
        }
        let generation = current.metadata.generation;
        let existing = current
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        let current_nominated = current
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        // `updatePod`: nominatedNodeName is written along with the condition.
        let nominated_patch = match &nomination {
            Nomination::Set(n) if current_nominated != Some(n.as_str()) => {
                Some(serde_json::json!(n))
            }
            Nomination::Clear if current_nominated.is_some() => Some(serde_json::Value::Null),
            _ => None,
        };
        if nominated_patch.is_none()
            && existing.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message)
                    && c.observed_generation == generation
            })
        {
            return;
        }
        // `UpdatePodCondition`: the transition time moves only when the status does.
        let transition = match existing {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .unwrap_or_else(time_now);
        let mut patch = serde_json::json!({
            "status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": message,
                // PodObservedGenerationTracking is GA (locked on) in v1.35+.
                "observedGeneration": generation,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            }]}
        });
        if let Some(n) = nominated_patch {
            patch["status"]["nominatedNodeName"] = n;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = PatchParams::default();
        let strategic = Patch::Strategic(&patch);
        let call = api.patch_status(&name, &params, &strategic);
        match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
            Ok(Err(e)) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "updating PodScheduled failed")
            }
            Err(_) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), "updating PodScheduled timed out")
            }
        }
    }
}

/// metav1.Time "now", serialized as the API expects.
fn time_now() -> serde_json::Value {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    serde_json::to_value(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_event_messages_are_truncated_like_upstream() {
        let long = "x".repeat(2000);
        let t = truncate_message(&long);
        assert_eq!(t.len(), NOTE_LENGTH_LIMIT);
        assert!(t.ends_with(" ..."));
        assert_eq!(truncate_message("short"), "short");
    }

    #[test]
    fn only_pending_pods_of_the_default_scheduler_are_queued() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).expect("pod") };
        let names: BTreeSet<String> = [DEFAULT_SCHEDULER_NAME.to_string()].into();
        let pending = |p: &Pod| pending(p, &names);
        assert!(pending(&pod(
            serde_json::json!({"spec": {"containers": []}})
        )));
        assert!(pending(&pod(
            serde_json::json!({"spec": {"containers": [], "schedulerName": "default-scheduler"}})
        )));
        assert!(!pending(&pod(
            serde_json::json!({"spec": {"containers": [], "schedulerName": "other"}})
        )));
        assert!(!pending(&pod(
            serde_json::json!({"spec": {"containers": [], "nodeName": "n"}})
        )));
        assert!(!pending(&pod(
            serde_json::json!({"spec": {"containers": []}, "status": {"phase": "Failed"}})
        )));
    }

    #[test]
    fn pods_are_queued_for_every_profile_and_only_those() {
        let pod = |name: &str| -> Pod {
            serde_json::from_value(
                serde_json::json!({"spec": {"containers": [], "schedulerName": name}}),
            )
            .expect("pod")
        };
        let names: BTreeSet<String> = ["bin-packer".to_string(), "spreader".to_string()].into();
        assert!(pending(&pod("bin-packer"), &names));
        assert!(pending(&pod("spreader"), &names));
        assert!(!pending(&pod("default-scheduler"), &names));
        assert!(!pending(&pod("unknown"), &names));
    }

    #[test]
    fn node_heartbeats_do_not_count_as_scheduling_changes() {
        let node = |v: serde_json::Value| -> Node { serde_json::from_value(v).expect("node") };
        let a = node(
            serde_json::json!({"metadata": {"name": "n", "resourceVersion": "1"},
            "status": {"allocatable": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        let mut b = a.clone();
        b.metadata.resource_version = Some("2".into());
        assert!(!node_changed_for_scheduling(&a, &b));
        let c = node(
            serde_json::json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "8"}}}),
        );
        assert!(node_changed_for_scheduling(&a, &c));
    }
}
