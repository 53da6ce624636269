//! The bed is a real cluster: with the stock controller manager and scheduler on it, a Deployment
//! rolls out onto kwok's fake nodes exactly as on a real cluster. Every other scenario relies on
//! this, so a broken bed fails here first and plainly.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::bed::node_ready;
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};

const NODES: u32 = 10;
const REPLICAS: i32 = 10;

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = NODES;
        o.controller_manager = Component::Stock;
        o.scheduler = Component::Stock;
        o
    })
    .await
}

fn pod_is_running_ready_on_a_kwok_node(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let on_kwok = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| n.starts_with("kwok-node-"));
    running && ready && on_kwok && pod.metadata.deletion_timestamp.is_none()
}

#[tokio::test]
async fn a_ten_replica_deployment_becomes_available_with_every_pod_running_on_a_kwok_node()
-> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "bed").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // kwok never pulls images, so any image name will do.
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:never-pulled"}]},
            },
        },
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    eventually(
        "web to report 10 available replicas",
        Duration::from_secs(180),
        Duration::from_millis(500),
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.status?.available_replicas? == REPLICAS).then_some(())
        },
    )
    .await?;

    // The Deployment's count comes from the ReplicaSet controller; check the pods themselves.
    let selector = ListParams::default().labels("app=web");
    let running = eventually(
        "every pod of web to be Running, Ready and bound to a kwok node",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = pods.list(&selector).await.ok()?;
            let live: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == REPLICAS as usize
                && live.iter().all(|p| pod_is_running_ready_on_a_kwok_node(p)))
            .then_some(live.len())
        },
    )
    .await;
    if running.is_err() {
        let list = pods.list(&selector).await?;
        let states: Vec<String> = list
            .items
            .iter()
            .map(|p| {
                format!(
                    "{} phase={:?} node={:?}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                )
            })
            .collect();
        running.with_context(|| format!("pods now: {states:#?}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn every_kwok_node_is_ready_with_four_cpus_32gi_and_110_pods() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default().labels("type=kwok"))
        .await?;
    ensure!(
        list.items.len() == NODES as usize,
        "want {NODES} kwok nodes, found {}",
        list.items.len()
    );
    for node in &list.items {
        let name = node.metadata.name.as_deref().unwrap_or("?");
        ensure!(
            name.starts_with("kwok-node-"),
            "unexpected node name {name}"
        );
        ensure!(
            node_ready(node),
            "node {name} is not Ready: {:?}",
            node.status.as_ref().and_then(|s| s.conditions.as_ref())
        );
        let capacity = node
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .with_context(|| format!("node {name} has no capacity"))?;
        for (resource, want) in [("cpu", "4"), ("memory", "32Gi"), ("pods", "110")] {
            let got = capacity.get(resource).map(|q| q.0.as_str());
            ensure!(
                got == Some(want),
                "node {name}: capacity {resource} is {got:?}, want {want}"
            );
        }
    }
    Ok(())
}
