//! Garbage-collector benchmark. `objects` ConfigMaps across `namespaces` namespaces (every fourth
//! owned by another ConfigMap of its namespace, so the graph has edges but nothing is garbage)
//! exist before the controller manager starts with `--controllers=garbagecollector,deployment,
//! replicaset`. Measured: time until the collector works (a probe ConfigMap with a dangling
//! owner is collected, which needs a synced graph), the controller manager's CPU-seconds and
//! peak RSS at that point; then the time to collect a deleted (background) Deployment of `pods`
//! pods bound by the stock scheduler to kwok nodes, and the process figures after it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::bed::{Bed, BedOptions, Component};
use crate::bench::Table;
use crate::measure::{ProcessStats, process_stats};
use crate::process::Mode;
use crate::testing;

/// The process name of the measured controller manager on the bed.
const CM: &str = "kcm";
/// ConfigMap creations in flight at once while filling the bed.
const PARALLEL_CREATES: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct GcBench {
    pub nodes: u32,
    pub objects: usize,
    pub namespaces: usize,
    pub pods: i32,
    /// Give up on a phase after this long.
    pub timeout: Duration,
}

struct Figures {
    synced: Duration,
    at_sync: ProcessStats,
    collect: Duration,
    at_end: ProcessStats,
}

/// Runs the scenario against the stock controller manager, then Ferrite's, each on a fresh bed,
/// and prints the table.
pub async fn run(b: GcBench) -> Result<()> {
    let stock = run_on(Component::Stock, b).await.context("stock run")?;
    let ferrite = run_on(Component::Ferrite, b).await.context("ferrite run")?;
    Table::new(format!(
        "Garbage collector over {} ConfigMaps in {} namespaces, then a Deployment of {} pods \
         deleted in the background ({} kwok nodes, stock kube-scheduler binds)",
        b.objects, b.namespaces, b.pods, b.nodes
    ))
    .seconds(
        "time until collecting",
        stock.synced.as_secs_f64(),
        ferrite.synced.as_secs_f64(),
    )
    .process("kcm after graph sync", stock.at_sync, ferrite.at_sync)
    .seconds(
        "Deployment collected",
        stock.collect.as_secs_f64(),
        ferrite.collect.as_secs_f64(),
    )
    .process("kcm at the end", stock.at_end, ferrite.at_end)
    .print();
    Ok(())
}

async fn run_on(component: Component, b: GcBench) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "ferrite-bench-gc-{}-{component:?}",
        std::process::id()
    ));
    let mut opts = BedOptions::new(&dir);
    opts.nodes = b.nodes;
    opts.scheduler = Component::Stock;
    opts.controller_manager = Component::None;
    let bed = Bed::up(opts, Mode::Attached).await?;
    let result = measure(&bed, component, b).await;
    bed.down();
    result
}

async fn fill(client: &kube::Client, b: GcBench) -> Result<Vec<String>> {
    let mut namespaces = Vec::with_capacity(b.namespaces);
    for _ in 0..b.namespaces.max(1) {
        namespaces.push(testing::namespace(client, "gc-bench").await?);
    }
    let per_ns = b.objects.div_ceil(namespaces.len());
    for ns in &namespaces {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        // Owners first (every fourth object is owned by the one just before it).
        let mut owners = Vec::new();
        let made: Vec<ConfigMap> = futures::stream::iter((0..per_ns).filter(|i| i % 4 != 3))
            .map(|i| {
                let api = api.clone();
                async move {
                    let cm: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": format!("cm-{i}"), "labels": {"bench": "gc"}},
                        "data": {"k": "v"},
                    }))?;
                    Ok::<_, anyhow::Error>(api.create(&PostParams::default(), &cm).await?)
                }
            })
            .buffer_unordered(PARALLEL_CREATES)
            .try_collect()
            .await?;
        for cm in made {
            let (Some(name), Some(uid)) = (cm.metadata.name, cm.metadata.uid) else {
                continue;
            };
            owners.push((name, uid));
        }
        owners.sort();
        let dependents = per_ns - owners.len();
        futures::stream::iter(0..dependents)
            .map(|i| {
                let api = api.clone();
                let (owner, uid) = owners[i % owners.len().max(1)].clone();
                async move {
                    let cm: ConfigMap = serde_json::from_value(json!({
                        "metadata": {"name": format!("dep-{i}"), "ownerReferences": [{
                            "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid,
                        }]},
                        "data": {"k": "v"},
                    }))?;
                    Ok::<_, anyhow::Error>(api.create(&PostParams::default(), &cm).await?)
                }
            })
            .buffer_unordered(PARALLEL_CREATES)
            .try_collect::<Vec<_>>()
            .await?;
    }
    Ok(namespaces)
}

async fn measure(bed: &Bed, component: Component, b: GcBench) -> Result<Figures> {
    let client = bed.client().await?;
    let started = Instant::now();
    let namespaces = fill(&client, b).await?;
    eprintln!(
        "{component:?}: {} ConfigMaps in {} namespaces after {:.1}s",
        b.objects,
        namespaces.len(),
        started.elapsed().as_secs_f64()
    );
    let ns = namespaces
        .first()
        .cloned()
        .context("no namespace was made")?;
    testing::ensure_default_service_account(&client, &ns).await?;

    let controllers = "--controllers=garbagecollector,deployment,replicaset";
    let start = Instant::now();
    match component {
        Component::Stock => bed.start_stock(CM, "kube-controller-manager", &[controllers])?,
        _ => bed.start_ferrite(CM, "controller-manager", &[controllers])?,
    };
    // The probe is collected only once the collector's graph has synced and its workers run.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let probe: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "probe", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
            "uid": "00000000-0000-0000-0000-00000000beef",
        }]},
    }))?;
    cms.create(&PostParams::default(), &probe).await?;
    wait(b.timeout, "the probe collected", || async {
        Ok(cms.get_opt("probe").await?.is_none())
    })
    .await
    .with_context(|| bed.log_tail(CM))?;
    let synced = start.elapsed();
    let pid = bed.pid(CM).context("no controller manager pid")?;
    let at_sync = process_stats(pid).context("the controller manager exited")?;
    eprintln!(
        "{component:?}: collecting after {:.1}s",
        synced.as_secs_f64()
    );

    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": b.pods,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.invalid/bench:1",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    deployments.create(&PostParams::default(), &deploy).await?;
    let want = usize::try_from(b.pods).unwrap_or(0);
    wait(b.timeout, "the Deployment's pods bound", || async {
        let list = pods.list(&ListParams::default()).await?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        Ok(bound >= want)
    })
    .await?;
    let start = Instant::now();
    deployments
        .delete("bench", &DeleteParams::background())
        .await?;
    wait(b.timeout, "the Deployment's pods collected", || async {
        let p = pods.list(&ListParams::default()).await?.items.len();
        let r = rss.list(&ListParams::default()).await?.items.len();
        Ok(p == 0 && r == 0)
    })
    .await
    .with_context(|| bed.log_tail(CM))?;
    let collect = start.elapsed();
    let at_end = process_stats(pid).context("the controller manager exited")?;
    eprintln!(
        "{component:?}: Deployment of {} pods collected after {:.1}s",
        b.pods,
        collect.as_secs_f64()
    );
    Ok(Figures {
        synced,
        at_sync,
        collect,
        at_end,
    })
}

async fn wait<F, Fut>(timeout: Duration, what: &str, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => eprintln!("{what}: {e:#}"),
        }
        if Instant::now() > deadline {
            bail!("{what}: not after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
