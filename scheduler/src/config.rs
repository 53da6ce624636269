//! `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`): the `--config` file, its
//! defaults and validation, and the per-profile plugin sets it resolves to.
//!
//! Mirrors staging/src/k8s.io/kube-scheduler/config/v1/types.go and types_pluginargs.go (field
//! names), pkg/scheduler/apis/config/v1/defaults.go and default_plugins.go (defaults and
//! `mergePlugins`), pkg/scheduler/framework/runtime/framework.go (`expandMultiPointPlugins`,
//! `getScoreWeights`) and pkg/scheduler/apis/config/validation (checks and their messages).
//!
//! Everything here is pure: [`parse`] turns the file's text into a [`SchedulerConfig`] or an
//! error naming the offending field. Fields Ferrite does not implement are refused rather than
//! ignored (`deny_unknown_fields`), so a configuration never silently means less than it says.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group version Ferrite reads (`v1`, the only one upstream still serves).
pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const KIND: &str = "KubeSchedulerConfiguration";
/// `v1.DefaultSchedulerName`.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// `SetDefaults_KubeSchedulerConfiguration`'s values.
const DEFAULT_PARALLELISM: i32 = 16;
const DEFAULT_POD_INITIAL_BACKOFF_SECONDS: i64 = 1;
const DEFAULT_POD_MAX_BACKOFF_SECONDS: i64 = 10;
/// DefaultPreemptionArgs' defaults.
const DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;
/// `config.MaxCustomPriorityScore`: RequestedToCapacityRatio shape scores are 0..10.
pub const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;
/// `config.MaxWeight` for a resource's weight in scoring strategies.
const MAX_RESOURCE_WEIGHT: i64 = 100;

// ---------------------------------------------------------------------------------------------
// The file's types (types.go, types_pluginargs.go)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: Option<String>,
    kind: Option<String>,
    parallelism: Option<i32>,
    percentage_of_nodes_to_score: Option<i32>,
    pod_initial_backoff_seconds: Option<i64>,
    pod_max_backoff_seconds: Option<i64>,
    leader_election: Option<LeaderElectionFile>,
    client_connection: Option<ClientConnectionFile>,
    profiles: Option<Vec<ProfileFile>>,
}

/// componentbaseconfig `LeaderElectionConfiguration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionFile {
    pub leader_elect: Option<bool>,
    pub lease_duration: Option<String>,
    pub renew_deadline: Option<String>,
    pub retry_period: Option<String>,
    pub resource_lock: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
}

/// componentbaseconfig `ClientConnectionConfiguration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConnectionFile {
    pub kubeconfig: Option<String>,
    /// Accepted for compatibility, like `--kube-api-content-type`: Ferrite speaks JSON.
    pub accept_content_types: Option<String>,
    pub content_type: Option<String>,
    pub qps: Option<f32>,
    pub burst: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileFile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<i32>,
    plugins: Option<PluginsFile>,
    #[serde(default)]
    plugin_config: Vec<PluginConfigFile>,
}

/// `v1.Plugins`: the plugins enabled and disabled at each extension point, merged onto the
/// default plugin set; `multiPoint` applies to every extension point a plugin implements.
/// Ferrite runs the plugins of preEnqueue, queueSort, reserve, permit, preBind, bind and
/// postBind in fixed code, so those may only stay as the defaults resolve them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginsFile {
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub pre_enqueue: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub queue_sort: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub pre_filter: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub filter: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub post_filter: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub pre_score: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub score: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub reserve: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub permit: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub pre_bind: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub bind: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub post_bind: PluginSet,
    #[serde(default, skip_serializing_if = "PluginSet::is_empty")]
    pub multi_point: PluginSet,
}

/// `v1.PluginSet`: plugins to enable (after the defaults, or in place of a default of the same
/// name) and to disable (`*` disables every default).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginSet {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled: Vec<PluginRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<PluginRef>,
}

impl PluginSet {
    pub fn is_empty(&self) -> bool {
        self.enabled.is_empty() && self.disabled.is_empty()
    }
}

/// `v1.Plugin`: a plugin's name and, for a score plugin, its weight (0 or unset: the default).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub weight: Option<i32>,
}

impl PluginRef {
    fn named(name: &str) -> Self {
        PluginRef {
            name: name.to_string(),
            weight: None,
        }
    }
    fn weighted(name: &str, weight: i32) -> Self {
        PluginRef {
            name: name.to_string(),
            weight: Some(weight),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfigFile {
    name: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

/// `v1.ResourceSpec`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: String,
    #[serde(default)]
    pub weight: i64,
}

/// `v1.UtilizationShapePoint`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShapePoint {
    pub utilization: i64,
    pub score: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestedToCapacityRatioFile {
    #[serde(default)]
    shape: Vec<ShapePoint>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScoringStrategyFile {
    #[serde(rename = "type")]
    type_: Option<String>,
    resources: Option<Vec<ResourceSpec>>,
    requested_to_capacity_ratio: Option<RequestedToCapacityRatioFile>,
}

/// `NodeResourcesFitArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FitArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    ignored_resources: Vec<String>,
    #[serde(default)]
    ignored_resource_groups: Vec<String>,
    scoring_strategy: Option<ScoringStrategyFile>,
}

/// `NodeResourcesBalancedAllocationArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BalancedAllocationArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    resources: Option<Vec<ResourceSpec>>,
}

/// `PodTopologySpreadArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpreadArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    default_constraints: Vec<serde_json::Value>,
    defaulting_type: Option<String>,
}

/// `InterPodAffinityArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InterPodAffinityArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    hard_pod_affinity_weight: Option<i32>,
    ignore_preferred_terms_of_existing_pods: Option<bool>,
}

/// `NodeAffinityArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeAffinityArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    added_affinity: Option<serde_json::Value>,
}

/// `DefaultPreemptionArgs`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreemptionArgsFile {
    api_version: Option<String>,
    kind: Option<String>,
    min_candidate_nodes_percentage: Option<i32>,
    min_candidate_nodes_absolute: Option<i32>,
}

// ---------------------------------------------------------------------------------------------
// The resolved configuration
// ---------------------------------------------------------------------------------------------

/// The whole configuration after defaulting and validation.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    /// Accepted and validated; Ferrite's scheduling cycle is single-threaded.
    pub parallelism: i32,
    /// The file's global `percentageOfNodesToScore`, which profiles without their own use
    /// (those from `SchedulerProfile` objects too).
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    /// As written in the file; `None` fields keep the runtime's defaults.
    pub leader_election: LeaderElectionFile,
    pub client_connection: ClientConnectionFile,
    pub profiles: Vec<Profile>,
}

impl Default for SchedulerConfig {
    /// What `ferrite scheduler` runs without `--config`: the default profile only.
    fn default() -> Self {
        SchedulerConfig {
            parallelism: DEFAULT_PARALLELISM,
            percentage_of_nodes_to_score: None,
            pod_initial_backoff: Duration::from_secs(DEFAULT_POD_INITIAL_BACKOFF_SECONDS as u64),
            pod_max_backoff: Duration::from_secs(DEFAULT_POD_MAX_BACKOFF_SECONDS as u64),
            leader_election: LeaderElectionFile::default(),
            client_connection: ClientConnectionFile::default(),
            profiles: vec![Profile::default()],
        }
    }
}

/// NodeResourcesFit's scoring strategy (`ScoringStrategy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScoringStrategy {
    LeastAllocated(Vec<ResourceSpec>),
    MostAllocated(Vec<ResourceSpec>),
    /// The shape with its scores already scaled to 0..100.
    RequestedToCapacityRatio {
        resources: Vec<ResourceSpec>,
        shape: Vec<ShapePoint>,
    },
}

impl ScoringStrategy {
    pub fn resources(&self) -> &[ResourceSpec] {
        match self {
            ScoringStrategy::LeastAllocated(r) | ScoringStrategy::MostAllocated(r) => r,
            ScoringStrategy::RequestedToCapacityRatio { resources, .. } => resources,
        }
    }
}

/// `defaultResourceSpec`: cpu and memory, weight 1 each.
pub fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".into(),
            weight: 1,
        },
        ResourceSpec {
            name: "memory".into(),
            weight: 1,
        },
    ]
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        ScoringStrategy::LeastAllocated(default_resources())
    }
}

/// Extension points (`v1.Plugins` fields other than `multiPoint`), in upstream's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    PreEnqueue,
    QueueSort,
    PreFilter,
    Filter,
    PostFilter,
    PreScore,
    Score,
    Reserve,
    Permit,
    PreBind,
    Bind,
    PostBind,
}

impl Point {
    pub const ALL: [Point; 12] = [
        Point::PreEnqueue,
        Point::QueueSort,
        Point::PreFilter,
        Point::Filter,
        Point::PostFilter,
        Point::PreScore,
        Point::Score,
        Point::Reserve,
        Point::Permit,
        Point::PreBind,
        Point::Bind,
        Point::PostBind,
    ];

    /// The field's name in the file.
    pub fn field(self) -> &'static str {
        match self {
            Point::PreEnqueue => "preEnqueue",
            Point::QueueSort => "queueSort",
            Point::PreFilter => "preFilter",
            Point::Filter => "filter",
            Point::PostFilter => "postFilter",
            Point::PreScore => "preScore",
            Point::Score => "score",
            Point::Reserve => "reserve",
            Point::Permit => "permit",
            Point::PreBind => "preBind",
            Point::Bind => "bind",
            Point::PostBind => "postBind",
        }
    }

    /// The Go interface name upstream's errors use.
    fn interface(self) -> &'static str {
        match self {
            Point::PreEnqueue => "PreEnqueuePlugin",
            Point::QueueSort => "QueueSortPlugin",
            Point::PreFilter => "PreFilterPlugin",
            Point::Filter => "FilterPlugin",
            Point::PostFilter => "PostFilterPlugin",
            Point::PreScore => "PreScorePlugin",
            Point::Score => "ScorePlugin",
            Point::Reserve => "ReservePlugin",
            Point::Permit => "PermitPlugin",
            Point::PreBind => "PreBindPlugin",
            Point::Bind => "BindPlugin",
            Point::PostBind => "PostBindPlugin",
        }
    }
}

impl PluginsFile {
    fn set(&self, p: Point) -> &PluginSet {
        match p {
            Point::PreEnqueue => &self.pre_enqueue,
            Point::QueueSort => &self.queue_sort,
            Point::PreFilter => &self.pre_filter,
            Point::Filter => &self.filter,
            Point::PostFilter => &self.post_filter,
            Point::PreScore => &self.pre_score,
            Point::Score => &self.score,
            Point::Reserve => &self.reserve,
            Point::Permit => &self.permit,
            Point::PreBind => &self.pre_bind,
            Point::Bind => &self.bind,
            Point::PostBind => &self.post_bind,
        }
    }
    fn set_mut(&mut self, p: Point) -> &mut PluginSet {
        match p {
            Point::PreEnqueue => &mut self.pre_enqueue,
            Point::QueueSort => &mut self.queue_sort,
            Point::PreFilter => &mut self.pre_filter,
            Point::Filter => &mut self.filter,
            Point::PostFilter => &mut self.post_filter,
            Point::PreScore => &mut self.pre_score,
            Point::Score => &mut self.score,
            Point::Reserve => &mut self.reserve,
            Point::Permit => &mut self.permit,
            Point::PreBind => &mut self.pre_bind,
            Point::Bind => &mut self.bind,
            Point::PostBind => &mut self.post_bind,
        }
    }
}

/// The in-tree plugins Ferrite knows and the extension points each implements (the Go types'
/// interfaces). DynamicResources and NodeVolumeLimits are known so that the default set
/// resolves as upstream's, though Ferrite does not apply them.
pub fn implements(plugin: &str) -> Option<&'static [Point]> {
    use Point::*;
    Some(match plugin {
        "SchedulingGates" => &[PreEnqueue],
        "PrioritySort" => &[QueueSort],
        "NodeUnschedulable" | "NodeName" => &[Filter],
        "TaintToleration" => &[Filter, PreScore, Score],
        "NodeAffinity" | "NodeResourcesFit" | "PodTopologySpread" | "InterPodAffinity" => {
            &[PreFilter, Filter, PreScore, Score]
        }
        "NodePorts" | "VolumeRestrictions" | "NodeVolumeLimits" | "VolumeZone" => {
            &[PreFilter, Filter]
        }
        "VolumeBinding" => &[PreFilter, Filter, PreScore, Score, Reserve, PreBind],
        "DynamicResources" => &[PreEnqueue, PreFilter, Filter, PostFilter, Reserve, PreBind],
        "DefaultPreemption" => &[PostFilter],
        "NodeResourcesBalancedAllocation" => &[PreScore, Score],
        "ImageLocality" => &[Score],
        "DefaultBinder" => &[Bind],
        _ => return None,
    })
}

/// `getDefaultPlugins` (with DynamicResourceAllocation on, its default since v1.34); the
/// in-tree cloud volume limit plugins are gone upstream and left out.
pub fn default_plugins() -> PluginsFile {
    let enabled = vec![
        PluginRef::named("SchedulingGates"),
        PluginRef::named("PrioritySort"),
        PluginRef::named("NodeUnschedulable"),
        PluginRef::named("NodeName"),
        PluginRef::weighted("TaintToleration", 3),
        PluginRef::weighted("NodeAffinity", 2),
        PluginRef::named("NodePorts"),
        PluginRef::weighted("NodeResourcesFit", 1),
        PluginRef::named("VolumeRestrictions"),
        PluginRef::named("NodeVolumeLimits"),
        PluginRef::named("VolumeBinding"),
        PluginRef::named("VolumeZone"),
        PluginRef::weighted("PodTopologySpread", 2),
        PluginRef::weighted("InterPodAffinity", 2),
        PluginRef::named("DynamicResources"),
        PluginRef::named("DefaultPreemption"),
        PluginRef::weighted("NodeResourcesBalancedAllocation", 1),
        PluginRef::weighted("ImageLocality", 1),
        PluginRef::named("DefaultBinder"),
    ];
    PluginsFile {
        multi_point: PluginSet {
            enabled,
            disabled: vec![],
        },
        ..PluginsFile::default()
    }
}

/// `mergePluginSet`: the custom set's disabled names (and `*`) drop defaults; a custom entry
/// naming a default replaces it in place (order kept); other custom entries follow in order.
pub fn merge_plugin_set(default: &PluginSet, custom: &PluginSet) -> PluginSet {
    let disabled: Vec<PluginRef> = custom
        .disabled
        .iter()
        .chain(&default.disabled)
        .map(|p| PluginRef::named(&p.name))
        .collect();
    let disabled_names: BTreeSet<&str> = disabled.iter().map(|p| p.name.as_str()).collect();
    // Later duplicates win the lookup, as Go's map assignment does.
    let mut custom_index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in custom.enabled.iter().enumerate() {
        custom_index.insert(&p.name, i);
    }
    let mut replaced = BTreeSet::new();
    let mut enabled = Vec::new();
    if !disabled_names.contains("*") {
        for d in &default.enabled {
            if disabled_names.contains(d.name.as_str()) {
                continue;
            }
            match custom_index.get(d.name.as_str()) {
                Some(&i) => {
                    replaced.insert(i);
                    enabled.push(custom.enabled[i].clone());
                }
                None => enabled.push(d.clone()),
            }
        }
    }
    for (i, p) in custom.enabled.iter().enumerate() {
        if !replaced.contains(&i) {
            enabled.push(p.clone());
        }
    }
    PluginSet { enabled, disabled }
}

/// `mergePlugins`: every extension point and `multiPoint` merged onto the defaults.
pub fn merge_plugins(default: PluginsFile, custom: Option<&PluginsFile>) -> PluginsFile {
    let Some(custom) = custom else {
        return default;
    };
    let mut merged = PluginsFile {
        multi_point: merge_plugin_set(&default.multi_point, &custom.multi_point),
        ..PluginsFile::default()
    };
    for p in Point::ALL {
        *merged.set_mut(p) = merge_plugin_set(default.set(p), custom.set(p));
    }
    merged
}

/// One profile's plugins per extension point, in the order they run, and score weights.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedPlugins {
    pub points: BTreeMap<Point, Vec<String>>,
    pub score_weights: BTreeMap<String, i64>,
}

impl ResolvedPlugins {
    pub fn at(&self, p: Point) -> &[String] {
        self.points.get(&p).map(Vec::as_slice).unwrap_or_default()
    }
    pub fn has(&self, p: Point, name: &str) -> bool {
        self.at(p).iter().any(|n| n == name)
    }
}

/// `NewFramework`'s plugin lists: each extension point's own enabled list (`updatePluginList`),
/// then `expandMultiPointPlugins` (explicit overrides first, then multiPoint-only plugins, then
/// the rest of the point's own list; a point with `*` disabled gets nothing from multiPoint),
/// then `getScoreWeights` (a point's own weight wins over multiPoint's; 0 or unset is 1).
pub fn resolve_plugins(plugins: &PluginsFile) -> Result<ResolvedPlugins, String> {
    let mut out = ResolvedPlugins::default();
    for point in Point::ALL {
        let set = plugins.set(point);
        let mut own: Vec<String> = Vec::new();
        for p in &set.enabled {
            let caps = implements(&p.name)
                .ok_or_else(|| format!("{} {:?} does not exist", point.interface(), p.name))?;
            if !caps.contains(&point) {
                return Err(format!(
                    "plugin {:?} does not extend {} plugin",
                    p.name,
                    point.interface()
                ));
            }
            if own.contains(&p.name) {
                return Err(format!(
                    "plugin {:?} already registered as {:?}",
                    p.name,
                    point.interface()
                ));
            }
            own.push(p.name.clone());
        }
        let disabled: BTreeSet<&str> = set.disabled.iter().map(|p| p.name.as_str()).collect();
        if disabled.contains("*") {
            out.points.insert(point, own);
            continue;
        }
        let mut overrides: Vec<String> = Vec::new();
        let mut multi: Vec<String> = Vec::new();
        for p in &plugins.multi_point.enabled {
            let caps = implements(&p.name)
                .ok_or_else(|| format!("{} {:?} does not exist", point.interface(), p.name))?;
            if !caps.contains(&point) || disabled.contains(p.name.as_str()) {
                continue;
            }
            if own.contains(&p.name) {
                overrides.push(p.name.clone());
                continue;
            }
            if multi.contains(&p.name) {
                return Err(format!(
                    "plugin {:?} already registered as {:?}",
                    p.name,
                    point.interface()
                ));
            }
            multi.push(p.name.clone());
        }
        let mut list: Vec<String> = own
            .iter()
            .filter(|n| overrides.contains(n))
            .cloned()
            .collect();
        list.extend(multi);
        list.extend(own.iter().filter(|n| !overrides.contains(n)).cloned());
        out.points.insert(point, list);
    }
    let scores = out.at(Point::Score).to_vec();
    for p in plugins
        .score
        .enabled
        .iter()
        .chain(&plugins.multi_point.enabled)
    {
        if !scores.contains(&p.name) || out.score_weights.contains_key(&p.name) {
            continue;
        }
        let w = i64::from(p.weight.unwrap_or(0));
        out.score_weights
            .insert(p.name.clone(), if w == 0 { 1 } else { w });
    }
    if out.at(Point::QueueSort).len() != 1 {
        return Err(format!(
            "only one queue sort plugin required, but got {}",
            out.at(Point::QueueSort).len()
        ));
    }
    if out.at(Point::Bind).is_empty() {
        return Err("at least one bind plugin is needed".to_string());
    }
    Ok(out)
}

/// One profile (`KubeSchedulerProfile`) as the framework uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub scheduler_name: String,
    /// `None`: adaptive.
    pub percentage_of_nodes_to_score: Option<u32>,
    pub plugins: ResolvedPlugins,
    pub fit_strategy: ScoringStrategy,
    /// The plugin lists as flags and weights, for the hot path.
    pub switches: Switches,
    /// NodeResourcesBalancedAllocationArgs' `resources` when not the default cpu and memory.
    pub balanced_resources: Option<Vec<ResourceSpec>>,
    /// PodTopologySpreadArgs' `defaultConstraints` with `defaultingType: List`; `None` is
    /// `System`.
    pub spread_defaults: Option<std::sync::Arc<Vec<TopologySpreadConstraint>>>,
    /// InterPodAffinityArgs.
    pub inter_pod_affinity: crate::plugins::inter_pod_affinity::ScoreArgs,
    /// NodeAffinityArgs' `addedAffinity`: node affinity every pod of the profile gets.
    pub added_affinity: Option<std::sync::Arc<k8s_openapi::api::core::v1::NodeAffinity>>,
}

/// Which of Ferrite's filters run and each score plugin's weight (0: not scoring); PreFilter
/// and PreScore follow their plugin's Filter and Score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switches {
    pub node_unschedulable: bool,
    pub node_name: bool,
    pub taint_toleration: bool,
    pub node_affinity: bool,
    pub node_ports: bool,
    pub node_resources_fit: bool,
    pub volume_restrictions: bool,
    pub volume_binding: bool,
    pub volume_zone: bool,
    pub pod_topology_spread: bool,
    pub inter_pod_affinity: bool,
    pub default_preemption: bool,
    pub weight_taint_toleration: i64,
    pub weight_node_affinity: i64,
    pub weight_node_resources_fit: i64,
    pub weight_balanced_allocation: i64,
    pub weight_image_locality: i64,
    pub weight_pod_topology_spread: i64,
    pub weight_inter_pod_affinity: i64,
    /// DefaultPreemptionArgs.
    pub min_candidate_nodes_percentage: usize,
    pub min_candidate_nodes_absolute: usize,
}

impl Default for Switches {
    /// The default profile's (a unit test checks it against the resolved default set).
    fn default() -> Self {
        Switches {
            node_unschedulable: true,
            node_name: true,
            taint_toleration: true,
            node_affinity: true,
            node_ports: true,
            node_resources_fit: true,
            volume_restrictions: true,
            volume_binding: true,
            volume_zone: true,
            pod_topology_spread: true,
            inter_pod_affinity: true,
            default_preemption: true,
            weight_taint_toleration: 3,
            weight_node_affinity: 2,
            weight_node_resources_fit: 1,
            weight_balanced_allocation: 1,
            weight_image_locality: 1,
            weight_pod_topology_spread: 2,
            weight_inter_pod_affinity: 2,
            min_candidate_nodes_percentage: DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE,
            min_candidate_nodes_absolute: DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE,
        }
    }
}

impl Switches {
    pub fn from_plugins(p: &ResolvedPlugins) -> Self {
        let filter = |n: &str| p.has(Point::Filter, n);
        let weight = |n: &str| {
            if p.has(Point::Score, n) {
                p.score_weights.get(n).copied().unwrap_or(1)
            } else {
                0
            }
        };
        Switches {
            node_unschedulable: filter("NodeUnschedulable"),
            node_name: filter("NodeName"),
            taint_toleration: filter("TaintToleration"),
            node_affinity: filter("NodeAffinity"),
            node_ports: filter("NodePorts"),
            node_resources_fit: filter("NodeResourcesFit"),
            volume_restrictions: filter("VolumeRestrictions"),
            volume_binding: filter("VolumeBinding"),
            volume_zone: filter("VolumeZone"),
            pod_topology_spread: filter("PodTopologySpread"),
            inter_pod_affinity: filter("InterPodAffinity"),
            default_preemption: p.has(Point::PostFilter, "DefaultPreemption"),
            weight_taint_toleration: weight("TaintToleration"),
            weight_node_affinity: weight("NodeAffinity"),
            weight_node_resources_fit: weight("NodeResourcesFit"),
            weight_balanced_allocation: weight("NodeResourcesBalancedAllocation"),
            weight_image_locality: weight("ImageLocality"),
            weight_pod_topology_spread: weight("PodTopologySpread"),
            weight_inter_pod_affinity: weight("InterPodAffinity"),
            min_candidate_nodes_percentage: DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE,
            min_candidate_nodes_absolute: DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE,
        }
    }
}

impl Default for Profile {
    /// The default profile: upstream's default plugins and weights.
    fn default() -> Self {
        // The default set always resolves; an empty set would only drop plugins.
        let plugins = resolve_plugins(&default_plugins()).unwrap_or_default();
        Profile {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            percentage_of_nodes_to_score: None,
            switches: Switches::from_plugins(&plugins),
            plugins,
            fit_strategy: ScoringStrategy::default(),
            balanced_resources: None,
            spread_defaults: None,
            inter_pod_affinity: Default::default(),
            added_affinity: None,
        }
    }
}

impl Profile {
    pub fn filter_enabled(&self, plugin: &str) -> bool {
        self.plugins.has(Point::Filter, plugin)
    }
    /// The plugin's score weight, `None` when it does not score in this profile.
    pub fn score_weight(&self, plugin: &str) -> Option<i64> {
        if !self.plugins.has(Point::Score, plugin) {
            return None;
        }
        self.plugins.score_weights.get(plugin).copied()
    }
    pub fn post_filter_enabled(&self, plugin: &str) -> bool {
        self.plugins.has(Point::PostFilter, plugin)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing, defaulting, validation
// ---------------------------------------------------------------------------------------------

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field Ferrite does not implement (or a misspelt one).
    #[error("{path}unsupported field {field:?}{location}: Ferrite does not implement it")]
    UnsupportedField {
        path: String,
        field: String,
        location: String,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(String),
}

/// Reads a configuration (YAML or JSON), applies upstream's defaults and validates it.
pub fn parse(text: &str) -> Result<SchedulerConfig, ConfigError> {
    let file: FileConfig = serde_yaml::from_str(text).map_err(yaml_error)?;
    resolve(file)
}

/// serde's "unknown field `x`, expected …" becomes "unsupported field "x"" with its path and
/// position, the first thing a reader needs.
fn yaml_error(e: serde_yaml::Error) -> ConfigError {
    let msg = e.to_string();
    let Some(start) = msg.find("unknown field `") else {
        return ConfigError::Syntax(msg);
    };
    let rest = &msg[start + "unknown field `".len()..];
    let field = rest.split('`').next().unwrap_or_default().to_string();
    let path = msg[..start].to_string();
    let location = e
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    ConfigError::UnsupportedField {
        path,
        field,
        location,
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn resolve(file: FileConfig) -> Result<SchedulerConfig, ConfigError> {
    match file.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(invalid(format!(
                "apiVersion: Unsupported value: {other:?}: supported values: {API_VERSION:?}"
            )));
        }
        None => return Err(invalid("apiVersion: Required value")),
    }
    match file.kind.as_deref() {
        Some(KIND) => {}
        Some(other) => {
            return Err(invalid(format!(
                "kind: Unsupported value: {other:?}: supported values: {KIND:?}"
            )));
        }
        None => return Err(invalid("kind: Required value")),
    }
    let parallelism = file.parallelism.unwrap_or(DEFAULT_PARALLELISM);
    if parallelism <= 0 {
        return Err(invalid(format!(
            "parallelism: Invalid value: {parallelism}: should be an integer value greater than zero"
        )));
    }
    let global_pct = file.percentage_of_nodes_to_score;
    validate_percentage("percentageOfNodesToScore", global_pct)?;
    let initial = file
        .pod_initial_backoff_seconds
        .unwrap_or(DEFAULT_POD_INITIAL_BACKOFF_SECONDS);
    if initial <= 0 {
        return Err(invalid(format!(
            "podInitialBackoffSeconds: Invalid value: {initial}: must be greater than 0"
        )));
    }
    let max = file
        .pod_max_backoff_seconds
        .unwrap_or(DEFAULT_POD_MAX_BACKOFF_SECONDS);
    if max < initial {
        return Err(invalid(format!(
            "podMaxBackoffSeconds: Invalid value: {max}: must be greater than or equal to PodInitialBackoffSeconds"
        )));
    }
    let leader_election = file.leader_election.unwrap_or_default();
    for (field, value) in [
        ("leaseDuration", &leader_election.lease_duration),
        ("renewDeadline", &leader_election.renew_deadline),
        ("retryPeriod", &leader_election.retry_period),
    ] {
        if let Some(v) = value {
            ferrite_runtime::flags::parse_duration_flag(v)
                .map_err(|e| invalid(format!("leaderElection.{field}: Invalid value: {e}")))?;
        }
    }
    if let Some(lock) = &leader_election.resource_lock
        && lock != "leases"
    {
        return Err(invalid(format!(
            "leaderElection.resourceLock: Unsupported value: {lock:?}: supported values: \"leases\""
        )));
    }
    let client_connection = file.client_connection.unwrap_or_default();
    if let Some(b) = client_connection.burst
        && b < 0
    {
        return Err(invalid(format!(
            "clientConnection.burst: Invalid value: {b}: must be non-negative"
        )));
    }
    // `SetDefaults_KubeSchedulerConfiguration`: no profiles means the default one.
    let files = file.profiles.unwrap_or_default();
    let files = if files.is_empty() {
        vec![ProfileFile::default()]
    } else {
        files
    };
    let mut profiles: Vec<Profile> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, pf) in files.iter().enumerate() {
        let path = format!("profiles[{i}]");
        let profile = resolve_profile(&path, pf, global_pct)?;
        if !names.insert(profile.scheduler_name.clone()) {
            return Err(invalid(format!(
                "{path}.schedulerName: Duplicate value: {:?}",
                profile.scheduler_name
            )));
        }
        if let Some(first) = profiles.first() {
            common_queue_sort(&path, first, &profile)?;
        }
        profiles.push(profile);
    }
    Ok(SchedulerConfig {
        parallelism,
        percentage_of_nodes_to_score: global_pct,
        pod_initial_backoff: Duration::from_secs(initial as u64),
        pod_max_backoff: Duration::from_secs(max as u64),
        leader_election,
        client_connection,
        profiles,
    })
}

/// `validateCommonQueueSort`: every profile sorts the one queue the same way.
fn common_queue_sort(path: &str, first: &Profile, profile: &Profile) -> Result<(), ConfigError> {
    if first.plugins.at(Point::QueueSort) != profile.plugins.at(Point::QueueSort) {
        return Err(invalid(format!(
            "{path}.plugins.queueSort: Invalid value: {:?}: queueSort must be the same for all profiles",
            profile.plugins.at(Point::QueueSort)
        )));
    }
    Ok(())
}

/// One profile from its parts, resolved exactly as a `profiles[]` entry of a configuration
/// file is (upstream's defaults merged with `plugins`, then `pluginConfig`), with `path`
/// prefixing the messages. For `SchedulerProfile` objects.
pub fn resolve_profile_parts(
    path: &str,
    scheduler_name: &str,
    percentage_of_nodes_to_score: Option<i32>,
    plugins: Option<&PluginsFile>,
    plugin_config: &[(String, Option<serde_json::Value>)],
    global_percentage_of_nodes_to_score: Option<i32>,
) -> Result<Profile, ConfigError> {
    let file = ProfileFile {
        scheduler_name: Some(scheduler_name.to_string()),
        percentage_of_nodes_to_score,
        plugins: plugins.cloned(),
        plugin_config: plugin_config
            .iter()
            .map(|(name, args)| PluginConfigFile {
                name: name.clone(),
                args: args.clone(),
            })
            .collect(),
    };
    resolve_profile(path, &file, global_percentage_of_nodes_to_score)
}

impl SchedulerConfig {
    /// The profiles in force: each of `overrides` in place of the configuration's profile of the
    /// same schedulerName, or added after them; checked as a whole as a file's profiles are.
    pub fn profiles_with(
        &self,
        overrides: &BTreeMap<String, std::sync::Arc<Profile>>,
    ) -> Result<Vec<std::sync::Arc<Profile>>, ConfigError> {
        let mut out: Vec<std::sync::Arc<Profile>> = self
            .profiles
            .iter()
            .map(|p| match overrides.get(&p.scheduler_name) {
                Some(o) => o.clone(),
                None => std::sync::Arc::new(p.clone()),
            })
            .collect();
        for (name, p) in overrides {
            if !self.profiles.iter().any(|f| &f.scheduler_name == name) {
                out.push(p.clone());
            }
        }
        if let Some(first) = out.first() {
            for p in &out[1..] {
                common_queue_sort(&format!("profile {:?}", p.scheduler_name), first, p)?;
            }
        }
        Ok(out)
    }
}

fn validate_percentage(path: &str, v: Option<i32>) -> Result<(), ConfigError> {
    if let Some(p) = v
        && !(0..=100).contains(&p)
    {
        return Err(invalid(format!(
            "{path}: Invalid value: {p}: not in valid range [0-100]"
        )));
    }
    Ok(())
}

/// The extension points whose plugins Ferrite runs in fixed code, not per profile: a profile
/// may only leave them as the defaults resolve them.
const FIXED_POINTS: [Point; 7] = [
    Point::PreEnqueue,
    Point::QueueSort,
    Point::Reserve,
    Point::Permit,
    Point::PreBind,
    Point::Bind,
    Point::PostBind,
];

fn resolve_profile(
    path: &str,
    pf: &ProfileFile,
    global_pct: Option<i32>,
) -> Result<Profile, ConfigError> {
    let scheduler_name = pf
        .scheduler_name
        .clone()
        .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.to_string());
    if scheduler_name.is_empty() {
        return Err(invalid(format!("{path}.schedulerName: Required value")));
    }
    validate_percentage(
        &format!("{path}.percentageOfNodesToScore"),
        pf.percentage_of_nodes_to_score,
    )?;
    if let Some(plugins) = &pf.plugins {
        for (field, set) in std::iter::once(("multiPoint", &plugins.multi_point))
            .chain(Point::ALL.iter().map(|p| (p.field(), plugins.set(*p))))
        {
            for (j, p) in set.enabled.iter().enumerate() {
                if let Some(w) = p.weight
                    && w < 0
                {
                    return Err(invalid(format!(
                        "{path}.plugins.{field}.enabled[{j}].weight: Invalid value: {w}: must be non-negative"
                    )));
                }
                if p.name == "*" {
                    return Err(invalid(format!(
                        "{path}.plugins.{field}.enabled[{j}].name: Invalid value: \"*\": only disabled may name all plugins"
                    )));
                }
            }
        }
    }
    let merged = merge_plugins(default_plugins(), pf.plugins.as_ref());
    let plugins = resolve_plugins(&merged).map_err(|e| {
        invalid(format!(
            "{path}.plugins: initializing profile {scheduler_name:?}: {e}"
        ))
    })?;
    let defaults = resolve_plugins(&default_plugins()).map_err(invalid)?;
    for point in FIXED_POINTS {
        if plugins.at(point) != defaults.at(point) {
            return Err(invalid(format!(
                "{path}.plugins.{}: Invalid value: {:?}: Ferrite does not support changing this extension point (its plugins are {:?})",
                point.field(),
                plugins.at(point),
                defaults.at(point)
            )));
        }
    }
    let mut fit_strategy = ScoringStrategy::default();
    let mut added_affinity = None;
    let mut balanced_resources = None;
    let mut spread_defaults = None;
    let mut inter_pod_affinity = crate::plugins::inter_pod_affinity::ScoreArgs::default();
    let mut min_candidates = (
        DEFAULT_MIN_CANDIDATE_NODES_PERCENTAGE,
        DEFAULT_MIN_CANDIDATE_NODES_ABSOLUTE,
    );
    let mut seen = BTreeSet::new();
    for (j, pc) in pf.plugin_config.iter().enumerate() {
        let cpath = format!("{path}.pluginConfig[{j}]");
        if !seen.insert(pc.name.clone()) {
            return Err(invalid(format!(
                "{cpath}.name: Duplicate value: {:?}",
                pc.name
            )));
        }
        let args = pc.args.clone().unwrap_or(serde_json::json!({}));
        match pc.name.as_str() {
            "NodeResourcesFit" => {
                fit_strategy = fit_args(&cpath, decode(&cpath, args)?)?;
            }
            "NodeResourcesBalancedAllocation" => {
                let a: BalancedAllocationArgsFile = decode(&cpath, args)?;
                check_args_kind(
                    &cpath,
                    &a.api_version,
                    &a.kind,
                    "NodeResourcesBalancedAllocationArgs",
                )?;
                if let Some(r) = &a.resources {
                    validate_resources(&format!("{cpath}.args.resources"), r)?;
                    if *r != default_resources() {
                        balanced_resources = Some(r.clone());
                    }
                }
            }
            "PodTopologySpread" => {
                let a: SpreadArgsFile = decode(&cpath, args)?;
                check_args_kind(&cpath, &a.api_version, &a.kind, "PodTopologySpreadArgs")?;
                match a.defaulting_type.as_deref() {
                    None | Some("System") => {
                        if !a.default_constraints.is_empty() {
                            return Err(invalid(format!(
                                "{cpath}.args.defaultConstraints: Invalid value: when .defaultingType is \"System\", .defaultConstraints must be empty"
                            )));
                        }
                    }
                    Some("List") => {
                        spread_defaults = Some(std::sync::Arc::new(default_constraints(
                            &format!("{cpath}.args.defaultConstraints"),
                            a.default_constraints,
                        )?));
                    }
                    Some(other) => {
                        return Err(invalid(format!(
                            "{cpath}.args.defaultingType: Unsupported value: {other:?}: supported values: \"System\", \"List\""
                        )));
                    }
                }
            }
            "InterPodAffinity" => {
                let a: InterPodAffinityArgsFile = decode(&cpath, args)?;
                check_args_kind(&cpath, &a.api_version, &a.kind, "InterPodAffinityArgs")?;
                if let Some(w) = a.hard_pod_affinity_weight {
                    if !(0..=100).contains(&w) {
                        return Err(invalid(format!(
                            "{cpath}.args.hardPodAffinityWeight: Invalid value: {w}: not in valid range [0, 100]"
                        )));
                    }
                    inter_pod_affinity.hard_pod_affinity_weight = i64::from(w);
                }
                inter_pod_affinity.ignore_preferred_terms_of_existing_pods =
                    a.ignore_preferred_terms_of_existing_pods.unwrap_or(false);
            }
            "NodeAffinity" => {
                let a: NodeAffinityArgsFile = decode(&cpath, args)?;
                check_args_kind(&cpath, &a.api_version, &a.kind, "NodeAffinityArgs")?;
                if let Some(v) = a.added_affinity {
                    let na: k8s_openapi::api::core::v1::NodeAffinity = serde_json::from_value(v)
                        .map_err(|e| invalid(format!("{cpath}.args.addedAffinity: {e}")))?;
                    if na
                        .required_during_scheduling_ignored_during_execution
                        .as_ref()
                        .is_some_and(|r| r.node_selector_terms.is_empty())
                    {
                        return Err(invalid(format!(
                            "{cpath}.args.addedAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term"
                        )));
                    }
                    added_affinity = Some(std::sync::Arc::new(na));
                }
            }
            "DefaultPreemption" => {
                let a: PreemptionArgsFile = decode(&cpath, args)?;
                check_args_kind(&cpath, &a.api_version, &a.kind, "DefaultPreemptionArgs")?;
                let pct = a.min_candidate_nodes_percentage.unwrap_or(10);
                let abs = a.min_candidate_nodes_absolute.unwrap_or(100);
                if !(0..=100).contains(&pct) {
                    return Err(invalid(format!(
                        "{cpath}.args.minCandidateNodesPercentage: Invalid value: {pct}: not in valid range [0, 100]"
                    )));
                }
                if abs < 0 {
                    return Err(invalid(format!(
                        "{cpath}.args.minCandidateNodesAbsolute: Invalid value: {abs}: not in valid range [0, inf)"
                    )));
                }
                if pct == 0 && abs == 0 {
                    return Err(invalid(format!(
                        "{cpath}.args: Invalid value: both minCandidateNodesPercentage and minCandidateNodesAbsolute cannot be zero"
                    )));
                }
                min_candidates = (pct as usize, abs as usize);
            }
            other if implements(other).is_some() => {
                return Err(invalid(format!(
                    "{cpath}.name: Invalid value: {other:?}: Ferrite does not support arguments for this plugin"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "{cpath}.name: Invalid value: {other:?}: no such plugin"
                )));
            }
        }
    }
    let mut switches = Switches::from_plugins(&plugins);
    (
        switches.min_candidate_nodes_percentage,
        switches.min_candidate_nodes_absolute,
    ) = min_candidates;
    Ok(Profile {
        scheduler_name,
        spread_defaults,
        inter_pod_affinity,
        added_affinity,
        balanced_resources,
        switches,
        percentage_of_nodes_to_score: pf
            .percentage_of_nodes_to_score
            .or(global_pct)
            .map(|p| p as u32)
            .filter(|p| *p > 0),
        plugins,
        fit_strategy,
    })
}

/// `validateDefaultConstraints`: positive maxSkew, a topology key, a known action, no
/// selector (it is deduced for each pod), and no two constraints for the same key and action.
fn default_constraints(
    path: &str,
    values: Vec<serde_json::Value>,
) -> Result<Vec<TopologySpreadConstraint>, ConfigError> {
    let mut out: Vec<TopologySpreadConstraint> = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        let c: TopologySpreadConstraint =
            serde_json::from_value(v).map_err(|e| invalid(format!("{path}[{i}]: {e}")))?;
        if c.max_skew <= 0 {
            return Err(invalid(format!(
                "{path}[{i}].maxSkew: Invalid value: {}: not in valid range (0, inf)",
                c.max_skew
            )));
        }
        if c.topology_key.is_empty() {
            return Err(invalid(format!(
                "{path}[{i}].topologyKey: Required value: can not be empty"
            )));
        }
        if !matches!(
            c.when_unsatisfiable.as_str(),
            "DoNotSchedule" | "ScheduleAnyway"
        ) {
            return Err(invalid(format!(
                "{path}[{i}].whenUnsatisfiable: Unsupported value: {:?}: supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
                c.when_unsatisfiable
            )));
        }
        if c.label_selector.is_some() {
            return Err(invalid(format!(
                "{path}[{i}].labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"
            )));
        }
        if out.iter().any(|o| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        }) {
            return Err(invalid(format!(
                "{path}[{i}]: Duplicate value: {{{:?}, {:?}}}",
                c.topology_key, c.when_unsatisfiable
            )));
        }
        out.push(c);
    }
    Ok(out)
}

fn not_yet(path: &str, what: &str) -> ConfigError {
    invalid(format!(
        "{path}.args: unsupported: Ferrite does not implement {what} yet"
    ))
}

fn decode<T: serde::de::DeserializeOwned>(
    path: &str,
    args: serde_json::Value,
) -> Result<T, ConfigError> {
    serde_json::from_value(args).map_err(|e| {
        let msg = e.to_string();
        match msg.find("unknown field `") {
            Some(start) => ConfigError::UnsupportedField {
                path: format!("{path}.args: "),
                field: msg[start + "unknown field `".len()..]
                    .split('`')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                location: String::new(),
            },
            None => invalid(format!("{path}.args: {msg}")),
        }
    })
}

fn check_args_kind(
    path: &str,
    api_version: &Option<String>,
    kind: &Option<String>,
    want: &str,
) -> Result<(), ConfigError> {
    if let Some(v) = api_version
        && v != API_VERSION
    {
        return Err(invalid(format!(
            "{path}.args.apiVersion: Unsupported value: {v:?}"
        )));
    }
    if let Some(k) = kind
        && k != want
    {
        return Err(invalid(format!(
            "{path}.args.kind: Unsupported value: {k:?}: supported values: {want:?}"
        )));
    }
    Ok(())
}

/// `validateResources`: weights in [1, 100].
fn validate_resources(path: &str, resources: &[ResourceSpec]) -> Result<(), ConfigError> {
    for (i, r) in resources.iter().enumerate() {
        if !(1..=MAX_RESOURCE_WEIGHT).contains(&r.weight) {
            return Err(invalid(format!(
                "{path}[{i}].weight: Invalid value: {}: resource weight of {} should be in range [1, {MAX_RESOURCE_WEIGHT}]",
                r.weight, r.name
            )));
        }
    }
    Ok(())
}

/// `ValidateNodeResourcesFitArgs` and the strategy it configures.
fn fit_args(path: &str, a: FitArgsFile) -> Result<ScoringStrategy, ConfigError> {
    check_args_kind(path, &a.api_version, &a.kind, "NodeResourcesFitArgs")?;
    if !a.ignored_resources.is_empty() || !a.ignored_resource_groups.is_empty() {
        return Err(not_yet(path, "ignoredResources / ignoredResourceGroups"));
    }
    let Some(s) = a.scoring_strategy else {
        return Ok(ScoringStrategy::default());
    };
    let resources = s.resources.unwrap_or_else(default_resources);
    validate_resources(
        &format!("{path}.args.scoringStrategy.resources"),
        &resources,
    )?;
    let spath = format!("{path}.args.scoringStrategy");
    match s.type_.as_deref().unwrap_or("LeastAllocated") {
        "LeastAllocated" | "MostAllocated" if s.requested_to_capacity_ratio.is_some() => {
            Err(invalid(format!(
                "{spath}.requestedToCapacityRatio: Forbidden: only valid with type RequestedToCapacityRatio"
            )))
        }
        "LeastAllocated" => Ok(ScoringStrategy::LeastAllocated(resources)),
        "MostAllocated" => Ok(ScoringStrategy::MostAllocated(resources)),
        "RequestedToCapacityRatio" => {
            let shape = s.requested_to_capacity_ratio.unwrap_or_default().shape;
            validate_shape(&format!("{spath}.requestedToCapacityRatio.shape"), &shape)?;
            // `requestedToCapacityRatioScorer`: shape scores are scaled from 0..10 to 0..100.
            let shape = shape
                .iter()
                .map(|p| ShapePoint {
                    utilization: p.utilization,
                    score: p.score * (crate::plugins::MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE),
                })
                .collect();
            Ok(ScoringStrategy::RequestedToCapacityRatio { resources, shape })
        }
        other => Err(invalid(format!(
            "{spath}.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""
        ))),
    }
}

/// `validateFunctionShape`: at least one point, utilization strictly increasing in [0, 100],
/// scores in [0, 10].
fn validate_shape(path: &str, shape: &[ShapePoint]) -> Result<(), ConfigError> {
    if shape.is_empty() {
        return Err(invalid(format!(
            "{path}: Required value: at least one point must be specified"
        )));
    }
    for (i, p) in shape.iter().enumerate() {
        if i > 0 && p.utilization <= shape[i - 1].utilization {
            return Err(invalid(format!(
                "{path}[{i}].utilization: Invalid value: {}: utilization values must be sorted in increasing order",
                p.utilization
            )));
        }
        if !(0..=100).contains(&p.utilization) {
            return Err(invalid(format!(
                "{path}[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                p.utilization
            )));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE).contains(&p.score) {
            return Err(invalid(format!(
                "{path}[{i}].score: Invalid value: {}: not in valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]",
                p.score
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

    fn parse_body(body: &str) -> Result<SchedulerConfig, ConfigError> {
        parse(&format!("{HEAD}{body}"))
    }

    fn names(v: &[PluginRef]) -> Vec<(&str, Option<i32>)> {
        v.iter().map(|p| (p.name.as_str(), p.weight)).collect()
    }

    fn set(enabled: &[(&str, Option<i32>)], disabled: &[&str]) -> PluginSet {
        PluginSet {
            enabled: enabled
                .iter()
                .map(|(n, w)| PluginRef {
                    name: n.to_string(),
                    weight: *w,
                })
                .collect(),
            disabled: disabled.iter().map(|n| PluginRef::named(n)).collect(),
        }
    }

    #[test]
    fn a_field_ferrite_does_not_implement_is_refused_by_name() {
        let e = parse_body("extenders: []\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnsupportedField { field, .. } if field == "extenders"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("unsupported field \"extenders\""),
            "{e}"
        );
        let e = parse_body("delayCacheUntilActive: true\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported field \"delayCacheUntilActive\""),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_deep_in_a_profile_is_refused_with_its_path() {
        let e = parse_body("profiles:\n- schedulerName: a\n  plugins:\n    filter:\n      enabled:\n      - name: NodeName\n        wieght: 2\n")
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unsupported field \"wieght\""), "{msg}");
        assert!(msg.contains("profiles[0]"), "{msg}");
    }

    #[test]
    fn an_unknown_field_in_plugin_args_is_refused_by_name() {
        let e = parse_body("profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        typo: 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("unsupported field \"typo\""), "{e}");
    }

    #[test]
    fn the_api_version_and_kind_are_checked() {
        assert!(parse("kind: KubeSchedulerConfiguration\n").is_err());
        let e = parse(
            "apiVersion: kubescheduler.config.k8s.io/v1beta3\nkind: KubeSchedulerConfiguration\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("apiVersion: Unsupported value"),
            "{e}"
        );
        assert!(parse("apiVersion: kubescheduler.config.k8s.io/v1\nkind: Other\n").is_err());
    }

    #[test]
    fn an_empty_configuration_is_the_default_profile_with_upstream_defaults() {
        let c = parse(HEAD).unwrap();
        assert_eq!(c.profiles, vec![Profile::default()]);
        assert_eq!(c.parallelism, 16);
        assert_eq!(c.pod_initial_backoff, Duration::from_secs(1));
        assert_eq!(c.pod_max_backoff, Duration::from_secs(10));
        assert_eq!(c, SchedulerConfig::default());
    }

    #[test]
    fn json_is_accepted_too() {
        let c = parse(r#"{"apiVersion":"kubescheduler.config.k8s.io/v1","kind":"KubeSchedulerConfiguration","profiles":[{"schedulerName":"j"}]}"#)
            .unwrap();
        assert_eq!(c.profiles[0].scheduler_name, "j");
    }

    #[test]
    fn the_default_switches_are_what_the_default_plugin_set_resolves_to() {
        let p = Profile::default();
        assert_eq!(Switches::from_plugins(&p.plugins), Switches::default());
    }

    #[test]
    fn the_default_set_resolves_per_extension_point_in_upstream_order() {
        let p = Profile::default();
        assert_eq!(
            p.plugins.at(Point::Filter),
            [
                "NodeUnschedulable",
                "NodeName",
                "TaintToleration",
                "NodeAffinity",
                "NodePorts",
                "NodeResourcesFit",
                "VolumeRestrictions",
                "NodeVolumeLimits",
                "VolumeBinding",
                "VolumeZone",
                "PodTopologySpread",
                "InterPodAffinity",
                "DynamicResources",
            ]
        );
        assert_eq!(
            p.plugins.at(Point::Score),
            [
                "TaintToleration",
                "NodeAffinity",
                "NodeResourcesFit",
                "VolumeBinding",
                "PodTopologySpread",
                "InterPodAffinity",
                "NodeResourcesBalancedAllocation",
                "ImageLocality",
            ]
        );
        assert_eq!(p.plugins.at(Point::QueueSort), ["PrioritySort"]);
        assert_eq!(p.plugins.at(Point::Bind), ["DefaultBinder"]);
        assert_eq!(p.score_weight("TaintToleration"), Some(3));
        assert_eq!(p.score_weight("VolumeBinding"), Some(1));
        assert_eq!(p.score_weight("NodeName"), None);
    }

    // TestMergePlugins-style cases over mergePluginSet.
    #[test]
    fn merging_appends_custom_plugins_after_the_defaults() {
        let m = merge_plugin_set(
            &set(&[("A", None), ("B", None)], &[]),
            &set(&[("C", None)], &[]),
        );
        assert_eq!(names(&m.enabled), [("A", None), ("B", None), ("C", None)]);
    }

    #[test]
    fn merging_drops_disabled_defaults_and_keeps_the_disabled_list() {
        let m = merge_plugin_set(&set(&[("A", None), ("B", None)], &["X"]), &set(&[], &["A"]));
        assert_eq!(names(&m.enabled), [("B", None)]);
        assert_eq!(names(&m.disabled), [("A", None), ("X", None)]);
    }

    #[test]
    fn merging_with_all_disabled_keeps_only_the_custom_plugins_in_their_order() {
        let m = merge_plugin_set(
            &set(&[("A", Some(1)), ("B", Some(2))], &[]),
            &set(&[("B", Some(7)), ("A", None)], &["*"]),
        );
        assert_eq!(names(&m.enabled), [("B", Some(7)), ("A", None)]);
    }

    #[test]
    fn merging_replaces_a_reconfigured_default_in_place() {
        let m = merge_plugin_set(
            &set(&[("A", Some(1)), ("B", Some(2)), ("C", None)], &[]),
            &set(&[("D", None), ("B", Some(5))], &[]),
        );
        assert_eq!(
            names(&m.enabled),
            [("A", Some(1)), ("B", Some(5)), ("C", None), ("D", None)]
        );
    }

    #[test]
    fn merging_keeps_duplicate_custom_plugins_for_the_framework_to_refuse() {
        let m = merge_plugin_set(
            &set(&[("A", None)], &[]),
            &set(&[("C", None), ("C", None)], &[]),
        );
        assert_eq!(names(&m.enabled), [("A", None), ("C", None), ("C", None)]);
        let custom = PluginsFile {
            filter: set(&[("NodeName", None), ("NodeName", None)], &[]),
            ..PluginsFile::default()
        };
        let e = resolve_plugins(&merge_plugins(default_plugins(), Some(&custom))).unwrap_err();
        assert!(e.contains("already registered"), "{e}");
    }

    #[test]
    fn disabling_all_scores_and_enabling_some_scores_with_only_those() {
        let c = parse_body("profiles:\n- schedulerName: s\n  plugins:\n    score:\n      disabled:\n      - name: '*'\n      enabled:\n      - name: NodeResourcesFit\n        weight: 5\n      - name: ImageLocality\n")
            .unwrap();
        let p = &c.profiles[0];
        assert_eq!(
            p.plugins.at(Point::Score),
            ["NodeResourcesFit", "ImageLocality"]
        );
        assert_eq!(p.score_weight("NodeResourcesFit"), Some(5));
        assert_eq!(p.score_weight("ImageLocality"), Some(1));
        assert_eq!(p.switches.weight_taint_toleration, 0);
        // Filters keep their defaults.
        assert!(p.switches.taint_toleration);
    }

    #[test]
    fn a_score_point_weight_wins_over_the_multi_point_weight() {
        let c = parse_body("profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: TaintToleration\n        weight: 9\n    score:\n      enabled:\n      - name: TaintToleration\n        weight: 4\n")
            .unwrap();
        assert_eq!(c.profiles[0].score_weight("TaintToleration"), Some(4));
    }

    #[test]
    fn a_multi_point_weight_overrides_the_default_weight() {
        let c = parse_body("profiles:\n- plugins:\n    multiPoint:\n      enabled:\n      - name: NodeAffinity\n        weight: 7\n")
            .unwrap();
        let p = &c.profiles[0];
        assert_eq!(p.score_weight("NodeAffinity"), Some(7));
        assert_eq!(p.switches.weight_node_affinity, 7);
    }

    #[test]
    fn disabling_a_plugin_in_multi_point_removes_it_from_every_point() {
        let c = parse_body("profiles:\n- plugins:\n    multiPoint:\n      disabled:\n      - name: TaintToleration\n")
            .unwrap();
        let s = c.profiles[0].switches;
        assert!(!s.taint_toleration);
        assert_eq!(s.weight_taint_toleration, 0);
        assert!(s.node_affinity);
    }

    #[test]
    fn disabling_a_filter_point_keeps_its_score() {
        let c = parse_body(
            "profiles:\n- plugins:\n    filter:\n      disabled:\n      - name: NodeResourcesFit\n",
        )
        .unwrap();
        let s = c.profiles[0].switches;
        assert!(!s.node_resources_fit);
        assert_eq!(s.weight_node_resources_fit, 1);
    }

    #[test]
    fn a_plugin_enabled_at_a_point_and_in_multi_point_runs_first_as_an_override() {
        let custom = PluginsFile {
            filter: set(&[("NodePorts", None)], &[]),
            ..PluginsFile::default()
        };
        let r = resolve_plugins(&merge_plugins(default_plugins(), Some(&custom))).unwrap();
        assert_eq!(r.at(Point::Filter)[0], "NodePorts");
        assert_eq!(
            r.at(Point::Filter)
                .iter()
                .filter(|n| *n == "NodePorts")
                .count(),
            1
        );
    }

    #[test]
    fn unknown_plugins_and_plugins_at_the_wrong_point_are_refused() {
        let e =
            parse_body("profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Nope\n")
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("FilterPlugin \"Nope\" does not exist"),
            "{e}"
        );
        let e = parse_body(
            "profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: ImageLocality\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("does not extend FilterPlugin"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_scheduler_names_are_refused() {
        let e = parse_body("profiles:\n- schedulerName: a\n- schedulerName: a\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "profiles[1].schedulerName: Duplicate value: \"a\""
        );
    }

    #[test]
    fn fixed_extension_points_cannot_be_changed() {
        let e = parse_body(
            "profiles:\n- plugins:\n    queueSort:\n      disabled:\n      - name: '*'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("only one queue sort plugin"), "{e}");
        let e = parse_body(
            "profiles:\n- plugins:\n    preBind:\n      disabled:\n      - name: VolumeBinding\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("profiles[0].plugins.preBind"), "{e}");
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for body in [
            "parallelism: 0\n",
            "percentageOfNodesToScore: 101\n",
            "podInitialBackoffSeconds: 0\n",
            "podInitialBackoffSeconds: 5\npodMaxBackoffSeconds: 4\n",
            "profiles:\n- percentageOfNodesToScore: -1\n",
            "profiles:\n- plugins:\n    score:\n      enabled:\n      - name: ImageLocality\n        weight: -1\n",
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n        resources:\n        - name: cpu\n          weight: 0\n",
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n        requestedToCapacityRatio:\n          shape:\n          - {utilization: 50, score: 1}\n          - {utilization: 40, score: 2}\n",
            "profiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n        requestedToCapacityRatio:\n          shape:\n          - {utilization: 50, score: 11}\n",
            "leaderElection:\n  resourceLock: endpoints\n",
            "leaderElection:\n  leaseDuration: soon\n",
        ] {
            assert!(parse_body(body).is_err(), "accepted: {body}");
        }
    }

    #[test]
    fn fit_scoring_strategies_are_read_with_their_resources_and_scaled_shape() {
        let c = parse_body("profiles:\n- schedulerName: most\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n- schedulerName: ratio\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      apiVersion: kubescheduler.config.k8s.io/v1\n      kind: NodeResourcesFitArgs\n      scoringStrategy:\n        type: RequestedToCapacityRatio\n        resources:\n        - {name: cpu, weight: 3}\n        requestedToCapacityRatio:\n          shape:\n          - {utilization: 0, score: 0}\n          - {utilization: 100, score: 10}\n")
            .unwrap();
        assert_eq!(
            c.profiles[0].fit_strategy,
            ScoringStrategy::MostAllocated(default_resources())
        );
        assert_eq!(
            c.profiles[1].fit_strategy,
            ScoringStrategy::RequestedToCapacityRatio {
                resources: vec![ResourceSpec {
                    name: "cpu".into(),
                    weight: 3
                }],
                shape: vec![
                    ShapePoint {
                        utilization: 0,
                        score: 0
                    },
                    ShapePoint {
                        utilization: 100,
                        score: 100
                    }
                ],
            }
        );
    }

    #[test]
    fn plugin_args_ferrite_does_not_implement_are_refused_not_ignored() {
        for (body, needle) in [
            (
                "profiles:\n- pluginConfig:\n  - name: NodeAffinity\n    args:\n      addedAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms: []\n",
                "at least one node selector term",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultingType: List\n      defaultConstraints:\n      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {}}\n",
                "must not define a selector",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultConstraints:\n      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}\n",
                "must be empty",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: DefaultPreemption\n    args:\n      minCandidateNodesAbsolute: 0\n      minCandidateNodesPercentage: 0\n",
                "cannot be zero",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: VolumeBinding\n    args: {}\n",
                "does not support arguments",
            ),
            (
                "profiles:\n- pluginConfig:\n  - name: Nope\n    args: {}\n",
                "no such plugin",
            ),
        ] {
            let e = parse_body(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{body}: {e}");
        }
        // Defaults spelled out are fine.
        parse_body("profiles:\n- pluginConfig:\n  - name: DefaultPreemption\n    args:\n      minCandidateNodesPercentage: 10\n      minCandidateNodesAbsolute: 100\n  - name: PodTopologySpread\n    args:\n      defaultingType: System\n")
            .unwrap();
    }

    #[test]
    fn default_preemption_args_set_the_candidate_counts() {
        let c = parse_body("profiles:\n- pluginConfig:\n  - name: DefaultPreemption\n    args:\n      minCandidateNodesPercentage: 20\n      minCandidateNodesAbsolute: 5\n")
            .unwrap();
        let s = c.profiles[0].switches;
        assert_eq!(
            (
                s.min_candidate_nodes_percentage,
                s.min_candidate_nodes_absolute
            ),
            (20, 5)
        );
    }

    #[test]
    fn added_affinity_is_read_into_the_profile() {
        let c = parse_body("profiles:\n- pluginConfig:\n  - name: NodeAffinity\n    args:\n      addedAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions:\n            - {key: zone, operator: In, values: [a]}\n")
            .unwrap();
        let a = c.profiles[0]
            .added_affinity
            .as_deref()
            .expect("addedAffinity");
        let terms = &a
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("required")
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
    }

    #[test]
    fn balanced_allocation_resources_other_than_the_defaults_are_kept() {
        let c = parse_body("profiles:\n- schedulerName: a\n  pluginConfig:\n  - name: NodeResourcesBalancedAllocation\n    args:\n      resources:\n      - {name: cpu, weight: 1}\n      - {name: example.com/gpu, weight: 1}\n- schedulerName: b\n  pluginConfig:\n  - name: NodeResourcesBalancedAllocation\n    args:\n      resources:\n      - {name: cpu, weight: 1}\n      - {name: memory, weight: 1}\n")
            .unwrap();
        assert_eq!(
            c.profiles[0].balanced_resources.as_ref().map(|r| r.len()),
            Some(2)
        );
        assert_eq!(c.profiles[1].balanced_resources, None);
    }

    #[test]
    fn inter_pod_affinity_args_are_read_into_the_profile() {
        let c = parse_body("profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n    args:\n      hardPodAffinityWeight: 0\n      ignorePreferredTermsOfExistingPods: true\n")
            .unwrap();
        let a = c.profiles[0].inter_pod_affinity;
        assert_eq!(a.hard_pod_affinity_weight, 0);
        assert!(a.ignore_preferred_terms_of_existing_pods);
        assert!(parse_body("profiles:\n- pluginConfig:\n  - name: InterPodAffinity\n    args:\n      hardPodAffinityWeight: 101\n").is_err());
    }

    #[test]
    fn listed_default_spread_constraints_are_read_into_the_profile() {
        let c = parse_body("profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultingType: List\n      defaultConstraints:\n      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}\n")
            .unwrap();
        let d = c.profiles[0].spread_defaults.as_deref().expect("list");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].when_unsatisfiable, "DoNotSchedule");
        let dup = "profiles:\n- pluginConfig:\n  - name: PodTopologySpread\n    args:\n      defaultingType: List\n      defaultConstraints:\n      - {maxSkew: 1, topologyKey: z, whenUnsatisfiable: DoNotSchedule}\n      - {maxSkew: 2, topologyKey: z, whenUnsatisfiable: DoNotSchedule}\n";
        assert!(
            parse_body(dup)
                .unwrap_err()
                .to_string()
                .contains("Duplicate value")
        );
    }

    #[test]
    fn a_profile_percentage_overrides_the_global_one_and_zero_is_adaptive() {
        let c = parse_body("percentageOfNodesToScore: 30\nprofiles:\n- schedulerName: a\n- schedulerName: b\n  percentageOfNodesToScore: 60\n- schedulerName: c\n  percentageOfNodesToScore: 0\n")
            .unwrap();
        let pct: Vec<Option<u32>> = c
            .profiles
            .iter()
            .map(|p| p.percentage_of_nodes_to_score)
            .collect();
        assert_eq!(pct, vec![Some(30), Some(60), None]);
    }

    #[test]
    fn client_connection_and_leader_election_are_read_as_written() {
        let c = parse_body("clientConnection:\n  kubeconfig: /k\n  qps: 10\n  burst: 20\nleaderElection:\n  leaderElect: true\n  resourceName: mine\n  leaseDuration: 30s\n")
            .unwrap();
        assert_eq!(c.client_connection.kubeconfig.as_deref(), Some("/k"));
        assert_eq!(c.client_connection.burst, Some(20));
        assert_eq!(c.leader_election.resource_name.as_deref(), Some("mine"));
        assert_eq!(c.leader_election.lease_duration.as_deref(), Some("30s"));
    }
}
