//! The Job controller (kubernetes/kubernetes pkg/controller/job, behaviours as
//! test/integration/job/job_test.go checks them) over a stock apiserver and scheduler, with kwok
//! making bound pods Running and the tests driving pods to Succeeded / Failed through the status
//! subresource (kwok's own pod-complete stage is off).
//!
//! The controller manager under test runs only the job controller and is chosen by one switch:
//! Ferrite's by default, the stock kube-controller-manager with `FERRITE_JOB_TEST_TARGET=stock`.
//! Every test here passes on the stock one: they are the spec the Ferrite controller is held to.
//! The tests share one bed; the restart test has its own, as it kills the controller manager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, PrivateBed, eventually};
use ferrite_e2e::{Bed, Component};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// Which controller manager the tests drive: `stock` runs them against kube-controller-manager
/// (to check the tests themselves against upstream), anything else against Ferrite's.
const TARGET_ENV: &str = "FERRITE_JOB_TEST_TARGET";
/// The name of the controller manager process on the shared bed.
const CM: &str = "job-controller-manager";
const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const POLL: Duration = Duration::from_millis(250);
/// Generous: the machine is small and shared, and pod failures back off 10 s upstream.
const TIMEOUT: Duration = Duration::from_secs(90);

fn target() -> Component {
    match std::env::var(TARGET_ENV).as_deref() {
        Ok("stock") => Component::Stock,
        _ => Component::Ferrite,
    }
}

/// The Lease the target holds while it leads.
fn lease_name() -> &'static str {
    match target() {
        Component::Stock => "kube-controller-manager",
        _ => "ferrite-controller-manager",
    }
}

/// Starts the target controller manager, running only the job controller, as process `name`.
fn start_controller_manager(bed: &Bed, name: &str) -> Result<()> {
    match target() {
        Component::Stock => {
            bed.start_stock(name, "kube-controller-manager", &["--controllers=job"])?
        }
        _ => bed.start_ferrite(name, "controller-manager", &["--controllers=job"])?,
    };
    Ok(())
}

/// The holder of the target's Lease, when someone holds it.
async fn lease_holder(client: &kube::Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt(lease_name())
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until the Lease is held by someone other than `previous`.
async fn wait_leading(bed: &Bed, name: &str, previous: Option<&str>) -> Result<()> {
    let client = bed.client().await?;
    eventually(
        "the job controller manager to lead",
        TIMEOUT,
        POLL,
        || async {
            let holder = lease_holder(&client).await?;
            (Some(holder.as_str()) != previous).then_some(())
        },
    )
    .await
    .with_context(|| bed.log_tail(name))
}

/// The shared bed: stock scheduler, kwok nodes that do not complete pods, no controller manager
/// of its own; the target is started beside it, once per test binary.
async fn bed() -> Result<&'static Bed> {
    let bed = testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.scheduler = Component::Stock;
        o.controller_manager = Component::None;
        o.complete_job_pods = false;
        o
    })
    .await;
    static STARTED: tokio::sync::OnceCell<std::result::Result<(), String>> =
        tokio::sync::OnceCell::const_new();
    STARTED
        .get_or_init(|| async {
            start_controller_manager(bed, CM).map_err(|e| e.to_string())?;
            wait_leading(bed, CM, None)
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(bed)
}

fn log(bed: &Bed) -> String {
    bed.log_tail(CM)
}

async fn setup(prefix: &str) -> Result<(&'static Bed, kube::Client, String)> {
    let bed = bed().await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    Ok((bed, client, ns))
}

/// A Job of pause pods that never restart; `spec` is merged over the defaults.
fn job(name: &str, spec: Value) -> Result<Job> {
    let mut s = json!({
        "template": {"spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
        }},
    });
    if let (Some(into), Value::Object(from)) = (s.as_object_mut(), spec) {
        into.extend(from);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": s,
    }))?)
}

async fn create_job(client: &kube::Client, ns: &str, name: &str, spec: Value) -> Result<Job> {
    Ok(Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job(name, spec)?)
        .await?)
}

async fn patch_job(client: &kube::Client, ns: &str, name: &str, body: Value) -> Result<()> {
    Api::<Job>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await?;
    Ok(())
}

async fn wait_job(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Job) -> bool,
) -> Result<Job> {
    let api = Api::<Job>::namespaced(client.clone(), ns);
    let last: Mutex<Option<Job>> = Mutex::new(None);
    eventually(&format!("job {name}: {what}"), TIMEOUT, POLL, || async {
        let j = api.get(name).await.ok()?;
        if let Ok(mut l) = last.lock() {
            *l = Some(j.clone());
        }
        done(&j).then_some(j)
    })
    .await
    .with_context(|| {
        let status = last
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|j| format!("{:#?}", j.status)))
            .unwrap_or_default();
        format!("last status: {status}\n{}", log(bed))
    })
}

fn condition<'a>(j: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The condition `type_` is True with `reason`.
fn has(j: &Job, type_: &str, reason: &str) -> bool {
    condition(j, type_).is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some(reason))
}

fn transition(c: &JobCondition) -> Option<Timestamp> {
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// Ended with a True `Failed` condition with `reason`, reached through a True `FailureTarget`
/// condition with the same reason (upstream records the interim condition first and keeps it).
fn check_failed_through_failure_target(j: &Job, reason: &str) -> Result<()> {
    let target = condition(j, "FailureTarget").context("no FailureTarget condition")?;
    let failed = condition(j, "Failed").context("no Failed condition")?;
    ensure!(
        target.status == "True" && target.reason.as_deref() == Some(reason),
        "FailureTarget: {target:?}"
    );
    ensure!(
        failed.status == "True" && failed.reason.as_deref() == Some(reason),
        "Failed: {failed:?}"
    );
    ensure!(
        transition(target) <= transition(failed),
        "FailureTarget after Failed: {target:?} {failed:?}"
    );
    ensure!(
        condition(j, "Complete").is_none(),
        "a failed Job is also Complete"
    );
    ensure!(
        j.status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .is_none(),
        "a failed Job has a completionTime"
    );
    Ok(())
}

fn status_counts(j: &Job) -> (i32, i32, i32) {
    let s = j.status.clone().unwrap_or_default();
    (
        s.active.unwrap_or(0),
        s.succeeded.unwrap_or(0),
        s.failed.unwrap_or(0),
    )
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn index_of(p: &Pod) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(INDEX_KEY).cloned()
}

fn has_tracking_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// Every pod of Job `job` in `ns`, terminating or not.
async fn pods_of(client: &kube::Client, ns: &str, job: &str) -> Result<Vec<Pod>> {
    let mut pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
        .await?
        .items;
    pods.sort_by_key(pod_name);
    Ok(pods)
}

/// kwok has made it Running and Ready, and nobody is deleting it: safe to drive to a terminal
/// phase (kwok never touches a terminal pod again).
fn running(p: &Pod) -> bool {
    phase(p) == "Running" && p.metadata.deletion_timestamp.is_none()
}

/// Waits until `n` running pods of `job` exist (more may), and returns the running ones.
async fn wait_running(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    job: &str,
    n: usize,
) -> Result<Vec<Pod>> {
    eventually(
        &format!("{n} running pods of job {job}"),
        TIMEOUT,
        POLL,
        || async {
            let pods: Vec<Pod> = pods_of(client, ns, job)
                .await
                .ok()?
                .into_iter()
                .filter(running)
                .collect();
            (pods.len() >= n).then_some(pods)
        },
    )
    .await
    .with_context(|| log(bed))
}

/// The running pod of index `ix` of an Indexed Job.
async fn wait_running_index(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    job: &str,
    ix: u32,
) -> Result<Pod> {
    let ix = ix.to_string();
    eventually(
        &format!("a running pod for index {ix} of job {job}"),
        TIMEOUT,
        POLL,
        || async {
            pods_of(client, ns, job)
                .await
                .ok()?
                .into_iter()
                .find(|p| running(p) && index_of(p).as_deref() == Some(ix.as_str()))
        },
    )
    .await
    .with_context(|| log(bed))
}

/// Ends pod `name`'s only container with `exit_code`, in phase Succeeded (0) or Failed, through
/// the status subresource as a kubelet would; `extra_conditions` join the pod's conditions.
async fn finish_pod(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    exit_code: i32,
    extra_conditions: Value,
) -> Result<()> {
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut conditions = vec![
        json!({"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"}),
        json!({"type": "ContainersReady", "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"}),
        json!({"type": "Initialized", "status": "True", "lastTransitionTime": now}),
    ];
    if let Value::Array(extra) = extra_conditions {
        conditions.extend(extra);
    }
    let body = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": conditions,
        "containerStatuses": [{
            "name": "c",
            "image": "registry.k8s.io/pause:3.10",
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "started": false,
            "state": {"terminated": {
                "exitCode": exit_code,
                "reason": if exit_code == 0 { "Completed" } else { "Error" },
                "startedAt": now,
                "finishedAt": now,
            }},
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(&pod_name(pod), &PatchParams::default(), &Patch::Merge(body))
        .await
        .with_context(|| format!("finishing pod {}", pod_name(pod)))?;
    Ok(())
}

async fn succeed(client: &kube::Client, ns: &str, pod: &Pod) -> Result<()> {
    finish_pod(client, ns, pod, 0, json!([])).await
}

async fn fail(client: &kube::Client, ns: &str, pod: &Pod, exit_code: i32) -> Result<()> {
    finish_pod(client, ns, pod, exit_code, json!([])).await
}

/// The UIDs of every pod that ever appeared in a namespace, collected by a watch that stops
/// when this is dropped (so it never outlives the bed it watches).
struct PodUids {
    seen: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodUids {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts collecting the UID of every pod that appears in `ns`.
fn watch_pod_uids(client: &kube::Client, ns: &str) -> PodUids {
    use kube::runtime::WatchStreamExt as _;
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Delete(p)) => p,
                _ => continue,
            };
            if let (Some(uid), Ok(mut s)) = (pod.metadata.uid, sink.lock()) {
                s.insert(uid);
            }
        }
    });
    PodUids { seen, task }
}

fn count(uids: &PodUids) -> usize {
    uids.seen.lock().map(|s| s.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_indexed_job_runs_parallelism_pods_until_completions_succeed() -> Result<()> {
    let (bed, client, ns) = setup("job-nonindexed").await?;
    let created = create_job(
        &client,
        &ns,
        "work",
        json!({"completions": 4, "parallelism": 2}),
    )
    .await?;
    let uid = created.metadata.uid.clone().context("uid")?;
    let mut finished = 0;
    while finished < 4 {
        let pods = wait_running(bed, &client, &ns, "work", 1).await?;
        let all = pods_of(&client, &ns, "work").await?;
        let active = all
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .count();
        ensure!(active <= 2, "{active} active pods for parallelism 2");
        for p in &all {
            let owner = p
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true));
            ensure!(
                owner.is_some_and(|o| o.kind == "Job"
                    && o.uid == uid
                    && o.block_owner_deletion == Some(true)),
                "{}: controllerRef {owner:?}",
                pod_name(p)
            );
        }
        succeed(&client, &ns, &pods[0]).await?;
        finished += 1;
        if finished < 4 {
            wait_job(bed, &client, &ns, "work", "counted a success", |j| {
                status_counts(j).1 == finished
            })
            .await?;
        }
    }
    let j = wait_job(bed, &client, &ns, "work", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        status_counts(&j) == (0, 4, 0),
        "(active, succeeded, failed) = {:?}",
        status_counts(&j)
    );
    ensure!(
        has(&j, "SuccessCriteriaMet", "CompletionsReached"),
        "no SuccessCriteriaMet condition: {:?}",
        s.conditions
    );
    let met = condition(&j, "SuccessCriteriaMet").and_then(transition);
    let complete = condition(&j, "Complete").and_then(transition);
    ensure!(met <= complete, "SuccessCriteriaMet after Complete");
    let (start, done) = (
        s.start_time.context("no startTime")?,
        s.completion_time.context("no completionTime")?,
    );
    ensure!(start.0 <= done.0, "completionTime before startTime");
    ensure!(
        s.ready == Some(0) && s.terminating.unwrap_or(0) == 0,
        "ready {:?} terminating {:?}",
        s.ready,
        s.terminating
    );
    let uncounted = s.uncounted_terminated_pods.unwrap_or_default();
    ensure!(
        uncounted.succeeded.unwrap_or_default().is_empty()
            && uncounted.failed.unwrap_or_default().is_empty(),
        "pods left uncounted"
    );
    let pods = pods_of(&client, &ns, "work").await?;
    ensure!(pods.len() == 4, "{} pods for 4 completions", pods.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_carry_the_tracking_finalizer_until_the_job_counts_them() -> Result<()> {
    let (bed, client, ns) = setup("job-finalizer").await?;
    create_job(
        &client,
        &ns,
        "tracked",
        json!({"completions": 2, "parallelism": 2}),
    )
    .await?;
    let pods = wait_running(bed, &client, &ns, "tracked", 2).await?;
    wait_job(bed, &client, &ns, "tracked", "two active, two ready", |j| {
        let s = j.status.clone().unwrap_or_default();
        s.active == Some(2) && s.ready == Some(2)
    })
    .await?;
    for p in &pods {
        ensure!(
            has_tracking_finalizer(p),
            "{} has no {TRACKING_FINALIZER} finalizer: {:?}",
            pod_name(p),
            p.metadata.finalizers
        );
    }
    succeed(&client, &ns, &pods[0]).await?;
    let done = pod_name(&pods[0]);
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    eventually(
        "the finalizer removed from the succeeded pod",
        TIMEOUT,
        POLL,
        || async {
            let p = pod_api.get(&done).await.ok()?;
            (!has_tracking_finalizer(&p)).then_some(())
        },
    )
    .await
    .with_context(|| log(bed))?;
    let j = wait_job(bed, &client, &ns, "tracked", "one success counted", |j| {
        status_counts(j).1 == 1
    })
    .await?;
    ensure!(status_counts(&j).0 == 1, "active: {:?}", status_counts(&j));
    let other = pod_api.get(&pod_name(&pods[1])).await?;
    ensure!(
        has_tracking_finalizer(&other),
        "the running pod lost its finalizer"
    );
    succeed(&client, &ns, &pods[1]).await?;
    wait_job(bed, &client, &ns, "tracked", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    for p in pods_of(&client, &ns, "tracked").await? {
        ensure!(
            !has_tracking_finalizer(&p),
            "{} kept its finalizer",
            pod_name(&p)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_gives_each_pod_its_index_and_tracks_completed_indexes() -> Result<()> {
    let (bed, client, ns) = setup("job-indexed").await?;
    create_job(
        &client,
        &ns,
        "idx",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
    )
    .await?;
    let pods = wait_running(bed, &client, &ns, "idx", 3).await?;
    let mut by_index = BTreeMap::new();
    for p in &pods {
        let ix = index_of(p).with_context(|| format!("{} has no index", pod_name(p)))?;
        let label = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(INDEX_KEY))
            .cloned();
        ensure!(
            label.as_deref() == Some(ix.as_str()),
            "label {label:?} != annotation {ix}"
        );
        let spec = p.spec.clone().unwrap_or_default();
        ensure!(
            spec.hostname.as_deref() == Some(format!("idx-{ix}").as_str()),
            "hostname {:?} for index {ix}",
            spec.hostname
        );
        ensure!(
            p.metadata.generate_name.as_deref() == Some(format!("idx-{ix}-").as_str()),
            "generateName {:?} for index {ix}",
            p.metadata.generate_name
        );
        let env = spec
            .containers
            .first()
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        let var = env
            .iter()
            .find(|e| e.name == "JOB_COMPLETION_INDEX")
            .context("no JOB_COMPLETION_INDEX")?;
        let field = var
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone());
        ensure!(
            field.as_deref() == Some("metadata.labels['batch.kubernetes.io/job-completion-index']"),
            "JOB_COMPLETION_INDEX from {field:?}"
        );
        by_index.insert(ix, p.clone());
    }
    ensure!(
        by_index.keys().cloned().collect::<Vec<_>>() == ["0", "1", "2"],
        "indexes {:?}",
        by_index.keys()
    );
    succeed(&client, &ns, &by_index["0"]).await?;
    succeed(&client, &ns, &by_index["2"]).await?;
    let j = wait_job(bed, &client, &ns, "idx", "indexes 0 and 2 completed", |j| {
        j.status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref())
            == Some("0,2")
    })
    .await?;
    ensure!(status_counts(&j) == (1, 2, 0), "{:?}", status_counts(&j));
    succeed(&client, &ns, &by_index["1"]).await?;
    let j = wait_job(bed, &client, &ns, "idx", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("0-2"),
        "completedIndexes {:?}",
        s.completed_indexes
    );
    ensure!(status_counts(&j) == (0, 3, 0), "{:?}", status_counts(&j));
    ensure!(s.completion_time.is_some(), "no completionTime");
    ensure!(has(&j, "SuccessCriteriaMet", "CompletionsReached"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_backoff_limit_fails_the_job() -> Result<()> {
    let (bed, client, ns) = setup("job-backoff").await?;
    create_job(&client, &ns, "flaky", json!({"backoffLimit": 1})).await?;
    let first = wait_running(bed, &client, &ns, "flaky", 1).await?;
    fail(&client, &ns, &first[0], 1).await?;
    let j = wait_job(bed, &client, &ns, "flaky", "one failure counted", |j| {
        status_counts(j).2 == 1
    })
    .await?;
    ensure!(
        condition(&j, "Failed").is_none() && condition(&j, "FailureTarget").is_none(),
        "one failure within backoffLimit 1 failed the job"
    );
    // The replacement comes after the pod failure back-off (10 s upstream).
    let first_name = pod_name(&first[0]);
    let replacement = eventually("a replacement pod", TIMEOUT, POLL, || async {
        pods_of(&client, &ns, "flaky")
            .await
            .ok()?
            .into_iter()
            .find(|p| running(p) && pod_name(p) != first_name)
    })
    .await
    .with_context(|| log(bed))?;
    fail(&client, &ns, &replacement, 1).await?;
    let j = wait_job(bed, &client, &ns, "flaky", "Failed", |j| {
        has(j, "Failed", "BackoffLimitExceeded")
    })
    .await?;
    check_failed_through_failure_target(&j, "BackoffLimitExceeded")?;
    let failed = condition(&j, "Failed").and_then(|c| c.message.clone());
    ensure!(
        failed.as_deref() == Some("Job has reached the specified backoff limit"),
        "message {failed:?}"
    );
    ensure!(status_counts(&j) == (0, 0, 2), "{:?}", status_counts(&j));
    ensure!(
        pods_of(&client, &ns, "flaky").await?.len() == 2,
        "a third pod was created"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_limit_per_index_fails_only_that_index() -> Result<()> {
    let (bed, client, ns) = setup("job-perindex").await?;
    create_job(
        &client,
        &ns,
        "per",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
               "backoffLimitPerIndex": 0}),
    )
    .await?;
    let one = wait_running_index(bed, &client, &ns, "per", 1).await?;
    fail(&client, &ns, &one, 1).await?;
    let j = wait_job(bed, &client, &ns, "per", "index 1 failed", |j| {
        j.status.as_ref().and_then(|s| s.failed_indexes.as_deref()) == Some("1")
    })
    .await?;
    ensure!(
        condition(&j, "Failed").is_none(),
        "the job failed while indexes run"
    );
    for ix in [0, 2] {
        let p = wait_running_index(bed, &client, &ns, "per", ix).await?;
        succeed(&client, &ns, &p).await?;
    }
    let j = wait_job(bed, &client, &ns, "per", "Failed", |j| {
        has(j, "Failed", "FailedIndexes")
    })
    .await?;
    check_failed_through_failure_target(&j, "FailedIndexes")?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("0,2") && s.failed_indexes.as_deref() == Some("1"),
        "completed {:?} failed {:?}",
        s.completed_indexes,
        s.failed_indexes
    );
    ensure!(status_counts(&j) == (0, 2, 1), "{:?}", status_counts(&j));
    // Index 1 was never retried.
    let ones = pods_of(&client, &ns, "per")
        .await?
        .iter()
        .filter(|p| index_of(p).as_deref() == Some("1"))
        .count();
    ensure!(ones == 1, "{ones} pods for the failed index");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_job_rule_on_an_exit_code_fails_the_job_at_once() -> Result<()> {
    let (bed, client, ns) = setup("job-pfp-failjob").await?;
    create_job(
        &client,
        &ns,
        "pfp",
        json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}
        ]}}),
    )
    .await?;
    let pods = wait_running(bed, &client, &ns, "pfp", 1).await?;
    fail(&client, &ns, &pods[0], 42).await?;
    let j = wait_job(bed, &client, &ns, "pfp", "Failed", |j| {
        has(j, "Failed", "PodFailurePolicy")
    })
    .await?;
    check_failed_through_failure_target(&j, "PodFailurePolicy")?;
    let want = format!(
        "Container c for pod {ns}/{} failed with exit code 42 matching FailJob rule at index 0",
        pod_name(&pods[0])
    );
    let got = condition(&j, "Failed").and_then(|c| c.message.clone());
    ensure!(
        got.as_deref() == Some(want.as_str()),
        "message {got:?}, want {want:?}"
    );
    ensure!(status_counts(&j) == (0, 0, 1), "{:?}", status_counts(&j));
    ensure!(
        pods_of(&client, &ns, "pfp").await?.len() == 1,
        "a replacement was created"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignore_rule_on_disruption_does_not_count_the_failure() -> Result<()> {
    let (bed, client, ns) = setup("job-pfp-ignore").await?;
    create_job(
        &client,
        &ns,
        "ign",
        json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
        ]}}),
    )
    .await?;
    let first = wait_running(bed, &client, &ns, "ign", 1).await?;
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    finish_pod(
        &client,
        &ns,
        &first[0],
        137,
        json!([{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                "message": "Eviction API: evicting", "lastTransitionTime": now}]),
    )
    .await?;
    let first_name = pod_name(&first[0]);
    let replacement = eventually(
        "a replacement for the disrupted pod",
        TIMEOUT,
        POLL,
        || async {
            pods_of(&client, &ns, "ign")
                .await
                .ok()?
                .into_iter()
                .find(|p| running(p) && pod_name(p) != first_name)
        },
    )
    .await
    .with_context(|| log(bed))?;
    let j = Api::<Job>::namespaced(client.clone(), &ns)
        .get("ign")
        .await?;
    ensure!(
        status_counts(&j).2 == 0 && condition(&j, "Failed").is_none(),
        "the ignored failure was counted: {:?}",
        j.status
    );
    succeed(&client, &ns, &replacement).await?;
    let j = wait_job(bed, &client, &ns, "ign", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    ensure!(status_counts(&j) == (0, 1, 0), "{:?}", status_counts(&j));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_index_rule_fails_the_index_without_retrying_it() -> Result<()> {
    let (bed, client, ns) = setup("job-pfp-failindex").await?;
    create_job(
        &client,
        &ns,
        "fi",
        json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed",
        "backoffLimitPerIndex": 1,
        "podFailurePolicy": {"rules": [
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}
        ]}}),
    )
    .await?;
    let zero = wait_running_index(bed, &client, &ns, "fi", 0).await?;
    fail(&client, &ns, &zero, 3).await?;
    wait_job(bed, &client, &ns, "fi", "index 0 failed", |j| {
        j.status.as_ref().and_then(|s| s.failed_indexes.as_deref()) == Some("0")
    })
    .await?;
    let one = wait_running_index(bed, &client, &ns, "fi", 1).await?;
    succeed(&client, &ns, &one).await?;
    let j = wait_job(bed, &client, &ns, "fi", "Failed", |j| {
        has(j, "Failed", "FailedIndexes")
    })
    .await?;
    check_failed_through_failure_target(&j, "FailedIndexes")?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("1") && s.failed_indexes.as_deref() == Some("0"),
        "completed {:?} failed {:?}",
        s.completed_indexes,
        s.failed_indexes
    );
    let zeros = pods_of(&client, &ns, "fi")
        .await?
        .iter()
        .filter(|p| index_of(p).as_deref() == Some("0"))
        .count();
    ensure!(
        zeros == 1,
        "index 0 was retried despite FailIndex ({zeros} pods)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_policy_completes_the_job_and_stops_the_other_indexes() -> Result<()> {
    let (bed, client, ns) = setup("job-success").await?;
    create_job(
        &client,
        &ns,
        "sp",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed",
               "successPolicy": {"rules": [{"succeededIndexes": "0"}]}}),
    )
    .await?;
    wait_running(bed, &client, &ns, "sp", 3).await?;
    let zero = wait_running_index(bed, &client, &ns, "sp", 0).await?;
    succeed(&client, &ns, &zero).await?;
    let j = wait_job(bed, &client, &ns, "sp", "Complete", |j| {
        has(j, "Complete", "SuccessPolicy")
    })
    .await?;
    let met = condition(&j, "SuccessCriteriaMet").context("no SuccessCriteriaMet")?;
    ensure!(
        met.status == "True" && met.reason.as_deref() == Some("SuccessPolicy"),
        "{met:?}"
    );
    ensure!(
        met.message.as_deref() == Some("Matched rules at index 0"),
        "message {:?}",
        met.message
    );
    ensure!(transition(met) <= condition(&j, "Complete").and_then(transition));
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("0") && s.succeeded == Some(1),
        "completed {:?} succeeded {:?}",
        s.completed_indexes,
        s.succeeded
    );
    ensure!(
        s.active.unwrap_or(0) == 0 && s.completion_time.is_some(),
        "{s:?}"
    );
    // The other indexes' pods are gone or going.
    eventually("the other indexes' pods deleted", TIMEOUT, POLL, || async {
        let pods = pods_of(&client, &ns, "sp").await.ok()?;
        pods.iter()
            .all(|p| phase(p) == "Succeeded" || p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await
    .with_context(|| log(bed))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_deletes_active_pods_and_resuming_resets_the_start_time() -> Result<()> {
    let (bed, client, ns) = setup("job-suspend").await?;
    create_job(
        &client,
        &ns,
        "sus",
        json!({"completions": 4, "parallelism": 2}),
    )
    .await?;
    wait_running(bed, &client, &ns, "sus", 2).await?;
    let j = wait_job(bed, &client, &ns, "sus", "started", |j| {
        j.status.as_ref().is_some_and(|s| s.start_time.is_some())
    })
    .await?;
    let first_start = j.status.and_then(|s| s.start_time).context("startTime")?;
    patch_job(&client, &ns, "sus", json!({"spec": {"suspend": true}})).await?;
    let j = wait_job(bed, &client, &ns, "sus", "Suspended", |j| {
        has(j, "Suspended", "JobSuspended") && status_counts(j).0 == 0
    })
    .await?;
    let c = condition(&j, "Suspended").context("Suspended")?;
    ensure!(
        c.message.as_deref() == Some("Job suspended"),
        "message {:?}",
        c.message
    );
    ensure!(
        status_counts(&j).2 == 0,
        "pods deleted by suspension counted as failed: {:?}",
        status_counts(&j)
    );
    eventually("no pod left while suspended", TIMEOUT, POLL, || async {
        pods_of(&client, &ns, "sus")
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await
    .with_context(|| log(bed))?;
    // Distinct start times, at one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    patch_job(&client, &ns, "sus", json!({"spec": {"suspend": false}})).await?;
    let j = wait_job(bed, &client, &ns, "sus", "resumed", |j| {
        condition(j, "Suspended")
            .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some("JobResumed"))
    })
    .await?;
    let resumed_start = j.status.and_then(|s| s.start_time).context("startTime")?;
    ensure!(
        resumed_start.0 > first_start.0,
        "startTime not reset on resume: {first_start:?} then {resumed_start:?}"
    );
    let pods = wait_running(bed, &client, &ns, "sus", 2).await?;
    for p in &pods {
        succeed(&client, &ns, p).await?;
    }
    wait_job(bed, &client, &ns, "sus", "two successes", |j| {
        status_counts(j).1 == 2
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_deadline_fails_the_job_and_stops_its_pods() -> Result<()> {
    let (bed, client, ns) = setup("job-deadline").await?;
    create_job(
        &client,
        &ns,
        "late",
        json!({"activeDeadlineSeconds": 5, "parallelism": 2, "completions": 2}),
    )
    .await?;
    wait_running(bed, &client, &ns, "late", 2).await?;
    let j = wait_job(bed, &client, &ns, "late", "Failed", |j| {
        has(j, "Failed", "DeadlineExceeded")
    })
    .await?;
    check_failed_through_failure_target(&j, "DeadlineExceeded")?;
    let msg = condition(&j, "Failed").and_then(|c| c.message.clone());
    ensure!(
        msg.as_deref() == Some("Job was active longer than specified deadline"),
        "message {msg:?}"
    );
    ensure!(status_counts(&j) == (0, 0, 2), "{:?}", status_counts(&j));
    eventually("the pods deleted", TIMEOUT, POLL, || async {
        pods_of(&client, &ns, "late")
            .await
            .ok()?
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await
    .with_context(|| log(bed))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_managed_by_another_controller_is_left_alone() -> Result<()> {
    let (bed, client, ns) = setup("job-managedby").await?;
    create_job(
        &client,
        &ns,
        "theirs",
        json!({"managedBy": "example.com/other-controller"}),
    )
    .await?;
    // A Job of ours created after it proves the controller is running and has seen both.
    create_job(&client, &ns, "ours", json!({})).await?;
    wait_running(bed, &client, &ns, "ours", 1).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        pods_of(&client, &ns, "theirs").await?.is_empty(),
        "pods created for a Job managed elsewhere"
    );
    let j = Api::<Job>::namespaced(client.clone(), &ns)
        .get("theirs")
        .await?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.start_time.is_none() && s.conditions.is_none() && s.active.is_none(),
        "the status of a Job managed elsewhere was written: {s:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_counts_as_failed_and_is_replaced_at_once() -> Result<()> {
    let (bed, client, ns) = setup("job-deleted-pod").await?;
    create_job(&client, &ns, "del", json!({"backoffLimit": 3})).await?;
    let pods = wait_running(bed, &client, &ns, "del", 1).await?;
    let victim = pod_name(&pods[0]);
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&victim, &DeleteParams::default())
        .await?;
    // Default podReplacementPolicy (TerminatingOrFailed): a terminating pod is a failure.
    wait_job(
        bed,
        &client,
        &ns,
        "del",
        "the deleted pod counted failed",
        |j| status_counts(j).2 == 1,
    )
    .await?;
    let replacement = eventually("a replacement pod", TIMEOUT, POLL, || async {
        pods_of(&client, &ns, "del")
            .await
            .ok()?
            .into_iter()
            .find(|p| running(p) && pod_name(p) != victim)
    })
    .await
    .with_context(|| log(bed))?;
    eventually("the deleted pod gone", TIMEOUT, POLL, || async {
        let pods = pods_of(&client, &ns, "del").await.ok()?;
        pods.iter().all(|p| pod_name(p) != victim).then_some(())
    })
    .await
    .with_context(|| log(bed))?;
    succeed(&client, &ns, &replacement).await?;
    let j = wait_job(bed, &client, &ns, "del", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    ensure!(status_counts(&j) == (0, 1, 1), "{:?}", status_counts(&j));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_of_a_deleted_job_lose_the_tracking_finalizer() -> Result<()> {
    let (bed, client, ns) = setup("job-orphans").await?;
    create_job(
        &client,
        &ns,
        "gone",
        json!({"parallelism": 2, "completions": 2}),
    )
    .await?;
    let pods = wait_running(bed, &client, &ns, "gone", 2).await?;
    ensure!(pods.iter().all(has_tracking_finalizer));
    // No garbage collector on this bed: the pods stay, owned by a Job that no longer exists, and
    // only the job controller can release them.
    Api::<Job>::namespaced(client.clone(), &ns)
        .delete("gone", &DeleteParams::background())
        .await?;
    eventually(
        "the finalizers removed from the orphaned pods",
        TIMEOUT,
        POLL,
        || async {
            let pods = pods_of(&client, &ns, "gone").await.ok()?;
            (pods.len() == 2 && !pods.iter().any(has_tracking_finalizer)).then_some(())
        },
    )
    .await
    .with_context(|| log(bed))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failed_indexes_fail_the_job_early() -> Result<()> {
    let (bed, client, ns) = setup("job-maxfailed").await?;
    create_job(
        &client,
        &ns,
        "mfi",
        json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed",
               "backoffLimitPerIndex": 0, "maxFailedIndexes": 1}),
    )
    .await?;
    wait_running(bed, &client, &ns, "mfi", 4).await?;
    for ix in [0, 3] {
        let p = wait_running_index(bed, &client, &ns, "mfi", ix).await?;
        fail(&client, &ns, &p, 1).await?;
    }
    let j = wait_job(bed, &client, &ns, "mfi", "Failed", |j| {
        has(j, "Failed", "MaxFailedIndexesExceeded")
    })
    .await?;
    check_failed_through_failure_target(&j, "MaxFailedIndexesExceeded")?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.failed_indexes.as_deref() == Some("0,3"),
        "failedIndexes {:?}",
        s.failed_indexes
    );
    ensure!(s.active.unwrap_or(0) == 0, "active {:?}", s.active);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_policy_with_a_count_needs_that_many_of_the_listed_indexes() -> Result<()> {
    let (bed, client, ns) = setup("job-success-count").await?;
    create_job(
        &client,
        &ns,
        "spc",
        json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed",
               "successPolicy": {"rules": [{"succeededIndexes": "1-3", "succeededCount": 2}]}}),
    )
    .await?;
    wait_running(bed, &client, &ns, "spc", 4).await?;
    // Index 0 is not in the rule: its success is not enough.
    let zero = wait_running_index(bed, &client, &ns, "spc", 0).await?;
    succeed(&client, &ns, &zero).await?;
    let one = wait_running_index(bed, &client, &ns, "spc", 1).await?;
    succeed(&client, &ns, &one).await?;
    let j = wait_job(bed, &client, &ns, "spc", "indexes 0 and 1 counted", |j| {
        j.status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref())
            == Some("0,1")
    })
    .await?;
    ensure!(
        condition(&j, "SuccessCriteriaMet").is_none(),
        "met with one listed index: {:?}",
        j.status
    );
    let three = wait_running_index(bed, &client, &ns, "spc", 3).await?;
    succeed(&client, &ns, &three).await?;
    let j = wait_job(bed, &client, &ns, "spc", "Complete", |j| {
        has(j, "Complete", "SuccessPolicy")
    })
    .await?;
    ensure!(has(&j, "SuccessCriteriaMet", "SuccessPolicy"));
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("0,1,3") && s.succeeded == Some(3),
        "completed {:?} succeeded {:?}",
        s.completed_indexes,
        s.succeeded
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_an_indexed_job_removes_the_dropped_indexes_without_failures() -> Result<()> {
    let (bed, client, ns) = setup("job-elastic").await?;
    create_job(
        &client,
        &ns,
        "el",
        json!({"completions": 4, "parallelism": 4, "completionMode": "Indexed"}),
    )
    .await?;
    wait_running(bed, &client, &ns, "el", 4).await?;
    // Elastic Indexed Jobs: completions may change together with parallelism.
    patch_job(
        &client,
        &ns,
        "el",
        json!({"spec": {"completions": 2, "parallelism": 2}}),
    )
    .await?;
    eventually("indexes 2 and 3 removed", TIMEOUT, POLL, || async {
        let pods = pods_of(&client, &ns, "el").await.ok()?;
        pods.iter()
            .all(|p| matches!(index_of(p).as_deref(), Some("0" | "1")))
            .then_some(())
    })
    .await
    .with_context(|| log(bed))?;
    for ix in [0, 1] {
        let p = wait_running_index(bed, &client, &ns, "el", ix).await?;
        succeed(&client, &ns, &p).await?;
    }
    let j = wait_job(bed, &client, &ns, "el", "Complete", |j| {
        has(j, "Complete", "CompletionsReached")
    })
    .await?;
    let s = j.status.clone().unwrap_or_default();
    ensure!(
        s.completed_indexes.as_deref() == Some("0,1"),
        "completedIndexes {:?}",
        s.completed_indexes
    );
    ensure!(status_counts(&j) == (0, 2, 0), "{:?}", status_counts(&j));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_only_failed_pods_waits_for_terminating_ones() -> Result<()> {
    let (bed, client, ns) = setup("job-replace").await?;
    create_job(
        &client,
        &ns,
        "rp",
        json!({"podReplacementPolicy": "Failed", "backoffLimit": 3,
               "template": {"spec": {
                   "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                   "restartPolicy": "Never", "terminationGracePeriodSeconds": 30}}}),
    )
    .await?;
    let pods = wait_running(bed, &client, &ns, "rp", 1).await?;
    let victim = pod_name(&pods[0]);
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    pod_api.delete(&victim, &DeleteParams::default()).await?;
    let j = wait_job(bed, &client, &ns, "rp", "one terminating pod", |j| {
        j.status.as_ref().and_then(|s| s.terminating) == Some(1)
    })
    .await?;
    ensure!(status_counts(&j) == (0, 0, 0), "{:?}", status_counts(&j));
    // The job-tracking finalizer keeps the pod until it is counted; no replacement meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = pods_of(&client, &ns, "rp").await?;
    ensure!(
        now.len() == 1 && pod_name(&now[0]) == victim,
        "a replacement before the terminating pod failed: {:?}",
        now.iter().map(pod_name).collect::<Vec<_>>()
    );
    fail(&client, &ns, &now[0], 137).await?;
    let j = wait_job(bed, &client, &ns, "rp", "the failure counted", |j| {
        status_counts(j).2 == 1 && j.status.as_ref().and_then(|s| s.terminating) == Some(0)
    })
    .await?;
    ensure!(condition(&j, "Failed").is_none(), "{:?}", j.status);
    eventually("a replacement pod", TIMEOUT, POLL, || async {
        pods_of(&client, &ns, "rp")
            .await
            .ok()?
            .into_iter()
            .find(|p| pod_name(p) != victim)
    })
    .await
    .with_context(|| log(bed))?;
    Ok(())
}

/// Marks running pods of `job` Succeeded one at a time until `n` have been, restarting the
/// controller manager (SIGKILL, then a new process) right after the successes named in
/// `restart_after`.
async fn succeed_with_restarts(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    job: &str,
    n: usize,
    restart_after: &[usize],
) -> Result<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut cm = "job-cm-0".to_string();
    let mut generation = 0;
    while done.len() < n {
        let pod = eventually("a running pod not yet finished", TIMEOUT, POLL, || async {
            pods_of(client, ns, job)
                .await
                .ok()?
                .into_iter()
                .find(|p| running(p) && !done.contains(&pod_name(p)))
        })
        .await
        .with_context(|| bed.log_tail(&cm))?;
        succeed(client, ns, &pod).await?;
        done.insert(pod_name(&pod));
        if restart_after.contains(&done.len()) {
            // Killed mid-sync on purpose: the success is not counted yet, or half-way.
            let holder = lease_holder(client).await;
            bed.stop_process(&cm, Duration::ZERO);
            generation += 1;
            cm = format!("job-cm-{generation}");
            start_controller_manager(bed, &cm)?;
            wait_leading(bed, &cm, holder.as_deref()).await?;
        }
    }
    Ok(cm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_manager_neither_recounts_nor_recreates_pods() -> Result<()> {
    // Bounded as a whole: it stops and starts processes, which nothing else here does.
    tokio::time::timeout(Duration::from_secs(420), restart_scenario())
        .await
        .context("the restart scenario did not finish in 7 minutes")?
}

/// Two Jobs of 6 completions driven through two SIGKILLs of the controller manager.
async fn restart_scenario() -> Result<()> {
    let bed = PrivateBed::start(|mut o| {
        o.nodes = 2;
        o.scheduler = Component::Stock;
        o.controller_manager = Component::None;
        o.complete_job_pods = false;
        o
    })
    .await?;
    start_controller_manager(&bed, "job-cm-0")?;
    wait_leading(&bed, "job-cm-0", None).await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "job-restart").await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    let seen = watch_pod_uids(&client, &ns);
    for (name, mode) in [("plain", "NonIndexed"), ("indexed", "Indexed")] {
        create_job(
            &client,
            &ns,
            name,
            json!({"completions": 6, "parallelism": 2, "completionMode": mode}),
        )
        .await?;
    }
    let (a, b) = tokio::join!(
        succeed_with_restarts(&bed, &client, &ns, "plain", 6, &[2, 4]),
        async {
            // Driven after the restarts above begin, so both Jobs straddle them.
            tokio::time::sleep(Duration::from_secs(1)).await;
            succeed_only(&client, &ns, "indexed", 6).await
        }
    );
    let cm = a?;
    b?;
    let api = Api::<Job>::namespaced(client.clone(), &ns);
    for name in ["plain", "indexed"] {
        let waited = eventually(&format!("job {name} Complete"), TIMEOUT, POLL, || async {
            api.get(name)
                .await
                .ok()
                .filter(|j| has(j, "Complete", "CompletionsReached"))
        })
        .await;
        let j = match waited {
            Ok(j) => j,
            Err(e) => {
                let state = job_and_pods(&client, &ns, name).await;
                return Err(e.context(format!("{state}\n{}", bed.log_tail(&cm))));
            }
        };
        ensure!(
            status_counts(&j) == (0, 6, 0),
            "{name}: (active, succeeded, failed) = {:?}",
            status_counts(&j)
        );
    }
    // Let a confused controller show itself before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let total = count(&seen);
    ensure!(
        total == 12,
        "{total} pods ever created for two Jobs of 6 completions"
    );
    for name in ["plain", "indexed"] {
        let j = api.get(name).await?;
        ensure!(
            status_counts(&j) == (0, 6, 0),
            "{name} changed after completing: {:?}",
            status_counts(&j)
        );
    }
    Ok(())
}

/// The Job's status and its pods (phase, index, finalizers), to say where a Job got stuck.
async fn job_and_pods(client: &kube::Client, ns: &str, job: &str) -> String {
    let status = Api::<Job>::namespaced(client.clone(), ns)
        .get(job)
        .await
        .map(|j| serde_json::to_string(&j.status).unwrap_or_default())
        .unwrap_or_else(|e| e.to_string());
    let pods = pods_of(client, ns, job)
        .await
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{} {} index={:?} finalizers={:?} deleting={}",
                        pod_name(p),
                        phase(p),
                        index_of(p),
                        p.metadata.finalizers,
                        p.metadata.deletion_timestamp.is_some()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| e.to_string());
    format!("job {job} status: {status}\npods:\n{pods}")
}

/// Marks running pods of `job` Succeeded until `n` have been (any controller manager).
async fn succeed_only(client: &kube::Client, ns: &str, job: &str, n: usize) -> Result<()> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < n {
        let pod = eventually(
            "a running pod not yet finished",
            Duration::from_secs(150),
            POLL,
            || async {
                pods_of(client, ns, job)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|p| running(p) && !done.contains(&pod_name(p)))
            },
        )
        .await?;
        succeed(client, ns, &pod).await?;
        done.insert(pod_name(&pod));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Ok(())
}
