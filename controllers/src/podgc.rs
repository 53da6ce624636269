//! The pod garbage collector: every 20 s it force-deletes (grace period 0)
//! - terminated pods beyond `--terminated-pod-gc-threshold`, evicted ones first, then oldest;
//! - terminating pods on not-ready nodes tainted `node.kubernetes.io/out-of-service`;
//! - orphaned pods, bound to a node that no longer exists (after a 40 s quarantine and a live
//!   GET of the node), marked `DisruptionTarget` first;
//! - terminating pods that were never scheduled.
//!
//! A pod not yet in a terminal phase is patched to `Failed` before it is deleted, since no kubelet
//! will ever do it.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/podgc/gc_controller.go.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use crate::cache::Pod;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::manager::ControllerContext;

pub const NAME: &str = "pod-garbage-collector-controller";

/// `gcCheckPeriod`: how often the collector runs.
pub const GC_CHECK_PERIOD: Duration = Duration::from_secs(20);
/// `quarantineTime`: how long a node missing from the cache is given to show up before a live GET
/// decides whether it is really gone.
pub const QUARANTINE_TIME: Duration = Duration::from_secs(40);
/// `--terminated-pod-gc-threshold` default (pkg/controller/podgc/config/v1alpha1/defaults.go).
/// A threshold of 0 or less disables this part.
pub const DEFAULT_TERMINATED_POD_GC_THRESHOLD: i64 = 12500;

pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// `eviction.Reason`: the status reason of a pod the kubelet evicted.
const EVICTED_REASON: &str = "Evicted";
/// Deletes in flight at once (upstream starts one goroutine per pod; the client's rate limit
/// bounds both).
const PARALLEL_DELETES: usize = 16;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `isPodTerminated`: any phase but Pending, Running and Unknown (an empty phase included, as
/// upstream).
pub fn is_terminated(pod: &Pod) -> bool {
    !matches!(phase(pod), "Pending" | "Running" | "Unknown")
}

fn is_evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some(EVICTED_REASON)
}

/// `byEvictionAndCreationTimestamp`: evicted pods first, then oldest first, then by name.
pub fn eviction_then_age(a: &Pod, b: &Pod) -> Ordering {
    is_evicted(b)
        .cmp(&is_evicted(a))
        .then_with(|| {
            let ca = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let cb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ca.cmp(&cb)
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// `gcTerminated`: the terminated pods beyond `threshold`, in deletion order. A threshold of 0
/// or less disables this collection.
pub fn terminated_victims<'a>(pods: &[&'a Pod], threshold: i64) -> Vec<&'a Pod> {
    if threshold <= 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&Pod> = pods.iter().copied().filter(|p| is_terminated(p)).collect();
    let excess = usize::try_from(i64::try_from(terminated.len()).unwrap_or(i64::MAX) - threshold)
        .unwrap_or(0);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by(|a, b| eviction_then_age(a, b));
    terminated.truncate(excess);
    terminated
}

pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == TAINT_OUT_OF_SERVICE))
}

/// `gcTerminating`: terminating pods on a known node that is not ready and carries the
/// out-of-service taint, in deletion order.
pub fn out_of_service_victims<'a>(pods: &[&'a Pod], nodes: &BTreeMap<&str, &Node>) -> Vec<&'a Pod> {
    let mut victims: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| is_terminating(p))
        .filter(|p| {
            nodes
                .get(node_name(p))
                .is_some_and(|n| !node_is_ready(n) && out_of_service(n))
        })
        .collect();
    victims.sort_by(|a, b| eviction_then_age(a, b));
    victims
}

/// Nodes that pods are bound to but the node cache does not know: candidates for quarantine.
pub fn unknown_nodes(pods: &[&Pod], nodes: &BTreeMap<&str, &Node>) -> BTreeSet<String> {
    pods.iter()
        .map(|p| node_name(p))
        .filter(|n| !n.is_empty() && !nodes.contains_key(n))
        .map(str::to_owned)
        .collect()
}

/// The orphans: pods bound to a node confirmed deleted.
pub fn orphans<'a>(pods: &[&'a Pod], deleted_nodes: &BTreeSet<String>) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| deleted_nodes.contains(node_name(p)))
        .collect()
}

/// `gcUnscheduledTerminating`: terminating pods never bound to a node.
pub fn unscheduled_terminating<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter()
        .copied()
        .filter(|p| is_terminating(p) && node_name(p).is_empty())
        .collect()
}

/// Upstream's delaying `nodeQueue`: a node missing from the cache waits `QUARANTINE_TIME` (the
/// first deadline wins) before it is checked, and is checked once per quarantine.
#[derive(Debug, Default)]
pub struct Quarantine {
    deadlines: BTreeMap<String, Instant>,
}

impl Quarantine {
    /// Puts newly seen unknown nodes in quarantine at `now`.
    pub fn observe(&mut self, unknown: &BTreeSet<String>, now: Instant) {
        for node in unknown {
            self.deadlines
                .entry(node.clone())
                .or_insert(now + QUARANTINE_TIME);
        }
    }

    /// Takes out the nodes whose quarantine is over and that the cache still does not know;
    /// those are to be checked with a live GET.
    pub fn due(&mut self, now: Instant, known: &BTreeMap<&str, &Node>) -> Vec<String> {
        let due: Vec<String> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &due {
            self.deadlines.remove(n);
        }
        due.into_iter()
            .filter(|n| !known.contains_key(n.as_str()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}

/// The `DisruptionTarget` condition upstream sets on an orphan.
pub fn orphan_condition() -> (&'static str, &'static str) {
    ("DeletionByPodGC", "PodGC: node no longer exists")
}

/// The strategic-merge status patch that marks `pod` Failed (with `condition` = (reason,
/// message) as a `DisruptionTarget=True` condition), or None when the pod is already in a terminal
/// phase. The UID makes the patch a precondition on the very pod seen, as upstream's
/// `PatchPodStatus`; `observedGeneration` is set because PodObservedGenerationTracking is GA.
pub fn fail_patch(pod: &Pod, condition: Option<(&str, &str)>, now: Timestamp) -> Option<Value> {
    if matches!(phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    let generation = pod.metadata.generation.unwrap_or_default();
    let mut status = json!({"phase": "Failed"});
    if generation != 0 {
        status["observedGeneration"] = json!(generation);
    }
    if let Some((reason, message)) = condition {
        // UpdatePodCondition keeps the transition time when the status does not change.
        let previous = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"));
        let transition = match previous {
            Some(c) if c.status == "True" => c.last_transition_time.as_ref().map_or(now, |t| t.0),
            _ => now,
        };
        let mut cond = json!({
            "type": "DisruptionTarget",
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition.to_string(),
        });
        if generation != 0 {
            cond["observedGeneration"] = json!(generation);
        }
        status["conditions"] = json!([cond]);
    }
    Some(json!({
        "metadata": {"uid": pod.metadata.uid},
        "status": status,
    }))
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marking pod {key} failed: {source}")]
    Patch { key: String, source: kube::Error },
    #[error("deleting pod {key}: {source}")]
    Delete { key: String, source: kube::Error },
}

/// Upstream's `pod_gc_collector_*` metrics (pkg/controller/podgc/metrics).
#[derive(Clone, Default)]
pub struct PodGcMetrics {
    deleting: Family<ReasonLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    namespace: String,
    reason: &'static str,
}

/// The `reason` label values.
pub const REASON_TERMINATED: &str = "terminated";
pub const REASON_OUT_OF_SERVICE: &str = "out-of-service";
pub const REASON_ORPHANED: &str = "orphaned";
pub const REASON_UNSCHEDULED: &str = "unscheduled";

impl PodGcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("pod_gc_collector");
        sub.register(
            "force_delete_pods",
            "Number of pods that are being forcefully deleted since the Pod GC Controller started.",
            m.deleting.clone(),
        );
        sub.register(
            "force_delete_pod_errors",
            "Number of errors encountered when forcefully deleting the pods since the Pod GC Controller started.",
            m.errors.clone(),
        );
        m
    }

    fn record(&self, namespace: &str, reason: &'static str, failed: bool) {
        let labels = ReasonLabels {
            namespace: namespace.to_owned(),
            reason,
        };
        self.deleting.get_or_create(&labels).inc();
        if failed {
            self.errors.get_or_create(&labels).inc();
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

struct Collector {
    client: kube::Client,
    pods: ferrite_runtime::informer::Informer<Pod>,
    nodes: ferrite_runtime::informer::Informer<Node>,
    threshold: i64,
    quarantine: Quarantine,
    metrics: PodGcMetrics,
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let mut gc = Collector {
        client: ctx.client.clone(),
        pods: ctx.informers.informer::<Pod>(),
        nodes: ctx.informers.informer::<Node>(),
        threshold: ctx.settings.terminated_pod_gc_threshold,
        quarantine: Quarantine::default(),
        metrics: ctx.registry.once(NAME, PodGcMetrics::register),
    };
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting controller");
        loop {
            let started = Instant::now();
            gc.run_once(started).await;
            // wait.UntilWithContext: the period counts from the end of the previous run.
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(GC_CHECK_PERIOD) => {}
            }
        }
        tracing::info!(controller = NAME, "shutting down controller");
        Ok(())
    }
    .boxed())
}

impl Collector {
    async fn run_once(&mut self, now: Instant) {
        let pods = self.pods.store().state();
        let nodes = self.nodes.store().state();
        let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let nodes: BTreeMap<&str, &Node> = nodes
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
            .collect();
        let mut done: HashSet<String> = HashSet::new();

        let terminated = terminated_victims(&pods, self.threshold);
        if !terminated.is_empty() {
            tracing::info!(num_pods = terminated.len(), "garbage collecting pods");
        }
        self.delete_all(&terminated, None, REASON_TERMINATED, &mut done)
            .await;

        let out_of_service = out_of_service_victims(&pods, &nodes);
        self.delete_all(&out_of_service, None, REASON_OUT_OF_SERVICE, &mut done)
            .await;

        self.quarantine.observe(&unknown_nodes(&pods, &nodes), now);
        let mut deleted_nodes = BTreeSet::new();
        for node in self.quarantine.due(now, &nodes) {
            match Api::<Node>::all(self.client.clone()).get_opt(&node).await {
                Ok(None) => {
                    deleted_nodes.insert(node);
                }
                Ok(Some(_)) => {}
                // Put back in quarantine by the next run if still needed (upstream).
                Err(e) => tracing::error!(node = %node, error = %e, "error while getting node"),
            }
        }
        let orphaned = orphans(&pods, &deleted_nodes);
        for pod in &orphaned {
            tracing::info!(pod = %pod_key(pod), node = node_name(pod), "found orphaned pod assigned to the node, deleting");
        }
        self.delete_all(
            &orphaned,
            Some(orphan_condition()),
            REASON_ORPHANED,
            &mut done,
        )
        .await;

        let unscheduled = unscheduled_terminating(&pods);
        self.delete_all(&unscheduled, None, REASON_UNSCHEDULED, &mut done)
            .await;
    }

    async fn delete_all(
        &self,
        victims: &[&Pod],
        condition: Option<(&'static str, &'static str)>,
        reason: &'static str,
        done: &mut HashSet<String>,
    ) {
        let todo: Vec<Pod> = victims
            .iter()
            .filter(|p| done.insert(pod_key(p)))
            .map(|p| (*p).clone())
            .collect();
        let client = self.client.clone();
        let results: Vec<(String, Result<(), Error>)> = futures::stream::iter(todo)
            .map(move |pod| {
                let client = client.clone();
                async move {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    (ns, mark_failed_and_delete(client, pod, condition).await)
                }
            })
            .buffer_unordered(PARALLEL_DELETES)
            .collect()
            .await;
        for (ns, result) in results {
            self.metrics.record(&ns, reason, result.is_err());
            if let Err(e) = result {
                tracing::error!(error = %e, reason, "pod garbage collection failed");
            }
        }
    }
}

/// `markFailedAndDeletePodWithCondition`.
async fn mark_failed_and_delete(
    client: kube::Client,
    pod: Pod,
    condition: Option<(&'static str, &'static str)>,
) -> Result<(), Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<Pod>::namespaced(client, ns);
    tracing::info!(pod = %pod_key(&pod), "PodGC is force deleting Pod");
    if let Some(patch) = fail_patch(&pod, condition, Timestamp::now()) {
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(source) => {
                return Err(Error::Patch {
                    key: pod_key(&pod),
                    source,
                });
            }
        }
    }
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(Error::Delete {
            key: pod_key(&pod),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod fixture: `Pod::test("name")` with builder methods.
    trait Fixture {
        fn test(name: &str) -> Self;
        fn phase(self, phase: &str) -> Self;
        fn reason(self, reason: &str) -> Self;
        fn created(self, at: &str) -> Self;
        fn on(self, node: &str) -> Self;
        fn terminating(self) -> Self;
    }

    impl Fixture for Pod {
        fn test(name: &str) -> Self {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"containers": []},
                "status": {"phase": "Running"},
            }))
            .unwrap_or_default()
        }
        fn phase(mut self, phase: &str) -> Self {
            self.status.get_or_insert_default().phase = Some(phase.to_owned());
            self
        }
        fn reason(mut self, reason: &str) -> Self {
            self.status.get_or_insert_default().reason = Some(reason.to_owned());
            self
        }
        fn created(mut self, at: &str) -> Self {
            self.metadata.creation_timestamp = at
                .parse()
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
            self
        }
        fn on(mut self, node: &str) -> Self {
            self.spec.get_or_insert_default().node_name = Some(node.to_owned());
            self
        }
        fn terminating(mut self) -> Self {
            self.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
            self
        }
    }

    fn node(name: &str, ready: bool, out_of_service: bool) -> Node {
        let taints = if out_of_service {
            json!([{"key": TAINT_OUT_OF_SERVICE, "effect": "NoExecute"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap_or_default()
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn metrics_use_the_upstream_names_and_labels() {
        let mut registry = Registry::default();
        let m = PodGcMetrics::register(&mut registry);
        m.record("ns", REASON_ORPHANED, false);
        m.record("ns", REASON_ORPHANED, true);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        for line in [
            "pod_gc_collector_force_delete_pods_total{namespace=\"ns\",reason=\"orphaned\"} 2",
            "pod_gc_collector_force_delete_pod_errors_total{namespace=\"ns\",reason=\"orphaned\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn nothing_is_collected_at_or_below_the_threshold() {
        let pods = [
            Pod::test("a").phase("Succeeded"),
            Pod::test("b").phase("Failed"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert!(terminated_victims(&refs, 2).is_empty());
        assert!(terminated_victims(&refs, 3).is_empty());
    }

    #[test]
    fn the_oldest_terminated_pods_beyond_the_threshold_go_first() {
        let pods = [
            Pod::test("new")
                .phase("Succeeded")
                .created("2026-01-03T00:00:00Z"),
            Pod::test("old")
                .phase("Failed")
                .created("2026-01-01T00:00:00Z"),
            Pod::test("mid")
                .phase("Succeeded")
                .created("2026-01-02T00:00:00Z"),
            Pod::test("running")
                .phase("Running")
                .created("2025-01-01T00:00:00Z"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&terminated_victims(&refs, 1)), ["old", "mid"]);
    }

    #[test]
    fn evicted_pods_go_before_older_ones_and_names_break_ties() {
        let pods = [
            Pod::test("b")
                .phase("Succeeded")
                .created("2026-01-01T00:00:00Z"),
            Pod::test("a")
                .phase("Succeeded")
                .created("2026-01-01T00:00:00Z"),
            Pod::test("evicted")
                .phase("Failed")
                .reason("Evicted")
                .created("2026-06-01T00:00:00Z"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&terminated_victims(&refs, 1)), ["evicted", "a"]);
    }

    #[test]
    fn a_threshold_of_zero_disables_terminated_pod_collection() {
        let pods = [Pod::test("a").phase("Succeeded")];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert!(terminated_victims(&refs, 0).is_empty());
    }

    #[test]
    fn pending_running_and_unknown_pods_are_not_terminated() {
        for phase in ["Pending", "Running", "Unknown"] {
            assert!(!is_terminated(&Pod::test("p").phase(phase)), "{phase}");
        }
        for phase in ["Succeeded", "Failed"] {
            assert!(is_terminated(&Pod::test("p").phase(phase)), "{phase}");
        }
    }

    #[test]
    fn terminating_pods_on_not_ready_out_of_service_nodes_are_collected() {
        let (oos, ready_oos, plain) = (
            node("oos", false, true),
            node("ready-oos", true, true),
            node("plain", false, false),
        );
        let nodes = BTreeMap::from([("oos", &oos), ("ready-oos", &ready_oos), ("plain", &plain)]);
        let pods = [
            Pod::test("hit").on("oos").terminating(),
            Pod::test("not-terminating").on("oos"),
            Pod::test("ready-node").on("ready-oos").terminating(),
            Pod::test("no-taint").on("plain").terminating(),
            Pod::test("unknown-node").on("gone").terminating(),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&out_of_service_victims(&refs, &nodes)), ["hit"]);
    }

    #[test]
    fn pods_on_unknown_nodes_put_those_nodes_in_quarantine() {
        let n1 = node("n1", true, false);
        let nodes = BTreeMap::from([("n1", &n1)]);
        let pods = [
            Pod::test("a").on("n1"),
            Pod::test("b").on("gone"),
            Pod::test("c").on("gone"),
            Pod::test("unscheduled"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            unknown_nodes(&refs, &nodes),
            BTreeSet::from(["gone".to_owned()])
        );
    }

    #[test]
    fn a_node_is_checked_only_after_its_quarantine_and_the_first_deadline_wins() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        let gone = BTreeSet::from(["gone".to_owned()]);
        let none = BTreeMap::new();
        q.observe(&gone, t0);
        q.observe(&gone, t0 + Duration::from_secs(20));
        assert!(q.due(t0 + Duration::from_secs(39), &none).is_empty());
        assert_eq!(q.due(t0 + QUARANTINE_TIME, &none), ["gone"]);
        assert!(q.is_empty(), "taken out once checked");
    }

    #[test]
    fn a_node_that_reappears_during_quarantine_is_not_checked() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        q.observe(&BTreeSet::from(["back".to_owned()]), t0);
        let back = node("back", true, false);
        let known = BTreeMap::from([("back", &back)]);
        assert!(q.due(t0 + QUARANTINE_TIME, &known).is_empty());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn orphans_are_the_pods_of_confirmed_deleted_nodes() {
        let pods = [
            Pod::test("a").on("gone"),
            Pod::test("b").on("n1"),
            Pod::test("c"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(
            names(&orphans(&refs, &BTreeSet::from(["gone".to_owned()]))),
            ["a"]
        );
    }

    #[test]
    fn only_terminating_unscheduled_pods_are_collected_as_unscheduled() {
        let pods = [
            Pod::test("hit").phase("Pending").terminating(),
            Pod::test("pending").phase("Pending"),
            Pod::test("bound").on("n1").terminating(),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(names(&unscheduled_terminating(&refs)), ["hit"]);
    }

    #[test]
    fn an_orphan_is_marked_failed_with_the_disruption_target_condition() {
        let mut pod = Pod::test("a").on("gone");
        pod.metadata.generation = Some(3);
        let now: Timestamp = "2026-02-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(
            fail_patch(&pod, Some(orphan_condition()), now),
            Some(json!({
                "metadata": {"uid": "uid-a"},
                "status": {
                    "phase": "Failed",
                    "observedGeneration": 3,
                    "conditions": [{
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                        "lastTransitionTime": "2026-02-01T00:00:00Z",
                        "observedGeneration": 3,
                    }],
                },
            }))
        );
    }

    #[test]
    fn pods_already_in_a_terminal_phase_are_deleted_without_a_status_patch() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            fail_patch(&Pod::test("a").phase("Succeeded"), None, now),
            None
        );
        assert_eq!(
            fail_patch(
                &Pod::test("a").phase("Failed"),
                Some(orphan_condition()),
                now
            ),
            None
        );
    }

    #[test]
    fn a_pending_pod_is_marked_failed_without_a_condition_when_none_is_given() {
        let patch = fail_patch(
            &Pod::test("a").phase("Pending"),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            patch,
            Some(json!({"metadata": {"uid": "uid-a"}, "status": {"phase": "Failed"}}))
        );
    }
}
