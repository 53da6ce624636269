//! Zones and disruption: how healthy each zone is, and how fast nodes in it may be tainted
//! NoExecute (which is what evicts their pods).
//!
//! - a zone with no Ready node is in `FullDisruption`; one with more than two not-Ready nodes
//!   making up at least `--unhealthy-zone-threshold` of it is in `PartialDisruption`; otherwise
//!   `Normal`;
//! - Normal and FullDisruption zones taint at `--node-eviction-rate`; PartialDisruption zones at
//!   `--secondary-node-eviction-rate` when larger than `--large-cluster-size-threshold`, else not at
//!   all;
//! - when every zone is fully disrupted the controller assumes its own view is broken (the control
//!   plane lost the nodes, not the nodes died): it stops all tainting and lifts the NoExecute taints
//!   it set ("master disruption mode"), and on the way out forgets how long nodes were silent.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/nodelifecycle/node_lifecycle_controller.go
//! (`ComputeZoneState`, `handleDisruption`, `setLimiterInZone`, `ReducedQPSFunc`) and
//! k8s.io/component-helpers/node/topology (`GetZoneKey`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";
pub const LABEL_REGION_BETA: &str = "failure-domain.beta.kubernetes.io/region";
/// Nodes with this label are left out of zone health.
pub const LABEL_EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// `GetZoneKey`: `region:\0:zone` from the beta labels, else the GA ones; "" without either.
pub fn zone_key(node: &Node) -> String {
    let Some(labels) = node.metadata.labels.as_ref() else {
        return String::new();
    };
    let pick = |beta: &str, ga: &str| {
        labels
            .get(beta)
            .or_else(|| labels.get(ga))
            .cloned()
            .unwrap_or_default()
    };
    let zone = pick(LABEL_ZONE_BETA, LABEL_ZONE);
    let region = pick(LABEL_REGION_BETA, LABEL_REGION);
    if zone.is_empty() && region.is_empty() {
        return String::new();
    }
    // The NUL keeps a region or zone containing ':' from colliding (upstream's choice).
    format!("{region}:\0:{zone}")
}

pub fn excluded_from_disruption(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_EXCLUDE_DISRUPTION))
}

/// `classifyNodes`: of the nodes in the cache (by name), those not known yet, those known that
/// are gone, and known nodes whose zone has no state (it vanished and came back).
#[derive(Debug, Default, PartialEq)]
pub struct Classified<'a> {
    pub added: Vec<&'a Node>,
    pub deleted: Vec<String>,
    pub new_zone_representatives: Vec<&'a Node>,
}

pub fn classify<'a, V>(
    nodes: &[&'a Node],
    known: &std::collections::HashMap<String, V>,
    zone_states: &BTreeMap<String, ZoneState>,
) -> Classified<'a> {
    let mut out = Classified::default();
    let mut present = std::collections::HashSet::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        present.insert(name);
        if !known.contains_key(name) {
            out.added.push(node);
        } else if !zone_states.contains_key(&zone_key(node)) {
            out.new_zone_representatives.push(node);
        }
    }
    let mut deleted: Vec<String> = known
        .keys()
        .filter(|k| !present.contains(k.as_str()))
        .cloned()
        .collect();
    deleted.sort();
    out.deleted = deleted;
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Initial,
    Normal,
    PartialDisruption,
    FullDisruption,
}

impl ZoneState {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Initial => "Initial",
            ZoneState::Normal => "Normal",
            ZoneState::PartialDisruption => "PartialDisruption",
            ZoneState::FullDisruption => "FullDisruption",
        }
    }
}

/// `ComputeZoneState`: the number of not-Ready nodes and the zone's state, from the Ready
/// condition status of each node in it (None: no Ready condition, counted as not Ready).
pub fn compute_zone_state(ready: &[Option<&str>], unhealthy_threshold: f32) -> (usize, ZoneState) {
    let ready_nodes = ready.iter().filter(|s| **s == Some("True")).count();
    let not_ready = ready.len() - ready_nodes;
    let state = if ready_nodes == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && (not_ready as f32) / ((not_ready + ready_nodes) as f32) >= unhealthy_threshold
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    };
    (not_ready, state)
}

/// The eviction-rate flags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    /// `--node-eviction-rate`
    pub eviction: f32,
    /// `--secondary-node-eviction-rate`
    pub secondary: f32,
    /// `--large-cluster-size-threshold`
    pub large_cluster_threshold: i32,
    /// `--unhealthy-zone-threshold`
    pub unhealthy_zone_threshold: f32,
}

impl Rates {
    /// The tainting rate for a zone of `size` nodes in `state`; None for Initial (left as is).
    pub fn qps_for(&self, state: ZoneState, size: usize) -> Option<f32> {
        match state {
            ZoneState::Normal | ZoneState::FullDisruption => Some(self.eviction),
            ZoneState::PartialDisruption => {
                let large = i64::try_from(size).unwrap_or(i64::MAX)
                    > i64::from(self.large_cluster_threshold);
                Some(if large { self.secondary } else { 0.0 })
            }
            ZoneState::Initial => None,
        }
    }
}

/// One zone's health, for the `node_collector_*` gauges.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneReport {
    pub zone: String,
    pub size: usize,
    pub unhealthy: usize,
    pub state: ZoneState,
}

impl ZoneReport {
    /// `zone_health`: the percentage of Ready nodes.
    pub fn health_percent(&self) -> f64 {
        if self.size == 0 {
            100.0
        } else {
            100.0 * (self.size - self.unhealthy) as f64 / self.size as f64
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every zone just became fully disrupted: stop tainting, lift the NoExecute taints.
    EnterMasterDisruption,
    /// Some node is Ready again after a full disruption: reset every node's probe time.
    ExitMasterDisruption,
}

/// What a disruption pass decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DisruptionPlan {
    pub reports: Vec<ZoneReport>,
    /// Zones without any node any more: their gauges read size 0, health 100.
    pub removed: Vec<String>,
    pub mode: Option<Mode>,
    /// New tainting rates, by zone.
    pub limiters: Vec<(String, f32)>,
    /// Every zone's state from now on.
    pub states: BTreeMap<String, ZoneState>,
}

/// `handleDisruption`: from the previous zone states and this pass's Ready statuses per zone
/// (nodes excluded from disruption checks left out), the new states, rates and mode change.
///
/// Upstream stops deleting vanished zones at the first zone found not fully disrupted (a `break`
/// in a map iteration, so in random order); here every vanished zone is dropped in the same pass,
/// which is where upstream ends up after enough passes.
pub fn handle_disruption(
    previous: &BTreeMap<String, ZoneState>,
    ready_by_zone: &BTreeMap<String, Vec<Option<&str>>>,
    rates: &Rates,
) -> DisruptionPlan {
    let mut plan = DisruptionPlan::default();
    let mut new_states = BTreeMap::new();
    let mut all_are_fully_disrupted = true;
    for (zone, ready) in ready_by_zone {
        let (unhealthy, state) = compute_zone_state(ready, rates.unhealthy_zone_threshold);
        plan.reports.push(ZoneReport {
            zone: zone.clone(),
            size: ready.len(),
            unhealthy,
            state,
        });
        if state != ZoneState::FullDisruption {
            all_are_fully_disrupted = false;
        }
        new_states.insert(zone.clone(), state);
    }
    let mut states = previous.clone();
    for zone in ready_by_zone.keys() {
        states.entry(zone.clone()).or_insert(ZoneState::Initial);
    }
    let mut all_were_fully_disrupted = true;
    states.retain(|zone, state| {
        if !ready_by_zone.contains_key(zone) {
            plan.removed.push(zone.clone());
            return false;
        }
        if *state != ZoneState::FullDisruption {
            all_were_fully_disrupted = false;
        }
        true
    });
    let size = |zone: &str| ready_by_zone.get(zone).map_or(0, Vec::len);
    if !all_are_fully_disrupted || !all_were_fully_disrupted {
        if all_are_fully_disrupted {
            plan.mode = Some(Mode::EnterMasterDisruption);
            for (zone, state) in states.iter_mut() {
                plan.limiters.push((zone.clone(), 0.0));
                *state = ZoneState::FullDisruption;
            }
        } else if all_were_fully_disrupted {
            plan.mode = Some(Mode::ExitMasterDisruption);
            for (zone, state) in states.iter_mut() {
                let new = new_states.get(zone).copied().unwrap_or(ZoneState::Initial);
                if let Some(qps) = rates.qps_for(new, size(zone)) {
                    plan.limiters.push((zone.clone(), qps));
                }
                *state = new;
            }
        } else {
            for (zone, state) in states.iter_mut() {
                let new = new_states.get(zone).copied().unwrap_or(ZoneState::Initial);
                if *state == new {
                    continue;
                }
                if let Some(qps) = rates.qps_for(new, size(zone)) {
                    plan.limiters.push((zone.clone(), qps));
                }
                *state = new;
            }
        }
    }
    plan.states = states;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RATES: Rates = Rates {
        eviction: 0.1,
        secondary: 0.01,
        large_cluster_threshold: 50,
        unhealthy_zone_threshold: 0.55,
    };

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels}})).expect("node")
    }

    #[test]
    fn the_zone_key_prefers_the_beta_labels_and_is_empty_without_any() {
        assert_eq!(zone_key(&node(json!({}))), "");
        assert_eq!(
            zone_key(&node(json!({LABEL_ZONE: "a", LABEL_REGION: "r"}))),
            "r:\0:a"
        );
        assert_eq!(
            zone_key(&node(json!({LABEL_ZONE: "a", LABEL_ZONE_BETA: "b"}))),
            ":\0:b"
        );
    }

    fn statuses(ready: usize, not_ready: usize) -> Vec<Option<&'static str>> {
        std::iter::repeat_n(Some("True"), ready)
            .chain(std::iter::repeat_n(Some("Unknown"), not_ready))
            .collect()
    }

    #[test]
    fn zone_states_follow_the_share_of_not_ready_nodes() {
        assert_eq!(
            compute_zone_state(&statuses(0, 1), 0.55),
            (1, ZoneState::FullDisruption)
        );
        assert_eq!(
            compute_zone_state(&statuses(3, 0), 0.55),
            (0, ZoneState::Normal)
        );
        // Two not-ready nodes are never a partial disruption, whatever the share.
        assert_eq!(
            compute_zone_state(&statuses(1, 2), 0.55),
            (2, ZoneState::Normal)
        );
        assert_eq!(
            compute_zone_state(&statuses(2, 3), 0.55),
            (3, ZoneState::PartialDisruption)
        );
        assert_eq!(
            compute_zone_state(&statuses(3, 3), 0.55),
            (3, ZoneState::Normal)
        );
        // A node without a Ready condition counts as not ready.
        assert_eq!(
            compute_zone_state(&[None], 0.55),
            (1, ZoneState::FullDisruption)
        );
        assert!(compute_zone_state(&[], 0.55).1 == ZoneState::Normal);
    }

    #[test]
    fn the_rate_depends_on_state_and_zone_size() {
        assert_eq!(RATES.qps_for(ZoneState::Normal, 3), Some(0.1));
        assert_eq!(RATES.qps_for(ZoneState::FullDisruption, 3), Some(0.1));
        assert_eq!(RATES.qps_for(ZoneState::PartialDisruption, 50), Some(0.0));
        assert_eq!(RATES.qps_for(ZoneState::PartialDisruption, 51), Some(0.01));
        assert_eq!(RATES.qps_for(ZoneState::Initial, 51), None);
    }

    fn zones(
        z: &[(&str, Vec<Option<&'static str>>)],
    ) -> BTreeMap<String, Vec<Option<&'static str>>> {
        z.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn states(z: &[(&str, ZoneState)]) -> BTreeMap<String, ZoneState> {
        z.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn a_new_zone_goes_from_initial_to_normal_at_the_normal_rate() {
        let plan = handle_disruption(&BTreeMap::new(), &zones(&[("a", statuses(3, 0))]), &RATES);
        assert_eq!(plan.mode, None);
        assert_eq!(plan.limiters, vec![("a".to_owned(), 0.1)]);
        assert_eq!(plan.states, states(&[("a", ZoneState::Normal)]));
        assert_eq!(plan.reports[0].health_percent(), 100.0);
    }

    #[test]
    fn a_partially_disrupted_small_zone_stops_tainting_and_a_large_one_slows_down() {
        let prev = states(&[("small", ZoneState::Normal), ("large", ZoneState::Normal)]);
        let plan = handle_disruption(
            &prev,
            &zones(&[("small", statuses(2, 3)), ("large", statuses(20, 40))]),
            &RATES,
        );
        assert_eq!(
            plan.limiters,
            vec![("large".to_owned(), 0.01), ("small".to_owned(), 0.0)]
        );
        assert_eq!(plan.states["small"], ZoneState::PartialDisruption);
        let small = plan
            .reports
            .iter()
            .find(|r| r.zone == "small")
            .expect("small");
        assert_eq!(small.unhealthy, 3);
        assert_eq!(small.health_percent(), 40.0);
    }

    #[test]
    fn when_every_zone_is_fully_disrupted_all_tainting_stops() {
        let prev = states(&[("a", ZoneState::Normal), ("b", ZoneState::Normal)]);
        let plan = handle_disruption(
            &prev,
            &zones(&[("a", statuses(0, 2)), ("b", statuses(0, 1))]),
            &RATES,
        );
        assert_eq!(plan.mode, Some(Mode::EnterMasterDisruption));
        assert_eq!(
            plan.limiters,
            vec![("a".to_owned(), 0.0), ("b".to_owned(), 0.0)]
        );
        assert!(
            plan.states
                .values()
                .all(|s| *s == ZoneState::FullDisruption)
        );
        // Staying fully disrupted changes nothing more.
        let again = handle_disruption(
            &plan.states,
            &zones(&[("a", statuses(0, 2)), ("b", statuses(0, 1))]),
            &RATES,
        );
        assert_eq!(again.mode, None);
        assert!(again.limiters.is_empty());
    }

    #[test]
    fn one_fully_disrupted_zone_among_healthy_ones_keeps_the_normal_rate() {
        let prev = states(&[("a", ZoneState::Normal), ("b", ZoneState::Normal)]);
        let plan = handle_disruption(
            &prev,
            &zones(&[("a", statuses(0, 2)), ("b", statuses(3, 0))]),
            &RATES,
        );
        assert_eq!(plan.mode, None);
        assert_eq!(plan.limiters, vec![("a".to_owned(), 0.1)]);
        assert_eq!(plan.states["a"], ZoneState::FullDisruption);
    }

    #[test]
    fn leaving_full_disruption_resets_every_zone_to_its_own_rate() {
        let prev = states(&[
            ("a", ZoneState::FullDisruption),
            ("b", ZoneState::FullDisruption),
        ]);
        let plan = handle_disruption(
            &prev,
            &zones(&[("a", statuses(1, 1)), ("b", statuses(0, 1))]),
            &RATES,
        );
        assert_eq!(plan.mode, Some(Mode::ExitMasterDisruption));
        assert_eq!(
            plan.limiters,
            vec![("a".to_owned(), 0.1), ("b".to_owned(), 0.1)]
        );
        assert_eq!(plan.states["a"], ZoneState::Normal);
    }

    #[test]
    fn a_zone_without_nodes_is_dropped_and_reported_empty() {
        let prev = states(&[("gone", ZoneState::Normal), ("a", ZoneState::Normal)]);
        let plan = handle_disruption(&prev, &zones(&[("a", statuses(1, 0))]), &RATES);
        assert_eq!(plan.removed, vec!["gone".to_owned()]);
        assert_eq!(plan.states, states(&[("a", ZoneState::Normal)]));
    }

    fn named(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {LABEL_ZONE: zone}}}))
            .expect("node")
    }

    #[test]
    fn nodes_are_classified_as_added_deleted_or_representing_a_new_zone() {
        let a = named("a", "z1");
        let b = named("b", "z2");
        let c = named("c", "z1");
        let known: std::collections::HashMap<String, ()> = [
            ("a".to_owned(), ()),
            ("b".to_owned(), ()),
            ("gone".to_owned(), ()),
        ]
        .into();
        let zone_states = states(&[(&zone_key(&a), ZoneState::Normal)]);
        let out = classify(&[&a, &b, &c], &known, &zone_states);
        assert_eq!(out.added, vec![&c]);
        assert_eq!(out.deleted, vec!["gone".to_owned()]);
        assert_eq!(out.new_zone_representatives, vec![&b]);
    }

    #[test]
    fn excluded_nodes_are_recognised_by_label() {
        assert!(excluded_from_disruption(&node(
            json!({LABEL_EXCLUDE_DISRUPTION: ""})
        )));
        assert!(!excluded_from_disruption(&node(json!({}))));
    }
}
