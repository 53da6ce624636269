//! Success policy of Indexed Jobs (upstream `pkg/controller/job/success_policy.go`): the Job
//! succeeds early once some rule's set of indexes (or count of them) has succeeded.

use k8s_openapi::api::batch::v1::SuccessPolicy;

use super::indexed::Intervals;

/// Upstream `matchSuccessPolicy`: the `SuccessCriteriaMet` message when a rule matches.
pub fn match_success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i64,
    succeeded: &Intervals,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        let count = rule.succeeded_count.map(i64::from);
        if let Some(indexes) = &rule.succeeded_indexes {
            let required = Intervals::parse(indexes, completions);
            if required.is_empty() {
                continue;
            }
            if matches_indexes(&required, succeeded, count) {
                return Some(format!("Matched rules at index {index}"));
            }
        } else if let Some(c) = count
            && succeeded.total() >= c
        {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

/// Upstream `matchSucceededIndexesRule`: all required indexes succeeded, or at least `count` of
/// them.
fn matches_indexes(required: &Intervals, succeeded: &Intervals, count: Option<i64>) -> bool {
    let contains: i64 = required
        .0
        .iter()
        .map(|r| {
            succeeded
                .0
                .iter()
                .map(|s| (r.last.min(s.last) - r.first.max(s.first) + 1).max(0))
                .sum::<i64>()
        })
        .sum();
    contains == required.total() || count.is_some_and(|c| contains >= c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::SuccessPolicyRule;

    fn rule(indexes: Option<&str>, count: Option<i32>) -> SuccessPolicyRule {
        SuccessPolicyRule {
            succeeded_indexes: indexes.map(Into::into),
            succeeded_count: count,
        }
    }

    fn check(rules: Vec<SuccessPolicyRule>, succeeded: &str) -> Option<String> {
        let p = SuccessPolicy { rules };
        match_success_policy(Some(&p), 10, &Intervals::parse(succeeded, 10))
    }

    #[test]
    fn no_policy_or_no_succeeded_index_never_matches() {
        assert_eq!(
            match_success_policy(None, 10, &Intervals::parse("0-9", 10)),
            None
        );
        assert_eq!(check(vec![rule(None, Some(1))], ""), None);
    }

    #[test]
    fn a_rule_with_indexes_matches_when_all_of_them_succeeded() {
        let rules = vec![rule(Some("0,2-4"), None)];
        assert_eq!(check(rules.clone(), "0,2-3"), None);
        assert_eq!(
            check(rules, "0-5").as_deref(),
            Some("Matched rules at index 0")
        );
    }

    #[test]
    fn a_rule_with_indexes_and_count_needs_only_that_many_of_them() {
        let rules = vec![rule(Some("1-6"), Some(2))];
        assert_eq!(check(rules.clone(), "0,7"), None);
        assert!(check(rules, "0,3,6").is_some());
    }

    #[test]
    fn a_count_only_rule_counts_all_succeeded_indexes_and_later_rules_are_reported_by_index() {
        let rules = vec![rule(Some("9"), None), rule(None, Some(3))];
        assert_eq!(check(rules.clone(), "0,1"), None);
        assert_eq!(
            check(rules, "0,1,5").as_deref(),
            Some("Matched rules at index 1")
        );
    }
}
