//! Finalizer-removal expectations (upstream `pkg/controller/job/tracking_utils.go`): the pod UIDs
//! whose `batch.kubernetes.io/job-tracking` finalizer this controller removed and whose update it
//! has not seen yet, per Job key. A sync on a lagging cache must not count those pods again.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
pub struct FinalizerExpectations {
    by_job: Mutex<HashMap<String, HashSet<String>>>,
}

impl FinalizerExpectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.by_job.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upstream `expectFinalizersRemoved`.
    pub fn expect_removed<'a>(&self, key: &str, uids: impl IntoIterator<Item = &'a str>) {
        self.lock()
            .entry(key.to_owned())
            .or_default()
            .extend(uids.into_iter().map(str::to_owned));
    }

    /// Upstream `finalizerRemovalObserved`.
    pub fn observed(&self, key: &str, uid: &str) {
        let mut all = self.lock();
        if let Some(set) = all.get_mut(key) {
            set.remove(uid);
            if set.is_empty() {
                all.remove(key);
            }
        }
    }

    /// Upstream `getExpectedUIDs`.
    pub fn expected(&self, key: &str) -> HashSet<String> {
        self.lock().get(key).cloned().unwrap_or_default()
    }

    /// Upstream `deleteExpectations`.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_expected_until_observed_per_job() {
        let e = FinalizerExpectations::default();
        e.expect_removed("ns/a", ["u1", "u2"]);
        e.expect_removed("ns/b", ["u3"]);
        e.observed("ns/a", "u1");
        assert_eq!(e.expected("ns/a"), HashSet::from(["u2".to_owned()]));
        e.observed("ns/a", "u2");
        assert!(e.expected("ns/a").is_empty());
        e.delete("ns/b");
        assert!(e.expected("ns/b").is_empty());
    }
}
