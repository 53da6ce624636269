//! The Job controller's metrics, with upstream's names and labels
//! (`pkg/controller/job/metrics/metrics.go`, subsystem `job_controller`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    pub completion_mode: &'static str,
    pub result: &'static str,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub completion_mode: &'static str,
    pub result: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodsFinishedLabels {
    pub completion_mode: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone)]
pub struct SyncBuckets;

impl MetricConstructor<Histogram> for SyncBuckets {
    fn new_metric(&self) -> Histogram {
        // Upstream: ExponentialBuckets(0.004, 2, 15).
        Histogram::new(exponential_buckets(0.004, 2.0, 15))
    }
}

/// Upstream sync actions (`JobSyncAction*`).
pub const ACTION_RECONCILING: &str = "reconciling";
pub const ACTION_TRACKING: &str = "tracking";
pub const ACTION_PODS_CREATED: &str = "pods_created";
pub const ACTION_PODS_DELETED: &str = "pods_deleted";

#[derive(Clone)]
pub struct JobMetrics {
    pub sync_duration: Family<SyncLabels, Histogram, SyncBuckets>,
    pub syncs: Family<SyncLabels, Counter>,
    pub jobs_finished: Family<FinishedLabels, Counter>,
    pub pods_finished: Family<PodsFinishedLabels, Counter>,
    pub failure_policy_actions: Family<ActionLabels, Counter>,
    pub by_external_controller: Family<ControllerLabels, Counter>,
    pub tracking_finalizer: Family<EventLabels, Counter>,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            sync_duration: Family::new_with_constructor(SyncBuckets),
            syncs: Family::default(),
            jobs_finished: Family::default(),
            pods_finished: Family::default(),
            failure_policy_actions: Family::default(),
            by_external_controller: Family::default(),
            tracking_finalizer: Family::default(),
        }
    }
}

impl JobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("job_controller");
        sub.register(
            "job_sync_duration_seconds",
            "The time it took to sync a job",
            m.sync_duration.clone(),
        );
        // prometheus-client appends `_total` to counters.
        sub.register("job_syncs", "The number of job syncs", m.syncs.clone());
        sub.register(
            "jobs_finished",
            "The number of finished jobs",
            m.jobs_finished.clone(),
        );
        sub.register(
            "job_pods_finished",
            "The number of finished Pods that are fully tracked",
            m.pods_finished.clone(),
        );
        sub.register(
            "pod_failures_handled_by_failure_policy",
            "The number of failed Pods handled by failure policy with respect to the failure policy action applied based on the matched rule",
            m.failure_policy_actions.clone(),
        );
        sub.register(
            "jobs_by_external_controller",
            "The number of Jobs managed by an external controller",
            m.by_external_controller.clone(),
        );
        sub.register(
            "terminated_pods_tracking_finalizer",
            "The number of terminated pods (phase=Failed|Succeeded) that have the finalizer batch.kubernetes.io/job-tracking",
            m.tracking_finalizer.clone(),
        );
        m
    }

    /// Upstream `recordJobPodFinished`: counter increases between two statuses.
    pub fn pods_finished(&self, mode: &'static str, succeeded: i64, failed: i64) {
        for (result, n) in [("succeeded", succeeded), ("failed", failed)] {
            if let Ok(n) = u64::try_from(n)
                && n > 0
            {
                self.pods_finished
                    .get_or_create(&PodsFinishedLabels {
                        completion_mode: mode,
                        result,
                    })
                    .inc_by(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_under_upstream_names() {
        let mut registry = Registry::default();
        let m = JobMetrics::register(&mut registry);
        let labels = SyncLabels {
            completion_mode: "NonIndexed",
            result: "success",
            action: ACTION_PODS_CREATED,
        };
        m.syncs.get_or_create(&labels).inc();
        m.sync_duration.get_or_create(&labels).observe(0.01);
        m.pods_finished("Indexed", 2, 0);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains(
            r#"job_controller_job_syncs_total{completion_mode="NonIndexed",result="success",action="pods_created"} 1"#
        ));
        assert!(out.contains("job_controller_job_sync_duration_seconds_bucket"));
        assert!(out.contains(
            r#"job_controller_job_pods_finished_total{completion_mode="Indexed",result="succeeded"} 2"#
        ));
        assert!(!out.contains(r#"result="failed""#));
    }
}
