//! A CronJob running every minute keeps exactly one Job per minute while the Ferrite controller
//! manager that leads is killed and a standby takes over: nothing missed, nothing doubled
//! (the Job name `<cronjob>-<minutes since epoch>` is the lock upstream relies on, and the
//! standby starts the run the dead leader could not).
//!
//! Waits for real minute boundaries: about three minutes.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::process::tail;
use ferrite_e2e::testing::{self, eventually, get_secure, master_status, metrics_reader_token};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const LEASE: &str = "ferrite-cron-failover";
const CANDIDATES: [&str; 2] = ["cron-a", "cron-b"];

fn logs(bed: &Bed) -> String {
    CANDIDATES
        .iter()
        .map(|c| format!("{c} log:\n{}", tail(&bed.log(c), 30)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Minutes since the epoch of the Jobs the CronJob made, from their names.
async fn job_minutes(api: &Api<Job>) -> Result<Vec<i64>> {
    let jobs = api
        .list(&ListParams::default().labels("cron=every"))
        .await?;
    let mut minutes: Vec<i64> = jobs
        .items
        .iter()
        .filter_map(|j| j.metadata.name.as_deref()?.rsplit_once('-')?.1.parse().ok())
        .collect();
    minutes.sort_unstable();
    Ok(minutes)
}

fn seconds_into_minute() -> i64 {
    Timestamp::now().as_second().rem_euclid(60)
}

#[tokio::test]
async fn a_cron_job_makes_one_job_per_minute_across_a_leader_failover() -> Result<()> {
    let bed = testing::shared_bed(|mut o| {
        o.nodes = 0;
        o.controller_manager = Component::None;
        o.scheduler = Component::None;
        o
    })
    .await;
    let args = [
        "--controllers=cronjob",
        &format!("--leader-elect-resource-name={LEASE}"),
    ];
    let mut ports = Vec::new();
    for c in CANDIDATES {
        ports.push(bed.start_ferrite(c, "controller-manager", &args)?);
    }
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "cron-failover").await?;
    let token = metrics_reader_token(&client, &ns).await?;
    let leader = || async {
        for (i, port) in ports.iter().enumerate() {
            if let Ok((200, body)) = get_secure(*port, "/metrics", Some(&token)).await
                && master_status(&body, LEASE) == Some(true)
            {
                return Some(i);
            }
        }
        None
    };

    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "every"},
        "spec": {
            "schedule": "*/1 * * * *",
            "successfulJobsHistoryLimit": 10,
            "jobTemplate": {
                "metadata": {"labels": {"cron": "every"}},
                "spec": {"template": {"spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                    "restartPolicy": "Never",
                }}},
            },
        },
    }))?;
    Api::<CronJob>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &cj)
        .await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the first Job",
        Duration::from_secs(130),
        Duration::from_secs(1),
        || async { (!job_minutes(&jobs).await.ok()?.is_empty()).then_some(()) },
    )
    .await
    .with_context(|| logs(bed))?;

    // Kill the leader late in the minute, so that the next run falls due while nobody leads
    // (the lease is not released; the standby waits out its 15 s duration).
    while seconds_into_minute() < 45 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let killed = eventually(
        "a leader",
        Duration::from_secs(30),
        Duration::from_millis(200),
        leader,
    )
    .await?;
    ensure!(
        bed.signal(CANDIDATES[killed], libc::SIGKILL),
        "could not kill {}",
        CANDIDATES[killed]
    );
    let killed_at = Timestamp::now().as_second();
    eventually(
        "the standby to lead",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || async { leader().await.filter(|l| *l != killed) },
    )
    .await
    .with_context(|| logs(bed))?;

    // The run that fell due during the handover, and one more under the new leader.
    let due_during_handover = killed_at.div_euclid(60) + 1;
    let minutes = eventually(
        "Jobs for the handover minute and the one after",
        Duration::from_secs(150),
        Duration::from_secs(1),
        || async {
            let m = job_minutes(&jobs).await.ok()?;
            (m.last().copied()? > due_during_handover).then_some(m)
        },
    )
    .await
    .with_context(|| logs(bed))?;
    ensure!(
        minutes.contains(&due_during_handover),
        "the run due during the handover (minute {due_during_handover}) was missed: {minutes:?}"
    );
    let first = minutes[0];
    let expected: Vec<i64> = (first..=*minutes.last().unwrap_or(&first)).collect();
    ensure!(
        minutes == expected,
        "one Job per minute, none missed or doubled: got minutes {minutes:?}\n{}",
        logs(bed)
    );
    Ok(())
}
