//! Job benchmark: one NonIndexed Job of `completions` pods, `parallelism` at a time, on a bed of
//! `nodes` kwok nodes whose pod-complete stage moves each Running Job pod to Succeeded. The
//! controller manager runs only the job controller (`--controllers=job`); the stock scheduler
//! binds the pods. Measured: time from creating the Job to its Complete condition, and the
//! controller manager's CPU-seconds and peak RSS at that point.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

use crate::bed::{Bed, BedOptions, Component};
use crate::bench::Table;
use crate::measure::{ProcessStats, process_stats};
use crate::process::Mode;
use crate::testing;

/// The process name of the measured controller manager on the bed.
const CM: &str = "kcm";

#[derive(Clone, Copy, Debug)]
pub struct JobBench {
    pub nodes: u32,
    pub completions: i32,
    pub parallelism: i32,
    /// Give up on a run after this long.
    pub timeout: Duration,
}

struct Figures {
    complete: Duration,
    stats: ProcessStats,
}

/// Runs the scenario against the stock controller manager, then Ferrite's, each on a fresh bed,
/// and prints the table.
pub async fn run(b: JobBench) -> Result<()> {
    let stock = run_on(Component::Stock, b).await.context("stock run")?;
    let ferrite = run_on(Component::Ferrite, b).await.context("ferrite run")?;
    Table::new(format!(
        "Job of {} completions, parallelism {}, on {} kwok nodes (kwok completes pods, stock \
         kube-scheduler binds)",
        b.completions, b.parallelism, b.nodes
    ))
    .seconds(
        "time to Complete",
        stock.complete.as_secs_f64(),
        ferrite.complete.as_secs_f64(),
    )
    .process("controller manager", stock.stats, ferrite.stats)
    .print();
    Ok(())
}

async fn run_on(component: Component, b: JobBench) -> Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "ferrite-bench-job-{}-{component:?}",
        std::process::id()
    ));
    let mut opts = BedOptions::new(&dir);
    opts.nodes = b.nodes;
    opts.scheduler = Component::Stock;
    opts.controller_manager = Component::None;
    opts.complete_job_pods = true;
    let bed = Bed::up(opts, Mode::Attached).await?;
    let result = measure(&bed, component, b).await;
    bed.down();
    result
}

async fn measure(bed: &Bed, component: Component, b: JobBench) -> Result<Figures> {
    let controllers = "--controllers=job";
    let lease = match component {
        Component::Stock => {
            bed.start_stock(CM, "kube-controller-manager", &[controllers])?;
            "kube-controller-manager"
        }
        _ => {
            bed.start_ferrite(CM, "controller-manager", &[controllers])?;
            "ferrite-controller-manager"
        }
    };
    let client = bed.client().await?;
    wait_lease(&client, lease, Duration::from_secs(60))
        .await
        .with_context(|| bed.log_tail(CM))?;
    let ns = testing::namespace(&client, "bench").await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    let job: Job = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "completions": b.completions,
            "parallelism": b.parallelism,
            "backoffLimit": 6,
            "template": {"spec": {
                "containers": [{"name": "c", "image": "registry.invalid/bench:1",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
            }},
        },
    }))?;
    let api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    api.create(&PostParams::default(), &job).await?;
    let deadline = start + b.timeout;
    let mut last_report = Instant::now();
    loop {
        let j = api.get("bench").await?;
        let s = j.status.clone().unwrap_or_default();
        let complete = s
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        if complete {
            break;
        }
        if s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Failed" && c.status == "True")
        {
            bail!("the Job failed: {s:?}");
        }
        if Instant::now() > deadline {
            bail!(
                "not Complete after {:?}: {s:?}\n{}",
                b.timeout,
                bed.log_tail(CM)
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{component:?}: {:.0}s, succeeded {}, active {}",
                start.elapsed().as_secs_f64(),
                s.succeeded.unwrap_or(0),
                s.active.unwrap_or(0)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let complete = start.elapsed();
    let pid = bed.pid(CM).context("no controller manager pid")?;
    let stats = process_stats(pid).context("the controller manager exited")?;
    eprintln!(
        "{component:?}: Complete after {:.1}s",
        complete.as_secs_f64()
    );
    Ok(Figures { complete, stats })
}

async fn wait_lease(client: &kube::Client, name: &str, timeout: Duration) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + timeout;
    loop {
        let held = leases
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
            .is_some_and(|h| !h.is_empty());
        if held {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("lease {name} not held after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
