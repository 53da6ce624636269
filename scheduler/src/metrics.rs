//! The scheduler's metrics with upstream names (pkg/scheduler/metrics/metrics.go).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::queue::PendingCounts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
    pub profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

/// `result` label values.
pub const SCHEDULED: &str = "scheduled";
pub const UNSCHEDULABLE: &str = "unschedulable";
pub const ERROR: &str = "error";

fn attempt_histogram() -> Histogram {
    // ExponentialBuckets(0.001, 2, 15).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone)]
pub struct Metrics {
    attempts: Family<ResultLabels, Counter>,
    attempt_duration: Family<ResultLabels, Histogram, fn() -> Histogram>,
    pending: Family<QueueLabels, Gauge>,
    preemption_attempts: Counter,
    preemption_victims: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(attempt_histogram),
            pending: Family::default(),
            preemption_attempts: Counter::default(),
            // ExponentialBuckets(1, 2, 7).
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
        };
        registry.register(
            "scheduler_preemption_attempts",
            "Total preemption attempts in the cluster till now",
            m.preemption_attempts.clone(),
        );
        registry.register(
            "scheduler_preemption_victims",
            "Number of selected preemption victims",
            m.preemption_victims.clone(),
        );
        registry.register(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            m.attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            m.attempt_duration.clone(),
        );
        registry.register(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated.",
            m.pending.clone(),
        );
        m
    }

    pub fn attempt(&self, result: &str, profile: &str, seconds: f64) {
        let labels = ResultLabels {
            result: result.to_string(),
            profile: profile.to_string(),
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// `PreemptionAttempts`: every PostFilter run.
    pub fn preemption_attempt(&self) {
        self.preemption_attempts.inc();
    }

    /// `PreemptionVictims`: victims of one executed preemption.
    pub fn preemption_victims(&self, n: usize) {
        self.preemption_victims.observe(n as f64);
    }

    pub fn set_pending(&self, c: PendingCounts) {
        for (queue, n) in [
            ("active", c.active),
            ("backoff", c.backoff),
            ("unschedulable", c.unschedulable),
            ("gated", c.gated),
        ] {
            self.pending
                .get_or_create(&QueueLabels {
                    queue: queue.to_string(),
                })
                .set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_under_upstream_names() {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        m.attempt(SCHEDULED, "default-scheduler", 0.01);
        m.set_pending(PendingCounts {
            active: 1,
            ..Default::default()
        });
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(out.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1"), "{out}");
        assert!(
            out.contains("scheduler_pending_pods{queue=\"active\"} 1"),
            "{out}"
        );
        assert!(out.contains("scheduler_scheduling_attempt_duration_seconds_count{result=\"scheduled\",profile=\"default-scheduler\"} 1"), "{out}");
    }

    #[test]
    fn preemption_metrics_are_exposed_under_upstream_names() {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        m.preemption_attempt();
        m.preemption_attempt();
        m.preemption_victims(3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(
            out.contains("scheduler_preemption_attempts_total 2"),
            "{out}"
        );
        assert!(
            out.contains("scheduler_preemption_victims_count 1"),
            "{out}"
        );
        assert!(
            out.contains("scheduler_preemption_victims_bucket{le=\"4.0\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("scheduler_preemption_victims_bucket{le=\"2.0\"} 0"),
            "{out}"
        );
    }
}
