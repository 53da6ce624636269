//! Smoke checks of the Ferrite Job controller (`--controllers=job`) over a stock apiserver and
//! scheduler; kwok makes bound pods Running and the tests finish pods through the status
//! subresource (kwok's pod-complete stage is off). The full behaviour suite is `job.rs`.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

async fn setup(prefix: &str) -> Result<(&'static Bed, kube::Client, String)> {
    let bed = testing::shared_bed(|mut o| {
        o.controller_manager = Component::Ferrite;
        o.scheduler = Component::Stock;
        o.complete_job_pods = false;
        o.ferrite_args = vec!["--controllers=job".into()];
        o
    })
    .await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    Ok((bed, client, ns))
}

async fn create_job(client: &kube::Client, ns: &str, name: &str, spec: Value) -> Result<Job> {
    let mut spec = spec;
    spec["template"] = json!({"spec": {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
    }});
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name}, "spec": spec,
    }))?;
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await?)
}

async fn pods(client: &kube::Client, ns: &str, job: &str) -> Result<Vec<Pod>> {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Finishes a pod as a kubelet would report it: terminal phase, a terminated container.
async fn finish(client: &kube::Client, ns: &str, pod: &Pod, exit_code: i32) -> Result<()> {
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"}],
        "containerStatuses": [{
            "name": "c", "image": "registry.k8s.io/pause:3.10", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "startedAt": now, "finishedAt": now}},
        }],
    }});
    let name = pod.metadata.name.clone().unwrap_or_default();
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .with_context(|| format!("finishing pod {name}"))?;
    Ok(())
}

/// Waits until the Job has condition `type_` with status True, and returns it.
async fn wait_condition(client: &kube::Client, ns: &str, name: &str, type_: &str) -> Result<Job> {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    eventually(
        &format!("job {name} condition {type_}"),
        TIMEOUT,
        POLL,
        || {
            let api = api.clone();
            async move {
                let j = api.get(name).await.ok()?;
                let has = j
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == type_ && c.status == "True");
                has.then_some(j)
            }
        },
    )
    .await
}

/// Waits for `n` running (non-terminal, undeleted) pods of the Job.
async fn wait_pods(client: &kube::Client, ns: &str, job: &str, n: usize) -> Result<Vec<Pod>> {
    eventually(
        &format!("{n} active pods of {job}"),
        TIMEOUT,
        POLL,
        || async move {
            let ps = pods(client, ns, job).await.ok()?;
            let active: Vec<Pod> = ps
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
                .collect();
            (active.len() == n).then_some(active)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_indexed_job_completes_once_its_completions_succeed() -> Result<()> {
    let (_bed, client, ns) = setup("job-smoke-nonindexed").await?;
    create_job(
        &client,
        &ns,
        "three",
        json!({"completions": 3, "parallelism": 2}),
    )
    .await?;
    let mut finished = 0;
    while finished < 3 {
        let want = (3 - finished).min(2);
        let active = wait_pods(&client, &ns, "three", want).await?;
        for p in &active {
            ensure!(
                p.metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == "batch.kubernetes.io/job-tracking"),
                "pod {:?} has no tracking finalizer",
                p.metadata.name
            );
        }
        finish(&client, &ns, &active[0], 0).await?;
        finished += 1;
    }
    let job = wait_condition(&client, &ns, "three", "Complete").await?;
    let st = job.status.clone().unwrap_or_default();
    ensure!(st.succeeded == Some(3), "succeeded = {:?}", st.succeeded);
    ensure!(st.failed.unwrap_or(0) == 0, "failed = {:?}", st.failed);
    ensure!(st.completion_time.is_some(), "no completionTime");
    let conds: Vec<_> = st
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    ensure!(
        conds == ["SuccessCriteriaMet", "Complete"],
        "conditions {conds:?}"
    );
    // Every pod was counted, so none keeps the finalizer.
    eventually("finalizers removed", TIMEOUT, POLL, || async {
        let ps = pods(&client, &ns, "three").await.ok()?;
        ps.iter()
            .all(|p| p.metadata.finalizers.as_ref().is_none_or(|f| f.is_empty()))
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_indexed_job_gives_each_pod_its_completion_index() -> Result<()> {
    let (_bed, client, ns) = setup("job-smoke-indexed").await?;
    create_job(
        &client,
        &ns,
        "idx",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
    )
    .await?;
    let active = wait_pods(&client, &ns, "idx", 3).await?;
    let mut indexes: Vec<String> = active
        .iter()
        .filter_map(|p| p.metadata.annotations.as_ref()?.get(INDEX_KEY).cloned())
        .collect();
    indexes.sort();
    ensure!(indexes == ["0", "1", "2"], "indexes {indexes:?}");
    for p in &active {
        let ix = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INDEX_KEY))
            .cloned()
            .unwrap_or_default();
        let label = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INDEX_KEY))
            .cloned();
        ensure!(
            label.as_deref() == Some(ix.as_str()),
            "label {label:?} for index {ix}"
        );
        let host = p.spec.as_ref().and_then(|s| s.hostname.clone());
        ensure!(host == Some(format!("idx-{ix}")), "hostname {host:?}");
        let env = p
            .spec
            .as_ref()
            .map(|s| s.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default();
        ensure!(
            env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"),
            "no JOB_COMPLETION_INDEX"
        );
    }
    let first = active
        .iter()
        .find(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INDEX_KEY))
                .map(String::as_str)
                == Some("1")
        })
        .context("no pod with index 1")?;
    finish(&client, &ns, first, 0).await?;
    let api = Api::<Job>::namespaced(client.clone(), &ns);
    eventually("completedIndexes 1", TIMEOUT, POLL, || async {
        let j = api.get("idx").await.ok()?;
        (j.status?.completed_indexes.as_deref() == Some("1")).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failed_pod_fails_a_job_with_backoff_limit_zero() -> Result<()> {
    let (_bed, client, ns) = setup("job-smoke-backoff").await?;
    create_job(
        &client,
        &ns,
        "once",
        json!({"completions": 1, "backoffLimit": 0}),
    )
    .await?;
    let active = wait_pods(&client, &ns, "once", 1).await?;
    finish(&client, &ns, &active[0], 1).await?;
    let job = wait_condition(&client, &ns, "once", "Failed").await?;
    let st = job.status.clone().unwrap_or_default();
    let failed = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed")
        .context("no Failed condition")?;
    ensure!(
        failed.reason.as_deref() == Some("BackoffLimitExceeded"),
        "reason {:?}",
        failed.reason
    );
    ensure!(st.failed == Some(1), "failed = {:?}", st.failed);
    ensure!(
        st.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "FailureTarget"),
        "no interim FailureTarget condition"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_of_a_deleted_job_lose_the_tracking_finalizer() -> Result<()> {
    let (_bed, client, ns) = setup("job-smoke-orphans").await?;
    create_job(
        &client,
        &ns,
        "gone",
        json!({"completions": 2, "parallelism": 2}),
    )
    .await?;
    let active = wait_pods(&client, &ns, "gone", 2).await?;
    // No garbage collector runs on this bed: the pods stay, pointing at a Job that is gone.
    Api::<Job>::namespaced(client.clone(), &ns)
        .delete("gone", &kube::api::DeleteParams::background())
        .await?;
    let names: Vec<String> = active
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    eventually(
        "orphaned pods without the tracking finalizer",
        TIMEOUT,
        POLL,
        || async {
            let ps = pods(&client, &ns, "gone").await.ok()?;
            let ours: Vec<&Pod> = ps
                .iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
                .collect();
            (ours.len() == 2
                && ours.iter().all(|p| {
                    !p.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == "batch.kubernetes.io/job-tracking")
                }))
            .then_some(())
        },
    )
    .await?;
    Ok(())
}
