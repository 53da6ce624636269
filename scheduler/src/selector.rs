//! Label selectors as the scheduler's plugins use them (k8s.io/apimachinery/pkg/labels and
//! `metav1.LabelSelectorAsSelector`): a nil `LabelSelector` selects nothing, an empty one
//! everything; `matchLabels` become `In` requirements.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement of a selector (`labels.Requirement`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            // `NotIn` matches a missing key (labels.Requirement.Matches).
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// `labels.Selector`: `Nothing` matches no set; `Requirements([])` is `Everything`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Nothing,
    Requirements(Vec<Requirement>),
}

impl Default for Selector {
    fn default() -> Self {
        Selector::everything()
    }
}

impl Selector {
    pub fn everything() -> Self {
        Selector::Requirements(Vec::new())
    }

    /// `labels.SelectorFromSet` / `Set.AsSelector`.
    pub fn from_set(set: &BTreeMap<String, String>) -> Self {
        Selector::Requirements(
            set.iter()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
        )
    }

    /// `metav1.LabelSelectorAsSelector`: errors on operators and value lists the API would
    /// reject.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Self, String> {
        let Some(sel) = sel else {
            return Ok(Selector::Nothing);
        };
        let mut reqs: Vec<Requirement> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let key = e.key.clone();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(
                        "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                            .to_string(),
                    );
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(
                        "values: Invalid value: for 'exists', 'doesnotexist' operators, values set must be empty"
                            .to_string(),
                    );
                }
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                op => return Err(format!("{op:?} is not a valid label selector operator")),
            };
            reqs.push(r);
        }
        Ok(Selector::Requirements(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::Requirements(rs) => rs.iter().all(|r| r.matches(labels)),
        }
    }

    /// `Selector.Empty()`: true for `Everything`, false for `Nothing`.
    pub fn is_empty(&self) -> bool {
        matches!(self, Selector::Requirements(rs) if rs.is_empty())
    }

    /// `Selector.Add`: `Nothing` stays `Nothing`.
    pub fn add(&mut self, more: impl IntoIterator<Item = Requirement>) {
        if let Selector::Requirements(rs) = self {
            rs.extend(more);
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        match self {
            Selector::Nothing => &[],
            Selector::Requirements(rs) => rs,
        }
    }
}

/// The labels of an object, or none.
pub fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> Option<LabelSelector> {
        serde_json::from_value(v).expect("selector")
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_nil_selector_selects_nothing_and_an_empty_one_everything() {
        let nothing = Selector::from_label_selector(None).expect("ok");
        assert!(!nothing.matches(&set(&[])));
        assert!(!nothing.is_empty());
        let all = Selector::from_label_selector(sel(json!({})).as_ref()).expect("ok");
        assert!(all.matches(&set(&[("a", "b")])));
        assert!(all.is_empty());
    }

    #[test]
    fn labels_and_expressions_must_all_match() {
        let s = Selector::from_label_selector(
            sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "env", "operator": "Exists"},
                {"key": "skip", "operator": "DoesNotExist"}]}))
            .as_ref(),
        )
        .expect("ok");
        assert!(s.matches(&set(&[("app", "web"), ("env", "x")])));
        assert!(!s.matches(&set(&[("app", "web"), ("env", "x"), ("tier", "db")])));
        assert!(!s.matches(&set(&[("app", "web")])));
        assert!(!s.matches(&set(&[("app", "web"), ("env", "x"), ("skip", "1")])));
    }

    #[test]
    fn invalid_operators_and_value_lists_are_errors() {
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        ] {
            assert!(
                Selector::from_label_selector(sel(bad.clone()).as_ref()).is_err(),
                "{bad}"
            );
        }
    }
}
