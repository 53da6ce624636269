//! The CronJob controller: creates a Job from `spec.jobTemplate` at each scheduled time, applies
//! the concurrency policy, keeps `status.active` / `lastScheduleTime` / `lastSuccessfulTime`, and
//! deletes finished Jobs beyond the history limits. Each CronJob is requeued for exactly its next
//! scheduled time (plus 100 ms), never polled.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/cronjob/cronjob_controllerv2.go. The decisions
//! live in [`sync`] (pure) and the cron arithmetic in [`schedule`] (robfig/cron v3 semantics);
//! this module is the shell: informers, handlers, API calls, events.

pub mod schedule;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};

use crate::manager::ControllerContext;

pub const NAME: &str = "cronjob-controller";

type Key = (String, String);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("getting CronJob {key}: {error}")]
    GetCronJob { key: String, error: String },
    #[error("getting Job {key}: {error}")]
    GetJob { key: String, error: String },
    #[error("could not replace job {0}")]
    Replace(String),
    #[error("creating Job for CronJob {key}: {error}")]
    CreateJob { key: String, error: String },
    #[error("updating status of CronJob {key}: {error}")]
    UpdateStatus { key: String, error: String },
}

/// What Go's `err.Error()` prints for an API error: the server's message.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| d
        .causes
        .iter()
        .any(|c| c.reason == "NamespaceTerminating")))
}

struct Shared {
    client: kube::Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    recorder: EventRecorder,
    queue: WorkQueue<Key>,
    /// robfig's `time.Local`: the zone of schedules without `timeZone`.
    local: TimeZone,
}

fn key_of(cj: &CronJob) -> Option<Key> {
    Some((cj.metadata.namespace.clone()?, cj.metadata.name.clone()?))
}

/// `resolveControllerRef`: the CronJob a Job's controllerRef names, if it still has that UID.
fn resolve(cronjobs: &Informer<CronJob>, ns: Option<&str>, r: &OwnerReference) -> Option<Key> {
    if r.kind != "CronJob" {
        return None;
    }
    let cj = cronjobs.get(ns, &r.name)?;
    (cj.metadata.uid.as_deref() == Some(r.uid.as_str()))
        .then(|| key_of(&cj))
        .flatten()
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let queue: WorkQueue<Key> = WorkQueue::new("cronjob", RateLimiter::default_controller())
        .with_metrics(&ctx.queue_metrics);
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        cronjobs: ctx.informers.informer::<CronJob>(),
        jobs: ctx.informers.informer::<Job>(),
        recorder: ctx.events.for_controller(NAME),
        queue: queue.clone(),
        local: TimeZone::system(),
    });
    {
        let s = shared.clone();
        shared.cronjobs.add_handler(move |change| match change {
            Change::Added(cj) | Change::Deleted(cj) => {
                if let Some(k) = key_of(cj) {
                    s.queue.add(k);
                }
            }
            Change::Updated { old, new } => s.update_cronjob(old, new),
        });
    }
    {
        let s = shared.clone();
        shared.jobs.add_handler(move |change| {
            let enqueue = |job: &Job, r: Option<&OwnerReference>| {
                if let Some(k) =
                    r.and_then(|r| resolve(&s.cronjobs, job.metadata.namespace.as_deref(), r))
                {
                    s.queue.add(k);
                }
            };
            match change {
                Change::Added(job) | Change::Deleted(job) => enqueue(job, sync::controller_of(job)),
                Change::Updated { old, new } => {
                    if old.metadata.resource_version == new.metadata.resource_version {
                        return;
                    }
                    let (o, n) = (sync::controller_of(old), sync::controller_of(new));
                    if o != n && o.is_some() {
                        enqueue(old, o);
                    }
                    enqueue(new, n);
                }
            }
        });
    }
    let token = ctx.token.clone();
    // `--concurrent-cron-job-syncs`.
    let workers = ctx.settings.concurrent_cron_job_syncs;
    Ok(async move {
        tracing::info!(controller = NAME, "starting cronjob controller v2");
        let s = shared.clone();
        run_workers(queue, workers, token, move |key: Key| {
            let s = s.clone();
            async move { s.sync(key).await }
        })
        .await;
        Ok(())
    }
    .boxed())
}

impl Shared {
    /// `updateCronJob`: a changed schedule or zone requeues for the new next time (an unparseable
    /// one only warns); any other change syncs now.
    fn update_cronjob(&self, old: &CronJob, new: &CronJob) {
        let Some(key) = key_of(new) else { return };
        let spec = |c: &CronJob| {
            let s = c.spec.clone();
            (s.schedule, s.time_zone)
        };
        let (old_spec, new_spec) = (spec(old), spec(new));
        if old_spec == new_spec {
            self.queue.add(key);
            return;
        }
        match schedule::parse_standard(&sync::format_schedule(new, None)) {
            Err(_) => self.recorder.warning(
                new,
                "UnParseableCronJobSchedule",
                format!("unparseable schedule for cronjob: {}", new_spec.0),
            ),
            Ok(sched) => {
                if let Some(d) =
                    sync::next_schedule_time_duration(new, Timestamp::now(), &sched, &self.local)
                {
                    self.queue.add_after(key, d);
                }
            }
        }
    }

    fn emit(&self, cj: &CronJob, events: &[sync::Event]) {
        for e in events {
            if e.warning {
                self.recorder.warning(cj, e.reason, e.message.clone());
            } else {
                self.recorder.normal(cj, e.reason, e.message.clone());
            }
        }
    }

    /// `sync`: cleanup, reconcile, status write, then requeue at the next scheduled time.
    async fn sync(&self, key: Key) -> Result<(), Error> {
        let (ns, name) = &key;
        let Some(cached) = self.cronjobs.get(Some(ns), name) else {
            return Ok(());
        };
        let all: Vec<Arc<Job>> = self.jobs.list_namespace(ns);
        let jobs = sync::owned_jobs(&cached, &all);
        let mut cj = (*cached).clone();
        let mut status = cj.status.take().unwrap_or_default();
        let mut changed = false;
        for job in sync::history_to_delete(&cj, &jobs) {
            if self.delete_job(&cj, &job).await {
                sync::remove_active(&mut status, job.metadata.uid.as_deref().unwrap_or_default());
                changed = true;
            }
        }
        cj.status = Some(status);
        let (requeue, sync_changed, sync_err) = self.sync_cronjob(&mut cj, &jobs).await;
        if changed || sync_changed {
            self.update_status(&cj).await?;
        }
        if let Some(d) = requeue {
            tracing::debug!(cronjob = %format!("{ns}/{name}"), after = ?d, "re-queuing cronjob");
            self.queue.add_after(key, d);
            return Ok(());
        }
        // Suspended, invalid schedule or zone: wait for a change to the CronJob or its Jobs.
        sync_err.map_or(Ok(()), Err)
    }

    /// `UpdateStatus`: a PUT to the status subresource with the resourceVersion the decisions
    /// were made on. The bootstrap role `system:controller:cronjob-controller` grants `update`
    /// (not `patch`) on `cronjobs/status`, so a patch is not an option; the status endpoint
    /// ignores everything outside `status`, and every CronJob status field is known here.
    async fn update_status(&self, cj: &CronJob) -> Result<(), Error> {
        let mut body = cj.clone();
        if let Some(st) = body.status.as_mut()
            && st.active.as_ref().is_some_and(Vec::is_empty)
        {
            st.active = None;
        }
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let name = cj.metadata.name.clone().unwrap_or_default();
        Api::<CronJob>::namespaced(self.client.clone(), &ns)
            .replace_status(&name, &PostParams::default(), &body)
            .await
            .map(|_| ())
            .map_err(|e| Error::UpdateStatus {
                key: format!("{ns}/{name}"),
                error: api_message(&e),
            })
    }

    /// `deleteJob`: delete (background) and report; true when deleted.
    async fn delete_job(&self, cj: &CronJob, job: &Job) -> bool {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match Api::<Job>::namespaced(self.client.clone(), &ns)
            .delete(&name, &params)
            .await
        {
            Ok(_) => {
                self.recorder
                    .normal(cj, "SuccessfulDelete", format!("Deleted job {name}"));
                true
            }
            Err(e) => {
                tracing::error!(job = %format!("{ns}/{name}"), error = %e, "error deleting job from cronjob");
                self.recorder.warning(
                    cj,
                    "FailedDelete",
                    format!("Deleted job: {}", api_message(&e)),
                );
                false
            }
        }
    }

    async fn get_job(&self, ns: &str, name: &str) -> Result<Job, kube::Error> {
        Api::<Job>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
    }

    /// `syncCronJob`: returns the requeue delay, whether status changed, and an error to retry.
    async fn sync_cronjob(
        &self,
        cj: &mut CronJob,
        jobs: &[Arc<Job>],
    ) -> (Option<Duration>, bool, Option<Error>) {
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let name = cj.metadata.name.clone().unwrap_or_default();
        let cj_key = format!("{ns}/{name}");
        let mut status = cj.status.take().unwrap_or_default();
        let mut children = sync::reconcile_children(&mut status, jobs);
        if !children.unexpected.is_empty() {
            // Our cached status may lag our own write: re-read before calling a Job unexpected.
            let fresh = match Api::<CronJob>::namespaced(self.client.clone(), &ns)
                .get(&name)
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    cj.status = Some(status);
                    let error = api_message(&e);
                    return (
                        None,
                        children.changed,
                        Some(Error::GetCronJob { key: cj_key, error }),
                    );
                }
            };
            let fresh_status = fresh.status.clone().unwrap_or_default();
            let known = jobs.iter().any(|j| {
                children
                    .unexpected
                    .contains(&j.metadata.name.clone().unwrap_or_default())
                    && fresh_status
                        .active
                        .iter()
                        .flatten()
                        .any(|r| r.uid == j.metadata.uid)
            });
            if known {
                *cj = fresh;
                status = fresh_status;
                children = sync::reconcile_children(&mut status, jobs);
            }
            for j in &children.unexpected {
                children.events.push(sync::unexpected_job_event(j));
            }
        }
        self.emit(cj, &children.events);
        let mut changed = children.changed;
        for r in &children.possibly_missing {
            let (rns, rname) = (
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            );
            match self.get_job(&rns, &rname).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {
                    self.recorder.normal(
                        &*cj,
                        "MissingJob",
                        sync::missing_job_event(&rname).message,
                    );
                    sync::remove_active(&mut status, r.uid.as_deref().unwrap_or_default());
                    changed = true;
                }
                Err(e) => {
                    cj.status = Some(status);
                    let error = api_message(&e);
                    return (
                        None,
                        changed,
                        Some(Error::GetJob {
                            key: format!("{rns}/{rname}"),
                            error,
                        }),
                    );
                }
            }
        }
        cj.status = Some(status);
        let now = Timestamp::now();
        let plan = sync::plan(cj, now, &self.local);
        self.emit(cj, &plan.events);
        let (scheduled, replace, job) = match plan.decision {
            sync::Decision::Wait(d) => return (d, changed, None),
            sync::Decision::Create {
                scheduled,
                replace,
                job,
            } => (scheduled, replace, job),
        };
        for r in replace {
            let (rns, rname) = (
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            );
            let existing = match self.get_job(&rns, &rname).await {
                Ok(j) => j,
                Err(e) => {
                    let error = api_message(&e);
                    self.recorder
                        .warning(&*cj, "FailedGet", format!("Get job: {error}"));
                    return (
                        None,
                        changed,
                        Some(Error::GetJob {
                            key: format!("{rns}/{rname}"),
                            error,
                        }),
                    );
                }
            };
            if !self.delete_job(cj, &existing).await {
                return (
                    None,
                    changed,
                    Some(Error::Replace(format!("{rns}/{rname}"))),
                );
            }
            if let Some(st) = cj.status.as_mut() {
                sync::remove_active(st, existing.metadata.uid.as_deref().unwrap_or_default());
            }
            changed = true;
        }
        let api = Api::<Job>::namespaced(self.client.clone(), &ns);
        let job_name = job.metadata.name.clone().unwrap_or_default();
        let created = match api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.recorder
                    .normal(&*cj, "SuccessfulCreate", format!("Created job {job_name}"));
                created
            }
            Err(e) if is_namespace_terminating(&e) => {
                let error = api_message(&e);
                return (None, changed, Some(Error::CreateJob { key: cj_key, error }));
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                // The name is the lock: if we made it before but lost the status write, adopt it
                // into the active list; if someone else made it, leave it to them.
                let existing = match api.get(&job_name).await {
                    Ok(j) => j,
                    Err(e) => {
                        let error = api_message(&e);
                        return (
                            None,
                            changed,
                            Some(Error::GetJob {
                                key: format!("{ns}/{job_name}"),
                                error,
                            }),
                        );
                    }
                };
                let ours = sync::controller_of(&existing)
                    .is_some_and(|r| Some(r.uid.as_str()) == cj.metadata.uid.as_deref());
                let listed = cj
                    .status
                    .as_ref()
                    .and_then(|s| s.active.as_ref())
                    .is_some_and(|a| a.iter().any(|r| r.uid == existing.metadata.uid));
                if !ours || listed {
                    return (None, changed, None);
                }
                tracing::info!(cronjob = %cj_key, job = %job_name, "job already exists");
                existing
            }
            Err(e) => {
                let error = api_message(&e);
                self.recorder
                    .warning(&*cj, "FailedCreate", format!("Error creating job: {error}"));
                return (None, changed, Some(Error::CreateJob { key: cj_key, error }));
            }
        };
        let status: &mut CronJobStatus = cj.status.get_or_insert_with(Default::default);
        sync::record_created(status, &created, scheduled);
        let requeue = match schedule::parse_standard(&sync::format_schedule(cj, None)) {
            Ok(sched) => sync::next_schedule_time_duration(cj, now, &sched, &self.local),
            Err(_) => None,
        };
        (requeue, true, None)
    }
}
