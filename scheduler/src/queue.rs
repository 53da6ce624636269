//! The scheduling queue (pkg/scheduler/backend/queue/scheduling_queue.go `PriorityQueue`):
//! - activeQ: pods ready to be tried, highest priority first, then oldest (PrioritySort);
//! - backoffQ: pods that failed recently, each until its backoff (1 s doubling per attempt up to
//!   10 s) expires; popped early when activeQ is empty (SchedulerPopFromBackoffQ, on by default);
//! - unschedulable pods: wait for a cluster event that may help, or at most 5 minutes;
//! - gated pods (`spec.schedulingGates`) wait, outside the attempts, until their gates are gone.
//!
//! Pure data: every operation takes `now`, so tests drive time.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::pod_priority;
use crate::plugins::{inter_pod_affinity, pod_topology_spread, scheduling_gates};

pub const POD_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const POD_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// `DefaultPodMaxInUnschedulablePodsDuration`.
pub const POD_MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// A pod in the queue with upstream's `QueuedPodInfo` bookkeeping.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub key: String,
    /// When the pod (re-)entered the queue; PrioritySort's tie-breaker and the backoff base.
    pub timestamp: Instant,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// The first attempt's start (for the attempt-duration metric's siblings upstream).
    pub initial_attempt: Option<Instant>,
    /// The scheduling cycle in which it was last popped.
    pub cycle: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    Active,
    Backoff,
    Unschedulable,
    Gated,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: QueuedPod,
    at: Where,
    /// The activeQ index key while active.
    active_key: Option<ActiveKey>,
    /// Set when the pod was deleted or assigned while in flight.
    gone: bool,
    /// Backing off after an error rather than a rejection: never popped early, so a persistent
    /// error cannot spin.
    error_backoff: bool,
    /// The plugins that rejected the pod in its last attempt (`UnschedulablePlugins`); empty
    /// when unknown, which any event may resolve.
    unschedulable_plugins: BTreeSet<&'static str>,
}

/// Plugins whose verdict a bound pod appearing or changing its labels can change
/// (`EventsToRegister` of PodTopologySpread and InterPodAffinity; Pod deletion is covered by
/// [`SchedulingQueue::move_all_to_active_or_backoff`]).
pub const ASSIGNED_POD_EVENT_PLUGINS: [&str; 2] =
    [pod_topology_spread::NAME, inter_pod_affinity::NAME];

fn affected_by_assigned_pod_event(plugins: &BTreeSet<&'static str>) -> bool {
    plugins.is_empty()
        || plugins
            .iter()
            .any(|p| ASSIGNED_POD_EVENT_PLUGINS.contains(p))
}

type ActiveKey = (Reverse<i32>, Instant, u64, String);

/// Counts for `scheduler_pending_pods{queue}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub gated: usize,
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BTreeSet<ActiveKey>,
    seq: u64,
    scheduling_cycle: u64,
    /// The cycle of the last move request (`moveRequestCycle`): a pod failing in an earlier or
    /// the same cycle may have missed the event, so it goes to backoff instead of waiting.
    move_request_cycle: Option<u64>,
    /// The cycle of the last bound-pod add/label change, which only pods rejected by
    /// [`ASSIGNED_POD_EVENT_PLUGINS`] can have missed.
    assigned_pod_event_cycle: Option<u64>,
    /// Preemptors whose victims are still being evicted: held unschedulable until the eviction
    /// ends, as upstream's async preemption gates them in PreEnqueue (otherwise they would be
    /// retried, and preempt again, before their victims are even marked).
    preempting: std::collections::HashSet<String>,
    backoff: Backoff,
}

pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `podInitialBackoffSeconds` / `podMaxBackoffSeconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: POD_INITIAL_BACKOFF,
            max: POD_MAX_BACKOFF,
        }
    }
}

/// `calculateBackoffDuration` with the default backoff.
pub fn backoff_duration(attempts: u32) -> Duration {
    backoff_duration_with(Backoff::default(), attempts)
}

/// `calculateBackoffDuration`: initial × 2^(attempts−1), capped.
pub fn backoff_duration_with(b: Backoff, attempts: u32) -> Duration {
    let mut d = b.initial;
    for _ in 1..attempts {
        d = d.saturating_mul(2);
        if d >= b.max {
            return b.max;
        }
    }
    d.min(b.max)
}

fn backoff_expiry(info: &QueuedPod, b: Backoff) -> Instant {
    info.timestamp + backoff_duration_with(b, info.attempts)
}

/// Whether an update may change the outcome of scheduling (`isPodUpdated`, which ignores
/// status and resourceVersion changes, such as the scheduler's own condition patches).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl SchedulingQueue {
    /// A queue with the configuration's `podInitialBackoffSeconds` / `podMaxBackoffSeconds`.
    pub fn with_backoff(initial: Duration, max: Duration) -> Self {
        SchedulingQueue {
            backoff: Backoff { initial, max },
            ..SchedulingQueue::default()
        }
    }

    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.entries.get_mut(key) {
            let ak = (
                Reverse(pod_priority(&e.info.pod)),
                e.info.timestamp,
                seq,
                key.to_string(),
            );
            self.active.insert(ak.clone());
            e.active_key = Some(ak);
            e.at = Where::Active;
        }
    }

    fn detach(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key)
            && let Some(ak) = e.active_key.take()
        {
            self.active.remove(&ak);
        }
    }

    /// A new pending pod (`Add`): gated pods wait, others go to activeQ.
    pub fn add(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = pod_key(&pod);
        if self.entries.contains_key(&key) {
            self.update(pod, now);
            return;
        }
        let gated = scheduling_gates::pre_enqueue(&pod).is_some();
        self.entries.insert(
            key.clone(),
            Entry {
                info: QueuedPod {
                    pod,
                    key: key.clone(),
                    timestamp: now,
                    attempts: 0,
                    initial_attempt: None,
                    cycle: 0,
                },
                at: Where::Gated,
                active_key: None,
                gone: false,
                error_backoff: false,
                unschedulable_plugins: BTreeSet::new(),
            },
        );
        if !gated {
            self.push_active(&key);
        }
    }

    /// A pending pod changed (`Update`).
    pub fn update(&mut self, pod: Arc<Pod>, now: Instant) {
        let key = pod_key(&pod);
        let Some(e) = self.entries.get_mut(&key) else {
            self.add(pod, now);
            return;
        };
        let changed = spec_changed(&e.info.pod, &pod);
        let old_priority = pod_priority(&e.info.pod);
        e.info.pod = pod;
        match e.at {
            Where::InFlight => {}
            Where::Active => {
                if old_priority != pod_priority(&e.info.pod) {
                    self.detach(&key);
                    self.push_active(&key);
                }
            }
            Where::Backoff => {}
            Where::Gated => {
                if scheduling_gates::pre_enqueue(&e.info.pod).is_none() {
                    self.push_active(&key);
                }
            }
            Where::Unschedulable => {
                if changed {
                    self.requeue_unschedulable(&key, now);
                }
            }
        }
    }

    /// The pod was deleted or got a node from someone else.
    pub fn delete(&mut self, key: &str) {
        self.detach(key);
        match self.entries.get_mut(key) {
            Some(e) if e.at == Where::InFlight => e.gone = true,
            Some(_) => {
                self.entries.remove(key);
            }
            None => {}
        }
    }

    /// From unschedulable to backoffQ while backing off, else to activeQ.
    fn requeue_unschedulable(&mut self, key: &str, now: Instant) {
        if self.preempting.contains(key) {
            return;
        }
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if backoff_expiry(&e.info, self.backoff) > now {
            e.at = Where::Backoff;
        } else {
            self.push_active(key);
        }
    }

    /// `MoveAllToActiveOrBackoffQueue` for a cluster event that may make pods schedulable
    /// (node added or changed, a bound pod deleted or finished).
    pub fn move_all_to_active_or_backoff(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.at == Where::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue_unschedulable(&k, now);
        }
        self.move_request_cycle = Some(self.scheduling_cycle);
    }

    /// `MoveAllToActiveOrBackoffQueue(AssignedPodAdd / AssignedPodUpdate)`: only pods that a
    /// bound pod can help (rejected by PodTopologySpread or InterPodAffinity) move, as
    /// upstream's event registration decides; a pod failing for resources stays put.
    pub fn move_for_assigned_pod_event(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.at == Where::Unschedulable
                    && affected_by_assigned_pod_event(&e.unschedulable_plugins)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue_unschedulable(&k, now);
        }
        self.assigned_pod_event_cycle = Some(self.scheduling_cycle);
    }

    /// Records which plugins rejected the pod, before [`SchedulingQueue::requeue_after_failure`].
    pub fn set_unschedulable_plugins(&mut self, key: &str, plugins: BTreeSet<&'static str>) {
        if let Some(e) = self.entries.get_mut(key) {
            e.unschedulable_plugins = plugins;
        }
    }

    /// `flushBackoffQCompleted` and `flushUnschedulablePodsLeftover`, run by the caller's timer.
    pub fn flush(&mut self, now: Instant) {
        let done: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.at == Where::Backoff && backoff_expiry(&e.info, self.backoff) <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            self.push_active(&k);
        }
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.at == Where::Unschedulable
                    && now.saturating_duration_since(e.info.timestamp) >= POD_MAX_IN_UNSCHEDULABLE
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.requeue_unschedulable(&k, now);
        }
    }

    /// The next pod to try (`Pop`), marked in flight. Pods whose backoff completed reach activeQ
    /// through [`SchedulingQueue::flush`], which the caller runs every second as upstream's
    /// `flushBackoffQCompleted` does; when activeQ is empty, the rejected pod whose backoff ends
    /// first is taken early (SchedulerPopFromBackoffQ, on by default since v1.33).
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        let key = match self.active.pop_first() {
            Some(ak) => ak.3,
            None => self
                .entries
                .iter()
                .filter(|(_, e)| e.at == Where::Backoff && !e.error_backoff)
                .min_by_key(|(_, e)| {
                    (
                        backoff_expiry(&e.info, self.backoff),
                        Reverse(pod_priority(&e.info.pod)),
                    )
                })
                .map(|(k, _)| k.clone())?,
        };
        self.scheduling_cycle += 1;
        let cycle = self.scheduling_cycle;
        let e = self.entries.get_mut(&key)?;
        e.active_key = None;
        e.at = Where::InFlight;
        e.info.attempts += 1;
        e.info.initial_attempt.get_or_insert(now);
        e.info.cycle = cycle;
        Some(e.info.clone())
    }

    /// The attempt ended with the pod assumed on a node: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.at == Where::InFlight)
        {
            self.entries.remove(key);
        }
    }

    /// `AddUnschedulableIfNotPresent`: the attempt failed. Pods that may have missed a move
    /// request, or failed for a reason other than not fitting, back off; the others wait.
    pub fn requeue_after_failure(&mut self, key: &str, unschedulable: bool, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.gone {
            self.entries.remove(key);
            return;
        }
        e.info.timestamp = now;
        e.error_backoff = !unschedulable;
        let missed_event = self.move_request_cycle.is_some_and(|c| c >= e.info.cycle)
            || (self
                .assigned_pod_event_cycle
                .is_some_and(|c| c >= e.info.cycle)
                && affected_by_assigned_pod_event(&e.unschedulable_plugins));
        if scheduling_gates::pre_enqueue(&e.info.pod).is_some() {
            e.at = Where::Gated;
        } else if self.preempting.contains(key) {
            e.at = Where::Unschedulable;
        } else if !unschedulable || missed_event {
            e.at = Where::Backoff;
        } else {
            e.at = Where::Unschedulable;
        }
    }

    /// The pod's preemption is evicting its victims: hold it (call before
    /// [`Self::requeue_after_failure`]).
    pub fn start_preempting(&mut self, key: &str) {
        self.preempting.insert(key.to_string());
    }

    /// The eviction ended: the preemptor goes straight to activeQ (upstream `Activate`).
    pub fn preemption_done(&mut self, key: &str) {
        self.preempting.remove(key);
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.at == Where::Unschedulable || e.at == Where::Backoff)
        {
            self.push_active(key);
        }
    }

    /// Where the pod is, for tests and diagnostics.
    pub fn where_is(&self, key: &str) -> Option<Where> {
        self.entries.get(key).map(|e| e.at)
    }

    /// The earliest moment a backing-off pod becomes ready.
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.at == Where::Backoff)
            .map(|e| backoff_expiry(&e.info, self.backoff))
            .min()
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    pub fn has_backoff(&self) -> bool {
        self.entries.values().any(|e| e.at == Where::Backoff)
    }

    pub fn counts(&self) -> PendingCounts {
        let mut c = PendingCounts::default();
        for e in self.entries.values() {
            match e.at {
                Where::Active => c.active += 1,
                Where::Backoff => c.backoff += 1,
                Where::Unschedulable => c.unschedulable += 1,
                Where::Gated => c.gated += 1,
                Where::InFlight => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(name: &str, priority: i32, extra: Value) -> Arc<Pod> {
        let mut spec = json!({"containers": [{"name": "c"}], "priority": priority});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                spec[k] = v;
            }
        }
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec}),
            )
            .expect("pod"),
        )
    }

    fn names(q: &mut SchedulingQueue, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| q.pop(now).map(|p| p.key)).collect()
    }

    #[test]
    fn higher_priority_pods_pop_first_then_the_oldest() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("low", 0, json!({})), t);
        q.add(pod("high", 100, json!({})), t + Duration::from_millis(2));
        q.add(pod("low-later", 0, json!({})), t + Duration::from_millis(1));
        q.add(pod("mid", 50, json!({})), t + Duration::from_millis(3));
        assert_eq!(
            names(&mut q, t + Duration::from_millis(5)),
            ["ns/high", "ns/mid", "ns/low", "ns/low-later"]
        );
    }

    #[test]
    fn configured_backoff_doubles_from_its_initial_value_up_to_its_maximum() {
        let b = Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(5),
        };
        let secs: Vec<u64> = (1..=4)
            .map(|a| backoff_duration_with(b, a).as_secs())
            .collect();
        assert_eq!(secs, vec![2, 4, 5, 5]);
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_ten() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_failed_pod_without_events_waits_in_unschedulable_until_an_event_moves_it() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/p"), Some(Where::Unschedulable));
        assert!(
            q.pop(t + Duration::from_secs(60)).is_none(),
            "no event, no retry"
        );
        // An event during backoff sends it to backoffQ; after backoff it is active.
        q.move_all_to_active_or_backoff(t + Duration::from_millis(500));
        assert_eq!(q.where_is("ns/p"), Some(Where::Backoff));
        q.flush(t + Duration::from_secs(1));
        assert_eq!(q.where_is("ns/p"), Some(Where::Active));
    }

    #[test]
    fn a_preemptor_is_held_while_its_victims_are_evicted_then_activated() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("high", 1000, json!({})), t);
        let p = q.pop(t).expect("pop");
        // A victim's deletion lands during the attempt: without the hold it would back off and
        // be popped again at once (activeQ is empty).
        q.move_all_to_active_or_backoff(t);
        q.start_preempting(&p.key);
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/high"), Some(Where::Unschedulable));
        q.move_all_to_active_or_backoff(t + Duration::from_secs(20));
        q.flush(t + Duration::from_secs(600));
        assert!(q.pop(t + Duration::from_secs(600)).is_none());
        q.preemption_done(&p.key);
        assert_eq!(q.where_is("ns/high"), Some(Where::Active));
    }

    #[test]
    fn a_bound_pod_event_retries_only_pods_rejected_by_spreading_or_pod_affinity() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("cpu", 0, json!({})), t);
        q.add(pod("spread", 0, json!({})), t);
        for _ in 0..2 {
            let p = q.pop(t).expect("pop");
            let plugin = if p.key == "ns/cpu" {
                "NodeResourcesFit"
            } else {
                pod_topology_spread::NAME
            };
            q.set_unschedulable_plugins(&p.key, BTreeSet::from([plugin]));
            q.requeue_after_failure(&p.key, true, t);
        }
        q.move_for_assigned_pod_event(t + Duration::from_secs(20));
        assert_eq!(q.where_is("ns/cpu"), Some(Where::Unschedulable));
        assert_eq!(q.where_is("ns/spread"), Some(Where::Active));
    }

    #[test]
    fn a_pod_rejected_for_resources_does_not_count_a_bound_pod_event_as_missed() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("cpu", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        // A binding lands while the attempt is in flight.
        q.move_for_assigned_pod_event(t);
        q.set_unschedulable_plugins(&p.key, BTreeSet::from(["NodeResourcesFit"]));
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/cpu"), Some(Where::Unschedulable));
        q.add(pod("aff", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.move_for_assigned_pod_event(t);
        q.set_unschedulable_plugins(&p.key, BTreeSet::from([inter_pod_affinity::NAME]));
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/aff"), Some(Where::Backoff));
    }

    #[test]
    fn unschedulable_pods_are_flushed_after_five_minutes() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        // The move request of an earlier cycle does not count for this one.
        q.requeue_after_failure(&p.key, true, t);
        q.flush(t + Duration::from_secs(299));
        assert_eq!(q.where_is("ns/p"), Some(Where::Unschedulable));
        q.flush(t + POD_MAX_IN_UNSCHEDULABLE);
        assert_eq!(q.where_is("ns/p"), Some(Where::Active));
    }

    #[test]
    fn a_pod_failing_while_an_event_arrived_backs_off_instead_of_waiting() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.move_all_to_active_or_backoff(t);
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/p"), Some(Where::Backoff));
        assert_eq!(q.next_backoff_expiry(), Some(t + Duration::from_secs(1)));
    }

    #[test]
    fn errors_back_off_with_a_growing_delay() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let mut now = t;
        for want in [1, 2, 4] {
            let p = q.pop(now).expect("pop");
            q.requeue_after_failure(&p.key, false, now);
            assert_eq!(
                q.next_backoff_expiry(),
                Some(now + Duration::from_secs(want))
            );
            now += Duration::from_secs(want);
            q.flush(now);
            assert_eq!(q.where_is("ns/p"), Some(Where::Active));
        }
    }

    #[test]
    fn a_backing_off_pod_is_popped_early_when_nothing_else_is_active() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.move_all_to_active_or_backoff(t);
        q.requeue_after_failure(&p.key, true, t);
        q.add(pod("other", 0, json!({})), t);
        assert_eq!(q.pop(t).map(|p| p.key).as_deref(), Some("ns/other"));
        assert_eq!(q.pop(t).map(|p| p.key).as_deref(), Some("ns/p"));
    }

    #[test]
    fn a_pod_backing_off_after_an_error_waits_out_its_backoff() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.requeue_after_failure(&p.key, false, t);
        assert!(q.pop(t).is_none());
        q.flush(t + Duration::from_millis(999));
        assert!(q.pop(t).is_none());
        q.flush(t + Duration::from_secs(1));
        assert!(q.pop(t + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn gated_pods_stay_out_until_their_gates_are_removed() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(
            pod(
                "g",
                0,
                json!({"schedulingGates": [{"name": "example.com/gate"}]}),
            ),
            t,
        );
        assert_eq!(
            q.counts(),
            PendingCounts {
                gated: 1,
                ..Default::default()
            }
        );
        assert!(q.pop(t).is_none());
        q.move_all_to_active_or_backoff(t);
        assert!(
            q.pop(t).is_none(),
            "cluster events do not release gated pods"
        );
        q.update(pod("g", 0, json!({})), t);
        assert_eq!(
            q.pop(t).map(|p| (p.key, p.attempts)),
            Some(("ns/g".to_string(), 1))
        );
    }

    #[test]
    fn an_unschedulable_pod_whose_spec_changes_is_retried_but_status_changes_are_ignored() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.requeue_after_failure(&p.key, true, t);
        let mut with_status = (*pod("p", 0, json!({}))).clone();
        with_status.status = Some(Default::default());
        q.update(Arc::new(with_status), t + Duration::from_secs(2));
        assert_eq!(q.where_is("ns/p"), Some(Where::Unschedulable));
        q.update(
            pod("p", 0, json!({"tolerations": [{"operator": "Exists"}]})),
            t + Duration::from_secs(2),
        );
        assert_eq!(q.where_is("ns/p"), Some(Where::Active));
    }

    #[test]
    fn a_pod_deleted_in_flight_is_not_requeued() {
        let t = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("p", 0, json!({})), t);
        let p = q.pop(t).expect("pop");
        q.delete(&p.key);
        q.requeue_after_failure(&p.key, true, t);
        assert_eq!(q.where_is("ns/p"), None);
    }
}
