//! Pure helpers over pods and owner references shared by the workload controllers: pod readiness
//! and availability (upstream `pkg/api/v1/pod/util.go`), active/terminating filters
//! (`pkg/controller/controller_utils.go`), controllerRef lookups (`metav1.GetControllerOf`) and
//! label selectors (`metav1.LabelSelectorAsSelector`).

use std::collections::BTreeMap;

use crate::cache::Pod;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};

/// The pod's `Ready` condition, if it has one (upstream `GetPodReadyCondition`).
pub fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Upstream `podutil.IsPodReady`: the `Ready` condition is `True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready, for a ready pod (upstream `podReadyTime` in
/// controller_utils.go); `None` stands for Go's zero time.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Upstream `podutil.IsPodAvailable`: ready, and (with `min_ready_seconds` > 0) ready for longer
/// than that at `now`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => since
            .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
            .is_ok_and(|t| t < now),
        None => false,
    }
}

/// Seconds until a ready pod becomes available, if it is ready but not yet available.
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    if min_ready_seconds <= 0 || !is_pod_ready(pod) || is_pod_available(pod, min_ready_seconds, now)
    {
        return None;
    }
    let since = ready_since(pod)?;
    let at = since
        .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .ok()?;
    Some(at.duration_since(now).as_secs().max(0) + 1)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Upstream `IsPodTerminal`: the pod reached `Succeeded` or `Failed`.
pub fn is_pod_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Upstream `controller.IsPodActive`: not terminal and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Upstream `controller.IsPodTerminating`: being deleted but not terminal yet.
pub fn is_pod_terminating(pod: &Pod) -> bool {
    !is_pod_terminal(pod) && pod.metadata.deletion_timestamp.is_some()
}

/// Upstream `metav1.GetControllerOf`: the owner reference with `controller: true`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// `namespace/name`, the cache key of a namespaced object (upstream `MetaNamespaceKeyFunc`,
/// `controller.PodKey`).
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A parsed label selector (upstream `labels.Selector` from `LabelSelectorAsSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    /// A nil `LabelSelector` selects nothing, an empty one everything.
    nothing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{0:?} is not a valid label selector operator")]
    Operator(String),
    #[error("for 'in', 'notin' operators, values set can't be empty")]
    EmptyValues,
    #[error("values set must be empty for exists and does not exist")]
    ValuesNotAllowed,
}

impl Selector {
    /// Upstream `LabelSelectorAsSelector`: nil selects nothing; empty selects everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Selector, SelectorError> {
        let Some(sel) = sel else {
            return Ok(Selector {
                requirements: Vec::new(),
                nothing: true,
            });
        };
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for expr in sel.match_expressions.iter().flatten() {
            requirements.push(requirement(expr)?);
        }
        Ok(Selector {
            requirements,
            nothing: false,
        })
    }

    /// Whether the selector selects every object (`labels.Selector.Empty`).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.nothing {
            return false;
        }
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Upstream `labels.Set(...).AsSelectorPreValidated()`: every label must be present and equal.
    pub fn from_labels(labels: Option<&BTreeMap<String, String>>) -> Selector {
        Selector {
            requirements: labels
                .into_iter()
                .flatten()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
            nothing: false,
        }
    }
}

fn requirement(expr: &LabelSelectorRequirement) -> Result<Requirement, SelectorError> {
    let values = expr.values.clone().unwrap_or_default();
    let key = expr.key.clone();
    match expr.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(SelectorError::EmptyValues),
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" | "DoesNotExist" if !values.is_empty() => Err(SelectorError::ValuesNotAllowed),
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
        other => Err(SelectorError::Operator(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ready_pod(since: Timestamp) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(since)),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn a_nil_selector_selects_nothing_and_an_empty_one_everything() {
        let nil = Selector::from_label_selector(None).unwrap();
        assert!(!nil.matches(Some(&labels(&[("a", "b")]))));
        let empty = Selector::from_label_selector(Some(&LabelSelector::default())).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(None));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = Selector::from_label_selector(Some(&sel)).unwrap();
        assert!(s.matches(Some(&labels(&[("app", "web"), ("tier", "b")]))));
        assert!(!s.matches(Some(&labels(&[("app", "web"), ("tier", "c")]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("canary", "1")
        ]))));
    }

    #[test]
    fn bad_operators_and_value_sets_are_rejected() {
        let bad = |op: &str, values: Option<Vec<String>>| {
            Selector::from_label_selector(Some(&LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: op.into(),
                    values,
                }]),
                match_labels: None,
            }))
        };
        assert!(bad("Like", None).is_err());
        assert_eq!(bad("In", None), Err(SelectorError::EmptyValues));
        assert_eq!(
            bad("Exists", Some(vec!["x".into()])),
            Err(SelectorError::ValuesNotAllowed)
        );
    }

    #[test]
    fn a_pod_is_available_only_after_min_ready_seconds_have_passed() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let pod = ready_pod(Timestamp::from_second(1_000_000 - 5).unwrap());
        assert!(is_pod_available(&pod, 0, now));
        assert!(is_pod_available(&pod, 4, now));
        assert!(!is_pod_available(&pod, 5, now));
        assert!(!is_pod_available(&pod, 10, now));
        assert_eq!(seconds_until_available(&pod, 10, now), Some(6));
        assert_eq!(seconds_until_available(&pod, 4, now), None);
    }

    #[test]
    fn terminating_pods_are_not_active() {
        let mut pod = ready_pod(Timestamp::UNIX_EPOCH);
        assert!(is_pod_active(&pod));
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!is_pod_active(&pod));
        assert!(is_pod_terminating(&pod));
        pod.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(!is_pod_terminating(&pod));
    }
}
