//! Pure helpers over Deployments and their ReplicaSets: revisions and annotations, max surge /
//! max unavailable, the pod-template-hash, finding the new and old ReplicaSets, and proportional
//! scaling. Mirrors kubernetes/kubernetes `pkg/controller/deployment/util/deployment_util.go` and
//! the ReplicaSet helpers of `pkg/controller/controller_utils.go`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `apps.DefaultDeploymentUniqueLabelKey`.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// `apps.DeprecatedRollbackTo`: the legacy rollback request.
pub const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// `kubectl.kubernetes.io/last-applied-configuration` (never copied to ReplicaSets).
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream `maxRevHistoryLengthInChars` in deployment_controller.go.
pub const MAX_REV_HISTORY_LENGTH_IN_CHARS: usize = 2000;

pub const ROLLING_UPDATE: &str = "RollingUpdate";
pub const RECREATE: &str = "Recreate";

/// Annotations a Deployment never hands to its ReplicaSets (upstream `annotationsToSkip`).
const ANNOTATIONS_TO_SKIP: &[&str] = &[
    LAST_APPLIED_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    DEPRECATED_ROLLBACK_TO,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UtilError {
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    IntOrPercent(String),
    #[error("deployment type {0:?} isn't supported")]
    UnsupportedStrategy(String),
    #[error("{0:?} is not a valid label selector operator")]
    SelectorOperator(String),
    #[error("invalid label selector requirement for key {0:?}")]
    SelectorValues(String),
    #[error("invalid request to scale down {name} {from} -> {to}")]
    InvalidScaleDown { name: String, from: i32, to: i32 },
}

// ---------------------------------------------------------------------------------------------
// Accessors with the apiserver's defaults
// ---------------------------------------------------------------------------------------------

/// `*d.Spec.Replicas` (the apiserver defaults it to 1).
pub fn d_replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

/// `*rs.Spec.Replicas` (defaulted to 1 by the apiserver).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.replicas = Some(n);
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub fn strategy_type(d: &Deployment) -> &str {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE)
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == ROLLING_UPDATE
}

fn rolling_params(d: &Deployment) -> (Option<&IntOrString>, Option<&IntOrString>) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    (
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
    )
}

pub fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec.template.clone()
}

pub fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.template.clone().unwrap_or_default()
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("")
}

/// Upstream `metav1.GetControllerOf`.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// Upstream `metav1.LabelSelectorAsSelector(...).Matches(labels)`.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, UtilError> {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    for (k, v) in sel.match_labels.iter().flatten() {
        if get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(UtilError::SelectorValues(e.key.clone()));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(UtilError::SelectorValues(e.key.clone()));
            }
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            other => return Err(UtilError::SelectorOperator(other.to_owned())),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the selector is `{}` and so selects everything (upstream compares with
/// `metav1.LabelSelector{}`; Go's nil and empty maps both read as empty here).
pub fn selects_everything(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

// ---------------------------------------------------------------------------------------------
// Revisions and annotations
// ---------------------------------------------------------------------------------------------

/// Upstream `Revision`: the revision annotation as a number (missing → 0).
pub fn revision(meta: &ObjectMeta) -> Option<i64> {
    match annotation(meta, REVISION_ANNOTATION) {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

/// Upstream `MaxRevision`: the largest revision among the ReplicaSets.
pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter()
        .filter_map(|rs| revision(&rs.metadata))
        .fold(0, i64::max)
}

/// Upstream `LastRevision`: the second largest revision (the one before the current).
pub fn last_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    let (mut max, mut sec) = (0, 0);
    for v in rss.into_iter().filter_map(|rs| revision(&rs.metadata)) {
        if v >= max {
            sec = max;
            max = v;
        } else if v > sec {
            sec = v;
        }
    }
    sec
}

fn skip_copy_annotation(key: &str) -> bool {
    ANNOTATIONS_TO_SKIP.contains(&key)
}

/// Upstream `copyDeploymentAnnotationsToReplicaSet`: returns whether anything changed.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Upstream `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the
/// revision to `new_revision` (keeping the former one in the revision history, bounded to
/// `rev_history_limit_chars`), and for a ReplicaSet about to be created sets the replicas
/// annotations. Returns whether the ReplicaSet changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
    rev_history_limit_chars: usize,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old_revision = ann.get(REVISION_ANNOTATION).cloned();
    let old_int = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    let Ok(new_int) = new_revision.parse::<i64>() else {
        return false;
    };
    if old_int < new_int {
        ann.insert(REVISION_ANNOTATION.into(), new_revision.into());
        changed = true;
    }
    // A ReplicaSet that already had a revision and now gets a newer one is being rolled back to:
    // remember its former revisions.
    if let Some(old) = old_revision
        && old_int < new_int
    {
        let history = ann
            .get(REVISION_HISTORY_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if history.is_empty() {
            ann.insert(REVISION_HISTORY_ANNOTATION.into(), old);
        } else {
            let parts: Vec<&str> = history.split(',').collect();
            let mut total = history.len() + old.len() + 1;
            let mut start = 0;
            while total > rev_history_limit_chars && start < parts.len() {
                total = total.saturating_sub(parts[start].len() + 1);
                start += 1;
            }
            if total <= rev_history_limit_chars {
                let mut kept: Vec<&str> = parts[start..].to_vec();
                kept.push(&old);
                ann.insert(REVISION_HISTORY_ANNOTATION.into(), kept.join(","));
            }
        }
    }
    if !exists {
        let desired = d_replicas(d);
        if set_replicas_annotations(rs, desired, desired + max_surge(d)) {
            changed = true;
        }
    }
    changed
}

/// Upstream `SetDeploymentRevision`.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let ann = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if ann.get(REVISION_ANNOTATION).map(String::as_str) == Some(revision) {
        return false;
    }
    ann.insert(REVISION_ANNOTATION.into(), revision.into());
    true
}

/// Upstream `SetDeploymentAnnotationsTo`: the Deployment keeps only its skipped annotations and
/// takes every other annotation from the ReplicaSet it rolls back to.
pub fn set_deployment_annotations_to(d: &mut Deployment, rollback_to: &ReplicaSet) {
    let mut ann: BTreeMap<String, String> = d
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| skip_copy_annotation(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in rollback_to.metadata.annotations.iter().flatten() {
        if !skip_copy_annotation(k) {
            ann.insert(k.clone(), v.clone());
        }
    }
    d.metadata.annotations = Some(ann);
}

/// Upstream `SetReplicasAnnotations`: returns whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [
        (DESIRED_REPLICAS_ANNOTATION, desired.to_string()),
        (MAX_REPLICAS_ANNOTATION, max.to_string()),
    ] {
        if ann.get(k) != Some(&v) {
            ann.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Upstream `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(&rs.metadata, DESIRED_REPLICAS_ANNOTATION) != Some(desired.to_string().as_str())
        || annotation(&rs.metadata, MAX_REPLICAS_ANNOTATION) != Some(max.to_string().as_str())
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(&rs.metadata, key)?.parse().ok()
}

/// Upstream `GetDesiredReplicasAnnotation`.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
}

// ---------------------------------------------------------------------------------------------
// Max surge / max unavailable
// ---------------------------------------------------------------------------------------------

/// Upstream `intstr.GetScaledValueFromIntOrPercent`: a percentage of `total`, rounded up or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, UtilError> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| UtilError::IntOrPercent(s.clone()))?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| UtilError::IntOrPercent(s.clone()))
        }
    }
}

/// Upstream `ResolveFenceposts`: max surge rounds up, max unavailable rounds down, and both
/// zero means one may be unavailable (a rollout must be able to make progress).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), UtilError> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// Upstream `MaxSurge` (0 for Recreate; errors read as 0).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    let (s, u) = rolling_params(d);
    resolve_fenceposts(s, u, d_replicas(d)).map_or(0, |(s, _)| s)
}

/// Upstream `MaxUnavailable` (0 for Recreate or zero replicas; never above replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d_replicas(d);
    if !is_rolling_update(d) || replicas == 0 {
        return 0;
    }
    let (s, u) = rolling_params(d);
    let unavailable = resolve_fenceposts(s, u, replicas).map_or(0, |(_, u)| u);
    unavailable.min(replicas)
}

// ---------------------------------------------------------------------------------------------
// pod-template-hash
// ---------------------------------------------------------------------------------------------

/// Upstream `rand.SafeEncodeString`'s alphabet: no vowels (no words) and no look-alikes.
const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Upstream `rand.SafeEncodeString`.
pub fn safe_encode_string(s: &str) -> String {
    s.bytes()
        .map(|b| char::from(SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()]))
        .collect()
}

fn fnv32a(bytes: &[u8], mut h: u32) -> u32 {
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream `controller.ComputeHash`: FNV-32a over the template and the collision count,
/// rendered in decimal and then through `SafeEncodeString`.
///
/// Deviation: upstream hashes a `spew` dump of the Go struct, which only Go can reproduce; we hash
/// the template's canonical JSON (k8s-openapi writes fields in a fixed order and maps sorted). The
/// hash is only a name suffix and label value that must be stable for one template, so the
/// values differ from stock kube-controller-manager's but behave the same. The collision count is
/// appended as upstream does: its 32 bits little-endian in an 8-byte buffer.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv32a(&json, 0x811c_9dc5);
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&c.to_le_bytes());
        h = fnv32a(&buf, h);
    }
    safe_encode_string(&h.to_string())
}

fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    let meta = t.metadata.get_or_insert_with(Default::default);
    if let Some(l) = meta.labels.as_mut() {
        l.remove(POD_TEMPLATE_HASH_LABEL);
        if l.is_empty() {
            meta.labels = None;
        }
    }
    if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.annotations = None;
    }
    t
}

/// Upstream `EqualIgnoreHash`: the templates are equal once the pod-template-hash label is
/// dropped from both (nil and empty maps compare equal, as `apiequality.Semantic` has it).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

// ---------------------------------------------------------------------------------------------
// Finding and ordering ReplicaSets
// ---------------------------------------------------------------------------------------------

/// Upstream `ReplicaSetsByCreationTimestamp`: older first, then by name.
pub fn by_creation_timestamp(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
    ta.cmp(&tb)
        .then_with(|| name(&a.metadata).cmp(name(&b.metadata)))
}

/// Upstream `ReplicaSetsByRevision`: lower revision first, then by creation timestamp.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let ra = revision(&a.metadata).unwrap_or(0);
    let rb = revision(&b.metadata).unwrap_or(0);
    if ra == rb {
        by_creation_timestamp(a, b)
    } else {
        ra.cmp(&rb)
    }
}

/// Upstream `ReplicaSetsBySizeOlder`: larger first; equal sizes older first.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation_timestamp(a, b))
}

/// Upstream `ReplicaSetsBySizeNewer`: larger first; equal sizes newer first.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation_timestamp(b, a))
}

/// Upstream `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
pub fn find_new_replica_set<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let t = template(d);
    let mut sorted: Vec<&ReplicaSet> = rss.iter().collect();
    sorted.sort_by(|a, b| by_creation_timestamp(a, b));
    sorted
        .into_iter()
        .find(|rs| equal_ignore_hash(&rs_template(rs), &t))
}

/// Upstream `FindOldReplicaSets`: every ReplicaSet but the new one, as (with replicas, all).
pub fn find_old_replica_sets(
    d: &Deployment,
    rss: &[ReplicaSet],
) -> (Vec<ReplicaSet>, Vec<ReplicaSet>) {
    let new_uid = find_new_replica_set(d, rss).and_then(|rs| rs.metadata.uid.clone());
    let mut required = Vec::new();
    let mut all = Vec::new();
    for rs in rss {
        if new_uid.is_some() && rs.metadata.uid == new_uid {
            continue;
        }
        all.push(rs.clone());
        if rs_replicas(rs) != 0 {
            required.push(rs.clone());
        }
    }
    (required, all)
}

/// Upstream `FilterActiveReplicaSets`: ReplicaSets with replicas > 0.
pub fn filter_active<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> Vec<ReplicaSet> {
    rss.into_iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .cloned()
        .collect()
}

/// Upstream `FindActiveOrLatest`: the only active ReplicaSet, or the newest when none is
/// active; None when several are active.
pub fn find_active_or_latest(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
) -> Option<ReplicaSet> {
    if new_rs.is_none() && old.is_empty() {
        return None;
    }
    let mut old_sorted: Vec<ReplicaSet> = old.to_vec();
    old_sorted.sort_by(|a, b| by_creation_timestamp(b, a));
    let active = filter_active(old_sorted.iter().chain(new_rs));
    match active.len() {
        0 => new_rs.cloned().or_else(|| old_sorted.first().cloned()),
        1 => active.into_iter().next(),
        _ => None,
    }
}

/// Upstream `GetReplicaCountForReplicaSets`: sum of spec replicas.
pub fn replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_replicas).sum()
}

/// Upstream `GetActualReplicaCountForReplicaSets`: sum of status replicas.
pub fn actual_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_status_replicas).sum()
}

pub fn ready_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_ready).sum()
}

pub fn available_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_available).sum()
}

/// Upstream `GetTerminatingReplicaCountForReplicaSets`: unknown when any ReplicaSet does not
/// report it.
pub fn terminating_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> Option<i32> {
    let mut total = 0;
    for rs in rss {
        total += rs.status.as_ref().and_then(|s| s.terminating_replicas)?;
    }
    Some(total)
}

/// Upstream `IsSaturated`: the new ReplicaSet runs every replica and all are available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else { return false };
    let Some(desired) = desired_replicas_annotation(rs) else {
        return false;
    };
    let want = d_replicas(d);
    rs_replicas(rs) == want && desired == want && rs_available(rs) == want
}

/// Upstream `NewRSNewReplicas`: how many replicas the new ReplicaSet may have now.
pub fn new_rs_new_replicas(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: &ReplicaSet,
) -> Result<i32, UtilError> {
    let want = d_replicas(d);
    match strategy_type(d) {
        ROLLING_UPDATE => {
            let zero = IntOrString::Int(0);
            let surge = scaled_value(rolling_params(d).0.unwrap_or(&zero), want, true)?;
            let current = replica_count(all);
            let max_total = want + surge;
            if current >= max_total {
                return Ok(rs_replicas(new_rs));
            }
            let up = (max_total - current).min(want - rs_replicas(new_rs));
            Ok(rs_replicas(new_rs) + up)
        }
        RECREATE => Ok(want),
        other => Err(UtilError::UnsupportedStrategy(other.to_owned())),
    }
}

/// Upstream `getReplicaSetFraction`: this ReplicaSet's share of a resize, from the size the
/// Deployment had when the ReplicaSet was last scaled (`max-replicas`).
fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let want = d_replicas(d);
    if want == 0 {
        return -rs_replicas(rs);
    }
    let max_now = want + max_surge(d);
    let annotated = int_annotation(rs, MAX_REPLICAS_ANNOTATION)
        .unwrap_or_else(|| d.status.as_ref().map_or(0, |s| s.replicas.unwrap_or(0)));
    if annotated == 0 {
        // Upstream would divide by zero here; no share is the safe reading.
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(max_now) / f64::from(annotated);
    // Go's math.Round rounds half away from zero, as f64::round does.
    size.round() as i32 - rs_replicas(rs)
}

/// Upstream `GetProportion`: how many replicas to add to (or remove from) this ReplicaSet in a
/// proportional resize, never more than what is left to distribute.
pub fn get_proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Upstream `HasRevisionHistoryLimit`.
pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec.revision_history_limit.filter(|l| *l != i32::MAX)
}

/// Upstream `HasProgressDeadline`.
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// The new ReplicaSet for a Deployment (upstream `getNewReplicaSet`'s create path, minus the
/// replica count): named `<deployment>-<hash>`, the hash label on its labels, selector and
/// template, controlled by the Deployment.
pub fn new_replica_set(d: &Deployment, collision_count: Option<i32>) -> ReplicaSet {
    let mut tmpl = template(d);
    let hash = compute_hash(&tmpl, collision_count);
    let meta = tmpl.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let labels = meta.labels.clone();
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", name(&d.metadata))),
            namespace: d.metadata.namespace.clone(),
            owner_references: Some(vec![controller_ref(d)]),
            labels,
            ..Default::default()
        },
        spec: k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template: Some(tmpl),
        },
        status: None,
    }
}

/// Upstream `metav1.NewControllerRef(d, controllerKind)`.
pub fn controller_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: name(&d.metadata).to_owned(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    pub fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("foo".into()),
                namespace: Some("default".into()),
                uid: Some("d-uid".into()),
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "foo".to_string())].into()),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some(ROLLING_UPDATE.into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                template: tmpl("v1"),
                ..Default::default()
            },
            status: None,
        }
    }

    pub fn tmpl(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "foo"}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .unwrap_or_default()
    }

    /// A ReplicaSet `name` created `age_secs` after the epoch with `replicas` and `available`.
    pub fn rs(name: &str, created: i64, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                creation_timestamp: Some(Time(
                    Timestamp::from_second(1_700_000_000 + created).unwrap_or_default(),
                )),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                template: Some(tmpl(name)),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    pub fn with_annotation(mut rs: ReplicaSet, k: &str, v: &str) -> ReplicaSet {
        rs.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        rs
    }

    pub fn int(n: i32) -> IntOrString {
        IntOrString::Int(n)
    }

    pub fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn percent_max_surge_rounds_up_and_max_unavailable_rounds_down() {
        assert_eq!(
            resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("50%")), Some(&pct("50%")), 3),
            Ok((2, 1))
        );
    }

    #[test]
    fn zero_surge_and_zero_unavailable_resolve_to_one_unavailable() {
        assert_eq!(
            resolve_fenceposts(Some(&int(0)), Some(&int(0)), 5),
            Ok((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("10%")), Some(&pct("10%")), 1),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5),
            Ok((0, 1))
        );
    }

    #[test]
    fn a_percentage_without_percent_sign_is_an_error() {
        assert!(resolve_fenceposts(Some(&pct("25")), None, 10).is_err());
    }

    #[test]
    fn max_unavailable_never_exceeds_replicas_and_is_zero_for_recreate() {
        let d = deployment(2, int(0), int(5));
        assert_eq!(max_unavailable(&d), 2);
        let mut r = deployment(2, int(1), int(1));
        {
            let s = &mut r.spec;
            s.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
                type_: Some(RECREATE.into()),
                rolling_update: None,
            });
        }
        assert_eq!(max_unavailable(&r), 0);
        assert_eq!(max_surge(&r), 0);
        assert_eq!(max_unavailable(&deployment(0, int(1), int(1))), 0);
    }

    #[test]
    fn safe_encode_string_maps_digits_into_the_consonant_alphabet() {
        // '0' is byte 48 → 48 % 27 = 21 → '4'; '1' → 22 → '5'; '9' → 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode_string("019"), "45f");
    }

    #[test]
    fn the_hash_is_stable_and_changes_with_template_and_collision_count() {
        let a = compute_hash(&tmpl("v1"), None);
        assert_eq!(a, compute_hash(&tmpl("v1"), None));
        assert_ne!(a, compute_hash(&tmpl("v2"), None));
        assert_ne!(a, compute_hash(&tmpl("v1"), Some(1)));
        assert_ne!(
            compute_hash(&tmpl("v1"), Some(1)),
            compute_hash(&tmpl("v1"), Some(2))
        );
        assert!(a.bytes().all(|b| SAFE_ALPHANUMS.contains(&b)));
    }

    #[test]
    fn templates_equal_ignoring_the_hash_label() {
        let mut a = tmpl("v1");
        let b = tmpl("v1");
        if let Some(l) = a.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
        }
        assert!(equal_ignore_hash(&a, &b));
        assert!(!equal_ignore_hash(&a, &tmpl("v2")));
    }

    #[test]
    fn a_template_with_only_the_hash_label_equals_one_without_labels() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([(POD_TEMPLATE_HASH_LABEL.to_string(), "x".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(equal_ignore_hash(&a, &PodTemplateSpec::default()));
    }

    #[test]
    fn the_new_replica_set_is_the_oldest_with_the_deployment_template() {
        let d = deployment(3, int(1), int(1));
        let mut newer = rs("b", 20, 1, 1);
        let mut older = rs("a", 10, 1, 1);
        newer.spec.template = Some(tmpl("v1"));
        older.spec.template = Some(tmpl("v1"));
        let other = rs("c", 5, 2, 2);
        let all = vec![newer, other, older];
        assert_eq!(
            find_new_replica_set(&d, &all).map(|r| name(&r.metadata)),
            Some("a")
        );
        let (required, old) = find_old_replica_sets(&d, &all);
        let names = |v: &[ReplicaSet]| {
            v.iter()
                .map(|r| name(&r.metadata).to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&old), ["b", "c"]);
        assert_eq!(names(&required), ["b", "c"]);
    }

    #[test]
    fn old_replica_sets_scaled_to_zero_are_not_required() {
        let d = deployment(3, int(1), int(1));
        let all = vec![rs("x", 1, 0, 0), rs("y", 2, 2, 2)];
        let (required, old) = find_old_replica_sets(&d, &all);
        assert_eq!(required.len(), 1);
        assert_eq!(old.len(), 2);
    }

    #[test]
    fn new_replica_set_carries_the_hash_in_name_selector_and_template() {
        let d = deployment(3, int(1), int(1));
        let rs = new_replica_set(&d, None);
        let hash = compute_hash(&template(&d), None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("foo-{hash}").as_str())
        );
        assert_eq!(
            rs.spec
                .selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL)),
            Some(&hash)
        );
        assert_eq!(
            rs.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL)),
            Some(&hash)
        );
        assert!(equal_ignore_hash(&rs_template(&rs), &template(&d)));
        assert_eq!(
            controller_of(&rs.metadata).map(|r| r.uid.as_str()),
            Some("d-uid")
        );
    }

    #[test]
    fn max_and_last_revision_skip_unparsable_revisions() {
        let rss = vec![
            with_annotation(rs("a", 1, 0, 0), REVISION_ANNOTATION, "3"),
            with_annotation(rs("b", 2, 0, 0), REVISION_ANNOTATION, "7"),
            with_annotation(rs("c", 3, 0, 0), REVISION_ANNOTATION, "x"),
            with_annotation(rs("d", 4, 0, 0), REVISION_ANNOTATION, "5"),
        ];
        assert_eq!(max_revision(&rss), 7);
        assert_eq!(last_revision(&rss), 5);
    }

    #[test]
    fn new_replica_set_annotations_raise_the_revision_and_keep_history_on_rollback() {
        let mut d = deployment(3, int(1), int(1));
        d.metadata.annotations = Some(
            [
                ("team".to_string(), "a".to_string()),
                (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
                (REVISION_ANNOTATION.to_string(), "9".to_string()),
            ]
            .into(),
        );
        let mut r = with_annotation(rs("a", 1, 1, 1), REVISION_ANNOTATION, "2");
        r = with_annotation(r, REVISION_HISTORY_ANNOTATION, "1");
        assert!(set_new_replica_set_annotations(&d, &mut r, "4", true, 2000));
        assert_eq!(annotation(&r.metadata, REVISION_ANNOTATION), Some("4"));
        assert_eq!(
            annotation(&r.metadata, REVISION_HISTORY_ANNOTATION),
            Some("1,2")
        );
        assert_eq!(annotation(&r.metadata, "team"), Some("a"));
        assert_eq!(annotation(&r.metadata, LAST_APPLIED_ANNOTATION), None);
        // Nothing more to do the second time.
        assert!(!set_new_replica_set_annotations(
            &d, &mut r, "4", true, 2000
        ));
    }

    #[test]
    fn revision_history_drops_the_oldest_entries_beyond_the_limit() {
        let d = deployment(1, int(1), int(0));
        let mut r = with_annotation(rs("a", 1, 1, 1), REVISION_ANNOTATION, "4");
        r = with_annotation(r, REVISION_HISTORY_ANNOTATION, "1,2,3");
        set_new_replica_set_annotations(&d, &mut r, "5", true, 5);
        assert_eq!(
            annotation(&r.metadata, REVISION_HISTORY_ANNOTATION),
            Some("2,3,4")
        );
    }

    #[test]
    fn a_replica_set_about_to_be_created_gets_replicas_annotations() {
        let d = deployment(10, pct("25%"), int(0));
        let mut r = rs("a", 1, 0, 0);
        set_new_replica_set_annotations(&d, &mut r, "1", false, 2000);
        assert_eq!(
            annotation(&r.metadata, DESIRED_REPLICAS_ANNOTATION),
            Some("10")
        );
        assert_eq!(annotation(&r.metadata, MAX_REPLICAS_ANNOTATION), Some("13"));
        assert_eq!(annotation(&r.metadata, REVISION_HISTORY_ANNOTATION), None);
    }

    #[test]
    fn new_rs_new_replicas_respects_surge_and_desired_count() {
        // upstream TestNewRSNewReplicas
        let d = deployment(1, int(1), int(0));
        let new = rs("new", 2, 0, 0);
        let old = rs("old", 1, 1, 1);
        assert_eq!(
            new_rs_new_replicas(&d, &[new.clone(), old.clone()], &new),
            Ok(1)
        );
        let d = deployment(5, int(2), int(0));
        let new = rs("new", 2, 1, 0);
        let old = rs("old", 1, 5, 5);
        assert_eq!(new_rs_new_replicas(&d, &[new.clone(), old], &new), Ok(2));
        let old = rs("old", 1, 6, 5);
        assert_eq!(new_rs_new_replicas(&d, &[new.clone(), old], &new), Ok(1));
    }

    #[test]
    fn proportion_is_bounded_by_what_is_left_to_add() {
        let d = deployment(20, int(0), int(1));
        let r = with_annotation(rs("a", 1, 5, 5), MAX_REPLICAS_ANNOTATION, "10");
        assert_eq!(get_proportion(&r, &d, 10, 0), 5);
        assert_eq!(get_proportion(&r, &d, 10, 8), 2);
        assert_eq!(get_proportion(&r, &d, 10, 10), 0);
        let d = deployment(5, int(0), int(1));
        assert_eq!(get_proportion(&r, &d, -5, 0), -2);
        assert_eq!(get_proportion(&r, &d, -5, -4), -1);
        let d = deployment(0, int(0), int(1));
        assert_eq!(get_proportion(&r, &d, -10, 0), -5);
    }

    #[test]
    fn without_a_max_replicas_annotation_the_proportion_uses_the_deployment_status_size() {
        let mut d = deployment(20, int(0), int(1));
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            replicas: Some(10),
            ..Default::default()
        });
        assert_eq!(get_proportion(&rs("a", 1, 5, 5), &d, 10, 0), 5);
        // No size to scale from at all: no share rather than a division by zero.
        d.status = None;
        assert_eq!(get_proportion(&rs("a", 1, 5, 5), &d, 10, 0), 0);
        // A ReplicaSet with no replicas never takes a share.
        assert_eq!(get_proportion(&rs("b", 1, 0, 0), &d, 10, 0), 0);
    }

    #[test]
    fn active_or_latest_picks_the_single_active_or_the_newest() {
        let new = rs("new", 3, 0, 0);
        let olds = vec![rs("o1", 1, 0, 0), rs("o2", 2, 0, 0)];
        assert_eq!(
            find_active_or_latest(Some(&new), &olds).map(|r| name(&r.metadata).to_owned()),
            Some("new".into())
        );
        assert_eq!(
            find_active_or_latest(None, &olds).map(|r| name(&r.metadata).to_owned()),
            Some("o2".into())
        );
        let olds = vec![rs("o1", 1, 2, 0), rs("o2", 2, 0, 0)];
        assert_eq!(
            find_active_or_latest(Some(&new), &olds).map(|r| name(&r.metadata).to_owned()),
            Some("o1".into())
        );
        let olds = vec![rs("o1", 1, 2, 0), rs("o2", 2, 1, 0)];
        assert!(find_active_or_latest(Some(&new), &olds).is_none());
    }

    #[test]
    fn saturation_needs_desired_annotation_and_all_available() {
        let d = deployment(3, int(1), int(1));
        let r = with_annotation(rs("a", 1, 3, 3), DESIRED_REPLICAS_ANNOTATION, "3");
        assert!(is_saturated(&d, Some(&r)));
        assert!(!is_saturated(&d, Some(&rs("a", 1, 3, 3))));
        let r = with_annotation(rs("a", 1, 3, 2), DESIRED_REPLICAS_ANNOTATION, "3");
        assert!(!is_saturated(&d, Some(&r)));
    }

    #[test]
    fn selectors_match_labels_and_expressions_and_empty_selects_everything() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "foo"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }))
        .unwrap_or_default();
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert_eq!(
            selector_matches(&sel, Some(&l(&[("app", "foo")]))),
            Ok(true)
        );
        assert_eq!(
            selector_matches(&sel, Some(&l(&[("app", "foo"), ("tier", "db")]))),
            Ok(false)
        );
        assert_eq!(selector_matches(&sel, None), Ok(false));
        assert!(!selects_everything(&sel));
        assert!(selects_everything(&LabelSelector::default()));
        let bad: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "a", "operator": "Near"}],
        }))
        .unwrap_or_default();
        assert!(selector_matches(&bad, None).is_err());
    }

    #[test]
    fn terminating_count_is_unknown_when_a_replica_set_does_not_report_it() {
        let mut a = rs("a", 1, 1, 1);
        let mut b = rs("b", 2, 1, 1);
        assert_eq!(terminating_replica_count([&a, &b]), None);
        if let Some(s) = a.status.as_mut() {
            s.terminating_replicas = Some(1);
        }
        if let Some(s) = b.status.as_mut() {
            s.terminating_replicas = Some(2);
        }
        assert_eq!(terminating_replica_count([&a, &b]), Some(3));
    }
}
