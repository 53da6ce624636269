//! One scheduling attempt over the cache (pkg/scheduler/schedule_one.go `schedulePod`): filter
//! the nodes in round-robin order until enough feasible ones are found, score them with the
//! default profile's weights, and pick one of the best at random. A pod that fits nowhere gets a
//! [`FitError`] whose message is upstream's (pkg/scheduler/framework/types.go).

use std::collections::BTreeMap;
use std::fmt;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeAffinity, Pod};
use rand::Rng;

use crate::cache::{Cache, NodeInfo, Nominator, PodInfo, pod_priority};
use crate::config::{Profile, Switches};
use crate::plugins::inter_pod_affinity::{self, NamespaceLabels};
use crate::plugins::{
    Code, Status, image_locality, node_affinity, node_name, node_ports, node_resources,
    node_unschedulable, pod_topology_spread, taint_toleration, volumes,
};
use crate::preemption::{self, Pdb, PostFilterResult, PreemptionInput};
use crate::resources::{PodResources, pod_resources};
use crate::selector::Selector;

/// `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Score weights of the default profile (apis/config/v1/default_plugins.go).
pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_NODE_RESOURCES_FIT: i64 = 1;
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;
pub const WEIGHT_IMAGE_LOCALITY: i64 = 1;
pub const WEIGHT_POD_TOPOLOGY_SPREAD: i64 = 2;
pub const WEIGHT_INTER_POD_AFFINITY: i64 = 2;

/// What the PreFilter plugins computed over all nodes for one attempt (upstream's
/// `CycleState`); `None` where the plugin skipped.
#[derive(Clone, Debug, Default)]
pub struct CycleState {
    pub spread: Option<pod_topology_spread::PreFilterState>,
    pub affinity: Option<inter_pod_affinity::PreFilterState>,
    pub restrictions: Option<volumes::RestrictionsState>,
    pub binding: Option<volumes::BindingState>,
    pub zone: Option<volumes::ZoneState>,
    /// The profile's enabled filters, which preemption's dry runs consult too.
    pub switches: Switches,
    /// The profile's NodeAffinityArgs `addedAffinity`.
    pub added_affinity: Option<Arc<NodeAffinity>>,
}

impl CycleState {
    /// `RunPreFilterExtensionAddPod`: `pi` was added to `node` (already counted there).
    pub fn add_pod(&mut self, preemptor: &Pod, pi: &PodInfo, node: &NodeInfo) {
        self.update(preemptor, pi, node, 1);
    }

    /// `RunPreFilterExtensionRemovePod`: `pi` was removed from `node`.
    pub fn remove_pod(&mut self, preemptor: &Pod, pi: &PodInfo, node: &NodeInfo) {
        self.update(preemptor, pi, node, -1);
    }

    fn update(&mut self, preemptor: &Pod, pi: &PodInfo, node: &NodeInfo, delta: i64) {
        if let Some(s) = self.spread.as_mut() {
            pod_topology_spread::update_with_pod(s, &pi.pod, preemptor, node, delta);
        }
        if let Some(s) = self.affinity.as_mut() {
            inter_pod_affinity::update_with_pod(s, pi, node, delta);
        }
        if let Some(s) = self.restrictions.as_mut() {
            s.update_with_pod(pi, preemptor, delta);
        }
    }
}

/// `numFeasibleNodesToFind` with no percentageOfNodesToScore configured: all nodes below 100,
/// else an adaptive 50% − nodes/125 (at least 5%), never fewer than 100 nodes.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let percentage = match percentage {
        Some(p) if p > 0 => (p as usize).min(100),
        _ => {
            let adaptive = 50usize.saturating_sub(num_all_nodes / 125);
            adaptive.max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
        }
    };
    let n = num_all_nodes * percentage / 100;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The profile's filters in the default profile's order (default_plugins.go: NodeUnschedulable
/// before NodeName); the first rejection wins (`RunFilterPlugins` stops at the first
/// non-success). Filters the profile disables are skipped.
pub fn run_filters(
    pod: &Pod,
    res: &PodResources,
    node: &NodeInfo,
    state: &CycleState,
) -> Option<Status> {
    let on = &state.switches;
    None.or_else(|| {
        on.node_unschedulable
            .then(|| node_unschedulable::filter(pod, node))?
    })
    .or_else(|| on.node_name.then(|| node_name::filter(pod, node))?)
    .or_else(|| {
        on.taint_toleration
            .then(|| taint_toleration::filter(pod, node))?
    })
    .or_else(|| {
        on.node_affinity.then(|| {
            state
                .added_affinity
                .as_deref()
                .and_then(|a| node_affinity::added_filter(a, node))
                .or_else(|| node_affinity::filter(pod, node))
        })?
    })
    .or_else(|| on.node_ports.then(|| node_ports::filter(pod, node))?)
    .or_else(|| {
        on.node_resources_fit
            .then(|| node_resources::filter(res, node))?
    })
    .or_else(|| {
        on.volume_restrictions
            .then(|| volumes::restrictions_filter(pod, state.restrictions.as_ref(), node))?
    })
    .or_else(|| {
        on.volume_binding
            .then(|| volumes::binding_filter(state.binding.as_ref(), node))?
    })
    .or_else(|| {
        on.volume_zone
            .then(|| volumes::zone_filter(state.zone.as_ref(), node))?
    })
    .or_else(|| {
        on.pod_topology_spread
            .then(|| pod_topology_spread::filter(pod, state.spread.as_ref(), node))?
    })
    .or_else(|| {
        on.inter_pod_affinity
            .then(|| inter_pod_affinity::filter(state.affinity.as_ref(), node))?
    })
}

/// `RunFilterPluginsWithNominatedPods`: the filters run once with the node's nominated pods of
/// higher or equal priority added (`addGENominatedPods`, the pod itself excluded) and, when any
/// were added and that passed, once more without them, since they may never land; both must
/// pass.
pub fn run_filters_with_nominated(
    pod: &Pod,
    res: &PodResources,
    node: &NodeInfo,
    state: &CycleState,
    nominated: &[PodInfo],
) -> Option<Status> {
    let priority = pod_priority(pod);
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut added = nominated
        .iter()
        .filter(|p| p.priority() >= priority && p.uid() != uid)
        .peekable();
    if added.peek().is_none() {
        return run_filters(pod, res, node, state);
    }
    let mut node_with = node.clone();
    let mut state_with = state.clone();
    for pi in added {
        node_with.add_pod(pi.clone());
        state_with.add_pod(pod, pi, &node_with);
    }
    run_filters(pod, res, &node_with, &state_with).or_else(|| run_filters(pod, res, node, state))
}

/// Why no node fits: each rejected node's status, and the status of nodes not looked at
/// (`NodeToStatus` with its absent-nodes status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    pub node_to_status: BTreeMap<String, Status>,
    pub absent_status: Option<Status>,
    /// A PreFilter rejection's message; then no per-node reasons are listed.
    pub pre_filter_msg: String,
}

/// Upstream `FitError`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
    /// The PostFilter (preemption) message, including its `preemption: ` prefix.
    pub post_filter_msg: String,
}

/// "3 Insufficient cpu, 1 node(s) …": counts per reason, sorted as strings like upstream's
/// `sortReasonsHistogram`.
pub fn reasons_histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        let d = &self.diagnosis;
        if !d.pre_filter_msg.is_empty() {
            write!(f, " {}.", d.pre_filter_msg)?;
        } else {
            let absent = self.num_all_nodes.saturating_sub(d.node_to_status.len());
            let absent_reasons = d
                .absent_status
                .iter()
                .flat_map(|s| s.reasons.iter().map(String::as_str))
                .flat_map(|r| std::iter::repeat_n(r, absent));
            let hist = reasons_histogram(
                d.node_to_status
                    .values()
                    .flat_map(|s| s.reasons.iter().map(String::as_str))
                    .chain(absent_reasons),
            );
            if !hist.is_empty() {
                write!(f, " {hist}.")?;
            }
        }
        if !self.post_filter_msg.is_empty() {
            write!(f, " {}", self.post_filter_msg)?;
        }
        Ok(())
    }
}

/// `ErrNoNodesAvailable`.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_PREEMPTION_VICTIMS: &str = "No preemption victims found for incoming pod";

/// What DefaultPreemption's PostFilter reports when it finds no candidate. Ferrite does not
/// preempt yet: nodes rejected as unresolvable are "not helpful" exactly as upstream says; for
/// the others upstream would try evicting lower-priority pods, and Ferrite reports that no
/// victims were found (exact when the node has no lower-priority pod).
pub fn preemption_message(pod: &Pod, diagnosis: &Diagnosis, num_all_nodes: usize) -> String {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return "preemption: not eligible due to preemptionPolicy=Never.".to_string();
    }
    // Nodes without a filter status (none when nothing fits) count as "not helpful", as
    // upstream's SetAbsentNodesStatus does.
    let absent = num_all_nodes.saturating_sub(diagnosis.node_to_status.len());
    let per_node = diagnosis.node_to_status.values().map(|s| match s.code {
        Code::UnschedulableAndUnresolvable => PREEMPTION_NOT_HELPFUL,
        Code::Unschedulable => NO_PREEMPTION_VICTIMS,
    });
    let hist =
        reasons_histogram(per_node.chain(std::iter::repeat_n(PREEMPTION_NOT_HELPFUL, absent)));
    format!("preemption: 0/{num_all_nodes} nodes are available: {hist}.")
}

/// Why an attempt found no node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Fit(Box<FitError>),
    #[error("{NO_NODES_AVAILABLE}")]
    NoNodes,
}

impl ScheduleError {
    /// The plugins that rejected the pod on some node or in PreFilter (`UnschedulablePlugins`),
    /// which decide the cluster events that retry it.
    pub fn rejecting_plugins(&self) -> std::collections::BTreeSet<&'static str> {
        match self {
            ScheduleError::Fit(fe) => fe
                .diagnosis
                .node_to_status
                .values()
                .chain(fe.diagnosis.absent_status.iter())
                .map(|s| s.plugin)
                .collect(),
            ScheduleError::NoNodes => std::collections::BTreeSet::new(),
        }
    }
}

/// The chosen node and how much of the cluster was looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    pub suggested_host: String,
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

/// State kept across attempts (`nextStartNodeIndex`) and the profile they run with.
#[derive(Clone, Debug, Default)]
pub struct Algorithm {
    pub next_start_node_index: usize,
    /// `percentageOfNodesToScore`; `None` is the adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
    pub profile: std::sync::Arc<Profile>,
}

impl Algorithm {
    /// An algorithm running `profile`'s plugins.
    pub fn for_profile(profile: std::sync::Arc<Profile>) -> Self {
        Algorithm {
            next_start_node_index: 0,
            percentage_of_nodes_to_score: profile.percentage_of_nodes_to_score,
            profile,
        }
    }
}

/// A node's total weighted score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore {
    pub name: String,
    pub total: i64,
}

impl Algorithm {
    /// `findNodesThatPassFilters`: visits nodes from `nextStartNodeIndex`, wrapping around, and
    /// stops once enough feasible nodes are found; the next attempt starts after the last node
    /// processed.
    /// `all_nodes` is the cluster's node count, which the start index wraps at even when
    /// PreFilter narrowed `nodes`.
    pub fn find_nodes_that_fit<'a>(
        &mut self,
        pod: &Pod,
        res: &PodResources,
        nodes: &[&'a NodeInfo],
        all_nodes: usize,
        state: &CycleState,
        nominator: &Nominator,
    ) -> (Vec<&'a NodeInfo>, Diagnosis) {
        let all = nodes.len();
        let mut diagnosis = Diagnosis::default();
        let mut feasible = Vec::new();
        if all == 0 {
            return (feasible, diagnosis);
        }
        let to_find = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, all);
        let mut processed = 0;
        for i in 0..all {
            let node = nodes[(self.next_start_node_index + i) % all];
            processed += 1;
            match run_filters_with_nominated(
                pod,
                res,
                node,
                state,
                nominator.pods_for_node(node.name()),
            ) {
                None => {
                    feasible.push(node);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Some(status) => {
                    diagnosis
                        .node_to_status
                        .insert(node.name().to_string(), status);
                }
            }
        }
        self.next_start_node_index = (self.next_start_node_index + processed) % all_nodes.max(1);
        (feasible, diagnosis)
    }

    /// One attempt for a pod without system-default spreading (no owning Service or
    /// controller); see [`Algorithm::schedule_with`].
    pub fn schedule(
        &mut self,
        pod: &Pod,
        cache: &Cache,
        rng: &mut impl Rng,
    ) -> Result<ScheduleResult, ScheduleError> {
        self.schedule_with(pod, cache, &Selector::everything(), rng)
    }

    /// One attempt: `schedulePod`, and on a fit error DefaultPreemption's PostFilter with no
    /// PodDisruptionBudgets; see [`Algorithm::schedule_pod`].
    pub fn schedule_with(
        &mut self,
        pod: &Pod,
        cache: &Cache,
        default_spread_selector: &Selector,
        rng: &mut impl Rng,
    ) -> Result<ScheduleResult, ScheduleError> {
        self.schedule_pod(
            pod,
            cache,
            default_spread_selector,
            &Vec::new,
            jiff::Timestamp::now(),
            rng,
        )
        .map_err(|u| u.error)
    }

    /// One scheduling cycle's algorithm: `schedulePod` then, when no node fits, the PostFilter
    /// (`RunPostFilterPlugins`). `default_spread_selector` is `helper.DefaultSelector` for the
    /// pod (the selectors of its Services and controller), which PodTopologySpread's
    /// system-default constraints use; an empty selector means none. `pdbs` lists the
    /// PodDisruptionBudgets, read only when preemption runs.
    pub fn schedule_pod(
        &mut self,
        pod: &Pod,
        cache: &Cache,
        default_spread_selector: &Selector,
        pdbs: &dyn Fn() -> Vec<Pdb>,
        now: jiff::Timestamp,
        rng: &mut impl Rng,
    ) -> Result<ScheduleResult, Unschedulable> {
        let nodes: Vec<&NodeInfo> = cache.nodes().collect();
        if nodes.is_empty() {
            return Err(Unschedulable {
                error: ScheduleError::NoNodes,
                post_filter: None,
            });
        }
        let res = pod_resources(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let nominated_node = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
            .or_else(|| cache.nominator().node_of(uid));
        // PostFilter over a fit error (`RunPostFilterPlugins`), which completes its message.
        let switches = self.profile.switches;
        let added_affinity = self.profile.added_affinity.clone();
        let spread_defaults = self.profile.spread_defaults.as_deref().map(Vec::as_slice);
        let post_filter =
            |diagnosis: Diagnosis, state: &CycleState, rng: &mut dyn rand::RngCore| {
                // Without a PostFilter plugin the fit error is reported as it is.
                if !switches.default_preemption {
                    return Unschedulable {
                        error: ScheduleError::Fit(Box::new(FitError {
                            num_all_nodes: nodes.len(),
                            diagnosis,
                            post_filter_msg: String::new(),
                        })),
                        post_filter: None,
                    };
                }
                let pdbs = pdbs();
                let result = preemption::preempt(
                    &PreemptionInput {
                        pod,
                        res: &res,
                        state,
                        nodes: &nodes,
                        diagnosis: &diagnosis,
                        nominator: cache.nominator(),
                        nominated_node,
                        pdbs: &pdbs,
                        now,
                    },
                    &mut RngAdapter(rng),
                );
                Unschedulable {
                    error: ScheduleError::Fit(Box::new(FitError {
                        num_all_nodes: nodes.len(),
                        diagnosis,
                        post_filter_msg: result.message(),
                    })),
                    post_filter: Some(result),
                }
            };
        // Every node shares a PreFilter rejection, and only its message is listed.
        let pre_filter_diagnosis = |status: Status| Diagnosis {
            node_to_status: BTreeMap::new(),
            pre_filter_msg: status.reasons.join(", "),
            absent_status: Some(status),
        };
        // PreFilter in the default profile's order: NodeAffinity, (NodePorts,
        // NodeResourcesFit: nothing to precompute here), PodTopologySpread, InterPodAffinity.
        let pre_filter_affinity = if switches.node_affinity {
            node_affinity::pre_filter(pod)
        } else {
            Ok(None)
        };
        let candidates: Vec<&NodeInfo> = match pre_filter_affinity {
            Ok(None) => nodes.clone(),
            Ok(Some(names)) => nodes
                .iter()
                .copied()
                .filter(|n| names.contains(n.name()))
                .collect(),
            Err(status) => {
                return Err(post_filter(
                    pre_filter_diagnosis(status),
                    &CycleState {
                        switches,
                        added_affinity: added_affinity.clone(),
                        ..CycleState::default()
                    },
                    rng,
                ));
            }
        };
        // (NodeVolumeLimits needs CSINode objects and is not applied.)
        let catalog = cache.volumes();
        let state = (|| -> Result<CycleState, Status> {
            // A disabled plugin's PreFilter does not run either.
            let on = switches;
            Ok(CycleState {
                restrictions: if on.volume_restrictions {
                    volumes::restrictions_pre_filter(pod, catalog, &nodes)?
                } else {
                    None
                },
                binding: if on.volume_binding {
                    volumes::binding_pre_filter(pod, catalog)?
                } else {
                    None
                },
                zone: if on.volume_zone {
                    volumes::zone_pre_filter(pod, catalog)?
                } else {
                    None
                },
                spread: if on.pod_topology_spread {
                    pod_topology_spread::pre_filter_with(
                        spread_defaults,
                        pod,
                        &nodes,
                        default_spread_selector,
                    )?
                } else {
                    None
                },
                affinity: if on.inter_pod_affinity {
                    inter_pod_affinity::pre_filter(pod, &nodes, cache.namespaces())?
                } else {
                    None
                },
                switches: on,
                added_affinity: added_affinity.clone(),
            })
        })();
        let state = match state {
            Ok(state) => state,
            Err(status) => {
                return Err(post_filter(
                    pre_filter_diagnosis(status),
                    &CycleState {
                        switches,
                        added_affinity: added_affinity.clone(),
                        ..CycleState::default()
                    },
                    rng,
                ));
            }
        };
        // `evaluateNominatedNode`: the node preemption freed is likely the only one that fits,
        // so it is tried first.
        if let Some(node) = nominated_node
            .and_then(|n| candidates.iter().find(|c| c.name() == n))
            .copied()
        {
            let nominated = cache.nominator().pods_for_node(node.name());
            if run_filters_with_nominated(pod, &res, node, &state, nominated).is_none() {
                return Ok(ScheduleResult {
                    suggested_host: node.name().to_string(),
                    evaluated_nodes: 1,
                    feasible_nodes: 1,
                });
            }
        }
        let narrowed = candidates.len() != nodes.len();
        let (feasible, mut diagnosis) = self.find_nodes_that_fit(
            pod,
            &res,
            &candidates,
            nodes.len(),
            &state,
            cache.nominator(),
        );
        if narrowed {
            diagnosis.absent_status = Some(Status::new(
                Code::UnschedulableAndUnresolvable,
                node_affinity::NAME,
                format!("node(s) didn't satisfy plugin(s) [{}]", node_affinity::NAME),
            ));
        }
        let evaluated = feasible.len() + diagnosis.node_to_status.len();
        if feasible.is_empty() {
            return Err(post_filter(diagnosis, &state, rng));
        }
        if feasible.len() == 1 {
            return Ok(ScheduleResult {
                suggested_host: feasible[0].name().to_string(),
                evaluated_nodes: evaluated,
                feasible_nodes: 1,
            });
        }
        let scores = prioritize_nodes_for(
            &self.profile,
            pod,
            &res,
            &feasible,
            &nodes,
            default_spread_selector,
            cache.namespaces(),
        );
        let host = select_host(&scores, rng).unwrap_or_default();
        Ok(ScheduleResult {
            suggested_host: host,
            evaluated_nodes: evaluated,
            feasible_nodes: feasible.len(),
        })
    }
}

/// Lets a `&mut dyn RngCore` be passed where `impl Rng` is expected.
struct RngAdapter<'a>(&'a mut dyn rand::RngCore);

impl rand::RngCore for RngAdapter<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_bytes(dst)
    }
}

/// A failed attempt: the error and, for fit errors, what PostFilter decided.
#[derive(Debug)]
pub struct Unschedulable {
    pub error: ScheduleError,
    pub post_filter: Option<PostFilterResult>,
}

/// `prioritizeNodes` with the default profile.
pub fn prioritize_nodes(
    pod: &Pod,
    res: &PodResources,
    nodes: &[&NodeInfo],
    all_nodes: &[&NodeInfo],
    default_spread_selector: &Selector,
    namespaces: &NamespaceLabels,
) -> Vec<NodeScore> {
    prioritize_nodes_for(
        &Profile::default(),
        pod,
        res,
        nodes,
        all_nodes,
        default_spread_selector,
        namespaces,
    )
}

/// `prioritizeNodes`: each of the profile's score plugins' (normalized) scores times its
/// weight, summed. Plugins whose PreScore skips, and plugins the profile does not score with,
/// contribute 0.
pub fn prioritize_nodes_for(
    profile: &Profile,
    pod: &Pod,
    res: &PodResources,
    nodes: &[&NodeInfo],
    all_nodes: &[&NodeInfo],
    default_spread_selector: &Selector,
    namespaces: &NamespaceLabels,
) -> Vec<NodeScore> {
    let w = &profile.switches;
    let added = profile.added_affinity.as_deref();
    let total_nodes = all_nodes.len();
    let zeros = || vec![0; nodes.len()];
    let spread_state = if w.weight_pod_topology_spread > 0 {
        pod_topology_spread::pre_score_with(
            profile.spread_defaults.as_deref().map(Vec::as_slice),
            pod,
            nodes,
            all_nodes,
            default_spread_selector,
            true,
        )
    } else {
        None
    };
    let spread: Vec<i64> = match spread_state {
        Some(state) => {
            let mut s: Vec<i64> = nodes
                .iter()
                .map(|n| pod_topology_spread::score(pod, &state, n))
                .collect();
            let names: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
            pod_topology_spread::normalize(&state, &names, &mut s);
            s
        }
        None => zeros(),
    };
    let inter_pod_state = if w.weight_inter_pod_affinity > 0 {
        inter_pod_affinity::pre_score_with(
            profile.inter_pod_affinity,
            pod,
            nodes.len(),
            all_nodes,
            namespaces,
        )
    } else {
        None
    };
    let inter_pod: Vec<i64> = match inter_pod_state {
        Some(state) => {
            let mut s: Vec<i64> = nodes
                .iter()
                .map(|n| inter_pod_affinity::score(&state, n))
                .collect();
            inter_pod_affinity::normalize(&mut s);
            s
        }
        None => zeros(),
    };
    let taint: Vec<i64> = if w.weight_taint_toleration > 0 {
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| taint_toleration::score(pod, n))
            .collect();
        taint_toleration::normalize(&mut s);
        s
    } else {
        zeros()
    };
    let affinity: Vec<i64> = if w.weight_node_affinity > 0
        && (node_affinity::has_preferred_terms(pod)
            || added.is_some_and(node_affinity::added_has_preferred_terms))
    {
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| {
                node_affinity::score(pod, n) + added.map_or(0, |a| node_affinity::added_score(a, n))
            })
            .collect();
        node_affinity::normalize(&mut s);
        s
    } else {
        vec![0; nodes.len()]
    };
    let balanced = w.weight_balanced_allocation > 0
        && match &profile.balanced_resources {
            None => node_resources::balanced_allocation_applies(res),
            Some(r) => node_resources::balanced_allocation_applies_for(r, res),
        };
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| NodeScore {
            name: n.name().to_string(),
            total: taint[i] * w.weight_taint_toleration
                + affinity[i] * w.weight_node_affinity
                + if w.weight_node_resources_fit > 0 {
                    node_resources::fit_score(&profile.fit_strategy, res, n)
                        * w.weight_node_resources_fit
                } else {
                    0
                }
                + if balanced {
                    let score = match &profile.balanced_resources {
                        None => node_resources::balanced_allocation_score(res, n),
                        Some(r) => node_resources::balanced_allocation_score_for(r, res, n),
                    };
                    score * w.weight_balanced_allocation
                } else {
                    0
                }
                + if w.weight_image_locality > 0 {
                    image_locality::score(pod, n, total_nodes) * w.weight_image_locality
                } else {
                    0
                }
                + spread[i] * w.weight_pod_topology_spread
                + inter_pod[i] * w.weight_inter_pod_affinity,
        })
        .collect()
}

/// `selectHost`: the highest total; ties broken uniformly at random by reservoir sampling.
pub fn select_host(scores: &[NodeScore], rng: &mut impl Rng) -> Option<String> {
    let mut iter = scores.iter();
    let first = iter.next()?;
    let mut selected = first;
    let mut max = first.total;
    let mut count_of_max = 1u32;
    for s in iter {
        if s.total > max {
            max = s.total;
            selected = s;
            count_of_max = 1;
        } else if s.total == max {
            count_of_max += 1;
            if rng.random_range(0..count_of_max) == 0 {
                selected = s;
            }
        }
    }
    Some(selected.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod, pod_requesting, raw_node};
    use rand::SeedableRng;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

    // TestNumFeasibleNodesToFind in schedule_one_test.go.
    #[test]
    fn num_feasible_nodes_to_find_matches_upstream_table() {
        let cases = [
            (None, 10, 10),
            (Some(40), 10, 10),
            (None, 1000, 420),
            (Some(40), 1000, 400),
            (None, 6000, 300),
            (Some(40), 6000, 2400),
            (Some(0), 1000, 420),
            (None, 110, 100),
            (None, 100, 100),
            (None, 99, 99),
            (None, 20000, 1000),
        ];
        for (pct, all, want) in cases {
            assert_eq!(
                num_feasible_nodes_to_find(pct, all),
                want,
                "pct={pct:?} nodes={all}"
            );
        }
    }

    fn status(code: Code, reason: &str) -> Status {
        Status::new(code, "X", reason)
    }

    #[test]
    fn fit_error_counts_each_reason_and_sorts_them_as_strings() {
        let mut d = Diagnosis::default();
        d.node_to_status
            .insert("n1".into(), status(Code::Unschedulable, "Insufficient cpu"));
        d.node_to_status.insert(
            "n2".into(),
            status(
                Code::UnschedulableAndUnresolvable,
                taint_toleration::ERR_REASON_UNTOLERATED,
            ),
        );
        d.node_to_status.insert(
            "n3".into(),
            status(
                Code::UnschedulableAndUnresolvable,
                taint_toleration::ERR_REASON_UNTOLERATED,
            ),
        );
        let p = pod(json!({}));
        let e = FitError {
            num_all_nodes: 3,
            post_filter_msg: preemption_message(&p, &d, 3),
            diagnosis: d,
        };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s). \
             preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn fit_error_lists_every_reason_a_node_gave() {
        let mut d = Diagnosis::default();
        d.node_to_status.insert(
            "n1".into(),
            Status {
                code: Code::Unschedulable,
                reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
                plugin: "NodeResourcesFit",
            },
        );
        d.node_to_status.insert(
            "n2".into(),
            status(Code::Unschedulable, "Insufficient memory"),
        );
        let e = FitError {
            num_all_nodes: 2,
            diagnosis: d,
            post_filter_msg: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory."
        );
    }

    #[test]
    fn histogram_sorts_counts_as_strings_like_go() {
        let reasons = std::iter::repeat_n("b", 10).chain(std::iter::repeat_n("a", 2));
        assert_eq!(reasons_histogram(reasons), "10 b, 2 a");
    }

    #[test]
    fn a_pod_that_never_preempts_says_so() {
        let p = pod(json!({"preemptionPolicy": "Never"}));
        assert_eq!(
            preemption_message(&p, &Diagnosis::default(), 1),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    fn cache(nodes: &[(&str, i64)]) -> Cache {
        let mut c = Cache::default();
        for (name, cpu) in nodes {
            c.upsert_node(Arc::new(raw_node(json!({"name": name, "allocatable": {"cpu": format!("{cpu}m"), "memory": "32Gi", "pods": "110"}}))));
        }
        c
    }

    #[test]
    fn a_pod_too_big_for_every_node_reports_unresolvable_insufficient_cpu() {
        let c = cache(&[("a", 4000), ("b", 4000), ("c", 4000)]);
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let err = alg
            .schedule(&pod_requesting("big", 5000, 0), &c, &mut rng)
            .expect_err("no fit");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
             3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn the_only_node_that_fits_is_chosen() {
        let c = cache(&[("a", 2000), ("b", 4000), ("c", 2000)]);
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let r = alg
            .schedule(&pod_requesting("p", 3000, 0), &c, &mut rng)
            .expect("fits");
        assert_eq!(
            r,
            ScheduleResult {
                suggested_host: "b".into(),
                evaluated_nodes: 3,
                feasible_nodes: 1
            }
        );
    }

    #[test]
    fn the_emptier_node_wins_the_score() {
        let mut c = cache(&[("a", 4000), ("b", 4000)]);
        c.upsert_pod(Arc::new({
            let mut p = pod_requesting("x", 2000, 0);
            p.spec.as_mut().expect("spec").node_name = Some("a".into());
            p
        }));
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5 {
            let r = alg
                .schedule(&pod_requesting("p", 500, 0), &c, &mut rng)
                .expect("fits");
            assert_eq!(r.suggested_host, "b");
        }
    }

    fn profile(body: &str) -> Arc<Profile> {
        let text = format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{body}"
        );
        let mut c = crate::config::parse(&text).expect("config");
        Arc::new(c.profiles.remove(0))
    }

    #[test]
    fn a_most_allocated_profile_prefers_the_fuller_node() {
        let mut c = cache(&[("a", 4000), ("b", 4000)]);
        c.upsert_pod(Arc::new({
            let mut p = pod_requesting("x", 2000, 0);
            p.spec.as_mut().expect("spec").node_name = Some("a".into());
            p
        }));
        let mut alg = Algorithm::for_profile(profile(
            "profiles:\n- schedulerName: packer\n  plugins:\n    score:\n      disabled:\n      - name: '*'\n      enabled:\n      - name: NodeResourcesFit\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n",
        ));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5 {
            let r = alg
                .schedule(&pod_requesting("p", 500, 0), &c, &mut rng)
                .expect("fits");
            assert_eq!(r.suggested_host, "a");
        }
    }

    #[test]
    fn a_disabled_filter_does_not_reject_and_without_post_filter_there_is_no_preemption_message() {
        let c = cache(&[("a", 2000)]);
        let mut alg = Algorithm::for_profile(profile(
            "profiles:\n- plugins:\n    filter:\n      disabled:\n      - name: NodeResourcesFit\n",
        ));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let r = alg
            .schedule(&pod_requesting("big", 5000, 0), &c, &mut rng)
            .expect("fits without NodeResourcesFit");
        assert_eq!(r.suggested_host, "a");
        let mut alg = Algorithm::for_profile(profile(
            "profiles:\n- plugins:\n    postFilter:\n      disabled:\n      - name: DefaultPreemption\n",
        ));
        let err = alg
            .schedule(&pod_requesting("big", 5000, 0), &c, &mut rng)
            .expect_err("no fit");
        assert_eq!(
            err.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    fn daemon_pod(node: &str, cpu: i64) -> Pod {
        let mut p = pod_requesting("ds", cpu, 0);
        p.spec.as_mut().expect("spec").affinity = Some(
            serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}))
            .expect("affinity"),
        );
        p
    }

    #[test]
    fn a_pod_naming_its_node_is_only_filtered_there_and_the_rest_did_not_satisfy_node_affinity() {
        let c = cache(&[("a", 4000), ("b", 4000), ("c", 4000)]);
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let r = alg
            .schedule(&daemon_pod("b", 1000), &c, &mut rng)
            .expect("fits");
        assert_eq!((r.suggested_host.as_str(), r.evaluated_nodes), ("b", 1));
        let err = alg
            .schedule(&daemon_pod("b", 5000), &c, &mut rng)
            .expect_err("too big");
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn conflicting_node_name_terms_are_a_pre_filter_rejection() {
        let c = cache(&[("a", 4000), ("b", 4000)]);
        let mut p = daemon_pod("a", 0);
        p.spec.as_mut().expect("spec").affinity = Some(
            serde_json::from_value(
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": ["a"]},
                    {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}),
            )
            .expect("affinity"),
        );
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let err = alg.schedule(&p, &c, &mut rng).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: pod affinity terms conflict. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn no_nodes_is_its_own_error() {
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            alg.schedule(&pod(json!({})), &Cache::default(), &mut rng),
            Err(ScheduleError::NoNodes)
        );
    }

    #[test]
    fn the_search_resumes_after_the_last_processed_node() {
        let names: Vec<String> = (0..200).map(|i| format!("n{i:03}")).collect();
        let infos: Vec<NodeInfo> = names.iter().map(|n| node(json!({"name": n}))).collect();
        let refs: Vec<&NodeInfo> = infos.iter().collect();
        let mut alg = Algorithm::default();
        let p = pod(json!({}));
        let res = pod_resources(&p);
        let st = CycleState::default();
        let (feasible, _) =
            alg.find_nodes_that_fit(&p, &res, &refs, refs.len(), &st, &Nominator::default());
        // 200 nodes: 50 − 1 = 49 % → 98, raised to the 100-node minimum.
        assert_eq!(feasible.len(), 100);
        assert_eq!(alg.next_start_node_index, 100);
        let (feasible, _) =
            alg.find_nodes_that_fit(&p, &res, &refs, refs.len(), &st, &Nominator::default());
        assert_eq!(feasible[0].name(), "n100");
        assert_eq!(alg.next_start_node_index, 0);
    }

    #[test]
    fn select_host_picks_among_the_best_uniformly() {
        let scores = vec![
            NodeScore {
                name: "a".into(),
                total: 10,
            },
            NodeScore {
                name: "b".into(),
                total: 30,
            },
            NodeScore {
                name: "c".into(),
                total: 30,
            },
            NodeScore {
                name: "d".into(),
                total: 5,
            },
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..1000 {
            *seen
                .entry(select_host(&scores, &mut rng).expect("host"))
                .or_default() += 1;
        }
        assert_eq!(seen.len(), 2, "only the best-scoring nodes: {seen:?}");
        assert!(
            seen["b"] > 400 && seen["c"] > 400,
            "both roughly half: {seen:?}"
        );
        assert_eq!(select_host(&[], &mut rng), None);
    }

    fn zoned_cache(zones: &[(&str, &str, usize)]) -> Cache {
        let mut c = Cache::default();
        for (name, zone, pods) in zones {
            c.upsert_node(Arc::new(raw_node(json!({"name": name,
                "labels": {"topology.kubernetes.io/zone": zone, "kubernetes.io/hostname": name}}))));
            for i in 0..*pods {
                let mut p = crate::testutil::labelled_pod(
                    &format!("{name}-{i}"),
                    "ns",
                    json!({"app": "web"}),
                    json!({"nodeName": name}),
                );
                p.spec.as_mut().expect("spec").node_name = Some(name.to_string());
                c.upsert_pod(Arc::new(p));
            }
        }
        c
    }

    fn spread_pod(extra: serde_json::Value) -> Pod {
        let mut c = json!({"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        crate::testutil::labelled_pod(
            "new",
            "ns",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [c]}),
        )
    }

    #[test]
    fn a_spread_pod_goes_to_the_zone_that_keeps_the_skew() {
        let c = zoned_cache(&[("a", "z1", 1), ("b", "z2", 1), ("c", "z3", 0)]);
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let r = alg
            .schedule(&spread_pod(json!({})), &c, &mut rng)
            .expect("fits");
        assert_eq!(r.suggested_host, "c");
    }

    #[test]
    fn a_pod_that_would_break_the_skew_everywhere_reports_upstreams_message() {
        let c = zoned_cache(&[("a", "z1", 1), ("b", "z2", 1)]);
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let err = alg
            .schedule(&spread_pod(json!({"minDomains": 3})), &c, &mut rng)
            .expect_err("no fit");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints. \
             preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn required_anti_affinity_on_hostname_keeps_pods_apart() {
        let c = zoned_cache(&[("a", "z1", 1), ("b", "z1", 0)]);
        let p = crate::testutil::labelled_pod(
            "new",
            "ns",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
        );
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(
            alg.schedule(&p, &c, &mut rng).expect("fits").suggested_host,
            "b"
        );
    }

    #[test]
    fn an_owned_pod_is_spread_by_the_system_defaults() {
        // Both nodes equally loaded otherwise; "a" already runs two pods of the same Service.
        let mut c = zoned_cache(&[("a", "z1", 2), ("b", "z2", 0)]);
        for i in 0..2 {
            let mut p = crate::testutil::labelled_pod(
                &format!("other-{i}"),
                "ns",
                json!({"app": "other"}),
                json!({}),
            );
            p.spec.as_mut().expect("spec").node_name = Some("b".into());
            c.upsert_pod(Arc::new(p));
        }
        let p = crate::testutil::labelled_pod("new", "ns", json!({"app": "web"}), json!({}));
        let sel = Selector::from_set(&[("app".to_string(), "web".to_string())].into());
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5 {
            let r = alg.schedule_with(&p, &c, &sel, &mut rng).expect("fits");
            assert_eq!(r.suggested_host, "b");
        }
        let scores = prioritize_nodes(
            &p,
            &pod_resources(&p),
            &c.nodes().collect::<Vec<_>>(),
            &c.nodes().collect::<Vec<_>>(),
            &sel,
            c.namespaces(),
        );
        let spread_free = prioritize_nodes(
            &p,
            &pod_resources(&p),
            &c.nodes().collect::<Vec<_>>(),
            &c.nodes().collect::<Vec<_>>(),
            &Selector::everything(),
            c.namespaces(),
        );
        assert_eq!(
            scores[1].total - spread_free[1].total,
            100 * WEIGHT_POD_TOPOLOGY_SPREAD,
            "b gets the full spread score"
        );
    }

    #[test]
    fn node_unschedulable_is_checked_before_node_name() {
        let p = pod(json!({"nodeName": "elsewhere"}));
        let n = node(json!({"name": "n", "unschedulable": true}));
        let s = run_filters(&p, &pod_resources(&p), &n, &CycleState::default()).expect("rejected");
        assert_eq!(s.plugin, node_unschedulable::NAME);
    }

    #[test]
    fn filters_run_in_upstream_order_and_stop_at_the_first_rejection() {
        let p = pod_requesting("p", 5000, 0);
        let n =
            node(json!({"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]}));
        let s = run_filters(&p, &pod_resources(&p), &n, &CycleState::default()).expect("rejected");
        assert_eq!(s.plugin, node_unschedulable::NAME);
    }
}
