//! The node-lifecycle and taint-eviction controllers, run by the Ferrite controller manager
//! (`--controllers=*`, short grace periods) over a stock apiserver and scheduler.
//!
//! kwok keeps its own nodes alive through their Leases. A node kwok does not manage (no kwok
//! annotation) is kept alive by the test itself, as a fake kubelet: it posts the node's status
//! once and renews its Lease in `kube-node-lease` every second, and stops when told to.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::bed::{KWOK_ANNOTATION, NOT_READY_TAINT, kwok_node};
use ferrite_e2e::stock::ferrite_binary;
use ferrite_e2e::testing::{self, eventually, get_secure};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;

/// Short enough for a test, longer than kwok's 10 s Lease renewal interval (its Leases last 40 s).
const GRACE: Duration = Duration::from_secs(16);
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const LEASE_NS: &str = "kube-node-lease";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 2;
        o.controller_manager = Component::Ferrite;
        o.scheduler = Component::Stock;
        o.ferrite_args = grace_flags();
        o
    })
    .await
}

/// The short grace periods, as flags both controller managers take.
fn grace_flags() -> Vec<String> {
    vec![
        format!("--node-monitor-grace-period={}s", GRACE.as_secs()),
        "--node-startup-grace-period=20s".into(),
        "--node-monitor-period=1s".into(),
    ]
}

fn cm_log(bed: &Bed) -> String {
    bed.log_tail("controller-manager")
}

fn suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

fn taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    taints(node)
        .iter()
        .any(|t| t.key == key && t.effect == effect)
}

fn node_condition<'a>(
    node: &'a Node,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

async fn wait_node(
    bed: &Bed,
    nodes: &Api<Node>,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Node) -> bool,
) -> Result<Node> {
    eventually(what, timeout, Duration::from_millis(250), || async {
        nodes.get(name).await.ok().filter(|n| f(n))
    })
    .await
    .with_context(|| cm_log(bed))
}

/// Events about `name` in `ns` from `component` with `reason`.
async fn events(
    client: &kube::Client,
    ns: &str,
    name: &str,
    component: &str,
    reason: &str,
) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
        })
        .collect()
}

async fn wait_event(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    component: &str,
    reason: &str,
    message: &str,
) -> Result<Event> {
    eventually(
        &format!("a {reason} event from {component} about {name} saying {message:?}"),
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            events(client, ns, name, component, reason)
                .await
                .into_iter()
                .find(|e| e.message.as_deref() == Some(message))
        },
    )
    .await
    .with_context(|| cm_log(bed))
}

/// A node kwok does not manage, kept alive by the test.
struct FakeKubelet {
    client: kube::Client,
    name: String,
    heartbeat: Option<JoinHandle<()>>,
}

fn micro_now() -> serde_json::Value {
    serde_json::to_value(MicroTime(Timestamp::now())).unwrap_or_default()
}

fn ready_status(now: Timestamp) -> serde_json::Value {
    let now = now.to_string();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
    })
}

impl FakeKubelet {
    /// Registers the node (Ready) and its Lease, and starts renewing the Lease.
    async fn start(client: &kube::Client, name: &str) -> Result<FakeKubelet> {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "type": "fake-kubelet"}},
            "status": ready_status(Timestamp::now()),
        }))?;
        let created = Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await?;
        ensure!(
            kwok_annotation_absent(&created),
            "the fake kubelet's node must not be managed by kwok"
        );
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": LEASE_NS,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                    "uid": created.metadata.uid}]},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        }))?;
        Api::<Lease>::namespaced(client.clone(), LEASE_NS)
            .create(&PostParams::default(), &lease)
            .await?;
        let mut k = FakeKubelet {
            client: client.clone(),
            name: name.to_owned(),
            heartbeat: None,
        };
        k.resume(false).await?;
        Ok(k)
    }

    /// Starts renewing the Lease every second (and, when `post_ready`, posts a fresh Ready status
    /// first, as a restarted kubelet does).
    async fn resume(&mut self, post_ready: bool) -> Result<()> {
        if post_ready {
            Api::<Node>::all(self.client.clone())
                .patch_status(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": ready_status(Timestamp::now())})),
                )
                .await?;
        }
        let leases = Api::<Lease>::namespaced(self.client.clone(), LEASE_NS);
        let name = self.name.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                let patch = json!({"spec": {"renewTime": micro_now()}});
                if let Err(e) = leases
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(error = %e, "fake kubelet: renewing the lease failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
        Ok(())
    }

    /// The kubelet stops: no more Lease renewals or status updates.
    fn stop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    async fn set_condition(&self, type_: &str, status: &str) -> Result<()> {
        let now = Timestamp::now().to_string();
        let patch = json!({"status": {"conditions": [{"type": type_, "status": status,
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
        Api::<Node>::all(self.client.clone())
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
        Ok(())
    }

    /// Marks a pod bound to this node Running and Ready, as a kubelet would.
    async fn run_pod(&self, ns: &str, pod: &str) -> Result<()> {
        let now = Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "startTime": now, "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ]}});
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch_status(pod, &PatchParams::default(), &Patch::Strategic(status))
            .await?;
        Ok(())
    }

    /// Removes the node, its Lease and the given pods (force-deleted: no kubelet finishes them).
    async fn remove(mut self, ns: &str, pods: &[&str]) {
        self.stop();
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        for p in pods {
            let _ = api
                .delete(p, &DeleteParams::default().grace_period(0))
                .await;
        }
        let _ = Api::<Lease>::namespaced(self.client.clone(), LEASE_NS)
            .delete(&self.name, &DeleteParams::default())
            .await;
        let _ = Api::<Node>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kwok_annotation_absent(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .is_none_or(|a| !a.contains_key(KWOK_ANNOTATION.0))
}

fn pod_on(name: &str, node: &str, tolerations: serde_json::Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tolerations": tolerations,
            "containers": [{"name": "c", "image": "example.invalid/app:never-pulled"}],
        },
    }))?)
}

async fn namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    let ns = testing::namespace(client, prefix).await?;
    testing::ensure_default_service_account(client, &ns).await?;
    Ok(ns)
}

#[tokio::test]
async fn a_new_node_becomes_schedulable_once_ferrite_lifts_its_not_ready_taint() -> Result<()> {
    new_node_on(bed().await).await
}

async fn new_node_on(bed: &Bed) -> Result<()> {
    let client = bed.client().await?;
    let nodes = Api::<Node>::all(client.clone());

    // The bed left the not-ready taints of its own nodes to Ferrite.
    let bed_nodes = nodes.list(&ListParams::default()).await?.items;
    for n in bed_nodes.iter().filter(|n| {
        n.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("kwok-node-"))
    }) {
        ensure!(
            !has_taint(n, NOT_READY_TAINT, "NoSchedule"),
            "bed node {:?} still tainted not-ready",
            n.metadata.name
        );
    }

    let name = format!("kwok-new-{}", suffix());
    let created = nodes
        .create(&PostParams::default(), &kwok_node(&name))
        .await?;
    ensure!(
        has_taint(&created, NOT_READY_TAINT, "NoSchedule"),
        "the apiserver's admission should taint a new node not-ready: {:?}",
        taints(&created)
    );
    let node = wait_node(
        bed,
        &nodes,
        &name,
        "the new node Ready and without the not-ready taint",
        Duration::from_secs(60),
        |n| {
            node_condition(n, "Ready").is_some_and(|c| c.status == "True")
                && !has_taint(n, NOT_READY_TAINT, "NoSchedule")
        },
    )
    .await?;
    // The beta labels follow the stable ones.
    let labels = node.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("beta.kubernetes.io/os").map(String::as_str) == Some("linux")
            && labels.get("beta.kubernetes.io/arch").map(String::as_str) == Some("amd64"),
        "beta labels not reconciled: {labels:?}"
    );
    let registered = format!("Node {name} event: Registered Node {name} in Controller");
    wait_event(
        bed,
        &client,
        "default",
        &name,
        "node-controller",
        "RegisteredNode",
        &registered,
    )
    .await?;

    // The stock scheduler places a pod on it, and kwok runs it.
    let ns = namespace(&client, "nlc-sched").await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-new-node"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": name},
                 "containers": [{"name": "c", "image": "example.invalid/app:never-pulled"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    eventually(
        "the pod scheduled onto the new node and running",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let p = pods.get("on-new-node").await.ok()?;
            let on_node = p.spec.as_ref()?.node_name.as_deref() == Some(name.as_str());
            let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
            (on_node && running).then_some(())
        },
    )
    .await
    .with_context(|| bed.log_tail("scheduler"))?;
    let _ = pods
        .delete("on-new-node", &DeleteParams::default().grace_period(0))
        .await;
    nodes.delete(&name, &DeleteParams::default()).await?;
    let removing = format!("Node {name} event: Removing Node {name} from Controller");
    wait_event(
        bed,
        &client,
        "default",
        &name,
        "node-controller",
        "RemovingNode",
        &removing,
    )
    .await?;
    Ok(())
}

/// A running fake-kubelet node with three pods: one evicted at once (tolerationSeconds 0), one
/// after 6 s, one tolerating the unreachable taint forever.
#[tokio::test]
async fn a_node_whose_kubelet_stops_goes_unknown_and_its_pods_go_by_their_tolerations() -> Result<()>
{
    kubelet_stops_on(bed().await).await
}

/// The same scenarios against the stock kube-controller-manager: what these tests expect is what
/// upstream does (conditions, reasons, taints, events, metric names).
#[tokio::test]
async fn the_stock_controller_manager_passes_the_same_scenarios() -> Result<()> {
    let bed = testing::PrivateBed::start(|mut o| {
        o.nodes = 2;
        o.controller_manager = Component::Stock;
        o.scheduler = Component::Stock;
        o.stock_controller_manager_args = grace_flags();
        o
    })
    .await?;
    new_node_on(&bed).await.context("a new node")?;
    conditions_on(&bed).await.context("conditions")?;
    taint_eviction_on(&bed).await.context("taint eviction")?;
    kubelet_stops_on(&bed).await.context("a kubelet stops")
}

async fn kubelet_stops_on(bed: &Bed) -> Result<()> {
    let client = bed.client().await?;
    let nodes = Api::<Node>::all(client.clone());
    let name = format!("fake-kubelet-{}", suffix());
    let mut kubelet = FakeKubelet::start(&client, &name).await?;
    let ns = namespace(&client, "nlc-evict").await?;
    let result = kubelet_stops_scenario(bed, &client, &nodes, &mut kubelet, &ns).await;
    kubelet.remove(&ns, &["at-once", "timed", "forever"]).await;
    result
}

async fn kubelet_stops_scenario(
    bed: &Bed,
    client: &kube::Client,
    nodes: &Api<Node>,
    kubelet: &mut FakeKubelet,
    ns: &str,
) -> Result<()> {
    let name = kubelet.name.clone();
    // Alive through its Lease alone: Ferrite lifts the admission's not-ready taint.
    wait_node(
        bed,
        nodes,
        &name,
        "the fake kubelet's node without the not-ready taint",
        Duration::from_secs(60),
        |n| !has_taint(n, NOT_READY_TAINT, "NoSchedule"),
    )
    .await?;

    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let toleration = |secs: Option<i64>| {
        let mut t = json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!([t])
    };
    for (pod, secs) in [("at-once", Some(0)), ("timed", Some(6)), ("forever", None)] {
        pods.create(
            &PostParams::default(),
            &pod_on(pod, &name, toleration(secs))?,
        )
        .await?;
        kubelet.run_pod(ns, pod).await?;
    }
    // Still healthy well past the grace period: the Lease keeps it alive.
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    let alive = nodes.get(&name).await?;
    ensure!(
        node_condition(&alive, "Ready").is_some_and(|c| c.status == "True"),
        "the node went unhealthy while its Lease was renewed: {:?}\n{}",
        node_condition(&alive, "Ready"),
        cm_log(bed)
    );
    ensure!(
        pods.get("at-once")
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "a pod was evicted from a healthy node"
    );

    // The kubelet stops.
    kubelet.stop();
    let stopped = Timestamp::now();
    let unknown = wait_node(
        bed,
        nodes,
        &name,
        "the node's Ready condition Unknown",
        GRACE + Duration::from_secs(30),
        |n| node_condition(n, "Ready").is_some_and(|c| c.status == "Unknown"),
    )
    .await?;
    let became_unknown = Timestamp::now();
    // The last renewal was at most a second before the stop.
    ensure!(
        became_unknown.duration_since(stopped)
            >= SignedDuration::try_from(GRACE)? - SignedDuration::from_secs(2),
        "Unknown after {} only, before the grace period of {GRACE:?}",
        became_unknown.duration_since(stopped)
    );
    let ready = node_condition(&unknown, "Ready").context("no Ready condition")?;
    ensure!(
        ready.reason.as_deref() == Some("NodeStatusUnknown")
            && ready.message.as_deref() == Some("Kubelet stopped posting node status."),
        "unexpected Ready condition: {ready:?}"
    );
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = node_condition(&unknown, type_).context("condition missing")?;
        ensure!(c.status == "Unknown", "{type_} is {:?}", c.status);
    }

    // Tainted unreachable: NoExecute through the rate-limited queue, NoSchedule from the condition.
    let tainted = wait_node(
        bed,
        nodes,
        &name,
        "the unreachable NoExecute and NoSchedule taints",
        Duration::from_secs(30),
        |n| has_taint(n, UNREACHABLE, "NoExecute") && has_taint(n, UNREACHABLE, "NoSchedule"),
    )
    .await?;
    ensure!(
        !has_taint(&tainted, NOT_READY_TAINT, "NoExecute"),
        "not-ready and unreachable must exclude each other: {:?}",
        taints(&tainted)
    );
    let taint_added = taints(&tainted)
        .into_iter()
        .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        .and_then(|t| t.time_added)
        .context("the NoExecute taint has no timeAdded")?
        .0;
    wait_event(
        bed,
        client,
        "default",
        &name,
        "node-controller",
        "NodeNotReady",
        &format!("Node {name} status is now: NodeNotReady"),
    )
    .await?;

    // Every pod on it is marked not Ready.
    for pod in ["at-once", "timed", "forever"] {
        eventually(
            &format!("pod {pod} not Ready"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || async {
                let p = pods.get(pod).await.ok()?;
                pod_condition(&p, "Ready")
                    .is_some_and(|c| c.status == "False")
                    .then_some(())
            },
        )
        .await
        .with_context(|| cm_log(bed))?;
        wait_event(
            bed,
            client,
            ns,
            pod,
            "node-controller",
            "NodeNotReady",
            "Node is not ready",
        )
        .await?;
    }

    // tolerationSeconds 0: evicted at once, marked as a disruption target first.
    let marked = |pod: &'static str| {
        let pods = pods.clone();
        async move {
            let p = pods.get(pod).await.ok()?;
            p.metadata.deletion_timestamp.as_ref()?;
            let c = pod_condition(&p, "DisruptionTarget")?.clone();
            (c.status == "True"
                && c.reason.as_deref() == Some("DeletionByTaintManager")
                && c.message.as_deref() == Some("Taint manager: deleting due to NoExecute taint"))
            .then_some(c)
        }
    };
    eventually(
        "at-once deleted with DisruptionTarget",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || marked("at-once"),
    )
    .await
    .with_context(|| cm_log(bed))?;
    wait_event(
        bed,
        client,
        ns,
        "at-once",
        "taint-eviction-controller",
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/at-once"),
    )
    .await?;

    // tolerationSeconds 6: not before 6 s have passed since the taint.
    let timed = eventually(
        "timed deleted with DisruptionTarget",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || marked("timed"),
    )
    .await
    .with_context(|| cm_log(bed))?;
    let marked_at = timed.last_transition_time.context("no transition time")?.0;
    let waited = marked_at.duration_since(taint_added);
    eprintln!(
        "kubelet stopped -> Unknown after {:.1}s; taint -> timed eviction after {}s (tolerationSeconds 6; both whole seconds)",
        became_unknown.duration_since(stopped).as_secs_f64(),
        waited.as_secs(),
    );
    // Both times have whole-second precision.
    ensure!(
        waited >= SignedDuration::from_secs(5),
        "timed was evicted {waited} after the taint, before its 6 s toleration"
    );

    // No tolerationSeconds: stays.
    let forever = pods.get("forever").await?;
    ensure!(
        forever.metadata.deletion_timestamp.is_none()
            && pod_condition(&forever, "DisruptionTarget").is_none(),
        "the pod tolerating the taint forever was evicted"
    );

    // The upstream metrics count the taint.
    if let Some(port) = bed.state().controller_manager_port {
        let token = testing::metrics_reader_token(client, ns).await?;
        let body = eventually(
            "node_collector metrics",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                match get_secure(port, "/metrics", Some(&token)).await {
                    Ok((200, body)) => Some(body),
                    _ => None,
                }
            },
        )
        .await?;
        let evictions = body
            .lines()
            .find_map(|l| l.strip_prefix("node_collector_evictions_total{zone=\"\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        ensure!(
            evictions >= 1.0,
            "node_collector_evictions_total: {evictions}"
        );
        ensure!(
            body.contains("node_collector_zone_health{zone=\"\"}")
                && body.contains("taint_eviction_controller_pod_deletions_total"),
            "missing metrics"
        );
    }

    // The kubelet comes back: the taints go.
    kubelet.resume(true).await?;
    wait_node(
        bed,
        nodes,
        &name,
        "the unreachable taints lifted after recovery",
        Duration::from_secs(30),
        |n| {
            node_condition(n, "Ready").is_some_and(|c| c.status == "True")
                && !taints(n).iter().any(|t| t.key == UNREACHABLE)
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn node_conditions_and_cordoning_yield_their_no_schedule_taints() -> Result<()> {
    conditions_on(bed().await).await
}

async fn conditions_on(bed: &Bed) -> Result<()> {
    let client = bed.client().await?;
    let nodes = Api::<Node>::all(client.clone());
    let name = format!("fake-kubelet-{}", suffix());
    let kubelet = FakeKubelet::start(&client, &name).await?;
    let result = async {
        wait_node(
            bed,
            &nodes,
            &name,
            "the node without the not-ready taint",
            Duration::from_secs(60),
            |n| !has_taint(n, NOT_READY_TAINT, "NoSchedule"),
        )
        .await?;
        kubelet.set_condition("MemoryPressure", "True").await?;
        wait_node(
            bed,
            &nodes,
            &name,
            "the memory-pressure taint",
            Duration::from_secs(30),
            |n| has_taint(n, MEMORY_PRESSURE, "NoSchedule"),
        )
        .await?;
        kubelet.set_condition("MemoryPressure", "False").await?;
        wait_node(
            bed,
            &nodes,
            &name,
            "the memory-pressure taint lifted",
            Duration::from_secs(30),
            |n| !has_taint(n, MEMORY_PRESSURE, "NoSchedule"),
        )
        .await?;
        kubelet.set_condition("DiskPressure", "True").await?;
        wait_node(
            bed,
            &nodes,
            &name,
            "the disk-pressure taint",
            Duration::from_secs(30),
            |n| has_taint(n, "node.kubernetes.io/disk-pressure", "NoSchedule"),
        )
        .await?;
        // Cordoned: the unschedulable taint.
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await?;
        wait_node(
            bed,
            &nodes,
            &name,
            "the unschedulable taint",
            Duration::from_secs(30),
            |n| has_taint(n, UNSCHEDULABLE, "NoSchedule"),
        )
        .await?;
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": false}})),
            )
            .await?;
        let n = wait_node(
            bed,
            &nodes,
            &name,
            "the unschedulable taint lifted",
            Duration::from_secs(30),
            |n| !has_taint(n, UNSCHEDULABLE, "NoSchedule"),
        )
        .await?;
        ensure!(
            has_taint(&n, "node.kubernetes.io/disk-pressure", "NoSchedule"),
            "lifting one taint dropped another: {:?}",
            taints(&n)
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    kubelet.remove("default", &[]).await;
    result
}

/// Taint eviction on its own: a NoExecute taint someone else puts on a (kwok) node.
#[tokio::test]
async fn pods_not_tolerating_a_no_execute_taint_are_evicted_and_removing_it_cancels_timed_ones()
-> Result<()> {
    taint_eviction_on(bed().await).await
}

async fn taint_eviction_on(bed: &Bed) -> Result<()> {
    let client = bed.client().await?;
    let nodes = Api::<Node>::all(client.clone());
    let node = format!("kwok-taint-{}", suffix());
    nodes
        .create(&PostParams::default(), &kwok_node(&node))
        .await?;
    let ns = namespace(&client, "nlc-taint").await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let result = async {
        wait_node(
            bed,
            &nodes,
            &node,
            "the kwok node Ready and untainted",
            Duration::from_secs(60),
            |n| {
                node_condition(n, "Ready").is_some_and(|c| c.status == "True")
                    && !has_taint(n, NOT_READY_TAINT, "NoSchedule")
            },
        )
        .await?;
        const KEY: &str = "example.com/quarantine";
        let tol = |secs: Option<i64>| {
            let mut t = json!({"key": KEY, "operator": "Exists", "effect": "NoExecute"});
            if let Some(s) = secs {
                t["tolerationSeconds"] = json!(s);
            }
            json!([t])
        };
        for (pod, tolerations) in [
            ("untolerated", json!([])),
            ("tolerates", tol(None)),
            ("for-a-while", tol(Some(120))),
        ] {
            pods.create(&PostParams::default(), &pod_on(pod, &node, tolerations)?)
                .await?;
        }
        eventually(
            "kwok to run the three pods",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let list = pods.list(&ListParams::default()).await.ok()?;
                (list
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count()
                    == 3)
                    .then_some(())
            },
        )
        .await?;
        let taint =
            json!({"spec": {"taints": [{"key": KEY, "value": "yes", "effect": "NoExecute"}]}});
        nodes
            .patch(&node, &PatchParams::default(), &Patch::Merge(&taint))
            .await?;
        eventually(
            "the untolerating pod deleted after DisruptionTarget",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                match pods.get_opt("untolerated").await {
                    // kwok finishes deletions at once: gone, or still terminating and marked.
                    Ok(None) => Some(()),
                    Ok(Some(p)) => (p.metadata.deletion_timestamp.is_some()
                        && pod_condition(&p, "DisruptionTarget").is_some_and(|c| {
                            c.reason.as_deref() == Some("DeletionByTaintManager")
                        }))
                    .then_some(()),
                    Err(_) => None,
                }
            },
        )
        .await
        .with_context(|| cm_log(bed))?;
        wait_event(
            bed,
            &client,
            &ns,
            "untolerated",
            "taint-eviction-controller",
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {ns}/untolerated"),
        )
        .await?;
        // The taint goes before the 120 s are up: the timed deletion is cancelled.
        nodes
            .patch(
                &node,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": null}})),
            )
            .await?;
        wait_event(
            bed,
            &client,
            &ns,
            "for-a-while",
            "taint-eviction-controller",
            "TaintManagerEviction",
            &format!("Cancelling deletion of Pod {ns}/for-a-while"),
        )
        .await?;
        for pod in ["tolerates", "for-a-while"] {
            let p = pods.get(pod).await?;
            if p.metadata.deletion_timestamp.is_some() {
                bail!("pod {pod} was deleted although it tolerates the taint");
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    for pod in ["untolerated", "tolerates", "for-a-while"] {
        let _ = pods
            .delete(pod, &DeleteParams::default().grace_period(0))
            .await;
    }
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
    result
}

/// Runs `ferrite <args>` and returns (exit code, stderr).
async fn run_ferrite(args: &[&str]) -> Result<(Option<i32>, String)> {
    let child = tokio::process::Command::new(ferrite_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running ferrite (run `cargo build --bins` first)")?;
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("ferrite still runs after 10s")??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn bad_node_lifecycle_flags_are_one_line_and_exit_code_2() -> Result<()> {
    for (flag, needle) in [
        (
            "--node-monitor-grace-period=soon",
            "--node-monitor-grace-period",
        ),
        ("--node-monitor-period=0s", "--node-monitor-period"),
        ("--node-eviction-rate=fast", "--node-eviction-rate"),
        (
            "--secondary-node-eviction-rate=NaN",
            "--secondary-node-eviction-rate",
        ),
        (
            "--large-cluster-size-threshold=1.5",
            "--large-cluster-size-threshold",
        ),
        ("--unhealthy-zone-threshold=", "--unhealthy-zone-threshold"),
        (
            "--node-startup-grace-period=-1s",
            "--node-startup-grace-period",
        ),
    ] {
        let (code, stderr) = run_ferrite(&["controller-manager", flag]).await?;
        ensure!(
            code == Some(2),
            "{flag}: exit code {code:?}, stderr: {stderr}"
        );
        ensure!(
            stderr.lines().count() == 1 && stderr.contains(needle),
            "{flag}: want one line naming the flag, got {stderr:?}"
        );
    }
    Ok(())
}

/// kwok stops: every node falls silent at once. Upstream reads that as the control plane losing
/// the nodes rather than every node dying ("master disruption"): the nodes go Unknown and their
/// pods not Ready, but no node keeps a NoExecute taint and no pod is evicted.
#[tokio::test]
async fn when_every_node_falls_silent_at_once_nothing_is_evicted() -> Result<()> {
    silent_nodes_with(Component::Ferrite).await
}

#[tokio::test]
async fn the_stock_controller_manager_evicts_nothing_either_when_every_node_falls_silent()
-> Result<()> {
    silent_nodes_with(Component::Stock).await
}

async fn silent_nodes_with(component: Component) -> Result<()> {
    let bed = testing::PrivateBed::start(|mut o| {
        o.nodes = 2;
        o.controller_manager = component;
        o.ferrite_args = grace_flags();
        o.stock_controller_manager_args = grace_flags();
        o
    })
    .await?;
    let client = bed.client().await?;
    let ns = namespace(&client, "nlc-silent").await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod_on("survivor", "kwok-node-0", json!([]))?,
    )
    .await?;
    eventually(
        "kwok to run the pod",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let p = pods.get("survivor").await.ok()?;
            pod_condition(&p, "Ready")
                .is_some_and(|c| c.status == "True")
                .then_some(())
        },
    )
    .await?;

    bed.stop_process("kwok", Duration::from_secs(10));
    let nodes = Api::<Node>::all(client.clone());
    eventually(
        "both nodes Unknown",
        GRACE + Duration::from_secs(40),
        Duration::from_millis(500),
        || async {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|n| node_condition(n, "Ready").is_some_and(|c| c.status == "Unknown"))
                .then_some(())
        },
    )
    .await
    .with_context(|| cm_log(&bed))?;
    eventually(
        "the pod marked not Ready",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let p = pods.get("survivor").await.ok()?;
            pod_condition(&p, "Ready")
                .is_some_and(|c| c.status == "False")
                .then_some(())
        },
    )
    .await
    .with_context(|| cm_log(&bed))?;
    // Several monitor passes and tainting passes later, still no NoExecute taint.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in nodes.list(&ListParams::default()).await?.items {
        ensure!(
            !taints(&n).iter().any(|t| t.effect == "NoExecute"),
            "node {:?} carries a NoExecute taint in master disruption mode: {:?}\n{}",
            n.metadata.name,
            taints(&n),
            cm_log(&bed)
        );
        ensure!(
            has_taint(&n, UNREACHABLE, "NoSchedule"),
            "node {:?} lacks the unreachable NoSchedule taint",
            n.metadata.name
        );
    }
    let p = pods.get("survivor").await?;
    ensure!(
        p.metadata.deletion_timestamp.is_none(),
        "the pod was evicted in master disruption mode"
    );
    let log = std::fs::read_to_string(bed.log("controller-manager")).unwrap_or_default();
    ensure!(
        log.to_lowercase()
            .contains("entering master disruption mode"),
        "the controller never entered master disruption mode:\n{}",
        cm_log(&bed)
    );
    Ok(())
}
