//! `ferrite scheduler`'s PodTopologySpread and InterPodAffinity against the stock apiserver: a
//! replica set's worth of pods with a zone `DoNotSchedule` constraint spreads evenly over three
//! zones and the pod that would break the skew waits with upstream's FailedScheduling message;
//! required anti-affinity on the hostname keeps pods one per node; required affinity places a pod
//! next to its target, and a pod whose target does not exist yet is scheduled once it appears;
//! preferred affinity outweighs the resource scores that favour emptier nodes.
//!
//! The bed's three kwok nodes get one `topology.kubernetes.io/zone` each. Tests that cordon a node
//! would disturb the others, so every test holds one lock and undoes its node changes.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

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
    /// Node name → zone, sorted by name.
    zones: BTreeMap<String, String>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start(prefix: &str) -> Result<Test> {
        let serial = SERIAL.lock().await;
        let client = bed().await.client().await?;
        // Label the nodes with a zone each (idempotent).
        let nodes: Api<Node> = Api::all(client.clone());
        let mut names: Vec<String> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        names.sort();
        ensure!(names.len() == 3, "expected 3 nodes, got {names:?}");
        let mut zones = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let zone = format!("zone-{}", ["a", "b", "c"][i]);
            let patch = json!({"metadata": {"labels": {ZONE: zone}}});
            nodes
                .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            zones.insert(n.clone(), zone);
        }
        let ns = testing::namespace(&client, prefix).await?;
        testing::ensure_default_service_account(&client, &ns).await?;
        let pods = Api::namespaced(client.clone(), &ns);
        Ok(Test {
            client,
            ns,
            pods,
            zones,
            _serial: serial,
        })
    }

    async fn create(&self, name: &str, labels: Value, spec: Value) -> Result<Pod> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10"}]);
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels}, "spec": spec,
        }))?;
        Ok(self.pods.create(&PostParams::default(), &pod).await?)
    }

    /// Creates all the pods at once, as a ReplicaSet's burst would.
    async fn create_all(&self, names: &[String], labels: Value, spec: Value) -> Result<()> {
        futures::stream::iter(names.iter())
            .map(|n| {
                let (labels, spec) = (labels.clone(), spec.clone());
                async move { self.create(n, labels, spec).await.map(|_| ()) }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn node_of(&self, name: &str) -> Result<String> {
        testing::bound_node(&self.pods, name, TIMEOUT).await
    }

    /// The message of the newest FailedScheduling event about `name`.
    async fn failed_scheduling(&self, name: &str) -> Result<String> {
        eventually(
            &format!("FailedScheduling for {name}"),
            TIMEOUT,
            POLL,
            || async {
                testing::events_about(&self.client, &self.ns, name, "FailedScheduling")
                    .await
                    .into_iter()
                    .filter(|e| {
                        e.source.as_ref().and_then(|s| s.component.as_deref())
                            == Some("default-scheduler")
                    })
                    .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0))
                    .and_then(|e| e.message)
            },
        )
        .await
    }

    /// Fails if `name` gets bound within a few seconds.
    async fn stays_pending(&self, name: &str) -> Result<()> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let p = self.pods.get(name).await?;
        let node = p.spec.and_then(|s| s.node_name);
        ensure!(node.is_none(), "{name} was bound to {node:?}");
        Ok(())
    }

    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"spec": {"unschedulable": if unschedulable { json!(true) } else { Value::Null }}});
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn cleanup(&self) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.pods
            .delete_collection(&dp, &ListParams::default())
            .await?;
        Ok(())
    }
}

fn zone_spread(app: &str) -> Value {
    json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]})
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_with_a_zone_spread_constraint_fill_the_three_zones_evenly() -> Result<()> {
    let t = Test::start("spread-even").await?;
    let web = names("web", 6);
    t.create_all(&web, json!({"app": "web"}), zone_spread("web"))
        .await?;
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for n in &web {
        let node = t.node_of(n).await?;
        let zone = t.zones.get(&node).context("bound to an unknown node")?;
        *per_zone.entry(zone.clone()).or_default() += 1;
    }
    ensure!(
        per_zone.values().all(|&c| c == 2) && per_zone.len() == 3,
        "6 pods over 3 zones: {per_zone:?}"
    );
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_that_would_break_the_zone_skew_waits_until_its_zone_opens() -> Result<()> {
    let t = Test::start("spread-skew").await?;
    let (cordoned, _) = t.zones.iter().last().context("no nodes")?;
    let cordoned = cordoned.clone();
    t.set_unschedulable(&cordoned, true).await?;
    let result = async {
        // Zones a and b take one pod each; zone c still counts (with 0 pods) although its only
        // node is cordoned, so a third pod anywhere else would make the skew 2.
        for n in names("web", 2) {
            t.create(&n, json!({"app": "web"}), zone_spread("web"))
                .await?;
            let node = t.node_of(&n).await?;
            ensure!(node != cordoned, "{n} bound to the cordoned node");
        }
        t.create("web-2", json!({"app": "web"}), zone_spread("web"))
            .await?;
        let msg = t.failed_scheduling("web-2").await?;
        let want = "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match pod topology spread constraints. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.";
        ensure!(msg == want, "message {msg:?}, expected {want:?}");
        t.stays_pending("web-2").await?;
        // Uncordoning is a node update that requeues the pod; zone c is where it fits.
        t.set_unschedulable(&cordoned, false).await?;
        let node = t.node_of("web-2").await?;
        ensure!(node == cordoned, "web-2 on {node}, expected {cordoned}");
        t.cleanup().await
    }
    .await;
    t.set_unschedulable(&cordoned, false).await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_anti_affinity_on_the_hostname_puts_one_pod_per_node_and_the_extra_one_waits()
-> Result<()> {
    let t = Test::start("anti-affinity").await?;
    let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": HOSTNAME}]}}});
    let solo = names("solo", 3);
    t.create_all(&solo, json!({"app": "solo"}), spec.clone())
        .await?;
    let mut placed = Vec::new();
    for n in &solo {
        placed.push(t.node_of(n).await?);
    }
    placed.sort();
    placed.dedup();
    ensure!(
        placed.len() == 3,
        "anti-affine pods share nodes: {placed:?}"
    );
    t.create("solo-extra", json!({"app": "solo"}), spec).await?;
    let msg = t.failed_scheduling("solo-extra").await?;
    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
        preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    ensure!(msg == want, "message {msg:?}, expected {want:?}");
    t.stays_pending("solo-extra").await?;
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_affinity_places_a_pod_on_its_targets_node_once_the_target_exists() -> Result<()> {
    let t = Test::start("affinity").await?;
    let affine = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": HOSTNAME}]}}});
    // No target yet, and the pod does not match its own term: nowhere fits.
    t.create("client-0", json!({"app": "client"}), affine.clone())
        .await?;
    let msg = t.failed_scheduling("client-0").await?;
    let want = "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
        preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    ensure!(msg == want, "message {msg:?}, expected {want:?}");
    // The target, pinned to the middle node so that the answer is not the first node.
    let (target, _) = t.zones.iter().nth(1).context("no nodes")?;
    t.create(
        "db",
        json!({"app": "db"}),
        json!({"nodeSelector": {HOSTNAME: target}}),
    )
    .await?;
    ensure!(&t.node_of("db").await? == target, "db not on {target}");
    // Binding the target requeues the waiting pod; a new one goes straight there.
    t.create("client-1", json!({"app": "client"}), affine)
        .await?;
    for c in ["client-0", "client-1"] {
        let node = t.node_of(c).await?;
        ensure!(&node == target, "{c} on {node}, expected {target}");
    }
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_affinity_outweighs_the_emptier_nodes() -> Result<()> {
    let t = Test::start("preferred").await?;
    let (target, _) = t.zones.iter().last().context("no nodes")?;
    // The target runs a pod that makes its node the busiest one.
    t.create(
        "cache",
        json!({"app": "cache"}),
        json!({"nodeSelector": {HOSTNAME: target},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": "1"}}}]}),
    )
    .await?;
    ensure!(
        &t.node_of("cache").await? == target,
        "cache not on {target}"
    );
    let near = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}},
            "topologyKey": HOSTNAME}}]}}});
    for n in names("near", 3) {
        t.create(&n, json!({"app": "near"}), near.clone()).await?;
        let node = t.node_of(&n).await?;
        ensure!(&node == target, "{n} on {node}, expected {target}");
    }
    t.cleanup().await
}
