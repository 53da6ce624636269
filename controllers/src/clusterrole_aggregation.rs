//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` gets as rules
//! the union of the rules of every other ClusterRole its selectors match (this is how `admin`,
//! `edit` and `view` pick up the rules labelled `rbac.authorization.k8s.io/aggregate-to-*`).
//!
//! Mirrors kubernetes/kubernetes
//! pkg/controller/clusterroleaggregation/clusterroleaggregation_controller.go.

use std::collections::BTreeMap;

use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};

use crate::manager::ControllerContext;

pub const NAME: &str = "clusterrole-aggregation-controller";

/// Upstream: `crac.Run(ctx, 5)`.
const WORKERS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// A ClusterRole as aggregation sees it.
#[derive(Debug, Clone, Copy)]
pub struct RoleView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub rules: &'a [PolicyRule],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid clusterRoleSelector: {0}")]
    Selector(String),
    #[error("applying aggregated rules to ClusterRole {name}: {error}")]
    Apply { name: String, error: String },
}

/// The aggregated rules of role `name`: for each selector in order, the matching roles other than
/// itself sorted by name, each rule kept the first time it is seen (upstream `syncClusterRole`).
pub fn aggregate(
    name: &str,
    selectors: &[LabelSelector],
    roles: &[RoleView<'_>],
) -> Result<Vec<PolicyRule>, Error> {
    let mut sorted: Vec<&RoleView<'_>> = roles.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    let mut out: Vec<PolicyRule> = Vec::new();
    for selector in selectors {
        let selector =
            Selector::try_from(selector.clone()).map_err(|e| Error::Selector(e.to_string()))?;
        for role in sorted.iter().filter(|r| r.name != name) {
            if !selector.matches(role.labels) {
                continue;
            }
            for rule in role.rules {
                if !out.iter().any(|have| rules_equal(have, rule)) {
                    out.push(rule.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Whether the role's current rules already equal the aggregate (apimachinery's semantic
/// equality, where an empty list and a missing one are the same).
pub fn rules_up_to_date(current: &[PolicyRule], aggregated: &[PolicyRule]) -> bool {
    current.len() == aggregated.len()
        && current
            .iter()
            .zip(aggregated)
            .all(|(a, b)| rules_equal(a, b))
}

fn rules_equal(a: &PolicyRule, b: &PolicyRule) -> bool {
    fn list(v: &Option<Vec<String>>) -> &[String] {
        v.as_deref().unwrap_or(&[])
    }
    a.verbs == b.verbs
        && list(&a.api_groups) == list(&b.api_groups)
        && list(&a.resources) == list(&b.resources)
        && list(&a.resource_names) == list(&b.resource_names)
        && list(&a.non_resource_urls) == list(&b.non_resource_urls)
}

/// The server-side apply body (upstream applies with field manager
/// `clusterrole-aggregation-controller`, forced).
pub fn apply_body(name: &str, rules: &[PolicyRule]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    })
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let queue: WorkQueue<String> =
        WorkQueue::new("ClusterRoleAggregator", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics);
    let roles = ctx.informers.informer::<ClusterRole>();
    {
        // Upstream enqueues every aggregated role on any ClusterRole change: the set is small and
        // the dependency graph unknown.
        let q = queue.clone();
        let store = roles.store().clone();
        roles.add_handler(move |_change| {
            for role in store.state() {
                if role.aggregation_rule.is_some()
                    && let Some(name) = &role.metadata.name
                {
                    q.add(name.clone());
                }
            }
        });
    }
    let client = ctx.client.clone();
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting controller");
        run_workers(queue, WORKERS, token, move |name: String| {
            let (client, roles) = (client.clone(), roles.clone());
            async move {
                let Some(role) = roles.get(None, &name) else {
                    return Ok(());
                };
                let Some(rule) = &role.aggregation_rule else {
                    return Ok(());
                };
                let all = roles.store().state();
                let empty = BTreeMap::new();
                let views: Vec<RoleView<'_>> = all
                    .iter()
                    .map(|r| RoleView {
                        name: r.metadata.name.as_deref().unwrap_or_default(),
                        labels: r.metadata.labels.as_ref().unwrap_or(&empty),
                        rules: r.rules.as_deref().unwrap_or(&[]),
                    })
                    .collect();
                let selectors = rule.cluster_role_selectors.as_deref().unwrap_or(&[]);
                let aggregated = aggregate(&name, selectors, &views)?;
                if rules_up_to_date(role.rules.as_deref().unwrap_or(&[]), &aggregated) {
                    return Ok(());
                }
                let params = PatchParams::apply(NAME).force();
                Api::<ClusterRole>::all(client)
                    .patch(
                        &name,
                        &params,
                        &Patch::Apply(apply_body(&name, &aggregated)),
                    )
                    .await
                    .map_err(|e| Error::Apply {
                        name: name.clone(),
                        error: e.to_string(),
                    })?;
                tracing::debug!(clusterrole = %name, rules = aggregated.len(), "aggregated rules");
                Ok::<(), Error>(())
            }
        })
        .await;
        Ok(())
    }
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn rule(verbs: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
            api_groups: Some(vec![String::new()]),
            resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
            ..Default::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            ..Default::default()
        }
    }

    #[test]
    fn rules_of_matching_roles_are_unioned_in_name_order() {
        let (la, lb, lc) = (
            labels(&[("agg", "yes")]),
            labels(&[("agg", "yes")]),
            labels(&[("agg", "no")]),
        );
        let (ra, rb, rc) = (
            [rule(&["get"], &["pods"])],
            [rule(&["list"], &["pods"])],
            [rule(&["delete"], &["pods"])],
        );
        let roles = [
            RoleView {
                name: "b",
                labels: &lb,
                rules: &rb,
            },
            RoleView {
                name: "a",
                labels: &la,
                rules: &ra,
            },
            RoleView {
                name: "c",
                labels: &lc,
                rules: &rc,
            },
        ];
        let got = aggregate("target", &[match_labels(&[("agg", "yes")])], &roles);
        assert_eq!(
            got,
            Ok(vec![rule(&["get"], &["pods"]), rule(&["list"], &["pods"])])
        );
    }

    #[test]
    fn duplicate_rules_are_kept_once_at_their_first_position() {
        let l = labels(&[("agg", "yes")]);
        let ra = [rule(&["get"], &["pods"]), rule(&["list"], &["pods"])];
        let rb = [
            rule(&["list"], &["pods"]),
            rule(&["get"], &["pods"]),
            rule(&["watch"], &["pods"]),
        ];
        let roles = [
            RoleView {
                name: "a",
                labels: &l,
                rules: &ra,
            },
            RoleView {
                name: "b",
                labels: &l,
                rules: &rb,
            },
        ];
        let got = aggregate("target", &[match_labels(&[("agg", "yes")])], &roles);
        assert_eq!(
            got,
            Ok(vec![
                rule(&["get"], &["pods"]),
                rule(&["list"], &["pods"]),
                rule(&["watch"], &["pods"])
            ])
        );
    }

    #[test]
    fn selectors_are_taken_in_order_and_a_role_matched_twice_adds_nothing_new() {
        let (la, lb) = (labels(&[("x", "1")]), labels(&[("y", "1"), ("x", "1")]));
        let (ra, rb) = ([rule(&["get"], &["a"])], [rule(&["get"], &["b"])]);
        let roles = [
            RoleView {
                name: "a",
                labels: &la,
                rules: &ra,
            },
            RoleView {
                name: "b",
                labels: &lb,
                rules: &rb,
            },
        ];
        let got = aggregate(
            "target",
            &[match_labels(&[("y", "1")]), match_labels(&[("x", "1")])],
            &roles,
        );
        assert_eq!(
            got,
            Ok(vec![rule(&["get"], &["b"]), rule(&["get"], &["a"])])
        );
    }

    #[test]
    fn the_aggregating_role_never_includes_itself() {
        let l = labels(&[("agg", "yes")]);
        let own = [rule(&["*"], &["*"])];
        let other = [rule(&["get"], &["pods"])];
        let roles = [
            RoleView {
                name: "target",
                labels: &l,
                rules: &own,
            },
            RoleView {
                name: "other",
                labels: &l,
                rules: &other,
            },
        ];
        let got = aggregate("target", &[match_labels(&[("agg", "yes")])], &roles);
        assert_eq!(got, Ok(vec![rule(&["get"], &["pods"])]));
    }

    #[test]
    fn match_expressions_select_too() {
        let (la, lb) = (labels(&[("tier", "gold")]), labels(&[("tier", "bronze")]));
        let (ra, rb) = ([rule(&["get"], &["a"])], [rule(&["get"], &["b"])]);
        let roles = [
            RoleView {
                name: "a",
                labels: &la,
                rules: &ra,
            },
            RoleView {
                name: "b",
                labels: &lb,
                rules: &rb,
            },
        ];
        let selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["gold".into(), "silver".into()]),
            }]),
            ..Default::default()
        };
        assert_eq!(
            aggregate("target", &[selector], &roles),
            Ok(vec![rule(&["get"], &["a"])])
        );
    }

    #[test]
    fn no_selectors_or_no_matches_aggregate_to_no_rules() {
        let l = labels(&[]);
        let r = [rule(&["get"], &["a"])];
        let roles = [RoleView {
            name: "a",
            labels: &l,
            rules: &r,
        }];
        assert_eq!(aggregate("target", &[], &roles), Ok(vec![]));
        assert_eq!(
            aggregate("target", &[match_labels(&[("k", "v")])], &roles),
            Ok(vec![])
        );
    }

    #[test]
    fn an_invalid_selector_is_an_error() {
        let selector = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Sometimes".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(matches!(
            aggregate("target", &[selector], &[]),
            Err(Error::Selector(_))
        ));
    }

    #[test]
    fn missing_and_empty_lists_compare_equal() {
        let a = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into()]),
            ..Default::default()
        };
        let b = PolicyRule {
            api_groups: Some(vec![]),
            resources: Some(vec![]),
            resource_names: Some(vec![]),
            ..a.clone()
        };
        assert!(rules_up_to_date(&[a], &[b]));
    }

    #[test]
    fn different_order_or_content_is_not_up_to_date() {
        let (a, b) = (rule(&["get"], &["a"]), rule(&["get"], &["b"]));
        assert!(!rules_up_to_date(
            &[a.clone(), b.clone()],
            &[b.clone(), a.clone()]
        ));
        assert!(!rules_up_to_date(std::slice::from_ref(&a), &[a.clone(), b]));
        assert!(rules_up_to_date(&[], &[]));
    }

    #[test]
    fn the_apply_body_names_the_role_and_carries_the_rules() {
        let body = apply_body("edit", &[rule(&["create"], &["deployments"])]);
        assert_eq!(body["metadata"]["name"], "edit");
        assert_eq!(body["kind"], "ClusterRole");
        assert_eq!(body["rules"][0]["resources"][0], "deployments");
    }
}
