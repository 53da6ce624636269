//! Differential test of Job + CronJob fidelity: one scripted scenario run on a bed whose
//! controller manager is the stock kube-controller-manager and on one whose controller manager is
//! Ferrite's (both with the stock scheduler and kwok nodes; the scenario drives pod phases
//! itself through the status subresource), then the normalised end states are compared. The
//! scenario covers what kubernetes/kubernetes pkg/controller/job and pkg/controller/cronjob do
//! for everyday Jobs: completions and parallelism, Indexed Jobs with a retried index, the
//! backoff limit, a pod failure policy, an active deadline, suspension, TTL after finishing, and
//! a CronJob running one scheduled Job to completion. Pod names are random, so they (and the
//! namespace) are normalised away in messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, PrivateBed, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(250);
/// Generous: both beds run at once on a small, shared machine, and pod failures back off 10 s.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// The normalised end state of one Job.
#[derive(Debug, PartialEq, Eq)]
struct JobState {
    /// False once the ttl-after-finished controller has deleted (or is deleting) it.
    exists: bool,
    /// (type, status, reason, message), sorted by type.
    conditions: Vec<(String, String, String, String)>,
    /// active, ready, succeeded, failed, terminating.
    counts: [i32; 5],
    completed_indexes: Option<String>,
    failed_indexes: Option<String>,
    has_start_time: bool,
    has_completion_time: bool,
    uncounted: usize,
    /// Pods of the Job at the end, and how many of them still carry the tracking finalizer.
    pods: usize,
    pods_with_finalizer: usize,
    /// (reason, message) of the job controller's events on the Job.
    events: BTreeSet<(String, String)>,
}

/// The normalised end state of the CronJob.
#[derive(Debug, PartialEq, Eq)]
struct CronJobState {
    jobs: usize,
    active: usize,
    has_last_schedule_time: bool,
    has_last_successful_time: bool,
    /// Conditions of the Jobs it made (type, status, reason).
    job_conditions: Vec<(String, String, String)>,
    /// Reasons of the cronjob controller's events on the CronJob.
    event_reasons: BTreeSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct EndState {
    jobs: BTreeMap<String, JobState>,
    cronjob: CronJobState,
}

async fn start_bed(cm: Component) -> Result<PrivateBed> {
    PrivateBed::start(|mut o| {
        o.nodes = 2;
        o.controller_manager = cm;
        o.scheduler = Component::Stock;
        o.complete_job_pods = false;
        o
    })
    .await
}

fn cm_log(bed: &Bed) -> String {
    bed.log_tail("controller-manager")
}

fn job_body(name: &str, spec: Value) -> Result<Job> {
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

fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.metadata.deletion_timestamp.is_none()
}

fn index_of(p: &Pod) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(INDEX_KEY).cloned()
}

struct Driver<'a> {
    bed: &'a Bed,
    client: kube::Client,
    ns: String,
}

impl Driver<'_> {
    async fn pods_of(&self, job: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    async fn create(&self, name: &str, spec: Value) -> Result<()> {
        Api::<Job>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &job_body(name, spec)?)
            .await?;
        Ok(())
    }

    /// A running pod of `job` (of index `ix` when given) not in `skip`.
    async fn running_pod(
        &self,
        job: &str,
        ix: Option<&str>,
        skip: &BTreeSet<String>,
    ) -> Result<Pod> {
        eventually(
            &format!("a running pod of job {job} (index {ix:?})"),
            STEP_TIMEOUT,
            POLL,
            || async {
                self.pods_of(job).await.into_iter().find(|p| {
                    running(p)
                        && !skip.contains(&pod_name(p))
                        && (ix.is_none() || index_of(p).as_deref() == ix)
                })
            },
        )
        .await
        .with_context(|| cm_log(self.bed))
    }

    /// Ends the pod's container with `exit_code`, as a kubelet would report it.
    async fn finish(&self, pod: &Pod, exit_code: i32) -> Result<()> {
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let body = json!({"status": {
            "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": "c", "image": "registry.k8s.io/pause:3.10", "imageID": "",
                "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": now, "finishedAt": now}},
            }],
        }});
        Api::<Pod>::namespaced(self.client.clone(), &self.ns)
            .patch_status(&pod_name(pod), &PatchParams::default(), &Patch::Merge(body))
            .await?;
        Ok(())
    }

    /// Succeeds `n` running pods of `job`, one after the other.
    async fn succeed_n(&self, job: &str, n: usize) -> Result<()> {
        let mut done = BTreeSet::new();
        while done.len() < n {
            let p = self.running_pod(job, None, &done).await?;
            self.finish(&p, 0).await?;
            done.insert(pod_name(&p));
        }
        Ok(())
    }

    async fn wait_job(&self, name: &str, what: &str, done: impl Fn(&Job) -> bool) -> Result<()> {
        let api = Api::<Job>::namespaced(self.client.clone(), &self.ns);
        eventually(
            &format!("job {name} {what}"),
            STEP_TIMEOUT,
            POLL,
            || async { api.get(name).await.ok().filter(&done) },
        )
        .await
        .with_context(|| cm_log(self.bed))?;
        Ok(())
    }

    async fn wait_condition(&self, name: &str, type_: &str) -> Result<()> {
        self.wait_job(name, &format!("condition {type_}"), |j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
        })
        .await
    }
}

fn event_component(e: &Event) -> &str {
    e.source
        .as_ref()
        .and_then(|s| s.component.as_deref())
        .or(e.reporting_component.as_deref())
        .unwrap_or("")
}

/// Replaces the namespace and every pod name in `text` with placeholders.
fn scrub(text: &str, ns: &str, pod_names: &[String]) -> String {
    let mut by_length: Vec<&String> = pod_names.iter().collect();
    by_length.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let text = by_length
        .iter()
        .fold(text.to_owned(), |t, n| t.replace(n.as_str(), "<pod>"));
    text.replace(ns, "<ns>")
}

fn normalise_job(
    name: &str,
    job: Option<&Job>,
    pods: &[Pod],
    events: &[Event],
    ns: &str,
    all_pod_names: &[String],
) -> JobState {
    let exists = job.is_some_and(|j| j.metadata.deletion_timestamp.is_none());
    let s = job.and_then(|j| j.status.clone()).unwrap_or_default();
    let mut conditions: Vec<_> = if exists {
        s.conditions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                (
                    c.type_,
                    c.status,
                    c.reason.unwrap_or_default(),
                    scrub(&c.message.unwrap_or_default(), ns, all_pod_names),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    conditions.sort();
    let uncounted = s
        .uncounted_terminated_pods
        .as_ref()
        .map(|u| u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len))
        .unwrap_or(0);
    let events = events
        .iter()
        .filter(|e| event_component(e) == "job-controller")
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Job")
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| {
            (
                e.reason.clone().unwrap_or_default(),
                scrub(e.message.as_deref().unwrap_or(""), ns, all_pod_names),
            )
        })
        .collect();
    let with_finalizer = pods
        .iter()
        .filter(|p| {
            p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "batch.kubernetes.io/job-tracking")
        })
        .count();
    JobState {
        exists,
        conditions,
        counts: if exists {
            [
                s.active.unwrap_or(0),
                s.ready.unwrap_or(0),
                s.succeeded.unwrap_or(0),
                s.failed.unwrap_or(0),
                s.terminating.unwrap_or(0),
            ]
        } else {
            [0; 5]
        },
        completed_indexes: s.completed_indexes.clone().filter(|_| exists),
        failed_indexes: s.failed_indexes.clone().filter(|_| exists),
        has_start_time: exists && s.start_time.is_some(),
        has_completion_time: exists && s.completion_time.is_some(),
        uncounted: if exists { uncounted } else { 0 },
        pods: if exists { pods.len() } else { 0 },
        pods_with_finalizer: with_finalizer,
        events: if exists { events } else { BTreeSet::new() },
    }
}

const JOBS: [&str; 7] = [
    "batch",
    "indexed",
    "doomed",
    "pfp",
    "deadline",
    "ttl",
    "suspended",
];

/// Runs the scenario on `bed` and returns the normalised end state.
async fn scenario(bed: &Bed) -> Result<EndState> {
    let client = bed.client().await?;
    bed.wait_nodes_ready(&client, STEP_TIMEOUT).await?;
    let ns = testing::namespace(&client, "diffjob").await?;
    // Both controller managers make the namespace's `default` ServiceAccount; wait for it on both
    // beds alike.
    let sa_api = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    eventually(
        "the default service account",
        STEP_TIMEOUT,
        POLL,
        || async { sa_api.get_opt("default").await.ok().flatten() },
    )
    .await
    .with_context(|| cm_log(bed))?;
    let d = Driver {
        bed,
        client: client.clone(),
        ns: ns.clone(),
    };

    // The CronJob first: its first scheduled minute runs while the Jobs below are driven.
    let cj: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "cron"},
        "spec": {
            "schedule": "*/1 * * * *",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 0}}}},
        },
    }))?;
    let cj_api = Api::<CronJob>::namespaced(client.clone(), &ns);
    cj_api.create(&PostParams::default(), &cj).await?;

    d.create("batch", json!({"completions": 3, "parallelism": 2}))
        .await?;
    d.create(
        "indexed",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimit": 2}),
    )
    .await?;
    d.create("doomed", json!({"backoffLimit": 0})).await?;
    d.create(
        "pfp",
        json!({"backoffLimit": 3, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]}}),
    )
    .await?;
    d.create("deadline", json!({"activeDeadlineSeconds": 4}))
        .await?;
    d.create("ttl", json!({"ttlSecondsAfterFinished": 0}))
        .await?;
    d.create("suspended", json!({"suspend": true, "completions": 2}))
        .await?;

    let none = BTreeSet::new();
    d.succeed_n("batch", 3).await?;
    d.wait_condition("batch", "Complete").await?;

    // Index 1 fails once and is retried (after the 10 s pod failure back-off).
    let first_one = d.running_pod("indexed", Some("1"), &none).await?;
    d.finish(&first_one, 1).await?;
    for ix in ["0", "2"] {
        let p = d.running_pod("indexed", Some(ix), &none).await?;
        d.finish(&p, 0).await?;
    }
    let retried = d
        .running_pod(
            "indexed",
            Some("1"),
            &BTreeSet::from([pod_name(&first_one)]),
        )
        .await?;
    d.finish(&retried, 0).await?;
    d.wait_condition("indexed", "Complete").await?;

    let p = d.running_pod("doomed", None, &none).await?;
    d.finish(&p, 2).await?;
    d.wait_condition("doomed", "Failed").await?;

    let p = d.running_pod("pfp", None, &none).await?;
    d.finish(&p, 42).await?;
    d.wait_condition("pfp", "Failed").await?;

    d.wait_condition("deadline", "Failed").await?;

    d.succeed_n("ttl", 1).await?;
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    eventually(
        "job ttl deleted after finishing",
        STEP_TIMEOUT,
        POLL,
        || async {
            match jobs_api.get_opt("ttl").await {
                Ok(None) => Some(()),
                Ok(Some(j)) => j.metadata.deletion_timestamp.map(|_| ()),
                Err(_) => None,
            }
        },
    )
    .await
    .with_context(|| cm_log(bed))?;

    d.wait_condition("suspended", "Suspended").await?;

    // The CronJob's first Job: complete its pod, then wait for the CronJob to notice.
    let cron_job = eventually("the CronJob's first Job", STEP_TIMEOUT, POLL, || async {
        jobs_api
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|j| {
                j.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "CronJob" && o.name == "cron")
            })
    })
    .await
    .with_context(|| cm_log(bed))?;
    let cron_job_name = cron_job.metadata.name.clone().unwrap_or_default();
    d.succeed_n(&cron_job_name, 1).await?;
    d.wait_condition(&cron_job_name, "Complete").await?;
    // Suspend it now, so no second minute adds a Job on one bed and not on the other.
    cj_api
        .patch(
            "cron",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await?;
    eventually(
        "the CronJob saw its Job succeed",
        STEP_TIMEOUT,
        POLL,
        || async {
            let s = cj_api.get("cron").await.ok()?.status?;
            (s.last_successful_time.is_some() && s.active.unwrap_or_default().is_empty())
                .then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;

    // Settle: no pod still carries the tracking finalizer for a finished Job, and no event is
    // still on its way (the recorders send asynchronously).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let all_pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let mut all_pod_names: Vec<String> = all_pods.iter().map(pod_name).collect();
    // Pods already deleted still appear in event messages.
    all_pod_names.extend(events.iter().filter_map(|e| {
        (e.involved_object.kind.as_deref() == Some("Pod"))
            .then(|| e.involved_object.name.clone())
            .flatten()
    }));
    all_pod_names.extend(events.iter().filter_map(|e| {
        let m = e.message.as_deref()?;
        m.strip_prefix("Created pod: ")
            .or_else(|| m.strip_prefix("Deleted pod: "))
            .map(str::to_owned)
    }));
    let mut jobs = BTreeMap::new();
    for name in JOBS {
        let job = jobs_api.get_opt(name).await?;
        let pods: Vec<Pod> = all_pods
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(JOB_NAME_LABEL))
                    .map(String::as_str)
                    == Some(name)
            })
            .cloned()
            .collect();
        jobs.insert(
            name.to_owned(),
            normalise_job(name, job.as_ref(), &pods, &events, &ns, &all_pod_names),
        );
    }
    let cj = cj_api.get("cron").await?;
    let cs = cj.status.clone().unwrap_or_default();
    let cron_jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "CronJob" && o.name == "cron")
        })
        .collect();
    let mut job_conditions: Vec<(String, String, String)> = cron_jobs
        .iter()
        .flat_map(|j| {
            j.status
                .clone()
                .and_then(|s| s.conditions)
                .unwrap_or_default()
        })
        .map(|c| (c.type_, c.status, c.reason.unwrap_or_default()))
        .collect();
    job_conditions.sort();
    let cronjob = CronJobState {
        jobs: cron_jobs.len(),
        active: cs.active.as_ref().map_or(0, Vec::len),
        has_last_schedule_time: cs.last_schedule_time.is_some(),
        has_last_successful_time: cs.last_successful_time.is_some(),
        job_conditions,
        event_reasons: events
            .iter()
            .filter(|e| event_component(e) == "cronjob-controller")
            .filter(|e| e.involved_object.kind.as_deref() == Some("CronJob"))
            .filter_map(|e| e.reason.clone())
            .collect(),
    };
    Ok(EndState { jobs, cronjob })
}

async fn run_on(cm: Component) -> Result<EndState> {
    let bed = start_bed(cm).await?;
    scenario(&bed)
        .await
        .with_context(|| format!("the scenario on the {cm:?} bed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ferrite_controller_manager_ends_jobs_and_cronjobs_in_the_same_state_as_the_stock_one()
-> Result<()> {
    // Both scenarios run at once on two private beds: the end states do not depend on timing.
    // `FERRITE_DIFF_JOB_OTHER=stock` runs the stock one twice, to check the scenario itself.
    let other = match std::env::var("FERRITE_DIFF_JOB_OTHER").as_deref() {
        Ok("stock") => Component::Stock,
        _ => Component::Ferrite,
    };
    let (stock, ferrite) = tokio::try_join!(run_on(Component::Stock), run_on(other))?;
    for (name, s) in &stock.jobs {
        eprintln!("stock   {name}: {s:?}");
        eprintln!("ferrite {name}: {:?}", ferrite.jobs.get(name));
    }
    eprintln!("stock   cron: {:?}", stock.cronjob);
    eprintln!("ferrite cron: {:?}", ferrite.cronjob);
    ensure!(
        stock == ferrite,
        "end states differ:\nstock:   {stock:#?}\nferrite: {ferrite:#?}"
    );
    Ok(())
}
