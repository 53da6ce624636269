//! The garbage collector: deletes objects whose owners are all gone (background cascading),
//! deletes an owner's dependents before the owner when it carries `foregroundDeletion`, and
//! strips an owner's references from its dependents when it carries `orphan`.
//!
//! Shell over the pure [`graph`] and [`decide`] modules:
//! - discovery (refreshed every 30 s, and at once when an owner's kind is unknown) picks every
//!   resource that supports list, watch and delete, except the ignored ones (events);
//! - one metadata-only watch per resource feeds the graph through a single `graphChanges`
//!   consumer, which owns every graph write;
//! - `attemptToDelete` and `attemptToOrphan` workers look the item and its owners up live
//!   through the API (the graph may lag) and act with UID preconditions.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/garbagecollector (garbagecollector.go,
//! graph_builder.go, operations.go, patch.go, metrics).

pub mod decide;
pub mod graph;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferrite_runtime::events::{EventRecorder, EventType};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use self::decide::{
    Decision, DeletingDependents, FINALIZER_DELETE_DEPENDENTS, FINALIZER_ORPHAN_DEPENDENTS,
    NamespacedOwnerOfClusterScoped, OwnerState, Propagation,
};
use self::graph::{Change, Effect, Graph, NodeView, ObjectRef, Observed, OwnerRef};
use crate::manager::ControllerContext;

pub const NAME: &str = "garbage-collector-controller";

/// How often discovery is refreshed so new resources (CRDs) get monitors
/// (kube-controller-manager's `garbageCollectorController.Sync` period).
pub const DISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// upstream `NewReferenceCache(500)`.
const ABSENT_OWNER_CACHE_SIZE: usize = 500;
/// Bounds every API call so that a hung connection cannot pin a worker.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Spacing between discoveries that an unknown kind triggers.
const REDISCOVERY_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// `DefaultIgnoredResources`: (group, resource) pairs never monitored.
pub const IGNORED_RESOURCES: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to get REST mapping for {0}/{1}.")]
    RestMapping(String, String),
    #[error(transparent)]
    NamespacedOwner(#[from] NamespacedOwnerOfClusterScoped),
    #[error("enqueued virtual delete event")]
    VirtualDeleteEnqueued,
    #[error("item {0} hasn't been observed via informer yet")]
    NotObserved(ObjectRef),
    #[error("{0}: {1}")]
    Api(String, #[source] kube::Error),
    #[error("{0}: timed out")]
    Timeout(String),
}

fn is_status(e: &kube::Error, check: impl Fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if check(s))
}

fn not_found(e: &kube::Error) -> bool {
    is_status(e, |s| s.is_not_found())
}

fn conflict(e: &kube::Error) -> bool {
    is_status(e, |s| s.is_conflict())
}

fn unsupported_media_type(e: &kube::Error) -> bool {
    is_status(e, |s| s.code == 415)
}

async fn timed<T>(
    what: impl Fn() -> String,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Api(what(), e)),
        Err(_) => Err(Error::Timeout(what())),
    }
}

fn api_error(e: &Error) -> Option<&kube::Error> {
    match e {
        Error::Api(_, k) => Some(k),
        _ => None,
    }
}

/// `garbagecollector_controller_resources_sync_error_total`.
#[derive(Clone, Debug, Default)]
pub struct GcMetrics {
    pub resources_sync_error: Counter,
}

impl GcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry
            .sub_registry_with_prefix("garbagecollector_controller")
            .register(
                "resources_sync_error",
                "Number of garbage collector resources sync errors",
                m.resources_sync_error.clone(),
            );
        m
    }
}

/// (apiVersion, kind) → resource and scope, from discovery (every served version, as upstream's
/// deferred discovery REST mapper).
type RestMapper = HashMap<(String, String), (ApiResource, bool)>;

enum GraphEvent {
    Upsert(Arc<ApiResource>, ObjectMeta),
    Delete(Arc<ApiResource>, ObjectMeta),
    Virtual(ObjectRef),
    Relisted {
        resource: Arc<ApiResource>,
        seen: HashSet<Arc<str>>,
    },
}

struct Shared {
    client: kube::Client,
    graph: Mutex<Graph>,
    absent: Mutex<LruCache<ObjectRef, ()>>,
    mapper: RwLock<RestMapper>,
    rediscover: Notify,
    changes: mpsc::UnboundedSender<GraphEvent>,
    attempt_to_delete: WorkQueue<ObjectRef>,
    attempt_to_orphan: WorkQueue<ObjectRef>,
    recorder: EventRecorder,
    metrics: GcMetrics,
    /// `--concurrent-gc-syncs`: workers of each queue.
    workers: usize,
    /// Monitors started, and those whose first list reached the graph.
    monitors: Mutex<HashMap<String, (CancellationToken, bool)>>,
    synced: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn resource_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::new()),
        absent: Mutex::new(LruCache::new(
            NonZeroUsize::new(ABSENT_OWNER_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
        )),
        mapper: RwLock::new(HashMap::new()),
        rediscover: Notify::new(),
        changes: tx,
        attempt_to_delete: WorkQueue::new(
            "garbage_collector_attempt_to_delete",
            RateLimiter::default_controller(),
        )
        .with_metrics(&ctx.queue_metrics),
        attempt_to_orphan: WorkQueue::new(
            "garbage_collector_attempt_to_orphan",
            RateLimiter::default_controller(),
        )
        .with_metrics(&ctx.queue_metrics),
        recorder: ctx.events.for_controller("garbage-collector-controller"),
        metrics: ctx.registry.once(NAME, GcMetrics::register),
        workers: ctx.settings.concurrent_gc_syncs,
        monitors: Mutex::new(HashMap::new()),
        synced: Notify::new(),
    });
    let token = ctx.token.clone();
    Ok(async move { run(shared, rx, token).await }.boxed())
}

async fn run(
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<GraphEvent>,
    token: CancellationToken,
) -> Result<(), String> {
    let processor = tokio::spawn(process_graph_changes(shared.clone(), rx, token.clone()));
    let discovery = tokio::spawn(discovery_loop(shared.clone(), token.clone()));
    // Workers start once the graph holds every monitored resource (upstream `IsSynced`).
    loop {
        let notified = shared.synced.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let monitors = lock(&shared.monitors);
            if !monitors.is_empty() && monitors.values().all(|(_, s)| *s) {
                break;
            }
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = notified => {}
        }
    }
    tracing::info!(
        nodes = lock(&shared.graph).len(),
        "garbage collector: all resource monitors have synced; proceeding to collect garbage"
    );
    let s = shared.clone();
    let deleters = run_queue(
        shared.attempt_to_delete.clone(),
        shared.workers,
        token.clone(),
        move |key| {
            let s = s.clone();
            async move { attempt_to_delete_worker(&s, key).await }
        },
    );
    let s = shared.clone();
    let orphaners = run_queue(
        shared.attempt_to_orphan.clone(),
        shared.workers,
        token.clone(),
        move |key| {
            let s = s.clone();
            async move { attempt_to_orphan_worker(&s, key).await }
        },
    );
    tokio::join!(deleters, orphaners);
    token.cancelled().await;
    processor.abort();
    discovery.abort();
    for (t, _) in lock(&shared.monitors).values() {
        t.cancel();
    }
    Ok(())
}

/// `--concurrent-gc-syncs` workers over one queue: forget on success, rate-limited requeue on
/// error. Unlike the shared `run_workers`, expected retries (an owner kind discovery has not
/// seen yet, a virtual node not observed yet) log at debug level, as upstream logs them at V(5).
async fn run_queue<F, Fut>(
    queue: WorkQueue<ObjectRef>,
    workers_count: usize,
    token: CancellationToken,
    sync: F,
) where
    F: Fn(ObjectRef) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..workers_count.max(1) {
        let (queue, token, sync) = (queue.clone(), token.clone(), sync.clone());
        workers.spawn(async move {
            loop {
                let key = tokio::select! {
                    biased;
                    () = token.cancelled() => return,
                    key = queue.get() => match key { Some(k) => k, None => return },
                };
                match sync(key.clone()).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        if matches!(e, Error::RestMapping(..) | Error::NotObserved(_)) {
                            tracing::debug!(queue = %queue.name(), item = %key, error = %e, "requeuing");
                        } else {
                            tracing::error!(queue = %queue.name(), item = %key, error = %e, "error syncing item");
                        }
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined
            && e.is_panic()
        {
            queue.shut_down();
            std::panic::resume_unwind(e.into_panic());
        }
    }
    queue.shut_down();
}

// ---------------------------------------------------------------------------------------------
// Discovery and monitors (graph_builder.go syncMonitors, garbagecollector.go Sync)
// ---------------------------------------------------------------------------------------------

async fn discover(client: &kube::Client) -> Result<Discovery, kube::Error> {
    match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => Ok(d),
        Err(_) => Discovery::new(client.clone()).run().await,
    }
}

async fn discovery_loop(shared: Arc<Shared>, token: CancellationToken) {
    loop {
        match tokio::time::timeout(CALL_TIMEOUT, discover(&shared.client)).await {
            Ok(Ok(d)) => sync_monitors(&shared, &d, &token),
            Ok(Err(e)) => {
                shared.metrics.resources_sync_error.inc();
                tracing::warn!(error = %e, "garbage collector: failed to discover resources");
            }
            Err(_) => {
                shared.metrics.resources_sync_error.inc();
                tracing::warn!("garbage collector: discovery timed out");
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(DISCOVERY_PERIOD) => {}
            () = shared.rediscover.notified() => {
                tokio::time::sleep(REDISCOVERY_MIN_INTERVAL).await;
            }
        }
    }
}

/// `GetDeletableResources` plus `syncMonitors`: start a watch for each new deletable resource,
/// stop those no longer served, and refresh the REST mapper.
fn sync_monitors(shared: &Arc<Shared>, discovery: &Discovery, token: &CancellationToken) {
    let mut mapper = RestMapper::new();
    let mut wanted: HashMap<String, ApiResource> = HashMap::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let namespaced = matches!(caps.scope, Scope::Namespaced);
                mapper
                    .entry((ar.api_version.clone(), ar.kind.clone()))
                    .or_insert((ar, namespaced));
            }
        }
        for (ar, caps) in group.recommended_resources() {
            let deletable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            let ignored = IGNORED_RESOURCES
                .iter()
                .any(|(g, r)| *g == ar.group && *r == ar.plural);
            if deletable && !ignored {
                wanted.insert(resource_key(&ar), ar);
            }
        }
    }
    if let Ok(mut m) = shared.mapper.write() {
        *m = mapper;
    }
    let mut monitors = lock(&shared.monitors);
    monitors.retain(|key, (t, _)| {
        let keep = wanted.contains_key(key);
        if !keep {
            tracing::info!(resource = %key, "garbage collector: stopping monitor");
            t.cancel();
        }
        keep
    });
    for (key, ar) in wanted {
        if monitors.contains_key(&key) {
            continue;
        }
        let child = token.child_token();
        monitors.insert(key, (child.clone(), false));
        tokio::spawn(monitor(shared.clone(), Arc::new(ar), child));
    }
}

/// One metadata-only watch feeding `graphChanges` (upstream's per-resource informer).
async fn monitor(shared: Arc<Shared>, ar: Arc<ApiResource>, token: CancellationToken) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(shared.client.clone(), &*ar);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut seen: HashSet<Arc<str>> = HashSet::new();
    loop {
        let next = tokio::select! {
            () = token.cancelled() => return,
            next = stream.next() => next,
        };
        let send = |e: GraphEvent| shared.changes.send(e).is_ok();
        let next = next.map(|r| r.map(|e| e.modify(|o| trim(&mut o.metadata))));
        let ok = match next {
            None => return,
            Some(Ok(Event::Init)) => {
                seen.clear();
                true
            }
            Some(Ok(Event::InitApply(obj))) => {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    seen.insert(Arc::from(uid));
                }
                send(GraphEvent::Upsert(ar.clone(), obj.metadata))
            }
            Some(Ok(Event::InitDone)) => send(GraphEvent::Relisted {
                resource: ar.clone(),
                seen: std::mem::take(&mut seen),
            }),
            Some(Ok(Event::Apply(obj))) => send(GraphEvent::Upsert(ar.clone(), obj.metadata)),
            Some(Ok(Event::Delete(obj))) => send(GraphEvent::Delete(ar.clone(), obj.metadata)),
            Some(Err(e)) => {
                tracing::warn!(resource = %resource_key(&ar), error = %e, "garbage collector: watch failed; retrying");
                true
            }
        };
        if !ok {
            return;
        }
    }
}

/// Keeps only what the graph reads, so that queued changes stay small while a large list is
/// being absorbed.
fn trim(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        owner_references: meta.owner_references.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        finalizers: meta.finalizers.take(),
        ..ObjectMeta::default()
    };
}

// ---------------------------------------------------------------------------------------------
// graphChanges consumer
// ---------------------------------------------------------------------------------------------

fn observed(graph: &mut Graph, ar: &ApiResource, meta: &ObjectMeta) -> Option<Observed> {
    let uid = meta.uid.as_deref()?;
    let identity = ObjectRef {
        api_version: graph.intern(&ar.api_version),
        kind: graph.intern(&ar.kind),
        namespace: graph.intern(meta.namespace.as_deref().unwrap_or_default()),
        name: Arc::from(meta.name.as_deref().unwrap_or_default()),
        uid: Arc::from(uid),
    };
    let owners = meta
        .owner_references
        .iter()
        .flatten()
        .map(|o| OwnerRef {
            api_version: graph.intern(&o.api_version),
            kind: graph.intern(&o.kind),
            name: Arc::from(o.name.as_str()),
            uid: Arc::from(o.uid.as_str()),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        })
        .collect();
    let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
    Some(Observed {
        identity,
        owners,
        being_deleted: meta.deletion_timestamp.is_some(),
        foreground_finalizer: has(FINALIZER_DELETE_DEPENDENTS),
        orphan_finalizer: has(FINALIZER_ORPHAN_DEPENDENTS),
    })
}

async fn process_graph_changes(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<GraphEvent>,
    token: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = token.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let effects = {
            let mut graph = lock(&shared.graph);
            match event {
                GraphEvent::Upsert(ar, meta) => match observed(&mut graph, &ar, &meta) {
                    Some(obs) => graph.apply(Change::Upsert(obs)),
                    None => Vec::new(),
                },
                GraphEvent::Delete(ar, meta) => match observed(&mut graph, &ar, &meta) {
                    Some(obs) => graph.apply(Change::Delete(obs.identity)),
                    None => Vec::new(),
                },
                GraphEvent::Virtual(identity) => graph.apply(Change::VirtualDelete(identity)),
                GraphEvent::Relisted { resource, seen } => {
                    let gone =
                        graph.missing_after_relist(&resource.api_version, &resource.kind, &seen);
                    let mut fx = Vec::new();
                    for identity in gone {
                        fx.extend(graph.apply(Change::Delete(identity)));
                    }
                    if let Some((_, synced)) =
                        lock(&shared.monitors).get_mut(&resource_key(&resource))
                    {
                        *synced = true;
                    }
                    shared.synced.notify_waiters();
                    fx
                }
            }
        };
        for effect in effects {
            apply_effect(&shared, effect);
        }
    }
}

fn apply_effect(shared: &Shared, effect: Effect) {
    match effect {
        Effect::AttemptToDelete(r) => shared.attempt_to_delete.add(r),
        Effect::AttemptToDeleteLater(r) => shared.attempt_to_delete.add_rate_limited(r),
        Effect::AttemptToOrphan(r) => shared.attempt_to_orphan.add(r),
        Effect::AbsentOwner(r) => {
            lock(&shared.absent).put(r, ());
        }
        Effect::InvalidNamespaceOwnerRef { dependent, owner } => {
            let reference = ObjectReference {
                api_version: Some(dependent.api_version.to_string()),
                kind: Some(dependent.kind.to_string()),
                namespace: Some(dependent.namespace.to_string()).filter(|n| !n.is_empty()),
                name: Some(dependent.name.to_string()),
                uid: Some(dependent.uid.to_string()),
                ..Default::default()
            };
            shared.recorder.event(
                &reference,
                EventType::Warning,
                "OwnerRefInvalidNamespace",
                decide::invalid_namespace_message(&owner, &dependent.namespace),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// API operations (operations.go, patch.go)
// ---------------------------------------------------------------------------------------------

fn map_kind(shared: &Shared, api_version: &str, kind: &str) -> Result<(ApiResource, bool), Error> {
    let found = shared
        .mapper
        .read()
        .ok()
        .and_then(|m| m.get(&(api_version.to_owned(), kind.to_owned())).cloned());
    found.ok_or_else(|| {
        // Likely a CRD discovery hasn't seen yet: look again soon.
        shared.rediscover.notify_one();
        Error::RestMapping(api_version.to_owned(), kind.to_owned())
    })
}

/// The item's resource, scoped to its namespace.
fn api_for(
    shared: &Shared,
    item: &ObjectRef,
) -> Result<Api<PartialObjectMeta<DynamicObject>>, Error> {
    let (ar, namespaced) = map_kind(shared, &item.api_version, &item.kind)?;
    if namespaced && item.namespace.is_empty() {
        return Err(NamespacedOwnerOfClusterScoped.into());
    }
    Ok(if namespaced {
        Api::namespaced_with(shared.client.clone(), &item.namespace, &ar)
    } else {
        Api::all_with(shared.client.clone(), &ar)
    })
}

async fn get_object(
    shared: &Shared,
    item: &ObjectRef,
) -> Result<Option<PartialObjectMeta<DynamicObject>>, Error> {
    let api = api_for(shared, item)?;
    timed(|| format!("getting {item}"), api.get_opt(&item.name)).await
}

async fn patch_object(shared: &Shared, item: &ObjectRef, patch: Patch<Value>) -> Result<(), Error> {
    let api = api_for(shared, item)?;
    timed(
        || format!("patching {item}"),
        api.patch(&item.name, &PatchParams::default(), &patch),
    )
    .await
    .map(|_| ())
}

fn raw_owner_refs(meta: &ObjectMeta) -> Vec<Value> {
    meta.owner_references
        .iter()
        .flatten()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect()
}

/// upstream `gc.patch`: strategic merge first; a resource that does not support it (custom
/// resources answer 415) gets the JSON merge patch built from a fresh read.
async fn patch_with_fallback(
    shared: &Shared,
    item: &ObjectRef,
    strategic: Value,
    merge: impl Fn(&ObjectMeta) -> Value,
) -> Result<(), Error> {
    match patch_object(shared, item, Patch::Strategic(strategic)).await {
        Err(e) if api_error(&e).is_some_and(unsupported_media_type) => {
            let Some(latest) = get_object(shared, item).await? else {
                return Ok(());
            };
            patch_object(shared, item, Patch::Merge(merge(&latest.metadata))).await
        }
        other => other,
    }
}

/// upstream `deleteObject`: UID and resourceVersion preconditions; on a conflict whose owner
/// references did not change, retry with the new resourceVersion.
async fn delete_object(
    shared: &Shared,
    item: &ObjectRef,
    mut resource_version: String,
    owners_at_version: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    policy: Propagation,
) -> Result<(), Error> {
    let api = api_for(shared, item)?;
    loop {
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Propagation::Orphan => PropagationPolicy::Orphan,
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
            }),
            preconditions: Some(Preconditions {
                uid: Some(item.uid.to_string()),
                resource_version: Some(resource_version.clone()).filter(|v| !v.is_empty()),
            }),
            ..Default::default()
        };
        let result = timed(
            || format!("deleting {item}"),
            api.delete(&item.name, &params),
        )
        .await;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if api_error(&e).is_some_and(conflict) && !resource_version.is_empty() => {
                let live = timed(|| format!("getting {item}"), api.get_opt(&item.name)).await?;
                let Some(live) = live else {
                    return Ok(());
                };
                let live_rv = live.metadata.resource_version.clone().unwrap_or_default();
                let same_owners =
                    live.metadata.owner_references.clone().unwrap_or_default() == owners_at_version;
                if live.metadata.uid.as_deref() == Some(&*item.uid)
                    && live_rv != resource_version
                    && same_owners
                {
                    resource_version = live_rv;
                    continue;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
}

/// upstream `removeFinalizer`, with `retry.RetryOnConflict`'s five attempts.
async fn remove_finalizer(shared: &Shared, item: &ObjectRef, target: &str) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(latest) = get_object(shared, item).await? else {
            return Ok(());
        };
        let rv = latest.metadata.resource_version.clone().unwrap_or_default();
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let Some(patch) = decide::remove_finalizer_patch(&rv, &finalizers, target) else {
            return Ok(());
        };
        match patch_object(shared, item, Patch::Merge(patch)).await {
            Err(e) if attempt < 5 && api_error(&e).is_some_and(conflict) => {
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            Err(e) if api_error(&e).is_some_and(not_found) => return Ok(()),
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers (garbagecollector.go)
// ---------------------------------------------------------------------------------------------

async fn attempt_to_delete_worker(shared: &Shared, key: ObjectRef) -> Result<(), Error> {
    let Some(item) = lock(&shared.graph).view(&key.uid) else {
        // Removed from the graph meanwhile (its deletion was observed).
        return Ok(());
    };
    if item.virtual_ && item.identity != key {
        // A replacement virtual identity was queued on its own.
        return Ok(());
    }
    match attempt_to_delete_item(shared, &item).await {
        Ok(()) => {}
        Err(Error::VirtualDeleteEnqueued | Error::NamespacedOwner(_)) => return Ok(()),
        Err(e) => return Err(e),
    }
    let still_virtual = lock(&shared.graph)
        .view(&key.uid)
        .is_some_and(|n| n.virtual_);
    if still_virtual {
        // Requeue until observed, or a virtual node added and removed during a watch restart
        // would stay forever (kubernetes#56121).
        return Err(Error::NotObserved(key));
    }
    Ok(())
}

fn enqueue_virtual_delete(shared: &Shared, identity: &ObjectRef) -> Error {
    let _ = shared.changes.send(GraphEvent::Virtual(identity.clone()));
    Error::VirtualDeleteEnqueued
}

async fn owner_state(
    shared: &Shared,
    item: &NodeView,
    reference: &OwnerRef,
) -> Result<OwnerState, Error> {
    let cluster_key = reference.at(&Arc::from(""));
    let namespaced_key = reference.at(&item.identity.namespace);
    {
        let mut absent = lock(&shared.absent);
        if absent.get(&cluster_key).is_some() || absent.get(&namespaced_key).is_some() {
            return Ok(OwnerState::Absent);
        }
    }
    let (ar, namespaced) = map_kind(shared, &reference.api_version, &reference.kind)?;
    let ns = decide::owner_namespace(&item.identity.namespace, namespaced)?;
    let absent_key = if namespaced {
        namespaced_key
    } else {
        cluster_key
    };
    let api: Api<PartialObjectMeta<DynamicObject>> = if namespaced {
        Api::namespaced_with(shared.client.clone(), ns, &ar)
    } else {
        Api::all_with(shared.client.clone(), &ar)
    };
    let owner = timed(
        || format!("getting owner {absent_key}"),
        api.get_opt(&reference.name),
    )
    .await?;
    match owner {
        Some(o) if o.metadata.uid.as_deref() == Some(&*reference.uid) => Ok(OwnerState::Present {
            being_deleted: o.metadata.deletion_timestamp.is_some(),
            foreground_finalizer: o
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FINALIZER_DELETE_DEPENDENTS),
        }),
        _ => {
            lock(&shared.absent).put(absent_key, ());
            Ok(OwnerState::Absent)
        }
    }
}

/// upstream `attemptToDeleteItem`.
async fn attempt_to_delete_item(shared: &Shared, item: &NodeView) -> Result<(), Error> {
    if decide::nothing_to_do_while_deleting(item) {
        return Ok(());
    }
    let latest = match get_object(shared, &item.identity).await? {
        Some(l) if l.metadata.uid.as_deref() == Some(&*item.identity.uid) => l,
        _ => return Err(enqueue_virtual_delete(shared, &item.identity)),
    };
    if item.deleting_dependents {
        return match decide::deleting_dependents(item) {
            DeletingDependents::RemoveFinalizer => {
                tracing::debug!(item = %item.identity, "removing the foregroundDeletion finalizer");
                remove_finalizer(shared, &item.identity, FINALIZER_DELETE_DEPENDENTS).await
            }
            DeletingDependents::Check(deps) => {
                for d in deps {
                    shared.attempt_to_delete.add(d);
                }
                Ok(())
            }
        };
    }
    let live_owners = latest.metadata.owner_references.clone().unwrap_or_default();
    if live_owners.is_empty() {
        return Ok(());
    }
    // Classify against the live references (the graph's may lag).
    let mut graph_refs = Vec::with_capacity(live_owners.len());
    {
        let mut graph = lock(&shared.graph);
        for o in &live_owners {
            graph_refs.push(OwnerRef {
                api_version: graph.intern(&o.api_version),
                kind: graph.intern(&o.kind),
                name: Arc::from(o.name.as_str()),
                uid: Arc::from(o.uid.as_str()),
                controller: o.controller,
                block_owner_deletion: o.block_owner_deletion,
            });
        }
    }
    let mut classified = Vec::with_capacity(graph_refs.len());
    for r in graph_refs {
        let state = owner_state(shared, item, &r).await?;
        classified.push((r, decide::classify(&state)));
    }
    let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
    let resource_version = latest.metadata.resource_version.clone().unwrap_or_default();
    match decide::decide(&classified, item, &finalizers) {
        Decision::Keep => Ok(()),
        Decision::RemoveOwnerReferences(uids) => {
            tracing::debug!(item = %item.identity, owners = ?uids, "removing dangling and waiting owner references");
            let strategic = decide::delete_owner_refs_strategic(&item.identity.uid, &uids);
            patch_with_fallback(shared, &item.identity, strategic, |m| {
                decide::delete_owner_refs_merge(
                    m.resource_version.as_deref().unwrap_or_default(),
                    &raw_owner_refs(m),
                    &uids,
                )
            })
            .await
        }
        Decision::DeleteForeground { unblock_first } => {
            if unblock_first {
                let strategic = decide::unblock_owner_refs_strategic(item);
                patch_with_fallback(shared, &item.identity, strategic, |m| {
                    decide::unblock_owner_refs_merge(
                        m.resource_version.as_deref().unwrap_or_default(),
                        &raw_owner_refs(m),
                    )
                })
                .await?;
            }
            tracing::debug!(item = %item.identity, "deleting in the foreground: an owner waits for its dependents");
            delete_or_virtual(
                shared,
                item,
                resource_version,
                &live_owners,
                Propagation::Foreground,
            )
            .await
        }
        Decision::Delete(policy) => {
            tracing::debug!(item = %item.identity, ?policy, "deleting item");
            delete_or_virtual(shared, item, resource_version, &live_owners, policy).await
        }
    }
}

async fn delete_or_virtual(
    shared: &Shared,
    item: &NodeView,
    resource_version: String,
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    policy: Propagation,
) -> Result<(), Error> {
    match delete_object(shared, &item.identity, resource_version, owners, policy).await {
        Err(e) if api_error(&e).is_some_and(not_found) => {
            Err(enqueue_virtual_delete(shared, &item.identity))
        }
        other => other,
    }
}

/// upstream `attemptToOrphanWorker`: strip the owner from every dependent, then remove the
/// `orphan` finalizer.
async fn attempt_to_orphan_worker(shared: &Shared, key: ObjectRef) -> Result<(), Error> {
    let Some(owner) = lock(&shared.graph).view(&key.uid) else {
        return Ok(());
    };
    let uids = vec![owner.identity.uid.to_string()];
    let results = futures::future::join_all(owner.dependents.iter().map(|d| {
        let uids = uids.clone();
        async move {
            let strategic = decide::delete_owner_refs_strategic(&d.identity.uid, &uids);
            let r = patch_with_fallback(shared, &d.identity, strategic, |m| {
                decide::delete_owner_refs_merge(
                    m.resource_version.as_deref().unwrap_or_default(),
                    &raw_owner_refs(m),
                    &uids,
                )
            })
            .await;
            match r {
                Err(e) if api_error(&e).is_some_and(not_found) => Ok(()),
                other => other,
            }
        }
    }))
    .await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e);
    }
    remove_finalizer(shared, &owner.identity, FINALIZER_ORPHAN_DEPENDENTS).await
}
