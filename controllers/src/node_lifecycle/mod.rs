//! The node-lifecycle controller (upstream `pkg/controller/nodelifecycle`): watches every node's
//! health signals and keeps the node's taints and conditions telling the truth about it.
//!
//! - every `--node-monitor-period` it judges each node from its Ready condition and its Lease in
//!   `kube-node-lease` ([`health`]); a node silent for longer than the grace period gets its
//!   kubelet-owned conditions set to `Unknown` and its pods marked not Ready;
//! - not-Ready and unreachable nodes are queued, per zone and at the zone's rate ([`zones`],
//!   [`queue`]), for the NoExecute `not-ready` / `unreachable` taint that the taint-eviction
//!   controller turns into evictions; a node that recovers loses them at once;
//! - on every node change its NoSchedule condition taints are brought in line ([`taints`]), which
//!   is what lifts `node.kubernetes.io/not-ready:NoSchedule` from a node once it is Ready.
//!
//! This file is the shell: it reads the informer caches, asks the pure modules what to do, and
//! writes taints (whole list, resourceVersion precondition), node status and pod status.

pub mod health;
pub mod metrics;
pub mod queue;
pub mod taints;
pub mod zones;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_runtime::events::{EventRecorder, EventType, object_reference};
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, ObjectReference, Taint};
use kube::api::{Api, GetParams, Patch, PatchParams};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::Pod;
use crate::manager::ControllerContext;
use crate::pod_util::ready_condition as pod_ready_condition;
use crate::pods_by_node::{PodKey, PodsByNode};
use health::{Grace, LeaseSeen, NodeHealth};
use queue::{Outcome, RateLimitedTimedQueue, TimedValue};
use zones::{Mode, Rates, ZoneState};

/// Canonical controller name.
pub const NAME: &str = "node-lifecycle-controller";
/// The events' source component, as upstream's recorder names it.
pub const EVENT_COMPONENT: &str = "node-controller";
/// Where kubelets keep their node Leases (`v1.NamespaceNodeLease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// `NodeEvictionPeriod`: how often the NoExecute tainting queues are worked.
const NODE_EVICTION_PERIOD: Duration = Duration::from_millis(100);
/// `retrySleepTime` and `NodeHealthUpdateRetry`: a failed node status write is retried every
/// 20 ms for up to 100 ms, each time on a freshly read node.
const RETRY_SLEEP: Duration = Duration::from_millis(20);
const NODE_HEALTH_UPDATE_RETRY: u32 = 5;
/// `nodeUpdateWorkerSize` / `podUpdateWorkerSize`.
const NODE_UPDATE_WORKERS: usize = 8;
const POD_UPDATE_WORKERS: usize = 4;
/// `UpdateTaintBackoff` / `UpdateLabelBackoff`: 5 tries, 100 ms apart with jitter 1.0.
const UPDATE_TAINT_STEPS: u32 = 5;
const UPDATE_TAINT_BACKOFF: Duration = Duration::from_millis(100);

/// The controller's flags (upstream `NodeLifecycleControllerConfiguration`), with the v1.37
/// defaults (pkg/controller/nodelifecycle/config/v1alpha1/defaults.go and
/// cmd/kube-controller-manager/app/options/nodelifecyclecontroller.go); a
/// `ControllerConfiguration` may override them while the manager runs.
pub use crate::configuration::NodeLifecycleSettings as NodeLifecycleOptions;

impl NodeLifecycleOptions {
    fn grace(&self) -> Grace {
        let d = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        Grace {
            monitor: d(self.node_monitor_grace_period),
            startup: d(self.node_startup_grace_period),
        }
    }

    fn rates(&self) -> Rates {
        Rates {
            eviction: self.node_eviction_rate,
            secondary: self.secondary_node_eviction_rate,
            large_cluster_threshold: self.large_cluster_size_threshold,
            unhealthy_zone_threshold: self.unhealthy_zone_threshold,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Consistency(String),
    #[error("node {0} is not in the cache")]
    NodeNotCached(String),
    #[error("{0}")]
    Aggregate(String),
}

/// The zones' states and their tainting queues (upstream guards both with `evictorLock`).
#[derive(Default)]
struct Zones {
    states: BTreeMap<String, ZoneState>,
    tainters: HashMap<String, RateLimitedTimedQueue>,
}

/// Upstream's lease circuit breaker (NodeControllerLeaseCircuitBreaker, beta and on in v1.37,
/// pkg/controller/util/consistency): before a node is declared Unknown its Lease is read live;
/// if the live Lease is newer than the cached one, the lease cache is behind and no node is
/// judged until the cache has caught up with that resourceVersion.
///
/// The informer does not expose the resourceVersion of its last sync (bookmarks included), so the
/// highest resourceVersion among the Lease events it delivered stands in for it; that event for
/// the very Lease that was read live always arrives, so the wait ends no later than upstream's
/// would by more than one event.
#[derive(Default)]
struct LeaseConsistency {
    seen: AtomicU64,
    wrote: Mutex<Option<u64>>,
}

impl LeaseConsistency {
    fn saw(&self, lease: &Lease) {
        if let Some(rv) = parse_rv(lease.metadata.resource_version.as_deref()) {
            self.seen.fetch_max(rv, Ordering::Relaxed);
        }
    }

    fn wrote_at(&self, rv: &str) {
        if let Some(rv) = parse_rv(Some(rv)) {
            let mut w = lock(&self.wrote);
            *w = Some(w.map_or(rv, |old| old.max(rv)));
        }
    }

    fn ensure_ready(&self) -> Result<(), Error> {
        let mut wrote = lock(&self.wrote);
        let Some(w) = *wrote else { return Ok(()) };
        let read = self.seen.load(Ordering::Relaxed);
        if read != 0 && read < w {
            return Err(Error::Consistency(format!(
                "read version: {read} is not as new as written version: {w} for group resource leases.coordination.k8s.io"
            )));
        }
        *wrote = None;
        Ok(())
    }
}

fn parse_rv(rv: Option<&str>) -> Option<u64> {
    rv?.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn name_of(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

struct Shared {
    client: kube::Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    pods_by_node: PodsByNode,
    recorder: EventRecorder,
    metrics: metrics::NodeLifecycleMetrics,
    opts: NodeLifecycleOptions,
    health: Mutex<HashMap<String, NodeHealth>>,
    zones: Mutex<Zones>,
    nodes_to_retry: Mutex<HashSet<String>>,
    node_queue: WorkQueue<String>,
    pod_queue: WorkQueue<PodKey>,
    lease_consistency: LeaseConsistency,
}

/// The controller's `StartFn`.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let opts = ctx.settings.node_lifecycle.clone();
    if opts.node_monitor_period.is_zero() {
        return Err("--node-monitor-period must be greater than zero".into());
    }
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        nodes: ctx.informers.informer::<Node>(),
        leases: ctx.informers.informer::<Lease>(),
        pods_by_node: ctx.pods_by_node(),
        pods: ctx.informers.informer::<Pod>(),
        recorder: ctx.events.for_controller(EVENT_COMPONENT),
        metrics: ctx.registry.with(metrics::NodeLifecycleMetrics::register),
        opts,
        health: Mutex::default(),
        zones: Mutex::default(),
        nodes_to_retry: Mutex::default(),
        node_queue: WorkQueue::new(
            "node_lifecycle_controller",
            RateLimiter::default_controller(),
        )
        .with_metrics(&ctx.queue_metrics),
        pod_queue: WorkQueue::new(
            "node_lifecycle_controller_pods",
            RateLimiter::default_controller(),
        )
        .with_metrics(&ctx.queue_metrics),
        lease_consistency: LeaseConsistency::default(),
    });

    let s = shared.clone();
    shared.pods.add_handler(move |change| match change {
        Change::Added(p) => s.pod_updated(None, p),
        Change::Updated { old, new } => s.pod_updated(Some(old), new),
        Change::Deleted(_) => {}
    });
    let s = shared.clone();
    shared.nodes.add_handler(move |change| match change {
        Change::Added(n) | Change::Updated { new: n, .. } => {
            s.node_queue.add(name_of(n).to_owned());
        }
        Change::Deleted(n) => {
            lock(&s.nodes_to_retry).remove(name_of(n));
        }
    });
    let s = shared.clone();
    shared.leases.add_handler(move |change| match change {
        Change::Added(l) | Change::Updated { new: l, .. } | Change::Deleted(l) => {
            s.lease_consistency.saw(l)
        }
    });

    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting node controller");
        let node_workers = {
            let s = shared.clone();
            run_workers(
                shared.node_queue.clone(),
                NODE_UPDATE_WORKERS,
                token.clone(),
                move |name: String| {
                    let s = s.clone();
                    async move { s.node_processing_pass(&name).await }
                },
            )
        };
        let pod_workers = {
            let s = shared.clone();
            run_workers(
                shared.pod_queue.clone(),
                POD_UPDATE_WORKERS,
                token.clone(),
                move |key: PodKey| {
                    let s = s.clone();
                    async move { s.process_pod(&key).await }
                },
            )
        };
        let tainting = {
            let s = shared.clone();
            let token = token.clone();
            async move {
                loop {
                    s.no_execute_tainting_pass().await;
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(NODE_EVICTION_PERIOD) => {}
                    }
                }
            }
        };
        let monitor = {
            let s = shared.clone();
            let token = token.clone();
            async move {
                let mut known: HashMap<String, Option<String>> = HashMap::new();
                loop {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = s.monitor_node_health(&mut known) => {}
                    }
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(s.opts.node_monitor_period) => {}
                    }
                }
            }
        };
        tokio::join!(node_workers, pod_workers, tainting, monitor);
        tracing::info!(controller = NAME, "shutting down node controller");
        Ok(())
    }
    .boxed())
}

impl Shared {
    /// `podUpdated`: a pod newly bound to a node is checked against the node's health.
    fn pod_updated(&self, old: Option<&Pod>, new: &Pod) {
        fn node(p: &Pod) -> &str {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or_default()
        }
        let new_node = node(new);
        if !new_node.is_empty() && old.is_none_or(|o| node(o) != new_node) {
            self.pod_queue.add((
                new.metadata.namespace.clone().unwrap_or_default(),
                new.metadata.name.clone().unwrap_or_default(),
            ));
        }
    }

    fn zone_tainter_add(&self, node: &Node) {
        let zone = zones::zone_key(node);
        let mut z = lock(&self.zones);
        if !z.states.contains_key(&zone) {
            z.states.insert(zone.clone(), ZoneState::Initial);
            z.tainters.insert(
                zone.clone(),
                RateLimitedTimedQueue::new(self.opts.node_eviction_rate),
            );
            tracing::info!(zone = %zone.escape_debug(), "initializing eviction metric for zone");
            self.metrics.init_zone(&zone);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Health monitoring
    // -----------------------------------------------------------------------------------------

    /// `monitorNodeHealth`: one pass over every node.
    /// `known` holds the UID of every node seen so far, by name (upstream `knownNodeSet`).
    async fn monitor_node_health(&self, known: &mut HashMap<String, Option<String>>) {
        let started = std::time::Instant::now();
        let nodes = self.nodes.store().state();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let zone_states = lock(&self.zones).states.clone();
        let classified = zones::classify(&node_refs, known, &zone_states);
        for node in &classified.new_zone_representatives {
            self.zone_tainter_add(node);
        }
        for node in &classified.added {
            tracing::info!(node = name_of(node), "controller observed a new Node");
            self.record_node_event(
                node,
                "RegisteredNode",
                &format!("Registered Node {} in Controller", name_of(node)),
            );
            known.insert(name_of(node).to_owned(), node.metadata.uid.clone());
            self.zone_tainter_add(node);
            if let Err(e) = self.mark_node_as_reachable(node).await {
                tracing::error!(node = name_of(node), error = %e, "failed to remove taints from node");
            }
        }
        for name in &classified.deleted {
            tracing::info!(node = %name, "controller observed a Node deletion");
            if let Some(uid) = known.remove(name) {
                let gone = Node {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        uid,
                        ..Default::default()
                    },
                    ..Node::default()
                };
                self.record_node_event(
                    &gone,
                    "RemovingNode",
                    &format!("Removing Node {name} from Controller"),
                );
            }
        }
        drop(node_refs);

        // Built up front (and run at most NODE_UPDATE_WORKERS at a time, as upstream's
        // ParallelizeUntil): a lazily mapped stream of borrows trips the compiler's Send check.
        let updates: Vec<_> = nodes.iter().map(|node| self.update_node(node)).collect();
        let counted: Vec<Option<(String, Option<String>)>> = futures::stream::iter(updates)
            .buffer_unordered(NODE_UPDATE_WORKERS)
            .collect()
            .await;
        let mut ready_by_zone: BTreeMap<String, Vec<Option<&str>>> = BTreeMap::new();
        for (zone, ready) in counted.iter().flatten() {
            ready_by_zone
                .entry(zone.clone())
                .or_default()
                .push(ready.as_deref());
        }
        self.handle_disruption(&ready_by_zone, &nodes).await;
        self.metrics
            .update_all_nodes_health
            .observe(started.elapsed().as_secs_f64());
    }

    /// One node of a monitor pass. Returns its zone and Ready status when it counts towards zone
    /// health, None when it is excluded or could not be judged.
    async fn update_node(&self, cached: &Arc<Node>) -> Option<(String, Option<String>)> {
        let started = std::time::Instant::now();
        let name = name_of(cached).to_owned();
        let mut node: Node = (**cached).clone();
        let deadline = Instant::now() + RETRY_SLEEP * NODE_HEALTH_UPDATE_RETRY;
        let (observed, current) = loop {
            match self.try_update_node_health(&node).await {
                Ok(r) => break r,
                Err(Error::Consistency(e)) => {
                    tracing::error!(node = %name, error = %e, "update health of Node from Controller error, skipping - no pods will be evicted");
                    return None;
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "updating node health failed; retrying on a fresh copy");
                    if Instant::now() >= deadline {
                        tracing::error!(node = %name, error = %e, "update health of Node from Controller error, skipping - no pods will be evicted");
                        return None;
                    }
                    tokio::time::sleep(RETRY_SLEEP).await;
                    match Api::<Node>::all(self.client.clone()).get(&name).await {
                        Ok(fresh) => node = fresh,
                        Err(e) => {
                            tracing::error!(node = %name, error = %e, "failed while getting a Node to retry updating node health; probably Node was deleted");
                            return None;
                        }
                    }
                }
            }
        };
        let counted = (!zones::excluded_from_disruption(&node)).then(|| {
            (
                zones::zone_key(&node),
                current.as_ref().map(|c| c.status.clone()),
            )
        });
        if let Some(current) = &current {
            let pods = self.pods_by_node.pods_on(&name);
            self.process_taint_based_eviction(&node, current).await;
            let needs_retry = lock(&self.nodes_to_retry).contains(&name);
            let went_not_ready = current.status != "True" && observed.status == "True";
            if went_not_ready {
                // Reported once, when the controller itself declared the node unhealthy.
                self.recorder.event(
                    &node_ref(&node),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
            if (went_not_ready || (needs_retry && observed.status != "True"))
                && let Err(e) = self.mark_pods_not_ready(&pods, &name).await
            {
                tracing::error!(node = %name, error = %e, "unable to mark all pods NotReady on node; queuing for retry");
                lock(&self.nodes_to_retry).insert(name);
                return counted;
            }
        }
        lock(&self.nodes_to_retry).remove(&name);
        self.metrics
            .update_node_health
            .observe(started.elapsed().as_secs_f64());
        counted
    }

    /// `tryUpdateNodeHealth`: judges `node` and marks it Unknown when its grace period is over.
    /// Returns the Ready condition as observed and as it is now.
    async fn try_update_node_health(
        &self,
        node: &Node,
    ) -> Result<(NodeCondition, Option<NodeCondition>), Error> {
        self.lease_consistency.ensure_ready()?;
        let name = name_of(node).to_owned();
        let saved = lock(&self.health).get(&name).cloned();
        let lease = self.leases.get(Some(NODE_LEASE_NAMESPACE), &name);
        let now = Timestamp::now();
        let o = health::observe(
            node,
            saved.as_ref(),
            lease.as_deref(),
            self.opts.grace(),
            now,
        );
        let store = |h: NodeHealth| {
            lock(&self.health).insert(name.clone(), h);
        };
        if !o.stale {
            store(o.health);
            return Ok((o.observed_ready, o.current_ready));
        }
        // Before declaring the node dead, make sure the lease cache is not just behind.
        let cached_rv = o
            .health
            .lease
            .as_ref()
            .map(|l| l.resource_version.clone())
            .unwrap_or_default();
        match Api::<Lease>::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE)
            .get(&name)
            .await
        {
            Ok(live) => {
                let live_rv = live.metadata.resource_version.clone().unwrap_or_default();
                if live_rv != cached_rv {
                    self.lease_consistency.wrote_at(&live_rv);
                    store(o.health);
                    return Err(Error::Consistency(format!(
                        "read version: {cached_rv} is not as new as written version: {live_rv} for group resource leases.coordination.k8s.io"
                    )));
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                store(o.health);
                return Err(Error::Consistency(format!(
                    "error looking up lease to verify node {name}: {e}"
                )));
            }
        }
        let marked = health::mark_unknown(node, now);
        if marked.ready.as_ref() == Some(&o.observed_ready) {
            store(o.health);
            return Ok((o.observed_ready, marked.ready));
        }
        for c in &marked.changed {
            tracing::info!(node = %name, condition = %c.type_, "node hasn't been updated; marking the condition Unknown");
        }
        let rv = node.metadata.resource_version.clone().unwrap_or_default();
        let patch = health::status_patch(&rv, &marked.changed);
        if let Err(e) = Api::<Node>::all(self.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::error!(node = %name, error = %e, "error updating node");
            store(o.health);
            return Err(e.into());
        }
        store(NodeHealth {
            probe: o.health.probe,
            ready_transition: now,
            ready: marked.ready.clone(),
            lease: lease.as_deref().map(LeaseSeen::of),
        });
        Ok((o.observed_ready, marked.ready))
    }

    /// `processTaintBaseEviction`: queue an unhealthy node for its NoExecute taint (or swap the
    /// one it has at once), untaint a healthy one.
    async fn process_taint_based_eviction(&self, node: &Node, ready: &NodeCondition) {
        let name = name_of(node);
        let current = taints::node_taints(node);
        let (queue_status, have, want) = match ready.status.as_str() {
            "False" => (
                "False",
                taints::unreachable_no_execute(),
                taints::not_ready_no_execute(),
            ),
            "Unknown" => (
                "Unknown",
                taints::not_ready_no_execute(),
                taints::unreachable_no_execute(),
            ),
            "True" => {
                match self.mark_node_as_reachable(node).await {
                    Ok(true) => {
                        tracing::info!(node = name, "node is healthy again, removed all taints")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(node = name, error = %e, "failed to remove taints from node; will retry in next iteration")
                    }
                }
                return;
            }
            _ => return,
        };
        if taints::exists(current, &have) {
            // Already tainted for the other state: swap right away, no rate limit.
            if let Err(e) = self
                .update_taints(
                    name,
                    Read::Shortcut(node),
                    std::slice::from_ref(&want),
                    &[have],
                )
                .await
            {
                tracing::error!(node = name, error = %e, "failed to instantly swap NoExecute taints; will try again in the next cycle");
            }
        } else if self.mark_node_for_tainting(node, &want) {
            tracing::info!(
                node = name,
                status = queue_status,
                "node is unhealthy; adding it to the taint queue"
            );
        }
    }

    /// `markNodeForTainting`: queues the node in its zone (again, if it lost the taint since).
    fn mark_node_for_tainting(&self, node: &Node, want: &Taint) -> bool {
        let name = name_of(node);
        let zone = zones::zone_key(node);
        let eviction_rate = self.opts.node_eviction_rate;
        let mut z = lock(&self.zones);
        let q = z
            .tainters
            .entry(zone)
            .or_insert_with(|| RateLimitedTimedQueue::new(eviction_rate));
        if !taints::exists(taints::node_taints(node), want) {
            q.remove(name);
        }
        q.add(
            name,
            node.metadata.uid.as_deref().unwrap_or_default(),
            Instant::now(),
        )
    }

    /// `markNodeAsReachable`: lifts both NoExecute taints and forgets any queued tainting.
    async fn mark_node_as_reachable(&self, node: &Node) -> Result<bool, Error> {
        self.lift_no_execute(node, Read::Shortcut(node)).await
    }

    /// [`mark_node_as_reachable`](Self::mark_node_as_reachable) judged on the node as the
    /// apiserver has it now rather than as cached.
    async fn mark_node_as_reachable_fresh(&self, node: &Node) -> Result<bool, Error> {
        self.lift_no_execute(node, Read::Fresh).await
    }

    async fn lift_no_execute(&self, node: &Node, read: Read<'_>) -> Result<bool, Error> {
        let name = name_of(node);
        self.update_taints(
            name,
            read,
            &[],
            &[
                taints::unreachable_no_execute(),
                taints::not_ready_no_execute(),
            ],
        )
        .await?;
        let zone = zones::zone_key(node);
        Ok(lock(&self.zones)
            .tainters
            .get_mut(&zone)
            .is_some_and(|q| q.remove(name)))
    }

    /// `handleDisruption`: zone states, tainting rates and master disruption mode.
    async fn handle_disruption(
        &self,
        ready_by_zone: &BTreeMap<String, Vec<Option<&str>>>,
        nodes: &[Arc<Node>],
    ) {
        let plan = {
            let z = lock(&self.zones);
            zones::handle_disruption(&z.states, ready_by_zone, &self.opts.rates())
        };
        for report in &plan.reports {
            self.metrics.report(report);
        }
        for zone in &plan.removed {
            self.metrics.zone_gone(zone);
        }
        match plan.mode {
            Some(Mode::EnterMasterDisruption) => {
                tracing::info!(
                    "controller detected that all Nodes are not-Ready; entering master disruption mode"
                );
                // Upstream decides from the node list read at the start of the pass, so a taint
                // the tainting pass added meanwhile survives, and evicts, for the whole
                // disruption; reading each node afresh lifts that one too.
                for node in nodes {
                    if let Err(e) = self.mark_node_as_reachable_fresh(node).await {
                        tracing::error!(node = name_of(node), error = %e, "failed to remove taints from Node");
                    }
                }
            }
            Some(Mode::ExitMasterDisruption) => {
                tracing::info!(
                    "controller detected that some Nodes are Ready; exiting master disruption mode"
                );
                let now = Timestamp::now();
                let mut health = lock(&self.health);
                for node in nodes {
                    if let Some(h) = health.get_mut(name_of(node)) {
                        h.probe = now;
                        h.ready_transition = now;
                    }
                }
            }
            None => {}
        }
        let previous = {
            let mut z = lock(&self.zones);
            let now = Instant::now();
            let eviction_rate = self.opts.node_eviction_rate;
            for (zone, qps) in &plan.limiters {
                z.tainters
                    .entry(zone.clone())
                    .or_insert_with(|| RateLimitedTimedQueue::new(eviction_rate))
                    .swap_limiter(*qps, now);
            }
            std::mem::replace(&mut z.states, plan.states.clone())
        };
        for (zone, state) in &plan.states {
            if previous.get(zone) != Some(state) && plan.mode.is_none() {
                tracing::info!(zone = %zone.escape_debug(), new_state = state.as_str(), "controller detected that zone is now in new state");
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // NoExecute tainting
    // -----------------------------------------------------------------------------------------

    /// `doNoExecuteTaintingPass`: works every zone's queue as far as its rate allows.
    async fn no_execute_tainting_pass(&self) {
        let zone_names: Vec<String> = lock(&self.zones).tainters.keys().cloned().collect();
        for zone in zone_names {
            loop {
                let now = Instant::now();
                let next = lock(&self.zones)
                    .tainters
                    .get_mut(&zone)
                    .and_then(|q| q.next_due(now));
                let Some(value) = next else { break };
                let outcome = self.taint_no_execute(&value).await;
                if let Some(q) = lock(&self.zones).tainters.get_mut(&zone) {
                    q.finish(&value, outcome, now);
                }
            }
        }
    }

    async fn taint_no_execute(&self, value: &TimedValue) -> Outcome {
        let Some(node) = self.nodes.get(None, &value.value) else {
            tracing::info!(node = %value.value, "node no longer present in the cache");
            return Outcome::Done;
        };
        let Some(ready) = health::ready_condition(&node) else {
            tracing::info!(node = %value.value, "failed to get the Ready condition from the node status");
            return Outcome::Retry(Duration::from_millis(50));
        };
        let Some((add, opposite)) = taints::no_execute_swap(&ready.status) else {
            tracing::debug!(node = %value.value, "node was in a taint queue, but it's ready now; ignoring taint request");
            return Outcome::Done;
        };
        match self
            .update_taints(&value.value, Read::Shortcut(&node), &[add], &[opposite])
            .await
        {
            Ok(_) => {
                self.metrics.evicted(&zones::zone_key(&node));
                Outcome::Done
            }
            Err(e) => {
                tracing::error!(node = %value.value, error = %e, "unable to taint unresponsive node");
                Outcome::Retry(Duration::ZERO)
            }
        }
    }

    /// `SwapNodeControllerTaint` in one write: reads the node (from the apiserver's cache first,
    /// as upstream), adds and removes, and patches the whole taint list with a resourceVersion
    /// precondition, retrying conflicts. With nothing to add, a cached node lacking every taint
    /// to remove saves the read (upstream `RemoveTaintOffNode`'s short cut). Returns whether it
    /// wrote.
    ///
    /// Upstream adds and removes with two patches; one patch gives the same end state without a
    /// moment where a node carries both `not-ready` and `unreachable`.
    async fn update_taints(
        &self,
        name: &str,
        read: Read<'_>,
        add: &[Taint],
        del: &[Taint],
    ) -> Result<bool, Error> {
        if add.is_empty() {
            if del.is_empty() {
                return Ok(false);
            }
            if let Read::Shortcut(node) = read
                && !del
                    .iter()
                    .any(|t| taints::exists(taints::node_taints(node), t))
            {
                return Ok(false);
            }
        }
        let api = Api::<Node>::all(self.client.clone());
        let mut attempt = 0;
        loop {
            let params = if attempt == 0 && !matches!(read, Read::Fresh) {
                GetParams::any()
            } else {
                GetParams::default()
            };
            attempt += 1;
            let node = api.get_with(name, &params).await?;
            let Some(new) = taints::swap(taints::node_taints(&node), add, del, Timestamp::now())
            else {
                return Ok(false);
            };
            let rv = node.metadata.resource_version.clone().unwrap_or_default();
            match api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(taints::taints_patch(&rv, &new)),
                )
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_conflict(&e) && attempt < UPDATE_TAINT_STEPS => {
                    tokio::time::sleep(jittered(UPDATE_TAINT_BACKOFF)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // NoSchedule taints and labels, on node changes
    // -----------------------------------------------------------------------------------------

    /// `doNoScheduleTaintingPass` and `reconcileNodeLabels` for one node.
    ///
    /// Upstream drops the node after a failure until its next change; requeueing with backoff
    /// instead matters where heartbeats go to the Lease and the Node itself rarely changes.
    async fn node_processing_pass(&self, name: &str) -> Result<(), Error> {
        let Some(node) = self.nodes.get(None, name) else {
            return Ok(());
        };
        let mut errors = Vec::new();
        let (add, del) = taints::no_schedule_changes(&node);
        if (!add.is_empty() || !del.is_empty())
            && let Err(e) = self
                .update_taints(name, Read::Shortcut(&node), &add, &del)
                .await
        {
            errors.push(format!(
                "failed to swap NoSchedule taints of node {name}: {e}"
            ));
        }
        let labels = taints::labels_to_reconcile(&node);
        if !labels.is_empty()
            && let Err(e) = Api::<Node>::all(self.client.clone())
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"metadata": {"labels": labels}})),
                )
                .await
            && !is_not_found(&e)
        {
            errors.push(format!("failed to update labels of node {name}: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Aggregate(errors.join("; ")))
        }
    }

    // -----------------------------------------------------------------------------------------
    // Pods
    // -----------------------------------------------------------------------------------------

    /// `processPod`: a pod bound to a node the controller knows is not Ready is marked not Ready.
    async fn process_pod(&self, key: &PodKey) -> Result<(), Error> {
        let Some(pod) = self.pods.get(Some(&key.0), &key.1) else {
            return Ok(());
        };
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let Some(health) = lock(&self.health).get(&node_name).cloned() else {
            // Not judged yet, or deleted meanwhile.
            return Ok(());
        };
        if self.nodes.get(None, &node_name).is_none() {
            return Err(Error::NodeNotCached(node_name));
        }
        let Some(ready) = health.ready else {
            return Ok(());
        };
        if ready.status != "True" {
            self.mark_pods_not_ready(&[pod], &node_name).await?;
        }
        Ok(())
    }

    /// `MarkPodsNotReady`: sets the Ready condition of the node's pods to False (where it is not
    /// already) and records `NodeNotReady` on each.
    ///
    /// Upstream PUTs the whole pod status; a strategic-merge patch of the one condition, with the
    /// pod's UID as precondition, writes only what the controller owns.
    async fn mark_pods_not_ready(&self, pods: &[Arc<Pod>], node_name: &str) -> Result<(), Error> {
        let now = Timestamp::now();
        let mut errors = Vec::new();
        for pod in pods {
            let Some(patch) = not_ready_patch(pod, node_name, now) else {
                continue;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            tracing::info!(pod = %format!("{ns}/{name}"), "updating ready status of pod to false");
            match Api::<Pod>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), error = %e, "failed to update status for pod");
                    errors.push(format!("{ns}/{name}: {e}"));
                }
            }
            self.recorder.event(
                &object_reference(pod.as_ref()),
                EventType::Warning,
                "NodeNotReady",
                "Node is not ready",
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Aggregate(errors.join("; ")))
        }
    }

    fn record_node_event(&self, node: &Node, reason: &str, message: &str) {
        self.recorder.event(
            &node_ref(node),
            EventType::Normal,
            reason,
            format!("Node {} event: {message}", name_of(node)),
        );
    }
}

/// How a taint write reads the node.
#[derive(Clone, Copy)]
enum Read<'a> {
    /// From the apiserver's cache first (upstream's `resourceVersion=0`), afresh after a
    /// conflict; with nothing to add, skipped when this cached copy has none of the taints to
    /// remove (upstream `RemoveTaintOffNode`'s short cut).
    Shortcut(&'a Node),
    /// A consistent read from the start, and no short cut.
    Fresh,
}

/// The status patch that turns a pod's Ready condition False (`UpdatePodCondition` semantics:
/// the transition time moves only with the status), or None when the pod is not on `node_name`,
/// has no Ready condition, or is already not Ready.
pub fn not_ready_patch(pod: &Pod, node_name: &str, now: Timestamp) -> Option<serde_json::Value> {
    let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name);
    if !on_node {
        return None;
    }
    let ready = pod_ready_condition(pod)?;
    if ready.status == "False" {
        return None;
    }
    let mut cond = ready.clone();
    cond.status = "False".into();
    cond.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    Some(json!({
        "metadata": {"uid": pod.metadata.uid},
        "status": {"conditions": [cond]},
    }))
}

/// `base` plus up to `base` again (wait.Backoff with Jitter 1.0).
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, ready: Option<&str>) -> Pod {
        let conditions: Vec<serde_json::Value> = ready
            .into_iter()
            .map(|s| {
                json!({"type": "Ready", "status": s, "lastTransitionTime": "2026-01-01T00:00:00Z",
                       "reason": "PodReady"})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"nodeName": node, "containers": []},
            "status": {"conditions": conditions},
        }))
        .expect("pod")
    }

    #[test]
    fn a_ready_pod_on_the_node_is_patched_not_ready_with_a_new_transition_time() {
        let now: Timestamp = "2026-02-01T00:00:00Z".parse().expect("time");
        let patch = not_ready_patch(&pod("n1", Some("True")), "n1", now).expect("patch");
        assert_eq!(
            patch,
            json!({"metadata": {"uid": "u1"}, "status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "PodReady",
                "lastTransitionTime": "2026-02-01T00:00:00Z"}]}})
        );
    }

    #[test]
    fn pods_elsewhere_already_not_ready_or_without_a_ready_condition_are_left_alone() {
        let now = Timestamp::UNIX_EPOCH;
        assert!(not_ready_patch(&pod("n2", Some("True")), "n1", now).is_none());
        assert!(not_ready_patch(&pod("n1", Some("False")), "n1", now).is_none());
        assert!(not_ready_patch(&pod("n1", None), "n1", now).is_none());
    }

    #[test]
    fn the_lease_circuit_breaker_holds_until_the_cache_catches_up() {
        let c = LeaseConsistency::default();
        assert!(c.ensure_ready().is_ok());
        let lease = |rv: &str| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": "n", "resourceVersion": rv}}))
                .expect("lease")
        };
        c.saw(&lease("10"));
        c.wrote_at("15");
        assert!(c.ensure_ready().is_err());
        c.saw(&lease("14"));
        assert!(c.ensure_ready().is_err());
        c.saw(&lease("15"));
        assert!(c.ensure_ready().is_ok());
        // Cleared once caught up.
        c.wrote_at("12");
        assert!(c.ensure_ready().is_ok());
    }

    #[test]
    fn defaults_are_upstreams() {
        let d = NodeLifecycleOptions::default();
        assert_eq!(d.node_monitor_period, Duration::from_secs(5));
        assert_eq!(d.node_monitor_grace_period, Duration::from_secs(50));
        assert_eq!(d.node_startup_grace_period, Duration::from_secs(60));
        assert_eq!(d.node_eviction_rate, 0.1);
        assert_eq!(d.secondary_node_eviction_rate, 0.01);
        assert_eq!(d.large_cluster_size_threshold, 50);
        assert_eq!(d.unhealthy_zone_threshold, 0.55);
    }
}
