//! The HA proof on a local node: Ferrite hosts itself (2 replicas of each component as
//! Deployments, pivoted by `ferrite bootstrap up`), a 200-replica Deployment rolls out, and while
//! the rollout is in flight the leader pod of each component is deleted. Each time a standby
//! must lead within lease duration + retry period (15 s + 2 s), the rollout must complete, and
//! the number of pods ever created must be exactly what the rollout needs (200 new pods: no
//! duplicate from a double-acting or forgetful leader). Ten repetitions; the takeover times are
//! printed.
//!
//! The 200 pods run on kwok nodes registered with the node's apiserver (a 2-core machine cannot
//! run 200 containers, and the kubelet holds 110 pods), tainted so that only the workload lands
//! there; Ferrite's own pods run on the real node under its kubelet.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::bed::kwok_node;
use ferrite_e2e::local_node::{self, LocalNode, NAMESPACE};
use ferrite_e2e::process::{self, Mode};
use ferrite_e2e::stock;
use ferrite_e2e::testing::{self, eventually};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

const REPLICAS: i32 = 200;
const REPETITIONS: usize = 10;
const KWOK_NODES: usize = 3;
const FAKE_TAINT: &str = "ferrite.dev/kwok";
/// Lease duration + retry period (the components' defaults).
const TAKEOVER_BOUND: Duration = Duration::from_secs(17);

fn start_kwok(dir: &std::path::Path) -> Result<process::Proc> {
    let mut cmd = Command::new(stock::binary("kwok"));
    cmd.args([
        format!("--kubeconfig={}", dir.join("admin.conf").display()),
        "--manage-all-nodes=false".into(),
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
        "--node-lease-duration-seconds=40".into(),
        // Addresses kwok writes into pod and node status only; nothing is sent to them.
        "--cidr=10.128.0.0/16".into(),
        "--node-ip=10.127.0.1".into(),
    ]);
    for stage in [
        "node-initialize",
        "node-heartbeat-with-lease",
        "pod-ready",
        "pod-delete",
    ] {
        cmd.arg(format!("--config={}", stock::kwok_stage(stage).display()));
    }
    Ok(process::spawn(
        "kwok",
        cmd,
        &dir.join("logs").join("kwok.log"),
        Mode::Attached,
    )?)
}

async fn add_kwok_nodes(client: &kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..KWOK_NODES {
        let mut node = kwok_node(&format!("kwok-node-{i}"));
        // Only the workload tolerates it: Ferrite's own pods stay on the real node.
        node.spec = Some(serde_json::from_value(json!({
            "taints": [{"key": FAKE_TAINT, "value": "true", "effect": "NoSchedule"}]
        }))?);
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    eventually(
        "the kwok nodes Ready",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let list = nodes
                .list(&ListParams::default().labels("type=kwok"))
                .await
                .ok()?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            (ready == KWOK_NODES).then_some(())
        },
    )
    .await
}

fn workload() -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "load"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "load"}},
            "template": {
                "metadata": {"labels": {"app": "load"}},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [
                        {"key": FAKE_TAINT, "operator": "Exists"},
                    ],
                    "containers": [{"name": "c", "image": "fake-image"}],
                },
            },
        },
    }))?)
}

fn rolled_out(d: &Deployment) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(REPLICAS)
        && s.replicas == Some(REPLICAS)
        && s.available_replicas == Some(REPLICAS)
}

async fn leader_pod(leases: &Api<Lease>, component: &str) -> Option<String> {
    let holder = leases
        .get(&format!("ferrite-{component}"))
        .await
        .ok()?
        .spec?
        .holder_identity?;
    holder.rsplit_once('_').map(|(h, _)| h.to_string())
}

/// Deletes the leader pod of `component` and returns how long until a different pod holds the
/// Lease.
async fn delete_leader(
    client: kube::Client,
    component: &'static str,
) -> Result<(String, Duration)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let leader = leader_pod(&leases, component)
        .await
        .with_context(|| format!("no leader for {component}"))?;
    let deleted = Instant::now();
    pods.delete(&leader, &DeleteParams::default()).await?;
    loop {
        if let Some(now) = leader_pod(&leases, component).await
            && now != leader
        {
            return Ok((component.to_string(), deleted.elapsed()));
        }
        if deleted.elapsed() > Duration::from_secs(60) {
            bail!("{component}: no standby took the Lease from {leader} in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts the pods created in `ns` (distinct UIDs of ADDED events) from `rv` on, until
/// `stop` resolves.
async fn count_created(
    pods: Api<Pod>,
    rv: String,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    let stream = pods
        .watch(&WatchParams::default().timeout(290), &rv)
        .await?;
    let mut stream = Box::pin(stream);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(seen),
            ev = stream.try_next() => match ev? {
                Some(WatchEvent::Added(p)) => {
                    if let Some(uid) = p.metadata.uid { seen.insert(uid); }
                }
                Some(WatchEvent::Error(e)) => bail!("watch failed: {e:?}"),
                Some(_) => {}
                None => bail!("the pod watch ended before the rollout did"),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_each_leader_during_a_200_replica_rollout_hands_over_without_duplicate_pods()
-> Result<()> {
    local_node::prepare()?;
    let node = LocalNode::up().await?;
    let client = node.client.clone();
    let mut kwok = start_kwok(&node.dir)?;
    add_kwok_nodes(&client).await?;

    let ns = testing::namespace(&client, "ha").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &workload()?)
        .await?;
    let ready = |what: String| {
        let deployments = deployments.clone();
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let waited = eventually(
                &what,
                Duration::from_secs(240),
                Duration::from_millis(500),
                || async {
                    deployments
                        .get("load")
                        .await
                        .ok()
                        .filter(rolled_out)
                        .map(|_| ())
                },
            )
            .await;
            match waited {
                Ok(()) => Ok(()),
                Err(e) => Err(e.context(local_node::report(&client, &ns).await)),
            }
        }
    };
    ready("the first 200 replicas".into()).await?;

    let mut takeovers: Vec<(usize, String, Duration)> = Vec::new();
    for rep in 0..REPETITIONS {
        let rv = pods
            .list_metadata(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let counter = tokio::spawn(count_created(pods.clone(), rv, stop_rx));
        let started = Instant::now();
        deployments
            .patch(
                "load",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rep": rep.to_string()}}}}})),
            )
            .await?;
        // In flight: the new ReplicaSet has started creating pods.
        eventually(
            "the rollout to start",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let d = deployments.get("load").await.ok()?;
                let updated = d.status.and_then(|s| s.updated_replicas).unwrap_or(0);
                (updated > 0 && updated < REPLICAS).then_some(())
            },
        )
        .await?;
        let handovers = futures::future::join_all(
            ["controller-manager", "scheduler"].map(|c| delete_leader(client.clone(), c)),
        )
        .await;
        for h in handovers {
            let (component, took) = h?;
            ensure!(
                took <= TAKEOVER_BOUND,
                "repetition {rep}: {component} took {took:?} to hand over (bound {TAKEOVER_BOUND:?})"
            );
            takeovers.push((rep, component, took));
        }
        ready(format!("repetition {rep}'s rollout to complete")).await?;
        let rollout = started.elapsed();
        // A surplus pod would be created and deleted again by now; give late creations a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stop_tx.send(());
        let created = counter.await??;
        ensure!(
            created.len() == REPLICAS as usize,
            "repetition {rep}: {} pods were created for a rollout that needs {REPLICAS}",
            created.len()
        );
        eprintln!(
            "repetition {rep}: rollout {:.1}s, {} pods created",
            rollout.as_secs_f64(),
            created.len()
        );
        // Both Ferrite Deployments back at 2/2 (the new leaders replace the deleted pods).
        local_node::wait_self_hosted(&client, Duration::from_secs(120)).await?;
        ensure!(kwok.is_running(), "kwok exited");
    }

    eprintln!("takeover times (delete of the leader pod → a standby holds the Lease):");
    for component in ["controller-manager", "scheduler"] {
        let times: Vec<f64> = takeovers
            .iter()
            .filter(|(_, c, _)| c == component)
            .map(|(_, _, d)| d.as_secs_f64())
            .collect();
        let max = times.iter().cloned().fold(0.0, f64::max);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        eprintln!(
            "  {component}: {} (mean {mean:.2}s, max {max:.2}s)",
            times
                .iter()
                .map(|t| format!("{t:.2}s"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    kwok.stop(Duration::from_secs(5));
    drop(node);
    Ok(())
}
