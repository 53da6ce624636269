//! Pod re-creation backoff after pod failures (upstream `pkg/controller/job/backoff_utils.go`):
//! a record per Job of the failures since the last success and when the last one happened, and
//! the delay it imposes (10 s doubling per failure, capped at 10 min).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::cache::{ContainerStatus, Pod};
use jiff::{SignedDuration, Timestamp};

/// Upstream `DefaultJobPodFailureBackOff`.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream `MaxJobPodFailureBackOff`.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackoffRecord {
    pub failures_after_last_success: i64,
    pub last_failure_time: Option<Timestamp>,
}

/// Upstream `backoffStore`, keyed by the Job's `namespace/name`.
#[derive(Debug, Default)]
pub struct BackoffStore {
    records: Mutex<HashMap<String, BackoffRecord>>,
}

impl BackoffStore {
    pub fn get(&self, key: &str) -> BackoffRecord {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn update(&self, key: &str, record: BackoffRecord) {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), record);
    }

    pub fn remove(&self, key: &str) {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// Upstream `newBackoffRecord`: the record after this sync's newly finished pods.
pub fn new_backoff_record(
    old: &BackoffRecord,
    succeeded: &[&Pod],
    failed: &[&Pod],
) -> BackoffRecord {
    let latest = |pods: &[&Pod]| pods.iter().map(|p| finished_time(p)).max();
    if succeeded.is_empty() {
        let Some(last) = latest(failed) else {
            return old.clone();
        };
        return BackoffRecord {
            failures_after_last_success: old.failures_after_last_success
                + i64::try_from(failed.len()).unwrap_or(i64::MAX),
            last_failure_time: Some(last),
        };
    }
    let mut record = BackoffRecord::default();
    let Some(last_success) = latest(succeeded) else {
        return record;
    };
    for t in failed.iter().map(|p| finished_time(p)) {
        if t > last_success {
            record.failures_after_last_success += 1;
            record.last_failure_time = record.last_failure_time.max(Some(t));
        }
    }
    record
}

fn latest_container_finish<'a>(
    statuses: impl IntoIterator<Item = &'a ContainerStatus>,
) -> Option<Option<Timestamp>> {
    // None: some container has not finished (upstream returns nil then).
    let mut latest: Option<Timestamp> = None;
    for cs in statuses {
        let t = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())?;
        latest = latest.max(Some(t.0));
    }
    Some(latest)
}

/// Upstream `getFinishedTime`: the latest container finish, else the time the pod became not
/// ready, else the deletion time less the grace period, else its creation.
pub fn finished_time(p: &Pod) -> Timestamp {
    let status = p.status.as_ref();
    let sidecars: Vec<&str> = p
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let regular = latest_container_finish(
        status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten()),
    );
    let side = latest_container_finish(
        status
            .iter()
            .flat_map(|s| s.init_container_statuses.iter().flatten())
            .filter(|cs| sidecars.contains(&cs.name.as_str())),
    );
    if let (Some(r), Some(s)) = (regular, side)
        && let Some(t) = r.max(s)
    {
        return t;
    }
    if let Some(t) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
    {
        return t.0;
    }
    if let Some(d) = &p.metadata.deletion_timestamp {
        let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return d
            .0
            .checked_sub(SignedDuration::from_secs(grace))
            .unwrap_or(d.0);
    }
    p.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
}

/// Upstream `getRemainingTimeForFailuresCount`: how long pod creation must still wait at `now`.
pub fn remaining_time(failures: i64, last_failure: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(last) = last_failure else {
        return Duration::ZERO;
    };
    if failures <= 0 {
        return Duration::ZERO;
    }
    let mut backoff = DEFAULT_POD_FAILURE_BACKOFF;
    for _ in 1..failures {
        backoff = backoff.saturating_mul(2);
        if backoff >= MAX_POD_FAILURE_BACKOFF {
            backoff = MAX_POD_FAILURE_BACKOFF;
            break;
        }
    }
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    backoff.saturating_sub(elapsed)
}

impl BackoffRecord {
    pub fn remaining_time(&self, now: Timestamp) -> Duration {
        remaining_time(
            self.failures_after_last_success,
            self.last_failure_time,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodStatus;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn finished_at(s: i64) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(Box::new(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(at(s))),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    })),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_and_is_capped_at_ten_minutes() {
        let now = at(0);
        let secs = |n| remaining_time(n, Some(now), now).as_secs();
        assert_eq!(secs(0), 0);
        assert_eq!(secs(1), 10);
        assert_eq!(secs(2), 20);
        assert_eq!(secs(3), 40);
        assert_eq!(secs(6), 320);
        assert_eq!(secs(7), 600);
        assert_eq!(secs(30), 600);
    }

    #[test]
    fn time_since_the_last_failure_counts_against_the_backoff() {
        assert_eq!(
            remaining_time(2, Some(at(0)), at(5)),
            Duration::from_secs(15)
        );
        assert_eq!(remaining_time(2, Some(at(0)), at(25)), Duration::ZERO);
        assert_eq!(remaining_time(2, None, at(25)), Duration::ZERO);
    }

    #[test]
    fn failures_accumulate_until_a_success() {
        let old = BackoffRecord {
            failures_after_last_success: 2,
            last_failure_time: Some(at(1)),
        };
        let f = finished_at(5);
        let r = new_backoff_record(&old, &[], &[&f]);
        assert_eq!(r.failures_after_last_success, 3);
        assert_eq!(r.last_failure_time, Some(at(5)));
        assert_eq!(new_backoff_record(&old, &[], &[]), old);
    }

    #[test]
    fn a_success_resets_the_record_keeping_only_later_failures() {
        let old = BackoffRecord {
            failures_after_last_success: 4,
            last_failure_time: Some(at(1)),
        };
        let s = finished_at(10);
        let (f1, f2, f3) = (finished_at(5), finished_at(12), finished_at(15));
        assert_eq!(
            new_backoff_record(&old, &[&s], &[]),
            BackoffRecord::default()
        );
        let r = new_backoff_record(&old, &[&s], &[&f1, &f2, &f3]);
        assert_eq!(r.failures_after_last_success, 2);
        assert_eq!(r.last_failure_time, Some(at(15)));
    }

    #[test]
    fn finish_time_falls_back_to_deletion_then_creation() {
        let mut p = Pod::default();
        p.metadata.creation_timestamp = Some(Time(at(1)));
        assert_eq!(finished_time(&p), at(1));
        p.metadata.deletion_timestamp = Some(Time(at(40)));
        p.metadata.deletion_grace_period_seconds = Some(30);
        assert_eq!(finished_time(&p), at(10));
        assert_eq!(finished_time(&finished_at(7)), at(7));
    }

    #[test]
    fn the_store_forgets_a_removed_job() {
        let store = BackoffStore::default();
        let r = BackoffRecord {
            failures_after_last_success: 1,
            last_failure_time: Some(at(0)),
        };
        store.update("ns/a", r.clone());
        assert_eq!(store.get("ns/a"), r);
        store.remove("ns/a");
        assert_eq!(store.get("ns/a"), BackoffRecord::default());
    }
}
