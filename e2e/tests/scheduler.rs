//! `ferrite scheduler` schedules pods as kube-scheduler's default profile does: binds them
//! (kwok then runs them), places them only where their requests, taints, node affinity and host
//! ports allow, reports pods that fit nowhere with upstream's FailedScheduling message and
//! PodScheduled condition, retries them when the cluster changes, holds gated pods, and never
//! over-commits a node under a burst of pods.
//!
//! Tests that change nodes (taints, labels, an extra node) would disturb the others on the
//! shared bed, so every test holds one lock and cleans up its pods and node changes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};
use ferrite_e2e::bed::kwok_node;
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.scheduler = Component::Ferrite;
        o.controller_manager = Component::None;
        o
    })
    .await
}

struct Test {
    client: kube::Client,
    ns: String,
    pods: Api<Pod>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start(prefix: &str) -> Result<Test> {
        let serial = SERIAL.lock().await;
        let client = bed().await.client().await?;
        let ns = testing::namespace(&client, prefix).await?;
        testing::ensure_default_service_account(&client, &ns).await?;
        let pods = Api::namespaced(client.clone(), &ns);
        Ok(Test {
            client,
            ns,
            pods,
            _serial: serial,
        })
    }

    async fn create(&self, name: &str, spec: Value) -> Result<Pod> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10"}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec,
        }))?;
        Ok(self.pods.create(&PostParams::default(), &pod).await?)
    }

    async fn node_of(&self, name: &str) -> Result<String> {
        testing::bound_node(&self.pods, name, TIMEOUT).await
    }

    /// The message of the first FailedScheduling event about `name`.
    async fn failed_scheduling(&self, name: &str) -> Result<String> {
        eventually(
            &format!("FailedScheduling for {name}"),
            TIMEOUT,
            POLL,
            || async {
                testing::events_about(&self.client, &self.ns, name, "FailedScheduling")
                    .await
                    .into_iter()
                    .next()
                    .map(|e| {
                        (
                            e.message.unwrap_or_default(),
                            e.source.and_then(|s| s.component).unwrap_or_default(),
                        )
                    })
            },
        )
        .await
        .and_then(|(msg, component)| {
            ensure!(component == "default-scheduler", "event source {component}");
            Ok(msg)
        })
    }

    async fn pod_scheduled_condition(&self, name: &str) -> Result<(String, String, String)> {
        let pods = self.pods.clone();
        eventually(
            &format!("PodScheduled=False on {name}"),
            TIMEOUT,
            POLL,
            || {
                let pods = pods.clone();
                async move {
                    let p = pods.get(name).await.ok()?;
                    let c = p
                        .status?
                        .conditions?
                        .into_iter()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
                    Some((
                        c.status,
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default(),
                    ))
                }
            },
        )
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.pods
            .delete_collection(&dp, &ListParams::default())
            .await?;
        let pods = self.pods.clone();
        eventually("the test's pods to be gone", TIMEOUT, POLL, || {
            let pods = pods.clone();
            async move {
                pods.list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        })
        .await
    }
}

fn nodes_api(client: &kube::Client) -> Api<Node> {
    Api::all(client.clone())
}

async fn node_names(client: &kube::Client) -> Result<Vec<String>> {
    Ok(nodes_api(client)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

fn requests(cpu: &str) -> Value {
    json!([{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": cpu}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_bound_by_ferrite_and_becomes_running() -> Result<()> {
    let t = Test::start("sched-bind").await?;
    t.create("web", json!({})).await?;
    let node = t.node_of("web").await?;
    let pods = t.pods.clone();
    eventually("web to be Running", TIMEOUT, POLL, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web").await.ok()?;
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await?;
    let events: Api<Event> = Api::namespaced(t.client.clone(), &t.ns);
    let want = format!("Successfully assigned {}/web to {node}", t.ns);
    eventually("the Scheduled event", TIMEOUT, POLL, || {
        let events = events.clone();
        let want = want.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Scheduled")
                        && e.message.as_deref() == Some(want.as_str())
                        && e.source.as_ref().and_then(|s| s.component.as_deref())
                            == Some("default-scheduler")
                })
                .then_some(())
        }
    })
    .await?;
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lands_on_the_only_node_with_room_for_its_cpu_request() -> Result<()> {
    let t = Test::start("sched-fit").await?;
    let nodes = node_names(&t.client).await?;
    let (target, others) = nodes.split_last().context("no nodes")?;
    // Every other 4-CPU node gets a 2-CPU pod placed directly, leaving less than 3 CPUs.
    for (i, n) in others.iter().enumerate() {
        t.create(
            &format!("filler-{i}"),
            json!({"nodeName": n, "containers": requests("2")}),
        )
        .await?;
    }
    t.create("three-cpus", json!({"containers": requests("3")}))
        .await?;
    let node = t.node_of("three-cpus").await?;
    ensure!(&node == target, "3-CPU pod on {node}, expected {target}");
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_too_big_for_every_node_is_reported_and_scheduled_once_a_big_node_joins() -> Result<()>
{
    let t = Test::start("sched-big").await?;
    let n = node_names(&t.client).await?.len();
    t.create("five-cpus", json!({"containers": requests("5")}))
        .await?;
    let msg = t.failed_scheduling("five-cpus").await?;
    let want = format!("0/{n} nodes are available: {n} Insufficient cpu.");
    ensure!(
        msg.starts_with(&want),
        "message {msg:?} does not start with {want:?}"
    );
    ensure!(
        msg == format!(
            "{want} preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
        ),
        "message {msg:?}"
    );
    let (_, reason, cond_msg) = t.pod_scheduled_condition("five-cpus").await?;
    ensure!(reason == "Unschedulable", "reason {reason}");
    ensure!(
        cond_msg == msg,
        "condition message {cond_msg:?} vs event {msg:?}"
    );

    // A node big enough joins: kwok's node, resized, without the apiserver's not-ready taint.
    let name = format!("big-{}", t.ns);
    let nodes = nodes_api(&t.client);
    let mut node = kwok_node(&name);
    let big: BTreeMap<String, Quantity> = [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    if let Some(s) = node.status.as_mut() {
        s.capacity = Some(big.clone());
        s.allocatable = Some(big.clone());
    }
    nodes.create(&PostParams::default(), &node).await?;
    let result = async {
        let status = json!({"status": {"capacity": big, "allocatable": big}});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        nodes
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"taints": null}})),
            )
            .await?;
        let bound = t.node_of("five-cpus").await?;
        ensure!(bound == name, "5-CPU pod on {bound}, expected {name}");
        t.cleanup().await
    }
    .await;
    nodes.delete(&name, &DeleteParams::default()).await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_tolerations_lands_on_the_only_untainted_node() -> Result<()> {
    let t = Test::start("sched-taint").await?;
    let nodes = nodes_api(&t.client);
    let names = node_names(&t.client).await?;
    let (free, tainted) = names.split_first().context("no nodes")?;
    let taint = json!({"spec": {"taints": [{"key": "ferrite.test/dedicated", "value": "x", "effect": "NoSchedule"}]}});
    for n in tainted {
        nodes
            .patch(n, &PatchParams::default(), &Patch::Merge(&taint))
            .await?;
    }
    let result = async {
        let mut placed = Vec::new();
        for i in 0..4 {
            let name = format!("untolerating-{i}");
            t.create(&name, json!({})).await?;
            placed.push(t.node_of(&name).await?);
        }
        ensure!(placed.iter().all(|n| n == free), "pods on {placed:?}, expected all on {free}");
        t.create(
            "tolerating",
            json!({"tolerations": [{"key": "ferrite.test/dedicated", "operator": "Exists"}],
                   "nodeSelector": {"kubernetes.io/hostname": tainted.first().context("one tainted node")?}}),
        )
        .await?;
        t.node_of("tolerating").await?;
        // Pinned to a tainted node without the toleration: the taint (checked before node
        // affinity) rejects the tainted nodes, affinity the free one.
        t.create(
            "blocked",
            json!({"nodeSelector": {"kubernetes.io/hostname": tainted.first().context("one tainted node")?}}),
        )
        .await?;
        let msg = t.failed_scheduling("blocked").await?;
        let n = names.len();
        let mut reasons = [
            "1 node(s) didn't match Pod's node affinity/selector".to_string(),
            format!("{} node(s) had untolerated taint(s)", tainted.len()),
        ];
        reasons.sort();
        let want = format!(
            "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.",
            reasons.join(", ")
        );
        ensure!(msg == want, "message {msg:?}, expected {want:?}");
        t.cleanup().await
    }
    .await;
    for n in tainted {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"taints": null}})),
            )
            .await?;
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_required_node_affinity_choose_the_labelled_node() -> Result<()> {
    let t = Test::start("sched-affinity").await?;
    let nodes = nodes_api(&t.client);
    let names = node_names(&t.client).await?;
    let target = names.last().context("no nodes")?.clone();
    let label = json!({"metadata": {"labels": {"ferrite.test/zone": "blue"}}});
    nodes
        .patch(&target, &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    let result = async {
        t.create("by-selector", json!({"nodeSelector": {"ferrite.test/zone": "blue"}})).await?;
        t.create(
            "by-affinity",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "ferrite.test/zone", "operator": "In", "values": ["blue", "green"]}]}]}}}}),
        )
        .await?;
        for p in ["by-selector", "by-affinity"] {
            let n = t.node_of(p).await?;
            ensure!(n == target, "{p} on {n}, expected {target}");
        }
        t.create("nowhere", json!({"nodeSelector": {"ferrite.test/zone": "red"}})).await?;
        let msg = t.failed_scheduling("nowhere").await?;
        let n = names.len();
        ensure!(
            msg == format!("0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."),
            "message {msg:?}"
        );
        t.cleanup().await
    }
    .await;
    let unlabel = json!({"metadata": {"labels": {"ferrite.test/zone": null}}});
    nodes
        .patch(&target, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_asking_for_the_same_host_port_spread_one_per_node_and_the_next_one_waits()
-> Result<()> {
    let t = Test::start("sched-ports").await?;
    let n = node_names(&t.client).await?.len();
    let with_port = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "ports": [{"containerPort": 80, "hostPort": 18080}]}]});
    let mut placed = Vec::new();
    for i in 0..n {
        let name = format!("port-{i}");
        t.create(&name, with_port.clone()).await?;
        placed.push(t.node_of(&name).await?);
    }
    placed.sort();
    placed.dedup();
    ensure!(placed.len() == n, "host-port pods share nodes: {placed:?}");
    t.create("port-extra", with_port).await?;
    let msg = t.failed_scheduling("port-extra").await?;
    ensure!(
        msg.starts_with(&format!(
            "0/{n} nodes are available: {n} node(s) didn't have free ports for the requested pod ports."
        )),
        "message {msg:?}"
    );
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_pod_waits_until_its_scheduling_gates_are_removed() -> Result<()> {
    let t = Test::start("sched-gates").await?;
    t.create(
        "gated",
        json!({"schedulingGates": [{"name": "ferrite.test/hold"}]}),
    )
    .await?;
    // A control pod created after it is scheduled, so the scheduler has had its chance.
    t.create("control", json!({})).await?;
    t.node_of("control").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = t.pods.get("gated").await?;
    ensure!(
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(),
        "a gated pod was bound"
    );
    let events: Api<Event> = Api::namespaced(t.client.clone(), &t.ns);
    let attempted = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .any(|e| {
            e.involved_object.name.as_deref() == Some("gated")
                && e.reason.as_deref() == Some("FailedScheduling")
        });
    ensure!(!attempted, "a gated pod was attempted");
    t.pods
        .patch(
            "gated",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"schedulingGates": null}})),
        )
        .await?;
    t.node_of("gated").await?;
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_created_at_once_are_all_bound_without_over_committing_any_node()
-> Result<()> {
    let t = Test::start("sched-burst").await?;
    const PODS: usize = 200;
    // 200 × 55m = 11 CPUs of the bed's 12, so a scheduler that over-commits would show it.
    let spec = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "55m", "memory": "100Mi"}}}]});
    futures::stream::iter(0..PODS)
        .map(|i| {
            let t = &t;
            let spec = spec.clone();
            async move { t.create(&format!("burst-{i}"), spec).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let pods = t.pods.clone();
    let all = eventually(
        "all 200 pods to be bound",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default()).await.ok()?;
                let bound = list
                    .items
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                    .count();
                (bound == PODS).then_some(list.items)
            }
        },
    )
    .await?;
    ensure!(all.len() == PODS);
    // Every pod in the cluster counts towards its node, not only this test's.
    let everything: Api<Pod> = Api::all(t.client.clone());
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    for p in everything.list(&ListParams::default()).await?.items {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let cpu: i64 = p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu").cloned())
            .map(|q| milli(&q.0))
            .sum();
        *used.entry(node).or_default() += cpu;
    }
    for n in nodes_api(&t.client)
        .list(&ListParams::default())
        .await?
        .items
    {
        let name = n.metadata.name.clone().unwrap_or_default();
        let alloc = n
            .status
            .and_then(|s| s.allocatable)
            .and_then(|a| a.get("cpu").map(|q| milli(&q.0)))
            .ok_or_else(|| anyhow!("node {name} has no allocatable cpu"))?;
        let u = used.get(&name).copied().unwrap_or(0);
        ensure!(
            u <= alloc,
            "node {name} over-committed: {u}m requested of {alloc}m"
        );
    }

    // The attempts are counted under upstream's metric names.
    let port = bed()
        .await
        .state()
        .scheduler_port
        .context("no scheduler port")?;
    let token = testing::metrics_reader_token(&t.client, &t.ns).await?;
    let (status, body) = testing::get_secure(port, "/metrics", Some(&token)).await?;
    ensure!(status == 200, "/metrics: {status} {body}");
    let scheduled = metric(
        &body,
        "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"}",
    );
    ensure!(scheduled >= PODS as f64, "scheduled attempts {scheduled}");
    let observed = metric(
        &body,
        "scheduler_scheduling_attempt_duration_seconds_count{result=\"scheduled\",profile=\"default-scheduler\"}",
    );
    ensure!(
        observed >= PODS as f64,
        "attempt durations observed {observed}"
    );
    ensure!(
        body.contains("scheduler_pending_pods{queue=\"active\"}"),
        "no scheduler_pending_pods"
    );
    t.cleanup().await
}

/// The value of the sample `series` (name with labels) in a metrics text, 0 when absent.
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Millicores of the quantities these tests use ("55m", "2", "8").
fn milli(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => q.parse::<i64>().map(|c| c * 1000).unwrap_or(0),
    }
}
