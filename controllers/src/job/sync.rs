//! The pure decisions of one Job sync (upstream `syncJob`, `manageJob` and
//! `trackJobStatusAndRemoveFinalizers` in `pkg/controller/job/job_controller.go`), in the phases
//! the shell interleaves with its API calls:
//!
//! 1. [`prepare`]: count pods, pick the finished (or interim) condition, and decide what
//!    `manageJob` does (create, delete, wait for backoff);
//! 2. [`after_manage`]: fold in what the creates/deletes achieved, decide completion and the
//!    `Suspended` condition;
//! 3. [`track`]: record newly finished pods in `uncountedTerminatedPods` (first status write),
//!    choose the pods whose tracking finalizer to remove;
//! 4. [`clean_uncounted`] after the removals moves counted pods into `succeeded`/`failed`, and
//!    [`enact_finished`] adds `Complete`/`Failed` once nothing is uncounted or terminating.
//!
//! As with every feature gate of v1.37 on (JobManagedBy, JobPodReplacementPolicy,
//! JobSuccessPolicy, JobBackoffLimitPerIndex, PodIndexLabel), terminal conditions are delayed:
//! `FailureTarget` / `SuccessCriteriaMet` first, `Failed` / `Complete` after all pods terminated.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Pod;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backoff::{self, BackoffRecord};
use super::failure_policy::{Action, match_pod_failure_policy};
use super::indexed::{self, Intervals};
use super::success_policy::match_success_policy;
use crate::pod_util::{is_pod_active, is_pod_ready, is_pod_terminating};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";
/// Upstream `MaxUncountedPods`.
pub const MAX_UNCOUNTED_PODS: usize = 500;
/// Upstream `MaxPodCreateDeletePerSync`.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
/// Upstream `syncJobBatchPeriod`: the minimum delay of a backoff requeue.
pub const SYNC_JOB_BATCH_PERIOD: Duration = Duration::from_secs(1);
/// The apiserver's default `backoffLimit`.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 6;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const SUSPENDED: &str = "Suspended";

pub const REASON_BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
pub const REASON_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
pub const REASON_POD_FAILURE_POLICY: &str = "PodFailurePolicy";
pub const REASON_MAX_FAILED_INDEXES_EXCEEDED: &str = "MaxFailedIndexesExceeded";
pub const REASON_FAILED_INDEXES: &str = "FailedIndexes";
pub const REASON_SUCCESS_POLICY: &str = "SuccessPolicy";
pub const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";

// ---- small predicates over the Job and its pods ----

pub fn has_tracking_finalizer(p: &Pod) -> bool {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// The Job's spec, or the empty one (borrowed: some callers run per pod).
fn spec(job: &Job) -> &k8s_openapi::api::batch::v1::JobSpec {
    static EMPTY: std::sync::LazyLock<k8s_openapi::api::batch::v1::JobSpec> =
        std::sync::LazyLock::new(Default::default);
    job.spec.as_ref().unwrap_or(&EMPTY)
}

fn find_condition<'a>(list: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    list.iter().find(|c| c.type_ == type_)
}

pub use super::util::is_finished;

/// Upstream `managedByExternalController`: the `spec.managedBy` of a Job another controller
/// manages.
pub fn managed_by_external(job: &Job) -> Option<&str> {
    job.spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .filter(|m| *m != JOB_CONTROLLER_NAME)
}

pub fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

fn has_backoff_limit_per_index(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.backoff_limit_per_index)
        .is_some()
}

/// Upstream `onlyReplaceFailedPods`.
pub fn only_replace_failed_pods(job: &Job) -> bool {
    let s = job.spec.as_ref();
    s.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || s.and_then(|s| s.pod_failure_policy.as_ref()).is_some()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or("")
}

/// Upstream `isPodFailed`: a Failed pod, or (unless only failed pods are replaced) a deleted one
/// that did not succeed.
pub fn is_pod_failed(p: &Pod, job: &Job) -> bool {
    if phase(p) == "Failed" {
        return true;
    }
    if only_replace_failed_pods(job) {
        return false;
    }
    p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded"
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        message: (!message.is_empty()).then(|| message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream `ensureJobConditionStatus`: updates the condition of that type, or appends it unless
/// it would be appended as False. Returns whether the list changed.
pub fn ensure_condition(
    list: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status
            || c.reason.as_deref().unwrap_or("") != reason
            || c.message.as_deref().unwrap_or("") != message
        {
            *c = new_condition(type_, status, reason, message, now);
            return true;
        }
        return false;
    }
    if status != "False" {
        list.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

fn is_success_criteria_met(c: Option<&JobCondition>) -> bool {
    c.is_some_and(|c| c.type_ == SUCCESS_CRITERIA_MET && c.status == "True")
}

/// Upstream `controller.ActivePods` ordering: the pod to delete first sorts first (unscheduled,
/// pending, not ready, ready for less time, more restarts, newer).
pub fn active_pods_order(a: &Pod, b: &Pod) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
            .is_empty()
    };
    let phase_ord = |p: &Pod| match phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let restarts = |p: &Pod| {
        p.status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    let ready_time = |p: &Pod| crate::pod_util::ready_since(p);
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    // Upstream `afterOrZero`: a zero time sorts after any other.
    let after_or_zero = |x: Option<Timestamp>, y: Option<Timestamp>| -> Ordering {
        match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => y.cmp(&x),
        }
    };
    node(b)
        .cmp(&node(a))
        .then_with(|| phase_ord(a).cmp(&phase_ord(b)))
        .then_with(|| is_pod_ready(a).cmp(&is_pod_ready(b)))
        .then_with(|| {
            if is_pod_ready(a) && is_pod_ready(b) {
                after_or_zero(ready_time(a), ready_time(b))
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| after_or_zero(created(a), created(b)))
}

// ---- phase 1 ----

/// What one sync starts from.
pub struct Input<'a> {
    pub job: &'a Job,
    /// The pods the Job owns.
    pub pods: &'a [Arc<Pod>],
    pub now: Timestamp,
    pub satisfied_expectations: bool,
    /// Pods whose finalizer removal is not observed yet.
    pub expected_rm_finalizers: &'a HashSet<String>,
    pub backoff: &'a BackoffRecord,
}

/// Upstream `manageJob`'s (and the finishing path's) decision.
#[derive(Debug, Clone)]
pub enum Manage {
    /// The Job is finishing: delete every active pod, keeping finalizers (`deleteActivePods`).
    DeleteActive(Vec<Arc<Pod>>),
    /// Remove the finalizer of, and delete, these pods (`deleteJobPods`): suspended, too many, or
    /// duplicated indexes.
    DeletePods(Vec<Arc<Pod>>),
    /// Create this many pods; for Indexed Jobs, with these indexes.
    Create { count: usize, indexes: Vec<i64> },
    /// Pod creation must wait for the failure backoff: requeue after this long.
    Backoff(Duration),
    /// `manageJob` ran and has nothing to do.
    Nothing,
    /// `manageJob` did not run (unsatisfied expectations, or the Job is being deleted).
    Skipped,
}

/// The working state of a sync (upstream `syncJobCtx`).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub job: Job,
    pub status: JobStatus,
    pub pods: Vec<Arc<Pod>>,
    pub active_pods: Vec<Arc<Pod>>,
    pub finished: Option<JobCondition>,
    pub active: i32,
    pub ready: i32,
    pub terminating: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub prev_succeeded_indexes: Intervals,
    pub succeeded_indexes: Intervals,
    pub failed_indexes: Option<Intervals>,
    pub new_backoff: BackoffRecord,
    pub expected_rm_finalizers: HashSet<String>,
    pub uncounted_succeeded: HashSet<String>,
    pub uncounted_failed: HashSet<String>,
    /// Per index, the failed pod whose finalizer stays until its replacement exists
    /// (backoffLimitPerIndex).
    pub delayed_deletion: BTreeMap<i64, Arc<Pod>>,
    pub satisfied_expectations: bool,
    /// Requeue at the active deadline.
    pub requeue_after: Option<Duration>,
    pub manage: Manage,
}

impl Prepared {
    pub fn completions(&self) -> i64 {
        i64::from(
            self.job
                .spec
                .as_ref()
                .and_then(|s| s.completions)
                .unwrap_or(0),
        )
    }
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Upstream `getValidPodsWithFilter`: pods not yet counted (finalizer on, not uncounted, not
/// expected to lose the finalizer), with a valid index for Indexed Jobs.
fn valid_pods_with_filter<'a>(
    job: &Job,
    pods: &'a [Arc<Pod>],
    uncounted: &HashSet<String>,
    expected: &HashSet<String>,
    filter: impl Fn(&Pod) -> bool,
) -> Vec<&'a Pod> {
    let completions = i64::from(job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0));
    pods.iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            has_tracking_finalizer(p) && !uncounted.contains(uid(p)) && !expected.contains(uid(p))
        })
        .filter(|p| !is_indexed(job) || indexed::valid_index(p, completions).is_some())
        .filter(|p| filter(p))
        .collect()
}

/// Upstream `pastBackoffLimitOnFailure`: with `restartPolicy: OnFailure`, container restarts of
/// running pods count as failures.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>], limit: i32) -> bool {
    let s = spec(job);
    if s.template
        .spec
        .as_ref()
        .map(|p| p.restart_policy.as_deref())
        != Some(Some("OnFailure"))
    {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .flat_map(|p| {
            let st = p.status.as_ref();
            st.into_iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .map(|c| i64::from(c.restart_count))
                .collect::<Vec<_>>()
        })
        .sum();
    if limit == 0 {
        return restarts > 0;
    }
    restarts >= i64::from(limit)
}

/// Upstream `isIndexFailed`: the pod failed and either matched a `FailIndex` rule or exhausted
/// the index's backoff limit.
fn is_index_failed(job: &Job, p: &Pod) -> bool {
    if !is_pod_failed(p, job) {
        return false;
    }
    let s = spec(job);
    let mut counted = true;
    if let Some(policy) = &s.pod_failure_policy {
        let m = match_pod_failure_policy(Some(policy), p);
        if m.action == Some(Action::FailIndex) {
            return true;
        }
        counted = m.count_failed;
    }
    counted && indexed::index_failure_count(p) >= i64::from(s.backoff_limit_per_index.unwrap_or(0))
}

/// Upstream `prepare` half of `syncJob`.
pub fn prepare(inp: &Input<'_>) -> Prepared {
    let job = inp.job.clone();
    let s = spec(&job);
    let now = inp.now;
    let mut status = job.status.clone().unwrap_or_default();
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let uncounted_succeeded: HashSet<String> =
        uncounted.succeeded.iter().flatten().cloned().collect();
    let uncounted_failed: HashSet<String> = uncounted.failed.iter().flatten().cloned().collect();
    let pods: Vec<Arc<Pod>> = inp.pods.to_vec();
    let active_pods: Vec<Arc<Pod>> = pods.iter().filter(|p| is_pod_active(p)).cloned().collect();
    let ready = to_i32(active_pods.iter().filter(|p| is_pod_ready(p)).count());
    let terminating = to_i32(pods.iter().filter(|p| is_pod_terminating(p)).count());
    let expected = inp.expected_rm_finalizers;
    let new_succeeded = valid_pods_with_filter(&job, &pods, &uncounted_succeeded, expected, |p| {
        phase(p) == "Succeeded"
    });
    let new_failed = valid_pods_with_filter(&job, &pods, &uncounted_failed, expected, |p| {
        is_pod_failed(p, &job)
    });
    let non_ignored = new_failed
        .iter()
        .filter(|p| match_pod_failure_policy(s.pod_failure_policy.as_ref(), p).count_failed)
        .count();
    let mut succeeded = status.succeeded.unwrap_or(0)
        + to_i32(new_succeeded.len())
        + to_i32(uncounted_succeeded.len());
    let failed = status.failed.unwrap_or(0) + to_i32(non_ignored) + to_i32(uncounted_failed.len());

    if status.start_time.is_none() && !is_suspended(&job) {
        status.start_time = Some(Time(now));
    }
    let new_backoff = backoff::new_backoff_record(inp.backoff, &new_succeeded, &new_failed);

    let backoff_limit = s.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let conds = status.conditions.clone().unwrap_or_default();
    let mut finished: Option<JobCondition> = find_condition(&conds, SUCCESS_CRITERIA_MET)
        .filter(|c| c.status == "True")
        .cloned();
    if finished.is_none() {
        if let Some(ft) = find_condition(&conds, FAILURE_TARGET).filter(|c| c.status == "True") {
            finished = Some(new_condition(
                FAILED,
                "True",
                ft.reason.as_deref().unwrap_or(""),
                ft.message.as_deref().unwrap_or(""),
                now,
            ));
        } else if let Some(policy) = &s.pod_failure_policy {
            // Upstream `getFailJobMessage`.
            if let Some(msg) = pods
                .iter()
                .filter(|p| is_pod_failed(p, &job))
                .find_map(|p| match_pod_failure_policy(Some(policy), p).fail_job_message)
            {
                finished = Some(new_condition(
                    FAILURE_TARGET,
                    "True",
                    REASON_POD_FAILURE_POLICY,
                    &msg,
                    now,
                ));
            }
        }
    }
    let mut requeue_after = None;
    if finished.is_none() {
        let start = status.start_time.as_ref().map(|t| t.0);
        let ads = s.active_deadline_seconds;
        let elapsed = start.map(|st| now.duration_since(st));
        if failed > backoff_limit || past_backoff_limit_on_failure(&job, &pods, backoff_limit) {
            finished = Some(new_condition(
                FAILURE_TARGET,
                "True",
                REASON_BACKOFF_LIMIT_EXCEEDED,
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let (Some(ads), Some(elapsed)) = (ads, elapsed)
            && !is_suspended(&job)
        {
            let allowed = jiff::SignedDuration::from_secs(ads);
            if elapsed >= allowed {
                finished = Some(new_condition(
                    FAILURE_TARGET,
                    "True",
                    REASON_DEADLINE_EXCEEDED,
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                requeue_after =
                    Some(Duration::try_from(allowed - elapsed).unwrap_or(Duration::ZERO));
            }
        }
    }

    let mut prev_succeeded_indexes = Intervals::default();
    let mut succeeded_indexes = Intervals::default();
    let mut failed_indexes = None;
    let mut delayed_deletion = BTreeMap::new();
    if is_indexed(&job) {
        let completions = i64::from(s.completions.unwrap_or(0));
        // Upstream `calculateSucceededIndexes`.
        prev_succeeded_indexes = Intervals::parse(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        let new: BTreeSet<i64> = pods
            .iter()
            .filter(|p| phase(p) == "Succeeded" && has_tracking_finalizer(p))
            .filter_map(|p| indexed::valid_index(p, completions))
            .collect();
        succeeded_indexes =
            prev_succeeded_indexes.with_ordered_indexes(&new.into_iter().collect::<Vec<_>>());
        succeeded = i32::try_from(succeeded_indexes.total()).unwrap_or(i32::MAX);
        if has_backoff_limit_per_index(&job) {
            // Upstream `calculateFailedIndexes`.
            let prev =
                Intervals::parse(status.failed_indexes.as_deref().unwrap_or(""), completions);
            let new: BTreeSet<i64> = pods
                .iter()
                .filter(|p| has_tracking_finalizer(p) && is_index_failed(&job, p))
                .filter_map(|p| indexed::valid_index(p, completions))
                .filter(|ix| !prev.has(*ix))
                .collect();
            let fi = prev.with_ordered_indexes(&new.into_iter().collect::<Vec<_>>());
            if finished.is_none() {
                if let Some(max) = s.max_failed_indexes
                    && fi.total() > i64::from(max)
                {
                    finished = Some(new_condition(
                        FAILURE_TARGET,
                        "True",
                        REASON_MAX_FAILED_INDEXES_EXCEEDED,
                        "Job has exceeded the specified maximal number of failed indexes",
                        now,
                    ));
                } else if fi.total() > 0 && fi.total() + succeeded_indexes.total() >= completions {
                    finished = Some(new_condition(
                        FAILURE_TARGET,
                        "True",
                        REASON_FAILED_INDEXES,
                        "Job has failed indexes",
                        now,
                    ));
                }
            }
            // Upstream `getPodsWithDelayedDeletionPerIndex`: the failed pod that carries the
            // index's failure count until its replacement is created.
            let active_indexes: BTreeSet<i64> = active_pods
                .iter()
                .filter_map(|p| indexed::completion_index(p))
                .collect();
            for p in valid_pods_with_filter(&job, &pods, &HashSet::new(), expected, |p| {
                is_pod_failed(p, &job)
            }) {
                let Some(ix) = indexed::valid_index(p, completions) else {
                    continue;
                };
                if succeeded_indexes.has(ix) || fi.has(ix) || active_indexes.contains(&ix) {
                    continue;
                }
                let Some(arc) = pods.iter().find(|q| uid(q) == uid(p)) else {
                    continue;
                };
                let replace = match delayed_deletion.get(&ix) {
                    None => true,
                    Some(last) => {
                        let last: &Arc<Pod> = last;
                        indexed::index_absolute_failure_count(last)
                            <= indexed::index_absolute_failure_count(p)
                            && backoff::finished_time(p) >= backoff::finished_time(last)
                    }
                };
                if replace {
                    delayed_deletion.insert(ix, arc.clone());
                }
            }
            failed_indexes = Some(fi);
        }
        if finished.is_none()
            && let Some(msg) =
                match_success_policy(s.success_policy.as_ref(), completions, &succeeded_indexes)
        {
            finished = Some(new_condition(
                SUCCESS_CRITERIA_MET,
                "True",
                REASON_SUCCESS_POLICY,
                &msg,
                now,
            ));
        }
    }

    let mut prep = Prepared {
        active: to_i32(active_pods.len()),
        job,
        status,
        pods,
        active_pods,
        finished,
        ready,
        terminating,
        succeeded,
        failed,
        prev_succeeded_indexes,
        succeeded_indexes,
        failed_indexes,
        new_backoff,
        expected_rm_finalizers: expected.clone(),
        uncounted_succeeded,
        uncounted_failed,
        delayed_deletion,
        satisfied_expectations: inp.satisfied_expectations,
        requeue_after,
        manage: Manage::Skipped,
    };
    prep.manage = if prep.finished.is_some() {
        Manage::DeleteActive(prep.active_pods.clone())
    } else if inp.satisfied_expectations && prep.job.metadata.deletion_timestamp.is_none() {
        manage_job(&prep, now)
    } else {
        Manage::Skipped
    };
    prep
}

/// Upstream `activePodsForRemoval`: for Indexed Jobs, pods without a valid index, of a failed
/// index, or duplicating an index first; then the cheapest pods (ActivePods order) up to
/// `rm_at_least`.
pub fn active_pods_for_removal(prep: &Prepared, rm_at_least: usize) -> Vec<Arc<Pod>> {
    let mut rm: Vec<Arc<Pod>> = Vec::new();
    let mut left: Vec<Arc<Pod>> = Vec::new();
    if is_indexed(&prep.job) {
        let completions = prep.completions();
        let mut groups: BTreeMap<Option<i64>, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &prep.active_pods {
            groups
                .entry(indexed::valid_index(p, completions))
                .or_default()
                .push(p.clone());
        }
        for (ix, mut group) in groups {
            let failed_index =
                ix.is_some_and(|i| prep.failed_indexes.as_ref().is_some_and(|f| f.has(i)));
            if ix.is_none() || failed_index {
                rm.extend(group);
                continue;
            }
            group.sort_by(|a, b| active_pods_order(a, b));
            if let Some(keep) = group.pop() {
                rm.extend(group);
                left.push(keep);
            }
        }
    } else {
        left = prep.active_pods.clone();
    }
    if rm.len() < rm_at_least {
        left.sort_by(|a, b| active_pods_order(a, b));
        let more = (rm_at_least - rm.len()).min(left.len());
        rm.extend(left.into_iter().take(more));
    }
    rm
}

/// Upstream `manageJob`'s decision.
fn manage_job(prep: &Prepared, now: Timestamp) -> Manage {
    let s = spec(&prep.job);
    let active = prep.active;
    if is_suspended(&prep.job) {
        return Manage::DeletePods(active_pods_for_removal(prep, prep.active_pods.len()));
    }
    let parallelism = s.parallelism.unwrap_or(1);
    let want_active = match s.completions {
        None if prep.succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - prep.succeeded).min(parallelism).max(0),
    };
    let rm_at_least = usize::try_from(active - want_active).unwrap_or(0);
    let mut to_delete = active_pods_for_removal(prep, rm_at_least);
    to_delete.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    if !to_delete.is_empty() {
        // Deletions take precedence over creations within one sync (upstream).
        return Manage::DeletePods(to_delete);
    }
    let terminating = if only_replace_failed_pods(&prep.job) {
        prep.terminating
    } else {
        0
    };
    let diff = want_active - terminating - active;
    if diff <= 0 {
        return Manage::Nothing;
    }
    if !has_backoff_limit_per_index(&prep.job) {
        let remaining = prep.new_backoff.remaining_time(now);
        if !remaining.is_zero() {
            return Manage::Backoff(remaining);
        }
    }
    let mut count = usize::try_from(diff)
        .unwrap_or(0)
        .min(MAX_POD_CREATE_DELETE_PER_SYNC);
    let mut indexes = Vec::new();
    if is_indexed(&prep.job) {
        let completions = prep.completions();
        let active_indexes: BTreeSet<i64> = prep
            .active_pods
            .iter()
            .filter_map(|p| indexed::completion_index(p))
            .collect();
        let done = match &prep.failed_indexes {
            Some(f) => prep.succeeded_indexes.merge(f),
            None => prep.succeeded_indexes.clone(),
        };
        indexes = indexed::first_pending_indexes(&active_indexes, &done, count, completions);
        if has_backoff_limit_per_index(&prep.job) {
            // Upstream `getPodCreationInfoForIndependentIndexes`.
            let mut now_ready = Vec::new();
            let mut min_wait: Option<Duration> = None;
            for ix in indexes {
                let wait = prep.delayed_deletion.get(&ix).map_or(Duration::ZERO, |p| {
                    let failures = indexed::index_absolute_failure_count(p) + 1;
                    backoff::remaining_time(failures, Some(backoff::finished_time(p)), now)
                });
                if wait.is_zero() {
                    now_ready.push(ix);
                } else {
                    min_wait = Some(min_wait.map_or(wait, |m| m.min(wait)));
                }
            }
            if now_ready.is_empty()
                && let Some(w) = min_wait
            {
                return Manage::Backoff(w);
            }
            indexes = now_ready;
        }
        count = indexes.len();
    }
    Manage::Create { count, indexes }
}

// ---- phase 2 ----

/// What the shell's creates/deletes achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ManageOutcome {
    /// Pods deleted (or already gone).
    pub deleted: i32,
    pub deleted_ready: i32,
    /// Pods created.
    pub created: i32,
}

/// An event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

fn normal(reason: &str, message: &str) -> Event {
    Event {
        warning: false,
        reason: reason.into(),
        message: message.into(),
    }
}

/// The rest of `syncJob` after `manageJob`: completion, the `Suspended` condition, and the
/// counters. Returns whether the status needs a write, and events.
pub fn after_manage(prep: &mut Prepared, out: ManageOutcome, now: Timestamp) -> (bool, Vec<Event>) {
    let mut events = Vec::new();
    let mut suspend_changed = false;
    match &prep.manage {
        Manage::DeleteActive(_) => {
            if out.deleted != prep.active || !prep.satisfied_expectations {
                // Remaining finalizers or pods not yet in the cache: not finished yet.
                prep.finished = None;
            }
            prep.active -= out.deleted;
            prep.terminating += out.deleted;
            prep.ready -= out.deleted_ready;
        }
        manage => {
            let called = !matches!(manage, Manage::Skipped);
            match manage {
                Manage::DeletePods(_) => {
                    prep.active -= out.deleted;
                    prep.terminating += out.deleted;
                    prep.ready -= out.deleted_ready;
                }
                Manage::Create { .. } => prep.active += out.created,
                _ => {}
            }
            let s = spec(&prep.job);
            let complete = match s.completions {
                None => prep.succeeded > 0 && prep.active == 0,
                Some(c) => prep.succeeded >= c && prep.active == 0,
            };
            if complete {
                prep.finished = Some(new_condition(
                    SUCCESS_CRITERIA_MET,
                    "True",
                    REASON_COMPLETIONS_REACHED,
                    "Reached expected number of succeeded pods",
                    now,
                ));
            } else if called {
                let conds = prep.status.conditions.get_or_insert_with(Vec::new);
                if is_suspended(&prep.job) {
                    if ensure_condition(
                        conds,
                        SUSPENDED,
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        now,
                    ) {
                        suspend_changed = true;
                        events.push(normal("Suspended", "Job suspended"));
                    }
                } else if ensure_condition(
                    conds,
                    SUSPENDED,
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                ) {
                    suspend_changed = true;
                    events.push(normal("Resumed", "Job resumed"));
                    // ActiveDeadlineSeconds counts time continuously active: restart it.
                    prep.status.start_time = Some(Time(now));
                }
                if prep.status.conditions.as_ref().is_some_and(Vec::is_empty) {
                    prep.status.conditions = None;
                }
            }
        }
    }
    let st = &prep.status;
    let needs = suspend_changed
        || st.active.unwrap_or(0) != prep.active
        || st.ready != Some(prep.ready)
        || st.terminating != Some(prep.terminating);
    prep.status.active = Some(prep.active);
    prep.status.ready = Some(prep.ready);
    prep.status.terminating = Some(prep.terminating);
    (needs, events)
}

// ---- phase 3 ----

/// The first half of upstream `trackJobStatusAndRemoveFinalizers`.
#[derive(Debug, Clone)]
pub struct Tracking {
    /// Pods whose tracking finalizer to remove (after the first status write).
    pub remove_finalizer: Vec<Arc<Pod>>,
    /// UIDs of pods still holding the finalizer (shrinks as removals succeed).
    pub uids_with_finalizer: HashSet<String>,
    pub needs_flush: bool,
    pub reached_max_uncounted: bool,
    /// Failed pods newly handled by a pod failure policy rule, per action (for metrics).
    pub failure_policy_actions: BTreeMap<&'static str, u64>,
}

/// Records newly finished pods in `status.uncountedTerminatedPods` (or completed indexes), adds
/// the interim `FailureTarget`/`SuccessCriteriaMet` condition, and turns `prep.finished` into the
/// final `Failed`/`Complete` condition to add once everything is counted.
pub fn track(prep: &mut Prepared, mut needs_flush: bool, now: Timestamp) -> Tracking {
    let indexed_job = is_indexed(&prep.job);
    let completions = prep.completions();
    let mut pods = prep.pods.clone();
    if indexed_job {
        pods.sort_by_key(|p| indexed::completion_index(p).unwrap_or(-1));
    }
    let expected = &prep.expected_rm_finalizers;
    let uids_with_finalizer: HashSet<String> = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p) && !expected.contains(uid(p)))
        .map(|p| uid(p).to_owned())
        .collect();
    if clean_uncounted(&mut prep.status, &uids_with_finalizer) {
        needs_flush = true;
    }
    let policy = prep
        .job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.clone());
    let finishing_as_failure =
        prep.finished.is_some() && !is_success_criteria_met(prep.finished.as_ref());
    let mut remove = Vec::new();
    let mut new_succeeded_indexes: Vec<i64> = Vec::new();
    let mut reached_max = false;
    let mut policy_actions = BTreeMap::new();
    let uncounted = prep
        .status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    for pod in &pods {
        let id = uid(pod);
        if !has_tracking_finalizer(pod) || expected.contains(id) {
            continue;
        }
        let considered_failed = is_pod_failed(pod, &prep.job);
        // Upstream `canRemoveFinalizer`.
        let can_remove = prep.job.metadata.deletion_timestamp.is_some()
            || prep.finished.is_some()
            || phase(pod) == "Succeeded"
            || (considered_failed
                && indexed::completion_index(pod)
                    .and_then(|ix| prep.delayed_deletion.get(&ix))
                    .is_none_or(|d| uid(d) != id));
        if !can_remove {
            continue;
        }
        remove.push(pod.clone());
        if phase(pod) == "Succeeded" && !prep.uncounted_failed.contains(id) {
            if indexed_job {
                if let Some(ix) = indexed::valid_index(pod, completions)
                    && !prep.prev_succeeded_indexes.has(ix)
                {
                    new_succeeded_indexes.push(ix);
                    needs_flush = true;
                }
            } else if !prep.uncounted_succeeded.contains(id) {
                needs_flush = true;
                uncounted
                    .succeeded
                    .get_or_insert_with(Vec::new)
                    .push(id.to_owned());
            }
        } else if (considered_failed || finishing_as_failure)
            && !prep.uncounted_failed.contains(id)
            && (!indexed_job || indexed::valid_index(pod, completions).is_some())
        {
            let m = match_pod_failure_policy(policy.as_ref(), pod);
            if let Some(action) = m.action {
                *policy_actions.entry(action.as_str()).or_default() += 1;
            }
            if m.count_failed {
                needs_flush = true;
                uncounted
                    .failed
                    .get_or_insert_with(Vec::new)
                    .push(id.to_owned());
            }
        }
        let n = new_succeeded_indexes.len()
            + uncounted.succeeded.as_ref().map_or(0, Vec::len)
            + uncounted.failed.as_ref().map_or(0, Vec::len);
        if n >= MAX_UNCOUNTED_PODS {
            // Keep status small and let other Jobs have a turn; the writes requeue this Job.
            reached_max = true;
            break;
        }
    }
    if indexed_job {
        prep.succeeded_indexes = prep
            .succeeded_indexes
            .with_ordered_indexes(&new_succeeded_indexes);
        let s = prep.succeeded_indexes.to_string();
        if s != prep.status.completed_indexes.as_deref().unwrap_or("") {
            needs_flush = true;
        }
        prep.status.succeeded =
            Some(i32::try_from(prep.succeeded_indexes.total()).unwrap_or(i32::MAX));
        prep.status.completed_indexes = (!s.is_empty()).then_some(s);
        let failed = prep.failed_indexes.as_ref().map(ToString::to_string);
        if prep.status.failed_indexes != failed {
            prep.status.failed_indexes = failed;
            needs_flush = true;
        }
    }
    if let Some(f) = prep.finished.clone() {
        if f.type_ == FAILURE_TARGET {
            prep.status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(f.clone());
            needs_flush = true;
            prep.finished = Some(new_condition(
                FAILED,
                "True",
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                now,
            ));
        } else if is_success_criteria_met(Some(&f)) {
            let has = prep
                .status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == SUCCESS_CRITERIA_MET && c.status == "True");
            if !has {
                prep.status
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(f.clone());
                needs_flush = true;
            }
            prep.finished = Some(new_condition(
                COMPLETE,
                "True",
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                now,
            ));
        }
    }
    Tracking {
        remove_finalizer: remove,
        uids_with_finalizer,
        needs_flush,
        reached_max_uncounted: reached_max,
        failure_policy_actions: policy_actions,
    }
}

/// Upstream `cleanUncountedPodsWithoutFinalizers`: uncounted pods that no longer hold the
/// finalizer move into the counters. Returns whether the status changed.
pub fn clean_uncounted(status: &mut JobStatus, uids_with_finalizer: &HashSet<String>) -> bool {
    let uncounted = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let mut changed = false;
    let succ = uncounted.succeeded.take().unwrap_or_default();
    let keep: Vec<String> = succ
        .iter()
        .filter(|u| uids_with_finalizer.contains(*u))
        .cloned()
        .collect();
    let moved_succeeded = succ.len() - keep.len();
    uncounted.succeeded = (!keep.is_empty()).then_some(keep);
    let fail = uncounted.failed.take().unwrap_or_default();
    let keep: Vec<String> = fail
        .iter()
        .filter(|u| uids_with_finalizer.contains(*u))
        .cloned()
        .collect();
    let moved_failed = fail.len() - keep.len();
    uncounted.failed = (!keep.is_empty()).then_some(keep);
    if moved_succeeded > 0 {
        changed = true;
        status.succeeded = Some(status.succeeded.unwrap_or(0) + to_i32(moved_succeeded));
    }
    if moved_failed > 0 {
        changed = true;
        status.failed = Some(status.failed.unwrap_or(0) + to_i32(moved_failed));
    }
    changed
}

/// Upstream `enactJobFinished`: adds the final condition once no pod is uncounted or
/// terminating. Returns whether the Job is now finished.
pub fn enact_finished(
    status: &mut JobStatus,
    finished: Option<&JobCondition>,
    terminating: i32,
    now: Timestamp,
) -> bool {
    let Some(f) = finished else {
        return false;
    };
    if let Some(u) = &status.uncounted_terminated_pods
        && u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len) > 0
    {
        return false;
    }
    if terminating > 0 {
        return false;
    }
    let conds = status.conditions.get_or_insert_with(Vec::new);
    ensure_condition(
        conds,
        &f.type_,
        &f.status,
        f.reason.as_deref().unwrap_or(""),
        f.message.as_deref().unwrap_or(""),
        now,
    );
    if f.type_ == COMPLETE {
        status.completion_time = Some(Time(now));
    }
    true
}

/// Upstream `recordJobFinished`'s events.
pub fn finished_events(job: &Job, status: &JobStatus, finished: &JobCondition) -> Vec<Event> {
    if finished.type_ == COMPLETE {
        let mut out = Vec::new();
        if let Some(c) = job.spec.as_ref().and_then(|s| s.completions)
            && status.succeeded.unwrap_or(0) > c
        {
            out.push(Event {
                warning: true,
                reason: "TooManySucceededPods".into(),
                message: "Too many succeeded pods running after completion count reached".into(),
            });
        }
        out.push(normal("Completed", "Job completed"));
        return out;
    }
    vec![Event {
        warning: true,
        reason: finished.reason.clone().unwrap_or_default(),
        message: finished.message.clone().unwrap_or_default(),
    }]
}

#[cfg(test)]
mod tests;
