//! Side-by-side benchmarks: the same scenario against the stock component and Ferrite's, each on
//! a fresh bed of identical shape on this machine, with the same client QPS limits. Prints
//! figures and ratios; it is not a pass/fail test.
//!
//!   bench deployment [--nodes 100] [--replicas 3000]
//!       time until a Deployment is Available, time for a full rolling update of it, and the
//!       controller manager's CPU-seconds and peak RSS (both run only the deployment and
//!       replicaset controllers; stock kube-scheduler binds the pods).
//!
//!   bench job [--nodes 100] [--completions 2000] [--parallelism 200]
//!       time until a Job is Complete (kwok completes its pods), and the controller manager's
//!       CPU-seconds and peak RSS (both run only the job controller).
//!
//!   bench gc [--objects 20000] [--namespaces 50] [--pods 2000] [--nodes 25]
//!       the garbage collector's graph over many ConfigMaps (time until collecting, CPU-seconds,
//!       peak RSS) and the time to collect a deleted Deployment's pods.
//!
//!   bench scheduler [--nodes 500] [--init-pods 500] [--measure-pods 2000]
//!                   [--workload basic|anti-affinity|spread|node-affinity|preemption|all]
//!       scheduler_perf-style throughput (average, p50/p90 per second), scheduling attempt p99,
//!       the scheduler's CPU-seconds and peak RSS, stock kube-scheduler vs Ferrite, a trivial
//!       binder's ceiling, and a validity check of every placement.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use ferrite_e2e::bed::{Bed, BedOptions, Component};
use ferrite_e2e::measure::{ProcessStats, process_stats};
use ferrite_e2e::process::Mode;
use ferrite_e2e::testing;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Ferrite vs the stock components, side by side"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Deployment rollout (the controller manager's deployment + replicaset controllers).
    Deployment {
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        #[arg(long, default_value_t = 3000)]
        replicas: i32,
        /// Give up on a phase after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// One Job run to completion (the controller manager's job controller; kwok completes pods).
    Job {
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        #[arg(long, default_value_t = 2000)]
        completions: i32,
        #[arg(long, default_value_t = 200)]
        parallelism: i32,
        /// Give up on a run after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Scheduler throughput, latency and cost (scheduler_perf workloads), plus a trivial binder's
    /// ceiling and a validity check.
    Scheduler {
        #[arg(long, default_value_t = 500)]
        nodes: u32,
        #[arg(long, default_value_t = 500)]
        init_pods: usize,
        #[arg(long, default_value_t = 2000)]
        measure_pods: usize,
        #[arg(long, value_enum, default_value = "all")]
        workload: ferrite_e2e::bench::scheduler::Workload,
        /// Concurrent pod creators.
        #[arg(long, default_value_t = 8)]
        creators: usize,
        /// The creators' shared rate in pods/s (0: unlimited); the same for every run.
        #[arg(long, default_value_t = 200.0)]
        create_qps: f64,
        /// Client QPS and burst of both schedulers and of the trivial binder.
        #[arg(long, default_value_t = 50.0)]
        qps: f64,
        #[arg(long, default_value_t = 100)]
        burst: u32,
        /// Give up on a run's phase after this many seconds ("did not finish").
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Garbage collector: graph over many objects, then a Deployment collected.
    Gc {
        #[arg(long, default_value_t = 25)]
        nodes: u32,
        #[arg(long, default_value_t = 20000)]
        objects: usize,
        #[arg(long, default_value_t = 50)]
        namespaces: usize,
        #[arg(long, default_value_t = 2000)]
        pods: i32,
        /// Give up on a phase after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
}

struct Figures {
    available: Duration,
    rollout: Duration,
    stats: ProcessStats,
}

#[tokio::main]
async fn main() {
    testing::init_logging();
    let result = match Cli::parse().scenario {
        Scenario::Deployment {
            nodes,
            replicas,
            timeout,
        } => deployment(nodes, replicas, Duration::from_secs(timeout)).await,
        Scenario::Job {
            nodes,
            completions,
            parallelism,
            timeout,
        } => {
            ferrite_e2e::bench::job::run(ferrite_e2e::bench::job::JobBench {
                nodes,
                completions,
                parallelism,
                timeout: Duration::from_secs(timeout),
            })
            .await
        }
        Scenario::Scheduler {
            nodes,
            init_pods,
            measure_pods,
            workload,
            creators,
            create_qps,
            qps,
            burst,
            timeout,
        } => {
            ferrite_e2e::bench::scheduler::run(ferrite_e2e::bench::scheduler::SchedulerBench {
                nodes,
                init_pods,
                measure_pods,
                workload,
                creators,
                create_qps,
                qps,
                burst,
                timeout: Duration::from_secs(timeout),
            })
            .await
        }
        Scenario::Gc {
            nodes,
            objects,
            namespaces,
            pods,
            timeout,
        } => {
            ferrite_e2e::bench::gc::run(ferrite_e2e::bench::gc::GcBench {
                nodes,
                objects,
                namespaces,
                pods,
                timeout: Duration::from_secs(timeout),
            })
            .await
        }
    };
    if let Err(e) = result {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

async fn deployment(nodes: u32, replicas: i32, timeout: Duration) -> Result<()> {
    let stock = deployment_run(Component::Stock, nodes, replicas, timeout)
        .await
        .context("stock run")?;
    let ferrite = deployment_run(Component::Ferrite, nodes, replicas, timeout)
        .await
        .context("ferrite run")?;
    println!(
        "\nDeployment of {replicas} replicas on {nodes} kwok nodes (stock kube-scheduler binds):"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>16}",
        "", "stock kcm", "ferrite", "ferrite/stock"
    );
    let row = |name: &str, s: f64, f: f64, unit: &str| {
        println!(
            "{name:<34} {:>12.1}{unit} {:>12.1}{unit} {:>16.2}",
            s,
            f,
            if s > 0.0 { f / s } else { f64::NAN }
        );
    };
    row(
        "time to Available",
        stock.available.as_secs_f64(),
        ferrite.available.as_secs_f64(),
        " s",
    );
    row(
        "rolling update",
        stock.rollout.as_secs_f64(),
        ferrite.rollout.as_secs_f64(),
        " s",
    );
    row(
        "controller CPU-seconds",
        stock.stats.cpu_seconds,
        ferrite.stats.cpu_seconds,
        " s",
    );
    row(
        "controller peak RSS",
        stock.stats.peak_rss_bytes as f64 / 1048576.0,
        ferrite.stats.peak_rss_bytes as f64 / 1048576.0,
        "Mi",
    );
    Ok(())
}

async fn deployment_run(
    component: Component,
    nodes: u32,
    replicas: i32,
    timeout: Duration,
) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "ferrite-bench-{}-{component:?}",
        std::process::id()
    ));
    let mut opts = BedOptions::new(&dir);
    opts.nodes = nodes;
    opts.scheduler = Component::Stock;
    let bed = Bed::up(opts, Mode::Attached).await?;
    let result = deployment_phases(&bed, component, replicas, timeout).await;
    bed.down();
    result
}

async fn deployment_phases(
    bed: &Bed,
    component: Component,
    replicas: i32,
    timeout: Duration,
) -> Result<Figures> {
    let controllers = "--controllers=deployment,replicaset";
    match component {
        Component::Stock => bed.start_stock("kcm", "kube-controller-manager", &[controllers])?,
        _ => bed.start_ferrite("kcm", "controller-manager", &[controllers])?,
    };
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "bench").await?;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/bench:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
            }
        }
    }))?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    api.create(&PostParams::default(), &deploy).await?;
    wait_rolled_out(&api, replicas, timeout).await?;
    let available = start.elapsed();
    eprintln!(
        "{component:?}: Available after {:.1}s",
        available.as_secs_f64()
    );

    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {"bench/restartedAt": "1"}}}}});
    let start = Instant::now();
    api.patch("bench", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_rolled_out(&api, replicas, timeout).await?;
    let rollout = start.elapsed();
    eprintln!(
        "{component:?}: rolled out after {:.1}s",
        rollout.as_secs_f64()
    );
    let pid = bed.pid("kcm").context("no kcm pid")?;
    let stats = process_stats(pid).context("kcm exited")?;
    Ok(Figures {
        available,
        rollout,
        stats,
    })
}

/// Waits the way `kubectl rollout status` does: observed the latest generation, all replicas
/// updated, available, and no old ones left.
async fn wait_rolled_out(api: &Api<Deployment>, replicas: i32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let d = api.get("bench").await?;
        let generation = d.metadata.generation.unwrap_or(0);
        if let Some(s) = &d.status
            && s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == replicas
            && s.replicas.unwrap_or(0) == replicas
            && s.available_replicas.unwrap_or(0) == replicas
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not rolled out after {timeout:?}: {:?}", d.status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
