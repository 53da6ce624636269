//! Ferrite's scheduler: the default profile's core of kube-scheduler (pkg/scheduler).
//!
//! - [`cache`]: nodes and the pods bound or assumed on them (backend/cache);
//! - [`queue`]: activeQ / backoffQ / unschedulable / gated (backend/queue);
//! - [`plugins`]: the default profile's filters and scores, as pure functions;
//! - [`framework`]: one scheduling attempt (schedule_one.go `schedulePod`) and `FitError`;
//! - this file: the shell — informer handlers feed the cache and queue, one loop runs the
//!   scheduling cycles, and bindings, status patches and events run asynchronously.
//!
//! Not yet covered: volume plugins, DRA, preemption (the
//! FailedScheduling message says what upstream's PostFilter says when it finds no victims),
//! extenders, multiple profiles and `--config`.

pub mod cache;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod selector;
#[cfg(test)]
mod testutil;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrite_runtime::component::Context;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::{Change, Informer};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::Notify;

use crate::cache::Cache;
use crate::framework::Algorithm;
use crate::metrics::Metrics;
use crate::plugins::pod_topology_spread::{self, OwnerObjects};
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
}

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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this scheduler is responsible for the pod (`responsibleForPod`).
fn responsible(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER_NAME)
        == DEFAULT_SCHEDULER_NAME
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
fn pending(pod: &Pod) -> bool {
    !assigned(pod) && !terminal(pod) && responsible(pod)
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
                } else if pending(p) {
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
                } else if pending(new) {
                    lock(&s.queue).update(new.clone(), now);
                } else {
                    lock(&s.queue).delete(&pod_key(new));
                }
            }
            Change::Deleted(p) => {
                if assigned(p) {
                    lock(&s.cache).remove_pod(p);
                    lock(&s.queue).move_all_to_active_or_backoff(now);
                } else {
                    lock(&s.queue).delete(&pod_key(p));
                }
            }
        }
        s.wake.notify_one();
    });
}

/// Runs the scheduler until the context's token is cancelled.
pub async fn run(ctx: Context) -> Result<(), String> {
    let metrics = ctx.registry.with(Metrics::register);
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        queue: Mutex::new(SchedulingQueue::default()),
        wake: Notify::new(),
    });
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    register_handlers(&shared, &nodes, &pods);
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
    tracing::info!("scheduler started with the default profile");

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

    let binder = Binder {
        client: ctx.client.clone(),
        events: ctx.events.for_controller(DEFAULT_SCHEDULER_NAME),
        shared: shared.clone(),
        metrics: metrics.clone(),
        pods: pods.clone(),
        spread_listers,
    };
    let mut algorithm = Algorithm::default();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
    loop {
        let popped = lock(&shared.queue).pop(Instant::now());
        let Some(qp) = popped else {
            tokio::select! {
                _ = ctx.token.cancelled() => break,
                _ = shared.wake.notified() => {}
            }
            continue;
        };
        binder.schedule_one(&mut algorithm, &mut rng, qp);
        // Let informer handlers and binding tasks run between cycles.
        tokio::task::yield_now().await;
    }
    ticker.abort();
    Ok(())
}

#[derive(Clone)]
struct Binder {
    client: kube::Client,
    events: EventRecorder,
    shared: Arc<Shared>,
    metrics: Metrics,
    pods: Informer<Pod>,
    spread_listers: SpreadListers,
}

impl Binder {
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
        let result = {
            let cache = lock(&self.shared.cache);
            algorithm.schedule_with(&pod, &cache, &default_selector, rng)
        };
        match result {
            Ok(r) => {
                lock(&self.shared.cache).assume(&pod, &r.suggested_host);
                let this = self.clone();
                tokio::spawn(async move {
                    this.bind(qp, r.suggested_host, start).await;
                });
            }
            Err(e) => {
                {
                    let mut q = lock(&self.shared.queue);
                    q.set_unschedulable_plugins(&qp.key, e.rejecting_plugins());
                    q.requeue_after_failure(&qp.key, true, Instant::now());
                }
                self.metrics.attempt(
                    metrics::UNSCHEDULABLE,
                    DEFAULT_SCHEDULER_NAME,
                    start.elapsed().as_secs_f64(),
                );
                let this = self.clone();
                tokio::spawn(async move {
                    this.report_failure(&pod, REASON_UNSCHEDULABLE, &e.to_string())
                        .await
                });
            }
        }
    }

    /// The binding cycle: POST pods/binding (DefaultBinder). On failure the assumed pod is
    /// forgotten and the pod backs off.
    async fn bind(&self, qp: queue::QueuedPod, node: String, start: Instant) {
        let pod = qp.pod.clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
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
                    DEFAULT_SCHEDULER_NAME,
                    start.elapsed().as_secs_f64(),
                );
                self.events.normal(
                    pod.as_ref(),
                    "Scheduled",
                    format!("Successfully assigned {ns}/{name} to {node}"),
                );
            }
            Err(e) => {
                tracing::warn!(pod = %qp.key, %node, error = %e, "binding failed");
                lock(&self.shared.cache).forget(&uid);
                lock(&self.shared.queue).requeue_after_failure(&qp.key, false, Instant::now());
                self.metrics.attempt(
                    metrics::ERROR,
                    DEFAULT_SCHEDULER_NAME,
                    start.elapsed().as_secs_f64(),
                );
                self.shared.wake.notify_one();
                self.report_failure(&pod, REASON_SCHEDULER_ERROR, &e.to_string())
                    .await;
            }
        }
    }

    /// `handleSchedulingFailure`: event FailedScheduling and condition PodScheduled=False with
    /// `reason` (Unschedulable for rejections, SchedulerError for errors), the condition only
    /// when it changes.
    async fn report_failure(&self, pod: &Pod, reason: &str, message: &str) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        // The pod may have been deleted or bound meanwhile.
        let Some(current) = self.pods.get(Some(&ns), &name) else {
            return;
        };
        if current.metadata.uid != pod.metadata.uid || assigned(&current) {
            return;
        }
        self.events.warning(
            current.as_ref(),
            "FailedScheduling",
            truncate_message(message),
        );
        let generation = current.metadata.generation;
        let existing = current
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if existing.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
                && c.observed_generation == generation
        }) {
            return;
        }
        // `UpdatePodCondition`: the transition time moves only when the status does.
        let transition = match existing {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .unwrap_or_else(time_now);
        let patch = serde_json::json!({
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
