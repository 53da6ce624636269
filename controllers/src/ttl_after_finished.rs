//! The TTL-after-finished controller: deletes a finished Job (cascading, foreground) once
//! `spec.ttlSecondsAfterFinished` seconds have passed since it finished, and requeues a Job whose
//! TTL has not expired yet for exactly the moment it will.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/ttlafterfinished/ttlafterfinished_controller.go.

use std::time::Duration;

use ferrite_runtime::informer::Change;
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::job::util::{finished_condition, is_finished};
use crate::manager::ControllerContext;

pub const NAME: &str = "ttl-after-finished-controller";

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("unable to find the time when the Job {0} finished")]
    NoFinishTime(String),
    #[error("unable to find the status of the finished Job {0}")]
    NoFinishedCondition(String),
    #[error("getting Job {key}: {error}")]
    Get { key: String, error: String },
    #[error("deleting Job {key}: {error}")]
    Delete { key: String, error: String },
}

/// What to do with a Job now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not finished, no TTL, or already being deleted.
    Ignore,
    /// The TTL expires in this long; look again then.
    RequeueAfter(Duration),
    /// Expired (at the given time): delete.
    Delete { expired_at: Timestamp },
}

/// `needsCleanup`: a TTL is set and the Job has finished.
pub fn needs_cleanup(job: &Job) -> bool {
    job.spec
        .as_ref()
        .is_some_and(|s| s.ttl_seconds_after_finished.is_some())
        && is_finished(job)
}

fn key(job: &Job) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or_default(),
        job.metadata.name.as_deref().unwrap_or_default()
    )
}

/// When the Job finished: the `lastTransitionTime` of its first true Complete/Failed condition.
pub fn finish_time(job: &Job) -> Result<Timestamp, Error> {
    let condition = finished_condition(job).ok_or_else(|| Error::NoFinishedCondition(key(job)))?;
    condition
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .ok_or_else(|| Error::NoFinishTime(key(job)))
}

/// `processTTL` without its side effect: decide at `now`.
pub fn decide(job: &Job, now: Timestamp) -> Result<Decision, Error> {
    if job.metadata.deletion_timestamp.is_some() || !needs_cleanup(job) {
        return Ok(Decision::Ignore);
    }
    let ttl = job
        .spec
        .as_ref()
        .and_then(|s| s.ttl_seconds_after_finished)
        .unwrap_or_default();
    let finished = finish_time(job)?;
    if finished > now {
        tracing::info!(job = %key(job), "Warning: Found Job finished in the future. This is likely due to time skew in the cluster. Job cleanup will be deferred.");
    }
    let expire_at = finished
        .checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .unwrap_or(Timestamp::MAX);
    let remaining = expire_at.duration_since(now);
    if remaining.is_zero() || remaining.is_negative() {
        return Ok(Decision::Delete {
            expired_at: expire_at,
        });
    }
    Ok(Decision::RequeueAfter(
        remaining.try_into().unwrap_or(Duration::MAX),
    ))
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

/// `ttl_after_finished_controller_job_deletion_duration_seconds`: how long after its TTL expired a
/// Job was deleted (pkg/controller/ttlafterfinished/metrics).
fn register_deletion_duration(registry: &mut Registry) -> Histogram {
    let h = Histogram::new(exponential_buckets(0.1, 2.0, 14));
    registry
        .sub_registry_with_prefix("ttl_after_finished_controller")
        .register(
            "job_deletion_duration_seconds",
            "The time it took to delete the job since it became eligible for deletion",
            h.clone(),
        );
    h
}

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let queue: WorkQueue<(String, String)> =
        WorkQueue::new("ttl_jobs_to_delete", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics);
    let jobs = ctx.informers.informer::<Job>();
    let deletion_duration = ctx.registry.once(NAME, register_deletion_duration);
    // `--concurrent-ttl-after-finished-syncs`.
    let workers = ctx.settings.concurrent_ttl_after_finished_syncs;
    {
        let q = queue.clone();
        jobs.add_handler(move |change| {
            let job = match change {
                Change::Added(j) | Change::Updated { new: j, .. } => j,
                Change::Deleted(_) => return,
            };
            if job.metadata.deletion_timestamp.is_none()
                && needs_cleanup(job)
                && let (Some(ns), Some(name)) = (&job.metadata.namespace, &job.metadata.name)
            {
                q.add((ns.clone(), name.clone()));
            }
        });
    }
    let client = ctx.client.clone();
    let token = ctx.token.clone();
    let requeue = queue.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting controller");
        run_workers(queue, workers, token, move |(ns, name): (String, String)| {
            let (client, jobs, requeue, deletion_duration) = (
                client.clone(),
                jobs.clone(),
                requeue.clone(),
                deletion_duration.clone(),
            );
            async move {
                let Some(job) = jobs.get(Some(&ns), &name) else {
                    return Ok(());
                };
                let k = (ns.clone(), name.clone());
                match decide(&job, Timestamp::now())? {
                    Decision::Ignore => return Ok(()),
                    Decision::RequeueAfter(d) => {
                        requeue.add_after(k, d);
                        return Ok(());
                    }
                    Decision::Delete { .. } => {}
                }
                // The cached TTL may be stale: decide again on a fresh read (upstream does).
                let api = Api::<Job>::namespaced(client, &ns);
                let fresh = match api.get_opt(&name).await {
                    Ok(Some(j)) => j,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        return Err(Error::Get {
                            key: format!("{ns}/{name}"),
                            error: e.to_string(),
                        });
                    }
                };
                let expired_at = match decide(&fresh, Timestamp::now())? {
                    Decision::Ignore => return Ok(()),
                    Decision::RequeueAfter(d) => {
                        requeue.add_after(k, d);
                        return Ok(());
                    }
                    Decision::Delete { expired_at } => expired_at,
                };
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Foreground),
                    preconditions: Some(Preconditions {
                        uid: fresh.metadata.uid.clone(),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                tracing::info!(job = %format!("{ns}/{name}"), "cleaning up Job whose TTL after finished expired");
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        let late = Timestamp::now().duration_since(expired_at);
                        deletion_duration.observe(late.as_secs_f64().max(0.0));
                        Ok(())
                    }
                    Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                    Err(e) => Err(Error::Delete {
                        key: format!("{ns}/{name}"),
                        error: e.to_string(),
                    }),
                }
            }
        })
        .await;
        Ok(())
    }
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn job(ttl: Option<i32>, conditions: &[(&str, &str, Option<&str>)]) -> Job {
        let conditions: Vec<serde_json::Value> = conditions
            .iter()
            .map(|(t, s, at)| {
                let mut c = serde_json::json!({"type": t, "status": s});
                if let Some(at) = at {
                    c["lastTransitionTime"] = serde_json::json!(at);
                }
                c
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": []}}, "ttlSecondsAfterFinished": ttl},
            "status": {"conditions": conditions},
        }))
        .unwrap_or_default()
    }

    const T0: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_job_without_ttl_is_ignored() {
        let j = job(None, &[("Complete", "True", Some(T0))]);
        assert_eq!(decide(&j, ts(T0)), Ok(Decision::Ignore));
    }

    #[test]
    fn an_unfinished_job_is_ignored() {
        let j = job(Some(5), &[("Suspended", "True", Some(T0))]);
        assert_eq!(decide(&j, ts(T0)), Ok(Decision::Ignore));
        let j = job(Some(5), &[("Complete", "False", Some(T0))]);
        assert_eq!(decide(&j, ts(T0)), Ok(Decision::Ignore));
    }

    #[test]
    fn a_job_being_deleted_is_ignored() {
        let mut j = job(Some(0), &[("Complete", "True", Some(T0))]);
        j.metadata.deletion_timestamp = Some(Time(ts(T0)));
        assert_eq!(decide(&j, ts("2026-01-02T00:00:00Z")), Ok(Decision::Ignore));
    }

    #[test]
    fn a_finished_job_is_requeued_exactly_at_expiry() {
        let j = job(Some(100), &[("Complete", "True", Some(T0))]);
        assert_eq!(
            decide(&j, ts("2026-01-01T00:00:30Z")),
            Ok(Decision::RequeueAfter(Duration::from_secs(70)))
        );
    }

    #[test]
    fn a_job_is_deleted_once_finish_time_plus_ttl_has_passed() {
        let j = job(Some(5), &[("Complete", "True", Some(T0))]);
        assert_eq!(
            decide(&j, ts("2026-01-01T00:00:05Z")),
            Ok(Decision::Delete {
                expired_at: ts("2026-01-01T00:00:05Z")
            })
        );
        assert!(matches!(
            decide(&j, ts("2026-01-01T01:00:00Z")),
            Ok(Decision::Delete { .. })
        ));
    }

    #[test]
    fn a_failed_job_counts_as_finished() {
        let j = job(Some(0), &[("Failed", "True", Some(T0))]);
        assert!(matches!(decide(&j, ts(T0)), Ok(Decision::Delete { .. })));
    }

    #[test]
    fn the_finish_time_comes_from_the_first_true_finished_condition() {
        let j = job(
            Some(10),
            &[
                ("Complete", "False", Some("2025-01-01T00:00:00Z")),
                ("Failed", "True", Some(T0)),
            ],
        );
        assert_eq!(finish_time(&j), Ok(ts(T0)));
    }

    #[test]
    fn a_job_finished_in_the_future_waits_for_the_whole_ttl_after_it() {
        let j = job(
            Some(10),
            &[("Complete", "True", Some("2026-01-01T00:01:00Z"))],
        );
        assert_eq!(
            decide(&j, ts(T0)),
            Ok(Decision::RequeueAfter(Duration::from_secs(70)))
        );
    }

    #[test]
    fn a_finished_condition_without_transition_time_is_an_error() {
        let j = job(Some(10), &[("Complete", "True", None)]);
        assert_eq!(
            decide(&j, ts(T0)),
            Err(Error::NoFinishTime("ns/j".to_owned()))
        );
    }
}
