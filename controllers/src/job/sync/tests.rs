//! Table cases after upstream's `TestControllerSyncJob` & co.: one sync over a Job and its pods,
//! with every API call succeeding (see `simulate`).

use super::*;
use crate::cache::{ContainerStatus, PodSpec, PodStatus};
use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
    SuccessPolicy, SuccessPolicyRule,
};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, PodCondition, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn now() -> Timestamp {
    t(1000)
}

fn job(parallelism: i32, completions: Option<i32>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("ns".into()),
            uid: Some("job-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            parallelism: Some(parallelism),
            completions,
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn indexed_job(parallelism: i32, completions: i32) -> Job {
    let mut j = job(parallelism, Some(completions));
    j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
    j
}

fn with_spec(mut j: Job, f: impl FnOnce(&mut JobSpec)) -> Job {
    f(j.spec.as_mut().unwrap());
    j
}

fn with_status(mut j: Job, f: impl FnOnce(&mut JobStatus)) -> Job {
    f(j.status.get_or_insert_with(JobStatus::default));
    j
}

struct P(Pod);

impl P {
    fn new(name: &str, phase: &str) -> P {
        P(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                finalizers: Some(vec![TRACKING_FINALIZER.into()]),
                creation_timestamp: Some(Time(t(0))),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "Job".into(),
                    name: "pi".into(),
                    uid: "job-uid".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        })
    }
    fn index(mut self, ix: i64) -> P {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(indexed::COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
        self
    }
    fn annotation(mut self, k: &str, v: &str) -> P {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    fn no_finalizer(mut self) -> P {
        self.0.metadata.finalizers = None;
        self
    }
    fn deleted(mut self) -> P {
        self.0.metadata.deletion_timestamp = Some(Time(t(900)));
        self
    }
    fn ready(mut self) -> P {
        self.0.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(t(10))),
            ..PodCondition::default()
        }]);
        self
    }
    fn exit(mut self, code: i32, at: Timestamp) -> P {
        self.0.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "main".into(),
            state: Some(Box::new(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    finished_at: Some(Time(at)),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            })),
            ..ContainerStatus::default()
        }]);
        self
    }
    fn arc(self) -> Arc<Pod> {
        Arc::new(self.0)
    }
}

fn running(name: &str) -> Arc<Pod> {
    P::new(name, "Running").arc()
}

fn succeeded(name: &str) -> Arc<Pod> {
    P::new(name, "Succeeded").exit(0, t(500)).arc()
}

fn failed(name: &str) -> Arc<Pod> {
    P::new(name, "Failed").exit(1, t(500)).arc()
}

struct Outcome {
    manage: Manage,
    status: JobStatus,
    events: Vec<Event>,
    removed: Vec<String>,
    requeue_after: Option<Duration>,
    backoff: BackoffRecord,
    status_writes: usize,
}

impl Outcome {
    fn created(&self) -> usize {
        match &self.manage {
            Manage::Create { count, .. } => *count,
            _ => 0,
        }
    }
    fn created_indexes(&self) -> Vec<i64> {
        match &self.manage {
            Manage::Create { indexes, .. } => indexes.clone(),
            _ => vec![],
        }
    }
    fn deleted(&self) -> Vec<String> {
        match &self.manage {
            Manage::DeletePods(p) | Manage::DeleteActive(p) => {
                p.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
            }
            _ => vec![],
        }
    }
    fn conditions(&self) -> Vec<(String, String, String)> {
        self.status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
    fn condition_message(&self, type_: &str) -> String {
        self.status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .and_then(|c| c.message.clone())
            .unwrap_or_default()
    }
    fn reasons(&self) -> Vec<String> {
        self.events.iter().map(|e| e.reason.clone()).collect()
    }
    fn counts(&self) -> (i32, i32, i32, i32, i32) {
        let s = &self.status;
        (
            s.active.unwrap_or(0),
            s.ready.unwrap_or(0),
            s.succeeded.unwrap_or(0),
            s.failed.unwrap_or(0),
            s.terminating.unwrap_or(0),
        )
    }
}

fn cond(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.into(), status.into(), reason.into())
}

/// One sync in which every create, delete, finalizer removal and status write succeeds, and the
/// status writes do not change what was written (as the apiserver returns it).
fn simulate_with(
    job: &Job,
    pods: &[Arc<Pod>],
    satisfied: bool,
    old_backoff: BackoffRecord,
) -> Outcome {
    let expected = HashSet::new();
    let mut prep = prepare(&Input {
        job,
        pods,
        now: now(),
        satisfied_expectations: satisfied,
        expected_rm_finalizers: &expected,
        backoff: &old_backoff,
    });
    let manage = prep.manage.clone();
    let out = match &manage {
        Manage::DeleteActive(p) | Manage::DeletePods(p) => ManageOutcome {
            deleted: to_i32(p.len()),
            deleted_ready: to_i32(p.iter().filter(|p| is_pod_ready(p)).count()),
            created: 0,
        },
        Manage::Create { count, .. } => ManageOutcome {
            created: to_i32(*count),
            ..ManageOutcome::default()
        },
        _ => ManageOutcome::default(),
    };
    let (needs_update, mut events) = after_manage(&mut prep, out, now());
    let mut tracking = track(&mut prep, needs_update, now());
    let mut writes = 0;
    if tracking.needs_flush {
        writes += 1;
    }
    let removed: Vec<String> = tracking
        .remove_finalizer
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    for p in &tracking.remove_finalizer {
        tracking.uids_with_finalizer.remove(uid(p));
    }
    let mut status = prep.status.clone();
    let mut flush = clean_uncounted(&mut status, &tracking.uids_with_finalizer);
    let finished = !tracking.reached_max_uncounted
        && enact_finished(&mut status, prep.finished.as_ref(), prep.terminating, now());
    flush |= finished;
    if flush {
        writes += 1;
    }
    if finished {
        events.extend(finished_events(
            &prep.job,
            &status,
            prep.finished.as_ref().unwrap(),
        ));
    }
    Outcome {
        manage,
        status,
        events,
        removed,
        requeue_after: prep.requeue_after,
        backoff: prep.new_backoff,
        status_writes: writes,
    }
}

fn simulate(job: &Job, pods: &[Arc<Pod>]) -> Outcome {
    simulate_with(job, pods, true, BackoffRecord::default())
}

#[test]
fn a_new_job_creates_parallelism_pods_and_records_start_time() {
    let o = simulate(&job(2, Some(5)), &[]);
    assert_eq!(o.created(), 2);
    assert_eq!(o.counts(), (2, 0, 0, 0, 0));
    assert_eq!(o.status.start_time, Some(Time(now())));
    assert!(o.status.conditions.is_none());
    assert!(o.status_writes >= 1);
}

#[test]
fn active_pods_are_capped_by_remaining_completions() {
    let pods = [running("a"), succeeded("b"), succeeded("c"), succeeded("d")];
    let o = simulate(&job(3, Some(5)), &pods);
    // 5 - 3 succeeded = 2 wanted, 1 running.
    assert_eq!(o.created(), 1);
    assert_eq!(o.counts(), (2, 0, 3, 0, 0));
    assert_eq!(o.removed.len(), 3);
}

#[test]
fn a_job_without_completions_stops_creating_after_the_first_success() {
    let pods = [running("a"), succeeded("b")];
    let o = simulate(&job(3, None), &pods);
    assert_eq!(o.created(), 0);
    assert_eq!(o.counts().0, 1);
    assert!(o.status.conditions.is_none());
}

#[test]
fn finished_pods_go_through_uncounted_before_the_counters() {
    let pods = [succeeded("a"), failed("b"), running("c")];
    let j = job(1, Some(3));
    let expected = HashSet::new();
    let old = BackoffRecord::default();
    let mut prep = prepare(&Input {
        job: &j,
        pods: &pods,
        now: now(),
        satisfied_expectations: true,
        expected_rm_finalizers: &expected,
        backoff: &old,
    });
    let (needs, _) = after_manage(&mut prep, ManageOutcome::default(), now());
    let tr = track(&mut prep, needs, now());
    // The first write records both UIDs as uncounted and leaves the counters alone.
    let u = prep.status.uncounted_terminated_pods.clone().unwrap();
    assert_eq!(u.succeeded, Some(vec!["uid-a".to_owned()]));
    assert_eq!(u.failed, Some(vec!["uid-b".to_owned()]));
    assert_eq!(prep.status.succeeded, None);
    assert!(tr.needs_flush);
    let names: Vec<_> = tr
        .remove_finalizer
        .iter()
        .map(|p| uid(p).to_owned())
        .collect();
    assert_eq!(names, vec!["uid-a", "uid-b"]);
    // Only pods whose finalizer is gone move to the counters.
    let mut status = prep.status.clone();
    let still: HashSet<String> = ["uid-b".to_owned(), "uid-c".to_owned()].into();
    assert!(clean_uncounted(&mut status, &still));
    assert_eq!((status.succeeded, status.failed), (Some(1), None));
    assert_eq!(
        status.uncounted_terminated_pods.unwrap().failed,
        Some(vec!["uid-b".to_owned()])
    );
}

#[test]
fn uncounted_pods_left_by_a_previous_sync_are_counted_once() {
    // The controller restarted after removing the finalizer of "a" but before counting it.
    let j = with_status(job(1, Some(2)), |s| {
        s.succeeded = Some(0);
        s.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: Some(vec!["uid-a".into()]),
            failed: None,
        });
    });
    let pods = [P::new("a", "Succeeded").no_finalizer().arc(), running("b")];
    let o = simulate(&j, &pods);
    assert_eq!(o.counts().2, 1);
    assert!(o.removed.is_empty());
    assert_eq!(o.created(), 0);
}

#[test]
fn pods_with_an_expected_finalizer_removal_are_not_counted_again() {
    let j = job(1, Some(2));
    let pods = [succeeded("a")];
    let expected: HashSet<String> = ["uid-a".to_owned()].into();
    let old = BackoffRecord::default();
    let mut prep = prepare(&Input {
        job: &j,
        pods: &pods,
        now: now(),
        satisfied_expectations: true,
        expected_rm_finalizers: &expected,
        backoff: &old,
    });
    assert_eq!(prep.succeeded, 0);
    let (needs, _) = after_manage(&mut prep, ManageOutcome::default(), now());
    let tr = track(&mut prep, needs, now());
    assert!(tr.remove_finalizer.is_empty());
}

#[test]
fn a_job_completes_with_success_criteria_met_then_complete() {
    let pods = [succeeded("a"), succeeded("b"), succeeded("c")];
    let o = simulate(&job(3, Some(3)), &pods);
    assert_eq!(
        o.conditions(),
        vec![
            cond(SUCCESS_CRITERIA_MET, "True", REASON_COMPLETIONS_REACHED),
            cond(COMPLETE, "True", REASON_COMPLETIONS_REACHED),
        ]
    );
    assert_eq!(
        o.condition_message(COMPLETE),
        "Reached expected number of succeeded pods"
    );
    assert_eq!(o.counts(), (0, 0, 3, 0, 0));
    assert_eq!(o.status.completion_time, Some(Time(now())));
    assert_eq!(o.reasons(), vec!["Completed"]);
    assert_eq!(o.status_writes, 2);
}

#[test]
fn too_many_succeeded_pods_are_reported_on_completion() {
    let pods = [succeeded("a"), succeeded("b"), succeeded("c")];
    let o = simulate(&job(3, Some(2)), &pods);
    assert_eq!(o.reasons(), vec!["TooManySucceededPods", "Completed"]);
}

#[test]
fn excess_active_pods_are_deleted_not_ready_first() {
    let pods = [
        P::new("a", "Running").ready().arc(),
        running("b"),
        P::new("c", "Pending").arc(),
    ];
    let o = simulate(&job(1, Some(5)), &pods);
    let mut deleted = o.deleted();
    deleted.sort();
    assert_eq!(deleted, vec!["b", "c"]);
    assert!(matches!(o.manage, Manage::DeletePods(_)));
    assert_eq!(o.counts(), (1, 1, 0, 0, 2));
}

#[test]
fn failures_beyond_the_backoff_limit_fail_the_job_after_pods_terminate() {
    let j = with_spec(job(1, Some(1)), |s| s.backoff_limit = Some(0));
    let o = simulate(&j, &[failed("a"), running("b")]);
    assert_eq!(o.deleted(), vec!["b"]);
    assert_eq!(
        o.conditions(),
        vec![cond(FAILURE_TARGET, "True", REASON_BACKOFF_LIMIT_EXCEEDED)]
    );
    assert_eq!(
        o.condition_message(FAILURE_TARGET),
        "Job has reached the specified backoff limit"
    );
    // "b" is terminating: no Failed condition yet; both pods counted as failed.
    assert_eq!(o.counts(), (0, 0, 0, 2, 1));
    assert!(o.events.is_empty());

    // Next sync: the pods are gone.
    let j2 = with_status(j, |s| *s = o.status.clone());
    let o2 = simulate(&j2, &[]);
    assert_eq!(
        o2.conditions(),
        vec![
            cond(FAILURE_TARGET, "True", REASON_BACKOFF_LIMIT_EXCEEDED),
            cond(FAILED, "True", REASON_BACKOFF_LIMIT_EXCEEDED),
        ]
    );
    assert_eq!(o2.reasons(), vec![REASON_BACKOFF_LIMIT_EXCEEDED]);
    assert!(o2.events[0].warning);
    assert!(o2.status.completion_time.is_none());
}

#[test]
fn a_failure_delays_the_replacement_by_the_pod_failure_backoff() {
    let pods = [P::new("a", "Failed").exit(1, t(995)).arc()];
    let o = simulate(&job(1, Some(1)), &pods);
    match o.manage {
        Manage::Backoff(d) => assert_eq!(d, Duration::from_secs(5)),
        other => panic!("expected backoff, got {other:?}"),
    }
    assert_eq!(o.backoff.failures_after_last_success, 1);
    assert_eq!(o.counts().3, 1);
}

#[test]
fn the_backoff_record_carries_earlier_failures() {
    let old = BackoffRecord {
        failures_after_last_success: 2,
        last_failure_time: Some(t(900)),
    };
    let pods = [P::new("a", "Failed").exit(1, t(990)).arc()];
    let o = simulate_with(&job(1, Some(1)), &pods, true, old);
    // Third failure: 40 s after t(990).
    match o.manage {
        Manage::Backoff(d) => assert_eq!(d, Duration::from_secs(30)),
        other => panic!("expected backoff, got {other:?}"),
    }
}

#[test]
fn unsatisfied_expectations_skip_pod_management() {
    let o = simulate_with(&job(2, Some(2)), &[], false, BackoffRecord::default());
    assert!(matches!(o.manage, Manage::Skipped));
    assert_eq!(o.counts().0, 0);
}

#[test]
fn a_suspended_job_deletes_its_active_pods_and_reports_suspended() {
    let j = with_spec(job(2, Some(4)), |s| s.suspend = Some(true));
    let o = simulate(&j, &[running("a"), running("b")]);
    assert_eq!(o.deleted().len(), 2);
    assert_eq!(
        o.conditions(),
        vec![cond(SUSPENDED, "True", "JobSuspended")]
    );
    assert_eq!(o.condition_message(SUSPENDED), "Job suspended");
    assert_eq!(o.reasons(), vec!["Suspended"]);
    assert_eq!(o.counts(), (0, 0, 0, 0, 2));
    // The deleted pods lose their finalizer through deleteJobPods, not through tracking.
    assert!(o.status.start_time.is_none());
}

#[test]
fn a_resumed_job_restarts_its_start_time() {
    let j = with_status(job(1, Some(1)), |s| {
        s.start_time = Some(Time(t(0)));
        s.conditions = Some(vec![new_condition(
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            t(0),
        )]);
    });
    let o = simulate(&j, &[]);
    assert_eq!(o.created(), 1);
    assert_eq!(o.conditions(), vec![cond(SUSPENDED, "False", "JobResumed")]);
    assert_eq!(o.reasons(), vec!["Resumed"]);
    assert_eq!(o.status.start_time, Some(Time(now())));
}

#[test]
fn a_job_never_suspended_gets_no_suspended_condition() {
    let o = simulate(&job(1, Some(1)), &[]);
    assert!(o.conditions().is_empty());
    assert!(o.events.is_empty());
}

#[test]
fn a_job_past_its_active_deadline_fails_with_deadline_exceeded() {
    let j = with_status(
        with_spec(job(1, Some(1)), |s| s.active_deadline_seconds = Some(10)),
        |s| {
            s.start_time = Some(Time(t(990)));
        },
    );
    let o = simulate(&j, &[running("a")]);
    assert_eq!(
        o.conditions(),
        vec![cond(FAILURE_TARGET, "True", REASON_DEADLINE_EXCEEDED)]
    );
    assert_eq!(
        o.condition_message(FAILURE_TARGET),
        "Job was active longer than specified deadline"
    );
    assert_eq!(o.deleted(), vec!["a"]);
}

#[test]
fn a_job_before_its_deadline_is_requeued_exactly_at_it() {
    let j = with_status(
        with_spec(job(1, Some(1)), |s| s.active_deadline_seconds = Some(30)),
        |s| {
            s.start_time = Some(Time(t(990)));
        },
    );
    let o = simulate(&j, &[running("a")]);
    assert_eq!(o.requeue_after, Some(Duration::from_secs(20)));
    assert!(o.conditions().is_empty());
}

#[test]
fn an_indexed_job_creates_the_lowest_pending_indexes() {
    let pods = [
        P::new("a", "Succeeded").index(0).arc(),
        P::new("b", "Running").index(2).arc(),
    ];
    let o = simulate(&indexed_job(3, 5), &pods);
    assert_eq!(o.created_indexes(), vec![1, 3]);
    assert_eq!(o.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(o.counts().2, 1);
}

#[test]
fn an_indexed_job_completes_when_every_index_succeeded() {
    let pods = [
        P::new("a", "Succeeded").index(0).arc(),
        P::new("b", "Succeeded").index(1).arc(),
        P::new("c", "Succeeded").index(1).arc(),
        P::new("d", "Succeeded").index(2).arc(),
    ];
    let o = simulate(&indexed_job(3, 3), &pods);
    assert_eq!(o.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(o.counts().2, 3);
    assert_eq!(o.conditions().last().unwrap().0, COMPLETE);
}

#[test]
fn duplicated_and_out_of_range_indexes_are_deleted() {
    let pods = [
        P::new("a", "Running").index(0).ready().arc(),
        P::new("b", "Running").index(0).arc(),
        P::new("c", "Running").index(7).arc(),
        P::new("d", "Running").arc(),
    ];
    let o = simulate(&indexed_job(3, 3), &pods);
    let mut d = o.deleted();
    d.sort();
    assert_eq!(d, vec!["b", "c", "d"]);
}

#[test]
fn a_fail_job_rule_fails_the_job_with_the_rule_message() {
    let j = with_spec(job(2, Some(2)), |s| {
        s.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: None,
                    operator: "In".into(),
                    values: vec![42],
                }),
                on_pod_conditions: None,
            }],
        });
    });
    let pods = [P::new("a", "Failed").exit(42, t(500)).arc(), running("b")];
    let o = simulate(&j, &pods);
    assert_eq!(
        o.conditions(),
        vec![cond(FAILURE_TARGET, "True", REASON_POD_FAILURE_POLICY)]
    );
    assert_eq!(
        o.condition_message(FAILURE_TARGET),
        "Container main for pod ns/a failed with exit code 42 matching FailJob rule at index 0"
    );
    assert_eq!(o.deleted(), vec!["b"]);
}

#[test]
fn an_ignore_rule_does_not_count_the_failure() {
    let j = with_spec(job(1, Some(1)), |s| {
        s.backoff_limit = Some(0);
        s.pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![
                    k8s_openapi::api::batch::v1::PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: Some("True".into()),
                    },
                ]),
            }],
        });
    });
    let mut p = P::new("a", "Failed").exit(137, t(995));
    p.0.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        ..PodCondition::default()
    }]);
    let o = simulate(&j, &[p.arc()]);
    assert!(o.conditions().is_empty());
    assert_eq!(o.counts().3, 0);
    assert_eq!(o.removed, vec!["a"]);
    // Ignored failures still count for the re-creation backoff, as upstream.
    assert!(matches!(o.manage, Manage::Backoff(_)));
}

#[test]
fn an_index_that_exhausts_its_backoff_limit_is_failed() {
    let j = with_spec(indexed_job(2, 2), |s| {
        s.backoff_limit_per_index = Some(1);
        s.backoff_limit = Some(i32::MAX);
    });
    let pods = [
        P::new("a", "Succeeded").index(0).arc(),
        P::new("b", "Failed")
            .index(1)
            .annotation(indexed::INDEX_FAILURE_COUNT_ANNOTATION, "1")
            .exit(1, t(500))
            .arc(),
    ];
    let o = simulate(&j, &pods);
    assert_eq!(o.status.failed_indexes.as_deref(), Some("1"));
    assert_eq!(
        o.conditions(),
        vec![
            cond(FAILURE_TARGET, "True", REASON_FAILED_INDEXES),
            cond(FAILED, "True", REASON_FAILED_INDEXES),
        ]
    );
    assert_eq!(o.reasons(), vec![REASON_FAILED_INDEXES]);
}

#[test]
fn a_failed_index_within_its_limit_is_recreated_after_its_own_backoff() {
    let j = with_spec(indexed_job(2, 2), |s| {
        s.backoff_limit_per_index = Some(2);
        s.backoff_limit = Some(i32::MAX);
    });
    let old = P::new("b", "Failed").index(1).exit(1, t(100)).arc();
    let pods = [P::new("a", "Running").index(0).arc(), old];
    let o = simulate(&j, &pods);
    assert_eq!(o.created_indexes(), vec![1]);
    assert_eq!(o.status.failed_indexes.as_deref(), Some(""));
    // The failed pod keeps its finalizer until the replacement carries the failure count.
    assert!(o.removed.is_empty());
}

#[test]
fn more_failed_indexes_than_allowed_fail_the_job() {
    let j = with_spec(indexed_job(3, 3), |s| {
        s.backoff_limit_per_index = Some(0);
        s.max_failed_indexes = Some(0);
        s.backoff_limit = Some(i32::MAX);
    });
    let pods = [
        P::new("a", "Failed").index(0).exit(1, t(500)).arc(),
        P::new("b", "Running").index(1).arc(),
    ];
    let o = simulate(&j, &pods);
    assert_eq!(
        o.conditions()[0],
        cond(FAILURE_TARGET, "True", REASON_MAX_FAILED_INDEXES_EXCEEDED)
    );
}

#[test]
fn a_success_policy_ends_the_job_early() {
    let j = with_spec(indexed_job(3, 5), |s| {
        s.success_policy = Some(SuccessPolicy {
            rules: vec![SuccessPolicyRule {
                succeeded_indexes: Some("0".into()),
                succeeded_count: None,
            }],
        });
    });
    let pods = [
        P::new("a", "Succeeded").index(0).arc(),
        P::new("b", "Running").index(1).arc(),
    ];
    let o = simulate(&j, &pods);
    assert_eq!(o.deleted(), vec!["b"]);
    assert_eq!(
        o.conditions(),
        vec![cond(SUCCESS_CRITERIA_MET, "True", REASON_SUCCESS_POLICY)]
    );
    assert_eq!(
        o.condition_message(SUCCESS_CRITERIA_MET),
        "Matched rules at index 0"
    );
    // Next sync, the pod gone: Complete with the same reason.
    let j2 = with_status(j, |s| *s = o.status.clone());
    let o2 = simulate(
        &j2,
        &[P::new("a", "Succeeded").index(0).no_finalizer().arc()],
    );
    assert_eq!(
        o2.conditions()[1],
        cond(COMPLETE, "True", REASON_SUCCESS_POLICY)
    );
    assert_eq!(o2.reasons(), vec!["Completed"]);
}

#[test]
fn terminating_pods_are_replaced_unless_the_policy_waits_for_failed() {
    let pods = [P::new("a", "Running").deleted().arc()];
    let o = simulate(&job(1, Some(1)), &pods);
    // TerminatingOrFailed: the deleted pod counts as failed and is replaced after the backoff.
    assert_eq!(o.counts().4, 1);
    assert_eq!(o.counts().3, 1);
    let j = with_spec(job(1, Some(1)), |s| {
        s.pod_replacement_policy = Some("Failed".into())
    });
    let o = simulate(&j, &pods);
    assert_eq!(o.created(), 0);
    assert!(matches!(o.manage, Manage::Nothing));
    assert_eq!(o.counts(), (0, 0, 0, 0, 1));
}

#[test]
fn a_finished_job_is_not_declared_finished_while_expectations_are_unsatisfied() {
    let j = with_spec(job(1, Some(1)), |s| s.backoff_limit = Some(0));
    let o = simulate_with(&j, &[failed("a")], false, BackoffRecord::default());
    assert!(o.conditions().is_empty());
}

#[test]
fn ensure_condition_never_appends_a_false_condition() {
    let mut list = Vec::new();
    assert!(!ensure_condition(
        &mut list,
        SUSPENDED,
        "False",
        "JobResumed",
        "Job resumed",
        now()
    ));
    assert!(ensure_condition(
        &mut list,
        SUSPENDED,
        "True",
        "JobSuspended",
        "Job suspended",
        now()
    ));
    assert!(!ensure_condition(
        &mut list,
        SUSPENDED,
        "True",
        "JobSuspended",
        "Job suspended",
        t(5)
    ));
    assert!(ensure_condition(
        &mut list,
        SUSPENDED,
        "False",
        "JobResumed",
        "Job resumed",
        t(5)
    ));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].last_transition_time, Some(Time(t(5))));
}

#[test]
fn jobs_managed_by_another_controller_are_recognised() {
    let mut j = job(1, Some(1));
    assert_eq!(managed_by_external(&j), None);
    j.spec.as_mut().unwrap().managed_by = Some(JOB_CONTROLLER_NAME.into());
    assert_eq!(managed_by_external(&j), None);
    j.spec.as_mut().unwrap().managed_by = Some("example.com/other".into());
    assert_eq!(managed_by_external(&j), Some("example.com/other"));
}
