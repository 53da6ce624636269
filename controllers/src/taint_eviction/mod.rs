//! The taint-eviction controller (upstream `pkg/controller/tainteviction`): deletes pods from
//! nodes with NoExecute taints they do not tolerate, at once or once their `tolerationSeconds`
//! run out ([`tolerations`], [`timed`]). Before deleting a pod it marks it with the
//! `DisruptionTarget` condition (reason `DeletionByTaintManager`), and it records
//! `TaintManagerEviction` events when it marks a pod for deletion or cancels that.
//!
//! This file is the shell: node and pod changes are queued, a single worker (node changes first,
//! as upstream's workers prefer them) decides per pod, timers do the deletions.

pub mod timed;
pub mod tolerations;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_runtime::events::{EventRecorder, EventType};
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue};
use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Pod;
use crate::manager::ControllerContext;
use crate::pods_by_node::PodsByNode;
use timed::{TimedWorkerQueue, WorkFn};
use tolerations::Decision;

/// Canonical controller name; also the events' source component, as upstream.
pub const NAME: &str = "taint-eviction-controller";

/// Deletion attempts per pod, 10 ms apart (upstream `retries`).
const DELETE_RETRIES: u32 = 5;

/// Upstream's `taint_eviction_controller_*` metrics
/// (pkg/controller/tainteviction/metrics/metrics.go).
#[derive(Clone)]
pub struct TaintEvictionMetrics {
    pub deletions: Counter,
    pub deletion_latency: Histogram,
}

impl TaintEvictionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = TaintEvictionMetrics {
            deletions: Counter::default(),
            deletion_latency: Histogram::new([
                0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 120.0, 180.0, 240.0,
            ]),
        };
        let sub = registry.sub_registry_with_prefix("taint_eviction_controller");
        sub.register(
            "pod_deletions",
            "Total number of Pods deleted by TaintEvictionController since its start.",
            m.deletions.clone(),
        );
        // Upstream observes the duration multiplied by a second (a unit slip that reports
        // nanoseconds times 1e9); this reports seconds, as the name and help say.
        sub.register(
            "pod_deletion_duration_seconds",
            "Latency, in seconds, between the time when a taint effect has been activated for the Pod and its deletion via TaintEvictionController.",
            m.deletion_latency.clone(),
        );
        m
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PodUpdate {
    namespace: String,
    name: String,
    node_name: String,
}

struct Shared {
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    pods_by_node: PodsByNode,
    recorder: EventRecorder,
    /// Each node's NoExecute taints, as last handled.
    tainted_nodes: Mutex<HashMap<String, Vec<Taint>>>,
    evictions: TimedWorkerQueue,
    node_queue: WorkQueue<String>,
    pod_queue: WorkQueue<PodUpdate>,
}

fn pod_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectReference::default()
    }
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn node_name_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn tolerations_of(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn node_no_execute(node: &Node) -> Vec<Taint> {
    tolerations::no_execute(crate::node_lifecycle::taints::node_taints(node))
}

/// The controller's `StartFn`.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let recorder = ctx.events.for_controller(NAME);
    let metrics = ctx.registry.with(TaintEvictionMetrics::register);
    let work = deletion_work(ctx.client.clone(), recorder.clone(), metrics);
    let shared = Arc::new(Shared {
        nodes: ctx.informers.informer::<Node>(),
        pods_by_node: ctx.pods_by_node(),
        pods: ctx.informers.informer::<Pod>(),
        recorder,
        tainted_nodes: Mutex::default(),
        evictions: TimedWorkerQueue::new(work, ctx.token.clone()),
        node_queue: WorkQueue::new(
            "noexec_taint_node",
            RateLimiter::item_exponential(Duration::from_millis(5), Duration::from_secs(1000)),
        )
        .with_metrics(&ctx.queue_metrics),
        pod_queue: WorkQueue::new(
            "noexec_taint_pod",
            RateLimiter::item_exponential(Duration::from_millis(5), Duration::from_secs(1000)),
        )
        .with_metrics(&ctx.queue_metrics),
    });
    let s = shared.clone();
    shared.pods.add_handler(move |change| match change {
        Change::Added(p) => s.pod_updated(None, Some(p)),
        Change::Updated { old, new } => s.pod_updated(Some(old), Some(new)),
        Change::Deleted(p) => s.pod_updated(Some(p), None),
    });
    let s = shared.clone();
    shared.nodes.add_handler(move |change| match change {
        Change::Added(n) => s.node_updated(None, Some(n)),
        Change::Updated { old, new } => s.node_updated(Some(old), Some(new)),
        Change::Deleted(n) => s.node_updated(Some(n), None),
    });
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting");
        shared.run(token).await;
        shared.node_queue.shut_down();
        shared.pod_queue.shut_down();
        tracing::info!(controller = NAME, "shutting down controller");
        Ok(())
    }
    .boxed())
}

/// `deletePodHandler`: records the eviction, then marks and deletes the pod, retrying a few
/// times.
fn deletion_work(
    client: kube::Client,
    recorder: EventRecorder,
    metrics: TaintEvictionMetrics,
) -> WorkFn {
    Arc::new(move |key: String, fire_at: Instant| {
        let client = client.clone();
        let recorder = recorder.clone();
        let metrics = metrics.clone();
        async move {
            let (ns, name) = split_key(&key);
            tracing::info!(controller = NAME, pod = %key, "deleting pod");
            recorder.event(
                &pod_ref(ns, name),
                EventType::Normal,
                "TaintManagerEviction",
                format!("Marking for deletion Pod {key}"),
            );
            let mut last = None;
            for _ in 0..DELETE_RETRIES {
                match add_condition_and_delete(&client, ns, name).await {
                    Ok(()) => {
                        metrics.deletions.inc();
                        metrics
                            .deletion_latency
                            .observe(fire_at.elapsed().as_secs_f64());
                        return;
                    }
                    Err(e) if matches!(&e, kube::Error::Api(s) if s.is_not_found()) => return,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if let Some(e) = last {
                tracing::error!(pod = %key, error = %e, "TaintEvictionController: timed worker failed");
            }
        }
        .boxed()
    })
}

/// `addConditionAndDeletePod`: reads the pod live, adds `DisruptionTarget`, deletes it.
async fn add_condition_and_delete(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let pod = api.get(name).await?;
    if let Some(patch) = tolerations::disruption_patch(&pod, Timestamp::now()) {
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
    }
    api.delete(name, &DeleteParams::default()).await?;
    Ok(())
}

enum Item {
    Node(String),
    Pod(PodUpdate),
}

impl Shared {
    /// `PodUpdated`: a pod's node or tolerations changed, or it came or went.
    fn pod_updated(&self, old: Option<&Pod>, new: Option<&Pod>) {
        if let (Some(o), Some(n)) = (old, new)
            && tolerations_of(o) == tolerations_of(n)
            && node_name_of(o) == node_name_of(n)
        {
            return;
        }
        let Some(pod) = new.or(old) else { return };
        self.pod_queue.add(PodUpdate {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node_name: node_name_of(pod),
        });
    }

    /// `NodeUpdated`: a node's NoExecute taints changed, or it came or went.
    fn node_updated(&self, old: Option<&Node>, new: Option<&Node>) {
        if let (Some(o), Some(n)) = (old, new)
            && node_no_execute(o) == node_no_execute(n)
        {
            return;
        }
        let Some(node) = new.or(old) else { return };
        self.node_queue
            .add(node.metadata.name.clone().unwrap_or_default());
    }

    async fn run(&self, token: CancellationToken) {
        loop {
            // Node changes first: pods wait while their node's taints are being taken in.
            let item = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                n = self.node_queue.get() => match n { Some(n) => Item::Node(n), None => return },
                p = self.pod_queue.get() => match p { Some(p) => Item::Pod(p), None => return },
            };
            match item {
                Item::Node(name) => {
                    self.handle_node_update(&name);
                    self.node_queue.done(&name);
                }
                Item::Pod(update) => {
                    self.handle_pod_update(&update);
                    self.pod_queue.done(&update);
                }
            }
        }
    }

    fn cancel_with_event(&self, key: &str) {
        if self.evictions.cancel_work(key) {
            let (ns, name) = split_key(key);
            self.recorder.event(
                &pod_ref(ns, name),
                EventType::Normal,
                "TaintManagerEviction",
                format!("Cancelling deletion of Pod {key}"),
            );
        }
    }

    fn process_pod_on_node(&self, key: &str, tolerations: &[Toleration], taints: &[Taint]) {
        let now = Instant::now();
        let scheduled = self.evictions.timer(key).map(|t| t.created_at);
        match tolerations::decide(tolerations, taints, scheduled, now) {
            Decision::EvictNow => {
                tracing::info!(
                    pod = key,
                    "not all taints are tolerated after update for pod on node"
                );
                self.cancel_with_event(key);
                self.evictions.add_work(key, now, now);
            }
            Decision::Cancel => {
                tracing::debug!(
                    pod = key,
                    "current tolerations for pod tolerate forever, cancelling any scheduled deletion"
                );
                self.cancel_with_event(key);
            }
            Decision::Keep => {}
            Decision::Schedule {
                created_at,
                fire_at,
                replace,
            } => {
                if replace {
                    self.cancel_with_event(key);
                }
                self.evictions.add_work(key, created_at, fire_at);
            }
        }
    }

    fn handle_pod_update(&self, update: &PodUpdate) {
        let key = format!("{}/{}", update.namespace, update.name);
        let Some(pod) = self.pods.get(Some(&update.namespace), &update.name) else {
            tracing::debug!(pod = %key, "noticed pod deletion");
            self.cancel_with_event(&key);
            return;
        };
        // Queued for another node: that item is the one to act on.
        if node_name_of(&pod) != update.node_name || update.node_name.is_empty() {
            return;
        }
        let taints = {
            let tainted = self
                .tainted_nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match tainted.get(&update.node_name) {
                Some(t) => t.clone(),
                // The node has no NoExecute taints, or its removal already cancelled evictions.
                None => return,
            }
        };
        self.process_pod_on_node(&key, tolerations_of(&pod), &taints);
    }

    fn handle_node_update(&self, name: &str) {
        let Some(node) = self.nodes.get(None, name) else {
            tracing::debug!(node = name, "noticed node deletion");
            self.tainted_nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(name);
            return;
        };
        let taints = node_no_execute(&node);
        {
            // Updated before the pods are listed: a pod bound meanwhile is handled by its own
            // update against these taints.
            let mut tainted = self
                .tainted_nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if taints.is_empty() {
                tainted.remove(name);
            } else {
                tainted.insert(name.to_owned(), taints.clone());
            }
        }
        let pods = self.pods_by_node.pods_on(name);
        if taints.is_empty() {
            for pod in &pods {
                self.cancel_with_event(&crate::pod_util::key_of(&pod.metadata));
            }
            return;
        }
        for pod in &pods {
            self.process_pod_on_node(
                &crate::pod_util::key_of(&pod.metadata),
                tolerations_of(pod),
                &taints,
            );
        }
    }
}
