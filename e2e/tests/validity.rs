//! The scheduling validity checker (ferrite_e2e::validity) against a real bed: what Ferrite's
//! scheduler places validates clean, and placements made by hand with `spec.nodeName` (which
//! bypasses every scheduler) that over-commit a node, break anti-affinity, ignore a
//! nodeSelector or an untolerated taint are reported.
//!
//! The hand-made violations go to nodes of their own, tainted so that the scheduler never puts
//! the other tests' pods there; those pods tolerate everything, so only the intended rule breaks.

use std::time::Duration;

use anyhow::Result;
use ferrite_e2e::bed::kwok_node;
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::validity::{self, Violation};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
const ZONE: &str = "topology.kubernetes.io/zone";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.scheduler = Component::Ferrite;
        o.controller_manager = Component::None;
        o
    })
    .await
}

async fn setup(prefix: &str) -> Result<(kube::Client, String, Api<Pod>)> {
    let client = bed().await.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    let pods = Api::namespaced(client.clone(), &ns);
    Ok((client, ns, pods))
}

fn pod(name: &str, labels: Value, spec: Value) -> Result<Pod> {
    let mut spec = spec;
    spec["terminationGracePeriodSeconds"] = json!(0);
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))?)
}

/// A kwok node of the test's own, tainted so the scheduler leaves it alone.
async fn private_node(client: &kube::Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut node = kwok_node(&name);
    node.spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new)
        .push(serde_json::from_value(
            json!({"key": "validity-test", "value": "private", "effect": "NoSchedule"}),
        )?);
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(name)
}

fn tolerate_all(spec: Value, node: &str) -> Value {
    let mut spec = spec;
    spec["nodeName"] = json!(node);
    spec["tolerations"] = json!([{"operator": "Exists"}]);
    spec
}

async fn all_bound(pods: &Api<Pod>, want: usize) -> Result<()> {
    eventually(&format!("{want} pods bound"), TIMEOUT, POLL, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        (bound >= want).then_some(())
    })
    .await
}

fn messages(v: &[Violation]) -> String {
    v.iter().map(|v| format!("\n  {v}")).collect()
}

#[tokio::test]
async fn a_small_mixed_workload_placed_by_ferrite_validates_clean() -> Result<()> {
    let (client, ns, pods) = setup("validity-mixed").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..3 {
        let patch = json!({"metadata": {"labels": {ZONE: format!("zone-{i}")}}});
        nodes
            .patch(
                &format!("kwok-node-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let pp = PostParams::default();
    let mut n = 0;
    for i in 0..6 {
        pods.create(&pp, &pod(&format!("basic-{i}"), json!({}), json!({}))?)
            .await?;
        n += 1;
    }
    for i in 0..3 {
        let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
        pods.create(
            &pp,
            &pod(&format!("anti-{i}"), json!({"app": "anti"}), spec)?,
        )
        .await?;
        n += 1;
    }
    for i in 0..6 {
        let spec = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE,
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]});
        pods.create(
            &pp,
            &pod(&format!("spread-{i}"), json!({"app": "spread"}), spec)?,
        )
        .await?;
        n += 1;
    }
    for i in 0..4 {
        let spec = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": ZONE, "operator": "In",
                "values": ["zone-0", "zone-1"]}]}]}}}});
        pods.create(&pp, &pod(&format!("affinity-{i}"), json!({}), spec)?)
            .await?;
        n += 1;
    }
    all_bound(&pods, n).await?;
    let v = validity::check(&client, std::slice::from_ref(&ns)).await?;
    assert!(v.is_empty(), "violations:{}", messages(&v));
    Ok(())
}

#[tokio::test]
async fn pods_bound_by_hand_beyond_a_nodes_cpu_are_reported_as_an_overcommit() -> Result<()> {
    let (client, ns, pods) = setup("validity-overcommit").await?;
    let node = private_node(&client, "validity-overcommit").await?;
    let big = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "3", "memory": "64Mi"}}}]});
    for i in 0..2 {
        pods.create(
            &PostParams::default(),
            &pod(
                &format!("big-{i}"),
                json!({}),
                tolerate_all(big.clone(), &node),
            )?,
        )
        .await?;
    }
    let v = validity::check(&client, std::slice::from_ref(&ns)).await?;
    assert_eq!(v.len(), 1, "violations:{}", messages(&v));
    assert_eq!(v[0].node, node);
    assert!(
        v[0].message
            .contains("cpu over-committed: pods request 6000m of 4000m allocatable"),
        "{}",
        v[0]
    );
    Ok(())
}

#[tokio::test]
async fn anti_affine_pods_bound_by_hand_to_one_node_are_both_reported() -> Result<()> {
    let (client, ns, pods) = setup("validity-anti").await?;
    let node = private_node(&client, "validity-anti").await?;
    let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..2 {
        pods.create(
            &PostParams::default(),
            &pod(
                &format!("anti-{i}"),
                json!({"app": "anti"}),
                tolerate_all(spec.clone(), &node),
            )?,
        )
        .await?;
    }
    let v = validity::check(&client, std::slice::from_ref(&ns)).await?;
    let broken: Vec<&str> = v
        .iter()
        .filter(|v| v.message.contains("required pod anti-affinity"))
        .map(|v| v.pod.as_str())
        .collect();
    assert_eq!(
        broken,
        [format!("{ns}/anti-0"), format!("{ns}/anti-1")],
        "violations:{}",
        messages(&v)
    );
    assert_eq!(v.len(), 2, "violations:{}", messages(&v));
    Ok(())
}

#[tokio::test]
async fn a_pod_bound_by_hand_against_its_node_selector_and_a_taint_is_reported() -> Result<()> {
    let (client, ns, pods) = setup("validity-selector").await?;
    let node = private_node(&client, "validity-selector").await?;
    let spec = json!({"nodeName": node, "nodeSelector": {ZONE: "nowhere"}});
    pods.create(&PostParams::default(), &pod("stray", json!({}), spec)?)
        .await?;
    let v = validity::check(&client, std::slice::from_ref(&ns)).await?;
    let text = messages(&v);
    assert!(
        v.iter().all(|v| v.pod == format!("{ns}/stray")),
        "violations:{text}"
    );
    assert!(
        text.contains(&format!("nodeSelector {ZONE}=nowhere not matched")),
        "violations:{text}"
    );
    assert!(
        text.contains("does not tolerate taint validity-test=private:NoSchedule"),
        "violations:{text}"
    );
    Ok(())
}
