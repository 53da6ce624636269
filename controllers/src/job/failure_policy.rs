//! Pod failure policy matching (upstream `pkg/controller/job/pod_failure_policy.go`): the first
//! rule that matches a failed pod decides whether the Job fails (`FailJob`), the failure is not
//! counted (`Ignore`), counted as usual (`Count`), or fails only the pod's index (`FailIndex`).

use crate::cache::{ContainerStatus, Pod};
use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

impl Action {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::FailJob => "FailJob",
            Action::FailIndex => "FailIndex",
            Action::Ignore => "Ignore",
            Action::Count => "Count",
        }
    }
}

/// What matching a failed pod says (upstream returns the same three values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The Job failure message, for a `FailJob` rule.
    pub fail_job_message: Option<String>,
    /// Whether the failure counts towards `backoffLimit` (false for `Ignore`).
    pub count_failed: bool,
    pub action: Option<Action>,
}

impl Match {
    fn none() -> Match {
        Match {
            fail_job_message: None,
            count_failed: true,
            action: None,
        }
    }
}

/// Upstream `matchPodFailurePolicy`.
pub fn match_pod_failure_policy(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Match {
    let Some(policy) = policy else {
        return Match::none();
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            match_on_exit_codes(pod, req).map(|cs| {
                let code = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map_or(0, |t| t.exit_code);
                format!(
                    "Container {} for pod {namespace}/{name} failed with exit code {code} matching {} rule at index {index}",
                    cs.name, rule.action
                )
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            pod.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .find(|c| {
                    patterns.iter().any(|p| {
                        p.type_ == c.type_ && p.status.as_deref().unwrap_or("True") == c.status
                    })
                })
                .map(|c| {
                    format!(
                        "Pod {namespace}/{name} has condition {} matching {} rule at index {index}",
                        c.type_, rule.action
                    )
                })
        } else {
            None
        };
        let Some(message) = matched else { continue };
        return match rule.action.as_str() {
            "Ignore" => Match {
                fail_job_message: None,
                count_failed: false,
                action: Some(Action::Ignore),
            },
            "Count" => Match {
                fail_job_message: None,
                count_failed: true,
                action: Some(Action::Count),
            },
            "FailJob" => Match {
                fail_job_message: Some(message),
                count_failed: true,
                action: Some(Action::FailJob),
            },
            "FailIndex" => Match {
                fail_job_message: None,
                count_failed: true,
                action: Some(Action::FailIndex),
            },
            // An action this version does not know: upstream's switch falls through to the next
            // rule.
            _ => continue,
        };
    }
    Match::none()
}

/// Upstream `matchOnExitCodes`: regular containers first, then init containers; only terminated
/// containers with a non-zero exit code take part.
fn match_on_exit_codes<'a>(
    pod: &'a Pod,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let find = |list: Option<&'a Vec<ContainerStatus>>| {
        list.into_iter().flatten().find(|cs| {
            let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                return false;
            };
            req.container_name.as_ref().is_none_or(|n| *n == cs.name)
                && t.exit_code != 0
                && match req.operator.as_str() {
                    "In" => req.values.contains(&t.exit_code),
                    "NotIn" => !req.values.contains(&t.exit_code),
                    _ => false,
                }
        })
    };
    find(status.container_statuses.as_ref())
        .or_else(|| find(status.init_container_statuses.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodStatus;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
    };
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, PodCondition};

    fn exit_rule(
        action: &str,
        container: Option<&str>,
        op: &str,
        values: &[i32],
    ) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: container.map(Into::into),
                operator: op.into(),
                values: values.to_vec(),
            }),
            on_pod_conditions: None,
        }
    }

    fn condition_rule(action: &str, type_: &str) -> PodFailurePolicyRule {
        PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: type_.into(),
                status: Some("True".into()),
            }]),
        }
    }

    fn terminated(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(Box::new(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            })),
            ..ContainerStatus::default()
        }
    }

    fn failed_pod(
        containers: Vec<ContainerStatus>,
        init: Vec<ContainerStatus>,
        conditions: &[&str],
    ) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some("p".into());
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(containers),
            init_container_statuses: Some(init),
            conditions: Some(
                conditions
                    .iter()
                    .map(|t| PodCondition {
                        type_: (*t).into(),
                        status: "True".into(),
                        ..PodCondition::default()
                    })
                    .collect(),
            ),
            ..PodStatus::default()
        });
        p
    }

    fn policy(rules: Vec<PodFailurePolicyRule>) -> PodFailurePolicy {
        PodFailurePolicy { rules }
    }

    #[test]
    fn without_a_policy_every_failure_counts() {
        let m = match_pod_failure_policy(None, &failed_pod(vec![terminated("c", 1)], vec![], &[]));
        assert_eq!(m, Match::none());
    }

    #[test]
    fn a_fail_job_rule_on_exit_codes_gives_the_upstream_message() {
        let p = policy(vec![exit_rule("FailJob", None, "In", &[1, 2, 3])]);
        let m = match_pod_failure_policy(
            Some(&p),
            &failed_pod(vec![terminated("main", 2)], vec![], &[]),
        );
        assert_eq!(m.action, Some(Action::FailJob));
        assert_eq!(
            m.fail_job_message.as_deref(),
            Some(
                "Container main for pod ns/p failed with exit code 2 matching FailJob rule at index 0"
            )
        );
    }

    #[test]
    fn exit_code_rules_match_in_and_not_in_and_never_exit_code_zero() {
        let cases: &[(&str, &[i32], i32, bool)] = &[
            ("In", &[1, 2], 1, true),
            ("In", &[1, 2], 3, false),
            ("NotIn", &[1, 2], 3, true),
            ("NotIn", &[1, 2], 2, false),
            ("NotIn", &[1], 0, false),
        ];
        for (op, values, code, matches) in cases {
            let p = policy(vec![exit_rule("Ignore", None, op, values)]);
            let m = match_pod_failure_policy(
                Some(&p),
                &failed_pod(vec![terminated("c", *code)], vec![], &[]),
            );
            assert_eq!(
                m.action == Some(Action::Ignore),
                *matches,
                "{op} {values:?} {code}"
            );
            assert_eq!(m.count_failed, !*matches);
        }
    }

    #[test]
    fn a_container_name_restricts_the_exit_code_rule() {
        let p = policy(vec![exit_rule("Count", Some("side"), "In", &[5])]);
        let other = failed_pod(vec![terminated("main", 5)], vec![], &[]);
        assert_eq!(match_pod_failure_policy(Some(&p), &other).action, None);
        let init = failed_pod(
            vec![terminated("main", 1)],
            vec![terminated("side", 5)],
            &[],
        );
        assert_eq!(
            match_pod_failure_policy(Some(&p), &init).action,
            Some(Action::Count)
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let p = policy(vec![
            condition_rule("Ignore", "DisruptionTarget"),
            exit_rule("FailJob", None, "In", &[137]),
            exit_rule("FailIndex", None, "NotIn", &[0]),
        ]);
        let disrupted = failed_pod(vec![terminated("c", 137)], vec![], &["DisruptionTarget"]);
        let m = match_pod_failure_policy(Some(&p), &disrupted);
        assert_eq!(m.action, Some(Action::Ignore));
        assert!(!m.count_failed);
        let killed = failed_pod(vec![terminated("c", 137)], vec![], &[]);
        assert_eq!(
            match_pod_failure_policy(Some(&p), &killed).action,
            Some(Action::FailJob)
        );
        let other = failed_pod(vec![terminated("c", 3)], vec![], &[]);
        let m = match_pod_failure_policy(Some(&p), &other);
        assert_eq!(m.action, Some(Action::FailIndex));
        assert!(m.count_failed && m.fail_job_message.is_none());
    }

    #[test]
    fn a_fail_job_rule_on_pod_conditions_names_the_condition() {
        let p = policy(vec![condition_rule("FailJob", "DisruptionTarget")]);
        let m = match_pod_failure_policy(
            Some(&p),
            &failed_pod(vec![], vec![], &["Ready", "DisruptionTarget"]),
        );
        assert_eq!(
            m.fail_job_message.as_deref(),
            Some("Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0")
        );
    }
}
