//! Controller expectations: what a controller is still waiting to see in its informer cache after
//! its own creates and deletes, so that a sync running on a lagging cache does not act twice
//! (e.g. create the same missing pods again).
//!
//! Mirrors `ControllerExpectations` and `UIDTrackingControllerExpectations` in
//! kubernetes `pkg/controller/controller_utils.go`, folded into one type: every record has add and
//! delete counters, and deletions announced with their keys are counted once per key.
//!
//! The clock is a parameter (`now`) so that the logic is pure and tests are exact; callers pass
//! `tokio::time::Instant::now()`, which also follows a paused test clock.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Upstream `ExpectationsTimeout`: after this long, unmet expectations no longer block a sync
/// (a watch event may have been lost; the controller then re-lists its view and re-decides).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The outstanding creations and deletions of one controller key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub add: i64,
    pub del: i64,
}

impl Pending {
    /// Upstream `ControlleeExpectations.Fulfilled`: counts may go below zero (an observation that
    /// raced ahead of its expectation), which also counts as fulfilled.
    pub fn fulfilled(self) -> bool {
        self.add <= 0 && self.del <= 0
    }
}

#[derive(Debug, Clone)]
struct Record {
    pending: Pending,
    /// When the expectations were set; raising or lowering does not renew it (as upstream).
    set_at: Instant,
    /// Keys (pod UIDs or `namespace/name`) whose deletion is still awaited.
    deleting: HashSet<String>,
}

impl Record {
    fn expired(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.set_at) > ttl
    }
}

/// Expectations per controller key (`namespace/name` of the owner). Thread-safe.
#[derive(Debug)]
pub struct ControllerExpectations {
    ttl: Duration,
    records: Mutex<HashMap<String, Record>>,
}

impl Default for ControllerExpectations {
    fn default() -> Self {
        Self::new()
    }
}

fn to_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ControllerExpectations {
    pub fn new() -> Self {
        Self::with_ttl(EXPECTATIONS_TIMEOUT)
    }

    /// A different timeout than upstream's five minutes (tests, or controllers that need one).
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Expectation bookkeeping stays consistent across a panic elsewhere (each update is a single
    /// map operation), so a poisoned lock is taken over rather than propagated.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upstream `SetExpectations`: replaces whatever was expected for `key`, restarting the timeout.
    /// Deletions set this way are counted only (see [`lower_expectations`](Self::lower_expectations)).
    pub fn set_expectations(&self, key: &str, adds: usize, dels: usize, now: Instant) {
        let record = Record {
            pending: Pending {
                add: to_count(adds),
                del: to_count(dels),
            },
            set_at: now,
            deleting: HashSet::new(),
        };
        self.lock().insert(key.to_owned(), record);
    }

    /// Upstream `ExpectCreations`: call before issuing `adds` creates.
    pub fn expect_creations(&self, key: &str, adds: usize, now: Instant) {
        self.set_expectations(key, adds, 0, now);
    }

    /// Upstream `UIDTrackingControllerExpectations.ExpectDeletions`: call before deleting the
    /// objects named by `deletion_keys` (their UIDs, or `namespace/name` as the ReplicaSet
    /// controller uses). Replaces whatever was expected for `key`; duplicates count once.
    pub fn expect_deletions<I, S>(&self, key: &str, deletion_keys: I, now: Instant)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let deleting: HashSet<String> = deletion_keys.into_iter().map(Into::into).collect();
        let mut records = self.lock();
        if let Some(previous) = records.get(key)
            && !previous.deleting.is_empty()
        {
            // Upstream logs the same: a sync decided on new deletions before seeing the old ones.
            tracing::warn!(
                key,
                outstanding = previous.deleting.len(),
                "clobbering existing delete expectations"
            );
        }
        let record = Record {
            pending: Pending {
                add: 0,
                del: to_count(deleting.len()),
            },
            set_at: now,
            deleting,
        };
        records.insert(key.to_owned(), record);
    }

    /// Upstream `CreationObserved`: an informer saw one of the expected creations (or a create
    /// failed, so it will never be seen).
    pub fn creation_observed(&self, key: &str) {
        self.lower_expectations(key, 1, 0);
    }

    /// Upstream `UIDTrackingControllerExpectations.DeletionObserved`: counts the deletion of
    /// `deletion_key` once, and only if it was expected. Treating "deletionTimestamp set" and the
    /// final delete event as the same deletion relies on this. A delete that failed is reported
    /// here too (as upstream does), since it will never be observed.
    pub fn deletion_observed(&self, key: &str, deletion_key: &str) {
        let mut records = self.lock();
        if let Some(record) = records.get_mut(key)
            && record.deleting.remove(deletion_key)
        {
            record.pending.del -= 1;
        }
    }

    /// Upstream `RaiseExpectations`: no effect without a record.
    pub fn raise_expectations(&self, key: &str, adds: usize, dels: usize) {
        if let Some(record) = self.lock().get_mut(key) {
            record.pending.add = record.pending.add.saturating_add(to_count(adds));
            record.pending.del = record.pending.del.saturating_add(to_count(dels));
        }
    }

    /// Upstream `LowerExpectations`: no effect without a record. Also the way to count a deletion
    /// set with [`set_expectations`](Self::set_expectations), or one that failed and will never be
    /// observed (upstream then lowers by one too).
    pub fn lower_expectations(&self, key: &str, adds: usize, dels: usize) {
        if let Some(record) = self.lock().get_mut(key) {
            record.pending.add = record.pending.add.saturating_sub(to_count(adds));
            record.pending.del = record.pending.del.saturating_sub(to_count(dels));
        }
    }

    /// Upstream `SatisfiedExpectations`: whether a sync of `key` may act on the cache now. True
    /// when nothing is expected, when everything expected was observed, or when the expectations
    /// are older than the timeout.
    pub fn satisfied(&self, key: &str, now: Instant) -> bool {
        let records = self.lock();
        let Some(record) = records.get(key) else {
            return true;
        };
        if record.pending.fulfilled() {
            return true;
        }
        if record.expired(now, self.ttl) {
            tracing::debug!(key, pending = ?record.pending, "controller expectations expired");
            return true;
        }
        false
    }

    /// What is still outstanding for `key`, if anything was set.
    pub fn pending(&self, key: &str) -> Option<Pending> {
        self.lock().get(key).map(|record| record.pending)
    }

    /// Keys whose deletion `key` still awaits, sorted (for logs and tests).
    pub fn pending_deletions(&self, key: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .get(key)
            .map(|record| record.deleting.iter().cloned().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    /// Upstream `DeleteExpectations`: forget `key` entirely (its owner was deleted).
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RS: &str = "default/web";

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_key_without_expectations_is_satisfied() {
        let exp = ControllerExpectations::new();
        assert!(exp.satisfied(RS, t0()));
        assert_eq!(exp.pending(RS), None);
    }

    #[test]
    fn a_lagging_cache_never_double_creates() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_creations(RS, 3, now);
        exp.creation_observed(RS);
        exp.creation_observed(RS);
        assert!(!exp.satisfied(RS, now + Duration::from_secs(1)));
        assert_eq!(exp.pending(RS), Some(Pending { add: 1, del: 0 }));
        exp.creation_observed(RS);
        assert!(exp.satisfied(RS, now + Duration::from_secs(1)));
    }

    #[test]
    fn observations_racing_ahead_of_expectations_still_count_as_fulfilled() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_creations(RS, 1, now);
        exp.creation_observed(RS);
        exp.creation_observed(RS);
        assert_eq!(exp.pending(RS), Some(Pending { add: -1, del: 0 }));
        assert!(exp.satisfied(RS, now));
    }

    #[test]
    fn deletions_are_tracked_by_uid_and_the_same_uid_counts_once() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_deletions(RS, ["uid-1", "uid-2", "uid-2"], now);
        assert_eq!(exp.pending(RS), Some(Pending { add: 0, del: 2 }));
        // Graceful deletion: the update setting deletionTimestamp, then the delete event.
        exp.deletion_observed(RS, "uid-1");
        exp.deletion_observed(RS, "uid-1");
        assert!(!exp.satisfied(RS, now));
        assert_eq!(exp.pending_deletions(RS), ["uid-2"]);
        exp.deletion_observed(RS, "uid-unrelated");
        assert!(!exp.satisfied(RS, now));
        exp.deletion_observed(RS, "uid-2");
        assert!(exp.satisfied(RS, now));
        assert_eq!(exp.pending(RS), Some(Pending { add: 0, del: 0 }));
    }

    #[test]
    fn a_failed_delete_is_counted_so_the_sync_is_not_blocked_until_the_timeout() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_deletions(RS, ["uid-1"], now);
        exp.deletion_observed(RS, "uid-1");
        assert!(exp.satisfied(RS, now));
    }

    #[test]
    fn unmet_expectations_expire_after_five_minutes() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_creations(RS, 2, now);
        assert!(!exp.satisfied(RS, now + EXPECTATIONS_TIMEOUT));
        assert!(exp.satisfied(RS, now + EXPECTATIONS_TIMEOUT + Duration::from_nanos(1)));
    }

    #[test]
    fn raising_or_lowering_does_not_restart_the_timeout_but_setting_again_does() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_creations(RS, 1, now);
        exp.raise_expectations(RS, 2, 1);
        assert_eq!(exp.pending(RS), Some(Pending { add: 3, del: 1 }));
        exp.lower_expectations(RS, 1, 0);
        let later = now + EXPECTATIONS_TIMEOUT + Duration::from_secs(1);
        assert!(exp.satisfied(RS, later));
        exp.expect_creations(RS, 1, later);
        assert!(!exp.satisfied(RS, later + Duration::from_secs(1)));
    }

    #[test]
    fn raising_or_lowering_without_a_record_does_nothing() {
        let exp = ControllerExpectations::new();
        exp.raise_expectations(RS, 1, 1);
        exp.lower_expectations(RS, 1, 1);
        exp.creation_observed(RS);
        exp.deletion_observed(RS, "uid-1");
        assert_eq!(exp.pending(RS), None);
    }

    #[test]
    fn expecting_creations_replaces_earlier_deletion_expectations() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_deletions(RS, ["uid-1"], now);
        exp.expect_creations(RS, 2, now);
        assert_eq!(exp.pending(RS), Some(Pending { add: 2, del: 0 }));
        assert!(exp.pending_deletions(RS).is_empty());
    }

    #[test]
    fn counted_deletions_are_lowered_without_uids() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.set_expectations(RS, 1, 2, now);
        exp.creation_observed(RS);
        exp.lower_expectations(RS, 0, 2);
        assert!(exp.satisfied(RS, now));
    }

    #[test]
    fn delete_clears_the_record_for_one_key_only() {
        let exp = ControllerExpectations::new();
        let now = t0();
        exp.expect_creations(RS, 1, now);
        exp.expect_creations("default/other", 1, now);
        exp.delete(RS);
        assert_eq!(exp.pending(RS), None);
        assert!(exp.satisfied(RS, now));
        assert!(!exp.satisfied("default/other", now));
    }

    #[test]
    fn a_custom_timeout_is_honoured() {
        let exp = ControllerExpectations::with_ttl(Duration::from_secs(10));
        let now = t0();
        exp.expect_creations(RS, 1, now);
        assert!(!exp.satisfied(RS, now + Duration::from_secs(10)));
        assert!(exp.satisfied(RS, now + Duration::from_secs(11)));
    }
}
