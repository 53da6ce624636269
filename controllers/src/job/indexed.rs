//! Completion indexes of Indexed Jobs (upstream `pkg/controller/job/indexed_job_utils.go`):
//! ordered interval lists as written in `status.completedIndexes` / `status.failedIndexes`
//! ("1,3-5,7"), the completion index and per-index failure-count annotations of pods, and the
//! choice of the next indexes to create.

use std::collections::BTreeSet;
use std::fmt;

use crate::cache::Pod;

pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
pub const INDEX_IGNORED_FAILURE_COUNT_ANNOTATION: &str =
    "batch.kubernetes.io/job-index-ignored-failure-count";
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Upstream `names.MaxGeneratedNameLength` (63 - 5 random characters).
const MAX_GENERATED_NAME_LENGTH: usize = 58;

/// A closed interval of indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub first: i64,
    pub last: i64,
}

/// Upstream `orderedIntervals`: sorted, non-overlapping, non-adjacent intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(pub Vec<Interval>);

impl Intervals {
    /// Upstream `parseIndexesFromString`: corrupt intervals are skipped, indexes at or above
    /// `completions` dropped, adjacent intervals merged.
    pub fn parse(s: &str, completions: i64) -> Intervals {
        let mut out: Vec<Interval> = Vec::new();
        if s.is_empty() {
            return Intervals(out);
        }
        for part in s.split(',') {
            let mut limits = part.split('-');
            let Some(Ok(first)) = limits.next().map(str::parse::<i64>) else {
                tracing::info!(interval = part, "corrupted indexes interval, ignoring");
                continue;
            };
            if first >= completions {
                break;
            }
            let last = match limits.next() {
                Some(l) => match l.parse::<i64>() {
                    Ok(l) => l.min(completions - 1),
                    Err(_) => {
                        tracing::info!(interval = part, "corrupted indexes interval, ignoring");
                        continue;
                    }
                },
                None => first,
            };
            match out.last_mut() {
                Some(prev) if prev.last == first - 1 => prev.last = last,
                _ => out.push(Interval { first, last }),
            }
        }
        Intervals(out)
    }

    /// Upstream `withOrderedIndexes`: these intervals plus `new` (sorted ascending).
    pub fn with_ordered_indexes(&self, new: &[i64]) -> Intervals {
        let mut out: Vec<Interval> = Vec::new();
        let mut push = |iv: Interval| match out.last_mut() {
            Some(prev) if iv.first <= prev.last + 1 => prev.last = prev.last.max(iv.last),
            _ => out.push(iv),
        };
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < new.len() {
            if self.0[i].first < new[j] {
                push(self.0[i]);
                i += 1;
            } else {
                push(Interval {
                    first: new[j],
                    last: new[j],
                });
                j += 1;
            }
        }
        for iv in &self.0[i..] {
            push(*iv);
        }
        for &n in &new[j..] {
            push(Interval { first: n, last: n });
        }
        Intervals(out)
    }

    /// Upstream `merge`: the union of two interval lists.
    pub fn merge(&self, other: &Intervals) -> Intervals {
        let mut all: Vec<Interval> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_by_key(|iv| iv.first);
        let mut out: Vec<Interval> = Vec::new();
        for iv in all {
            match out.last_mut() {
                Some(prev) if iv.first <= prev.last + 1 => prev.last = prev.last.max(iv.last),
                _ => out.push(iv),
            }
        }
        Intervals(out)
    }

    pub fn total(&self) -> i64 {
        self.0.iter().map(|iv| iv.last - iv.first + 1).sum()
    }

    pub fn has(&self, ix: i64) -> bool {
        let pos = self.0.partition_point(|iv| iv.last < ix);
        self.0.get(pos).is_some_and(|iv| iv.first <= ix)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Upstream `orderedIntervals.String`: two-element intervals print as "a,b", longer as "a-b".
impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, iv) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", iv.first)?;
            if iv.last == iv.first + 1 {
                write!(f, ",{}", iv.last)?;
            } else if iv.last > iv.first {
                write!(f, "-{}", iv.last)?;
            }
        }
        Ok(())
    }
}

/// Upstream `getCompletionIndex`: the pod's completion index, if it has a valid one.
pub fn completion_index(pod: &Pod) -> Option<i64> {
    let v = pod
        .metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?;
    // Go's strconv.Atoi: an optional sign and decimal digits.
    let i: i64 = v.parse().ok()?;
    (i >= 0).then_some(i)
}

/// A completion index below `completions`.
pub fn valid_index(pod: &Pod, completions: i64) -> Option<i64> {
    completion_index(pod).filter(|ix| *ix < completions)
}

fn annotation_count(pod: &Pod, key: &str) -> i64 {
    let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get(key)) else {
        return 0;
    };
    match v.parse::<i32>() {
        Ok(n) if n >= 0 => i64::from(n),
        _ => {
            tracing::info!(annotation = key, value = %v, "invalid failure count annotation, treating as 0");
            0
        }
    }
}

/// Upstream `getIndexFailureCount`.
pub fn index_failure_count(pod: &Pod) -> i64 {
    annotation_count(pod, INDEX_FAILURE_COUNT_ANNOTATION)
}

/// Upstream `getIndexAbsoluteFailureCount`: counted plus ignored failures.
pub fn index_absolute_failure_count(pod: &Pod) -> i64 {
    index_failure_count(pod) + annotation_count(pod, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION)
}

/// Upstream `getNewIndexFailureCounts`: the counts a replacement of `replaced` carries;
/// `counted` says whether that pod's failure counts (the pod failure policy may ignore it).
pub fn new_index_failure_counts(replaced: Option<&Pod>, counted: bool) -> (i64, i64) {
    let Some(p) = replaced else {
        return (0, 0);
    };
    let failures = index_failure_count(p);
    let ignored = annotation_count(p, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION);
    if counted {
        (failures + 1, ignored)
    } else {
        (failures, ignored + 1)
    }
}

/// Upstream `firstPendingIndexes`: the first `count` indexes below `completions` that are neither
/// active nor in `done` (succeeded, and failed with backoffLimitPerIndex).
pub fn first_pending_indexes(
    active_indexes: &BTreeSet<i64>,
    done: &Intervals,
    count: usize,
    completions: i64,
) -> Vec<i64> {
    let mut out = Vec::new();
    if count == 0 {
        return out;
    }
    let active: Vec<i64> = active_indexes.iter().copied().collect();
    let non_pending = done.with_ordered_indexes(&active);
    let mut candidate = 0;
    for iv in &non_pending.0 {
        while candidate < completions && out.len() < count && candidate < iv.first {
            out.push(candidate);
            candidate += 1;
        }
        candidate = candidate.max(iv.last + 1);
    }
    while candidate < completions && out.len() < count {
        out.push(candidate);
        candidate += 1;
    }
    out
}

/// Upstream `podGenerateNameWithIndex`: `<job>-<index>-`, the job name cut so the prefix leaves
/// room for the random suffix.
pub fn generate_name_with_index(job_name: &str, index: i64) -> String {
    let suffix = format!("-{index}-");
    let prefix = format!("{job_name}{suffix}");
    if prefix.len() > MAX_GENERATED_NAME_LENGTH {
        let keep = MAX_GENERATED_NAME_LENGTH.saturating_sub(suffix.len());
        let cut: String = job_name.chars().take(keep).collect();
        return format!("{cut}{suffix}");
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod_with_index(ix: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some([(COMPLETION_INDEX_ANNOTATION.to_owned(), ix.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn interval_strings_round_trip() {
        for s in ["", "0", "0,1", "0-2", "1,3-5,7", "0,1,3,4,6-9"] {
            assert_eq!(Intervals::parse(s, 100).to_string(), s, "{s}");
        }
    }

    #[test]
    fn parsing_merges_adjacent_intervals_and_drops_indexes_beyond_completions() {
        assert_eq!(Intervals::parse("0,1-2,3", 10).to_string(), "0-3");
        assert_eq!(Intervals::parse("1,3-8,12", 6).to_string(), "1,3-5");
        assert_eq!(Intervals::parse("x,2,4-y,5", 10).to_string(), "2,5");
        assert_eq!(Intervals::parse("1-3", 10).total(), 3);
    }

    #[test]
    fn new_indexes_are_merged_into_existing_intervals() {
        let iv = Intervals::parse("1,5-7", 100);
        assert_eq!(
            iv.with_ordered_indexes(&[0, 2, 4, 9]).to_string(),
            "0-2,4-7,9"
        );
        assert_eq!(
            Intervals::default()
                .with_ordered_indexes(&[3, 4])
                .to_string(),
            "3,4"
        );
        assert_eq!(
            Intervals::parse("1-2", 9)
                .merge(&Intervals::parse("3,7", 9))
                .to_string(),
            "1-3,7"
        );
    }

    #[test]
    fn membership_is_answered_by_binary_search() {
        let iv = Intervals::parse("1,3-5,7", 100);
        let has: Vec<i64> = (0..9).filter(|i| iv.has(*i)).collect();
        assert_eq!(has, vec![1, 3, 4, 5, 7]);
    }

    #[test]
    fn completion_index_must_be_a_non_negative_integer() {
        assert_eq!(completion_index(&pod_with_index("3")), Some(3));
        assert_eq!(completion_index(&pod_with_index("-1")), None);
        assert_eq!(completion_index(&pod_with_index("a")), None);
        assert_eq!(completion_index(&Pod::default()), None);
    }

    #[test]
    fn first_pending_indexes_skip_active_and_done_indexes() {
        let active: BTreeSet<i64> = [1, 4].into();
        let done = Intervals::parse("2,6-7", 10);
        assert_eq!(first_pending_indexes(&active, &done, 3, 10), vec![0, 3, 5]);
        assert_eq!(
            first_pending_indexes(&active, &done, 10, 10),
            vec![0, 3, 5, 8, 9]
        );
        assert_eq!(
            first_pending_indexes(&active, &done, 0, 10),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn generated_names_keep_the_index_when_the_job_name_is_long() {
        assert_eq!(generate_name_with_index("pi", 3), "pi-3-");
        let long = "a".repeat(70);
        let name = generate_name_with_index(&long, 12);
        assert_eq!(name.len(), MAX_GENERATED_NAME_LENGTH);
        assert!(name.ends_with("-12-"));
    }
}
