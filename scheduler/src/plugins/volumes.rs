//! The default profile's volume plugins, as far as they apply without CSI drivers:
//! - VolumeRestrictions (plugins/volumerestrictions): inline GCE PD / AWS EBS / iSCSI / RBD disk
//!   conflicts on the node, and ReadWriteOncePod claims already used by a scheduled pod;
//! - VolumeBinding (plugins/volumebinding): claims must exist and not be terminating, immediate
//!   claims must be bound, bound volumes' node affinity must match the node;
//! - VolumeZone (plugins/volumezone): a bound volume's zone/region labels must match the node's.
//!
//! Unbound WaitForFirstConsumer claims bind statically: a node fits when an Available volume
//! of the claim's class matches it (capacity, access modes, volume mode, selector, node
//! affinity; the smallest one wins, `FindMatchingVolume`); the shell then assumes the choice and,
//! in PreBind, sets the volume's claimRef and waits for the PV controller to bind the claim.
//! Dynamic provisioning is not attempted: without a matching volume the node is rejected with
//! "didn't find available persistent volumes to bind" whatever the provisioner. NodeVolumeLimits
//! needs CSINode objects and is not applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Code, Status, node_affinity};
use crate::cache::{NodeInfo, PodInfo};

pub const VOLUME_RESTRICTIONS: &str = "VolumeRestrictions";
pub const VOLUME_BINDING: &str = "VolumeBinding";
pub const VOLUME_ZONE: &str = "VolumeZone";

pub const ERR_REASON_DISK_CONFLICT: &str = "node(s) had no available disk";
pub const ERR_REASON_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const ERR_REASON_ZONE_CONFLICT: &str = "node(s) had no available volume zone";

/// `volume.AnnBindCompleted`.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// `volume.AnnBoundByController`.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// `v1.BetaStorageClassAnnotation`.
const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// VolumeZone's `topologyLabels`, beta ones first.
const TOPOLOGY_LABELS: [&str; 4] = [
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// A volume's claimRef as matching sees it: (namespace, name, uid).
pub type ClaimRef = (String, String, String);

/// The claims, volumes and classes the informers show (the plugins' listers), with the
/// volumes that scheduled pods are binding (`AssumePodVolumes` on the PV assume cache).
#[derive(Clone, Debug, Default)]
pub struct VolumeCatalog {
    pub claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
    /// Volume name → the claim a pod in its binding cycle binds it to.
    pub assumed: HashMap<String, ClaimRef>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl VolumeCatalog {
    pub fn upsert_claim(&mut self, c: Arc<PersistentVolumeClaim>) {
        self.claims.insert(key_of(&c.metadata), c);
    }
    pub fn remove_claim(&mut self, c: &PersistentVolumeClaim) {
        self.claims.remove(&key_of(&c.metadata));
    }
    pub fn upsert_volume(&mut self, v: Arc<PersistentVolume>) {
        let name = key_of(&v.metadata).1;
        // The informer now shows the claimRef PreBind wrote (or another one): the assumption
        // has served its purpose.
        if claim_ref_of(&v).is_some() {
            self.assumed.remove(&name);
        }
        self.volumes.insert(name, v);
    }

    /// `AssumePodVolumes`: the volumes are taken for these claims until the informer shows
    /// their claimRef or [`VolumeCatalog::forget`] releases them.
    pub fn assume(&mut self, bindings: &[StaticBinding]) {
        for b in bindings {
            self.assumed.insert(
                b.volume.clone(),
                (b.namespace.clone(), b.claim.clone(), b.claim_uid.clone()),
            );
        }
    }

    /// `RevertAssumedPodVolumes`.
    pub fn forget(&mut self, bindings: &[StaticBinding]) {
        for b in bindings {
            self.assumed.remove(&b.volume);
        }
    }

    /// The volume's claimRef, the assumed one first.
    fn effective_claim_ref(&self, pv: &PersistentVolume) -> Option<ClaimRef> {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        self.assumed.get(name).cloned().or_else(|| claim_ref_of(pv))
    }
    pub fn remove_volume(&mut self, v: &PersistentVolume) {
        self.volumes.remove(&key_of(&v.metadata).1);
    }
    pub fn upsert_class(&mut self, c: Arc<StorageClass>) {
        self.classes.insert(key_of(&c.metadata).1, c);
    }
    pub fn remove_class(&mut self, c: &StorageClass) {
        self.classes.remove(&key_of(&c.metadata).1);
    }

    fn claim(&self, ns: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(&(ns.to_string(), name.to_string()))
    }
}

/// A claim the pod uses: by a `persistentVolumeClaim` volume, or a generic ephemeral volume's
/// `<pod>-<volume>` claim.
struct PodClaim {
    name: String,
    ephemeral: bool,
}

fn pod_claims(pod: &Pod) -> Vec<PodClaim> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(c) = v.persistent_volume_claim.as_ref() {
                Some(PodClaim {
                    name: c.claim_name.clone(),
                    ephemeral: false,
                })
            } else {
                v.ephemeral.as_ref().map(|_| PodClaim {
                    name: format!("{pod_name}-{}", v.name),
                    ephemeral: true,
                })
            }
        })
        .collect()
}

fn not_found(resource: &str, name: &str) -> String {
    format!("{resource} \"{name}\" not found")
}

fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
    Status::new(Code::UnschedulableAndUnresolvable, plugin, reason)
}

fn has_access_mode(c: &PersistentVolumeClaim, mode: &str) -> bool {
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_ref())
        .is_some_and(|m| m.iter().any(|x| x == mode))
}

// ---- VolumeRestrictions ----

/// VolumeRestrictions' PreFilter state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestrictionsState {
    /// The pod's ReadWriteOncePod claim names.
    pub rwop_claims: BTreeSet<String>,
    /// How many scheduled pods' volumes reference those claims.
    pub conflicting_ref_count: i64,
}

impl RestrictionsState {
    fn refs_of(&self, pod: &Pod, preemptor_ns: &str) -> i64 {
        if pod.metadata.namespace.as_deref().unwrap_or_default() != preemptor_ns {
            return 0;
        }
        pod.spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .filter(|c| self.rwop_claims.contains(&c.claim_name))
            .count() as i64
    }

    /// AddPod/RemovePod: `updateWithPod`.
    pub fn update_with_pod(&mut self, pi: &PodInfo, preemptor: &Pod, delta: i64) {
        let ns = preemptor.metadata.namespace.as_deref().unwrap_or_default();
        self.conflicting_ref_count += delta * self.refs_of(&pi.pod, ns);
    }
}

/// Inline volumes whose same-disk use by two pods on one node conflicts.
fn needs_restrictions_check(v: &Volume) -> bool {
    v.gce_persistent_disk.is_some()
        || v.aws_elastic_block_store.is_some()
        || v.rbd.is_some()
        || v.iscsi.is_some()
}

/// `isVolumeConflict`.
fn volume_conflict(v: &Volume, existing: &Pod) -> bool {
    existing
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|e| {
            if let (Some(d), Some(ed)) = (&v.gce_persistent_disk, &e.gce_persistent_disk)
                && d.pd_name == ed.pd_name
                && !(d.read_only == Some(true) && ed.read_only == Some(true))
            {
                return true;
            }
            if let (Some(d), Some(ed)) = (&v.aws_elastic_block_store, &e.aws_elastic_block_store)
                && d.volume_id == ed.volume_id
            {
                return true;
            }
            if let (Some(d), Some(ed)) = (&v.iscsi, &e.iscsi)
                && d.iqn == ed.iqn
                && !(d.read_only == Some(true) && ed.read_only == Some(true))
            {
                return true;
            }
            if let (Some(d), Some(ed)) = (&v.rbd, &e.rbd) {
                let overlap = d.monitors.iter().any(|m| ed.monitors.contains(m));
                if overlap
                    && d.pool == ed.pool
                    && d.image == ed.image
                    && !(d.read_only == Some(true) && ed.read_only == Some(true))
                {
                    return true;
                }
            }
            false
        })
}

/// VolumeRestrictions PreFilter: every claim of a `persistentVolumeClaim` volume must exist
/// (`persistentvolumeclaim "<name>" not found`); counts the scheduled pods already using the
/// pod's ReadWriteOncePod claims. `Ok(None)` is Skip.
pub fn restrictions_pre_filter(
    pod: &Pod,
    catalog: &VolumeCatalog,
    nodes: &[&NodeInfo],
) -> Result<Option<RestrictionsState>, Status> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    let needs_check = volumes.clone().any(needs_restrictions_check);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut rwop_claims = BTreeSet::new();
    for c in volumes.filter_map(|v| v.persistent_volume_claim.as_ref()) {
        let Some(claim) = catalog.claim(ns, &c.claim_name) else {
            return Err(unresolvable(
                VOLUME_RESTRICTIONS,
                not_found("persistentvolumeclaim", &c.claim_name),
            ));
        };
        if has_access_mode(claim, "ReadWriteOncePod") {
            rwop_claims.insert(c.claim_name.clone());
        }
    }
    let mut state = RestrictionsState {
        rwop_claims,
        conflicting_ref_count: 0,
    };
    if !state.rwop_claims.is_empty() {
        // `IsPVCUsedByPods`: at most one pod may use a ReadWriteOncePod claim, so each used
        // claim counts once.
        let used: BTreeSet<&str> = nodes
            .iter()
            .flat_map(|n| n.pods.iter())
            .filter(|p| p.pod.metadata.namespace.as_deref().unwrap_or_default() == ns)
            .flat_map(|p| {
                p.pod
                    .spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .filter_map(|v| v.persistent_volume_claim.as_ref())
                    .map(|c| c.claim_name.as_str())
            })
            .collect();
        state.conflicting_ref_count = state
            .rwop_claims
            .iter()
            .filter(|c| used.contains(c.as_str()))
            .count() as i64;
    }
    if !needs_check && state.conflicting_ref_count == 0 {
        return Ok(None);
    }
    Ok(Some(state))
}

/// VolumeRestrictions Filter; runs even when PreFilter skipped (disk conflicts need no state).
pub fn restrictions_filter(
    pod: &Pod,
    state: Option<&RestrictionsState>,
    node: &NodeInfo,
) -> Option<Status> {
    let conflict = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| needs_restrictions_check(v))
        .any(|v| node.pods.iter().any(|p| volume_conflict(v, &p.pod)));
    if conflict {
        return Some(Status::new(
            Code::Unschedulable,
            VOLUME_RESTRICTIONS,
            ERR_REASON_DISK_CONFLICT,
        ));
    }
    if state.is_some_and(|s| s.conflicting_ref_count > 0) {
        return Some(Status::new(
            Code::Unschedulable,
            VOLUME_RESTRICTIONS,
            ERR_REASON_RWOP_CONFLICT,
        ));
    }
    None
}

// ---- VolumeBinding ----

/// A bound claim's volume (`None` when the volume does not exist).
#[derive(Clone, Debug, PartialEq)]
pub struct BoundClaim {
    pub volume: Option<Arc<PersistentVolume>>,
}

/// A volume that could bind a claim, with its claimRef as matching sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct CandidateVolume {
    pub pv: Arc<PersistentVolume>,
    pub claim_ref: Option<ClaimRef>,
}

/// VolumeBinding's PreFilter state (`podVolumeClaims`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BindingState {
    pub bound: Vec<BoundClaim>,
    /// Unbound WaitForFirstConsumer claims, smallest request first (`byPVCSize`).
    pub unbound_delayed: Vec<Arc<PersistentVolumeClaim>>,
    /// The volumes of those claims' classes (`unboundVolumesDelayBinding`).
    pub candidates: Vec<CandidateVolume>,
}

/// A claim PreBind binds to a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticBinding {
    pub namespace: String,
    pub claim: String,
    pub claim_uid: String,
    pub volume: String,
    pub volume_resource_version: Option<String>,
}

fn claim_ref_of(pv: &PersistentVolume) -> Option<ClaimRef> {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .map(|r| {
            (
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
                r.uid.clone().unwrap_or_default(),
            )
        })
}

/// `IsVolumeBoundToClaim`: the claimRef names the claim (and its uid, when set).
fn bound_to_claim(claim_ref: &ClaimRef, claim: &PersistentVolumeClaim) -> bool {
    let (ns, name, uid) = claim_ref;
    Some(ns.as_str()) == claim.metadata.namespace.as_deref()
        && Some(name.as_str()) == claim.metadata.name.as_deref()
        && (uid.is_empty() || Some(uid.as_str()) == claim.metadata.uid.as_deref())
}

fn requested_storage(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(crate::quantity::value)
        .unwrap_or(0)
}

fn capacity(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(crate::quantity::value)
        .unwrap_or(0)
}

/// `GetPersistentVolumeClass`.
fn volume_class(pv: &PersistentVolume) -> &str {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
        .map(String::as_str)
        .or_else(|| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or_default()
}

/// `CheckAccessModes`: the volume offers every mode the claim asks for.
fn access_modes_match(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let offered = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
        .iter()
        .all(|m| offered.contains(m))
}

/// `CheckVolumeModeMismatches` (Filesystem by default).
fn volume_mode_mismatch(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let want = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let have = pv
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    want != have
}

/// `FindMatchingVolume` on the scheduler's path: a volume pre-bound to the claim wins (if its
/// node affinity matches); otherwise the smallest Available, unclaimed volume of the claim's
/// class with enough capacity, matching mode, selector, node affinity and access modes.
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    candidates: &'a [CandidateVolume],
    node: &NodeInfo,
    excluded: &BTreeSet<String>,
) -> Option<&'a CandidateVolume> {
    let requested = requested_storage(claim);
    let class = claim_class(claim).unwrap_or_default();
    let selector = match claim.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(sel) => Some(crate::selector::Selector::from_label_selector(Some(sel)).ok()?),
        None => None,
    };
    let mut best: Option<(&CandidateVolume, i64)> = None;
    for c in candidates {
        let pv = &c.pv;
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        if excluded.contains(name) {
            continue;
        }
        if c.claim_ref
            .as_ref()
            .is_some_and(|r| !bound_to_claim(r, claim))
        {
            continue;
        }
        let size = capacity(pv);
        if size < requested
            || volume_mode_mismatch(claim, pv)
            || pv.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let affinity_ok = volume_node_affinity_matches(pv, node);
        if c.claim_ref.is_some() {
            // Pre-bound to this claim: that volume or nothing.
            return affinity_ok.then_some(c);
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Available") {
            continue;
        }
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let labels = pv.metadata.labels.as_ref().unwrap_or(&EMPTY);
        if selector.as_ref().is_some_and(|s| !s.matches(labels)) {
            continue;
        }
        if volume_class(pv) != class || !affinity_ok || !access_modes_match(claim, pv) {
            continue;
        }
        if best.is_none_or(|(_, b)| b > size) {
            best = Some((c, size));
        }
    }
    best.map(|(c, _)| c)
}

/// `findMatchingVolumes`: a distinct volume for every unbound delayed claim on `node`, or
/// `None` when one of them finds none.
pub fn find_static_bindings(state: &BindingState, node: &NodeInfo) -> Option<Vec<StaticBinding>> {
    let mut chosen = BTreeSet::new();
    let mut bindings = Vec::new();
    for claim in &state.unbound_delayed {
        let c = find_matching_volume(claim, &state.candidates, node, &chosen)?;
        let volume = c.pv.metadata.name.clone().unwrap_or_default();
        chosen.insert(volume.clone());
        bindings.push(StaticBinding {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            claim: claim.metadata.name.clone().unwrap_or_default(),
            claim_uid: claim.metadata.uid.clone().unwrap_or_default(),
            volume,
            volume_resource_version: c.pv.metadata.resource_version.clone(),
        });
    }
    Some(bindings)
}

/// `checkBindings`: `Ok(true)` once every claim is fully bound to its volume; an error when
/// a claim or volume vanished or the volume was given to another claim.
pub fn check_bindings(catalog: &VolumeCatalog, bindings: &[StaticBinding]) -> Result<bool, String> {
    let mut all = true;
    for b in bindings {
        let Some(claim) = catalog.claim(&b.namespace, &b.claim) else {
            return Err(not_found("persistentvolumeclaim", &b.claim));
        };
        let Some(pv) = catalog.volumes.get(&b.volume) else {
            return Err(not_found("persistentvolume", &b.volume));
        };
        if let Some(r) = claim_ref_of(pv)
            && !bound_to_claim(&r, claim)
        {
            return Err(format!(
                "pv \"{}\" bound to a different claim than \"{}/{}\"",
                b.volume, b.namespace, b.claim
            ));
        }
        if !(fully_bound(claim) && volume_name(claim) == Some(b.volume.as_str())) {
            all = false;
        }
    }
    Ok(all)
}

/// What PreBind must bind for `pod` on the chosen node (empty when nothing).
pub fn static_bindings_for(
    pod: &Pod,
    catalog: &VolumeCatalog,
    node: &NodeInfo,
) -> Vec<StaticBinding> {
    match binding_pre_filter(pod, catalog) {
        Ok(Some(state)) => find_static_bindings(&state, node).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `GetPersistentVolumeClaimClass`.
fn claim_class(c: &PersistentVolumeClaim) -> Option<&str> {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
        .map(String::as_str)
        .or_else(|| {
            c.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .filter(|s| !s.is_empty())
}

fn volume_name(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|s| !s.is_empty())
}

/// `isPVCFullyBound`.
fn fully_bound(c: &PersistentVolumeClaim) -> bool {
    volume_name(c).is_some()
        && c.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED))
}

/// `podHasPVCs` then `GetPodVolumeClaims`: claims must exist (ephemeral ones created for this
/// pod), not be lost or terminating; unbound immediate claims reject the pod. `Ok(None)` is
/// Skip (no claims).
pub fn binding_pre_filter(
    pod: &Pod,
    catalog: &VolumeCatalog,
) -> Result<Option<BindingState>, Status> {
    let claims = pod_claims(pod);
    if claims.is_empty() {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut found = Vec::new();
    for pc in &claims {
        let Some(claim) = catalog.claim(ns, &pc.name) else {
            let msg = if pc.ephemeral {
                format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim \"{}\"",
                    pc.name
                )
            } else {
                not_found("persistentvolumeclaim", &pc.name)
            };
            return Err(unresolvable(VOLUME_BINDING, msg));
        };
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost") {
            return Err(unresolvable(
                VOLUME_BINDING,
                format!(
                    "persistentvolumeclaim \"{}\" bound to non-existent persistentvolume \"{}\"",
                    pc.name,
                    volume_name(claim).unwrap_or_default()
                ),
            ));
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(unresolvable(
                VOLUME_BINDING,
                format!("persistentvolumeclaim \"{}\" is being deleted", pc.name),
            ));
        }
        if pc.ephemeral {
            let owned =
                claim.metadata.owner_references.iter().flatten().any(|o| {
                    o.controller == Some(true) && Some(&o.uid) == pod.metadata.uid.as_ref()
                });
            if !owned {
                return Err(unresolvable(
                    VOLUME_BINDING,
                    format!(
                        "PVC {ns}/{} was not created for pod {ns}/{} (pod is not owner)",
                        pc.name,
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        found.push(claim.clone());
    }
    let mut state = BindingState::default();
    let mut unbound_immediate = false;
    for claim in found {
        if fully_bound(&claim) {
            let volume = volume_name(&claim).and_then(|v| catalog.volumes.get(v).cloned());
            state.bound.push(BoundClaim { volume });
            continue;
        }
        // `shouldDelayBinding`: a class that is missing is an error upstream; here it rejects
        // the pod with the lister's message.
        let delayed = match claim_class(&claim) {
            None => false,
            Some(class) => match catalog.classes.get(class) {
                Some(sc) => sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"),
                None => {
                    return Err(unresolvable(
                        VOLUME_BINDING,
                        not_found("storageclass.storage.k8s.io", class),
                    ));
                }
            },
        };
        if delayed {
            state.unbound_delayed.push(claim);
        } else {
            unbound_immediate = true;
        }
    }
    if unbound_immediate {
        return Err(unresolvable(VOLUME_BINDING, ERR_REASON_UNBOUND_IMMEDIATE));
    }
    if !state.unbound_delayed.is_empty() {
        state.unbound_delayed.sort_by_key(|c| requested_storage(c));
        let classes: BTreeSet<&str> = state
            .unbound_delayed
            .iter()
            .filter_map(|c| claim_class(c))
            .collect();
        let mut candidates: Vec<CandidateVolume> = catalog
            .volumes
            .values()
            .filter(|pv| classes.contains(volume_class(pv)))
            .map(|pv| CandidateVolume {
                pv: pv.clone(),
                claim_ref: catalog.effective_claim_ref(pv),
            })
            .collect();
        // Sorted by name so that equal-sized volumes are chosen the same way every time.
        candidates.sort_by(|a, b| a.pv.metadata.name.cmp(&b.pv.metadata.name));
        state.candidates = candidates;
    }
    Ok(Some(state))
}

/// `CheckNodeAffinity`: the volume's required node selector terms (ORed) match the node.
pub fn volume_node_affinity_matches(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|t| node_affinity::term_matches(t, node))
}

/// VolumeBinding Filter (`FindPodVolumes`): all reasons at once, unresolvable.
pub fn binding_filter(state: Option<&BindingState>, node: &NodeInfo) -> Option<Status> {
    let s = state?;
    let mut reasons = Vec::new();
    let mut exist = true;
    let mut affinity_ok = true;
    for b in &s.bound {
        match &b.volume {
            None => exist = false,
            Some(pv) => {
                if !volume_node_affinity_matches(pv, node) {
                    affinity_ok = false;
                }
            }
        }
    }
    if !affinity_ok {
        reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
    }
    if !s.unbound_delayed.is_empty() && find_static_bindings(s, node).is_none() {
        reasons.push(ERR_REASON_BIND_CONFLICT.to_string());
    }
    if !exist {
        reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Status {
        code: Code::UnschedulableAndUnresolvable,
        reasons,
        plugin: VOLUME_BINDING,
    })
}

// ---- VolumeZone ----

/// VolumeZone's PreFilter state: (label key, allowed values) of the pod's bound volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneState {
    pub topologies: Vec<(String, BTreeSet<String>)>,
}

/// `LabelZonesToSet`: "a__b" lists several zones.
fn zones_to_set(value: &str) -> BTreeSet<String> {
    value
        .split("__")
        .map(str::trim)
        .filter(|z| !z.is_empty())
        .map(str::to_string)
        .collect()
}

/// `getPVbyPod`; `Ok(None)` is Skip (no bound volume with topology labels).
pub fn zone_pre_filter(pod: &Pod, catalog: &VolumeCatalog) -> Result<Option<ZoneState>, Status> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut topologies = Vec::new();
    for pc in pod_claims(pod) {
        if pc.name.is_empty() {
            return Err(unresolvable(
                VOLUME_ZONE,
                "PersistentVolumeClaim had no name",
            ));
        }
        let Some(claim) = catalog.claim(ns, &pc.name) else {
            return Err(unresolvable(
                VOLUME_ZONE,
                not_found("persistentvolumeclaim", &pc.name),
            ));
        };
        let Some(pv_name) = volume_name(claim) else {
            let Some(class) = claim_class(claim) else {
                return Err(unresolvable(
                    VOLUME_ZONE,
                    "PersistentVolumeClaim had no pv name and storageClass name",
                ));
            };
            let Some(sc) = catalog.classes.get(class) else {
                return Err(unresolvable(
                    VOLUME_ZONE,
                    not_found("storageclass.storage.k8s.io", class),
                ));
            };
            match sc.volume_binding_mode.as_deref() {
                None => {
                    return Err(unresolvable(
                        VOLUME_ZONE,
                        format!("VolumeBindingMode not set for StorageClass \"{class}\""),
                    ));
                }
                Some("WaitForFirstConsumer") => continue,
                Some(_) => return Err(unresolvable(VOLUME_ZONE, "PersistentVolume had no name")),
            }
        };
        let Some(pv) = catalog.volumes.get(pv_name) else {
            return Err(unresolvable(
                VOLUME_ZONE,
                not_found("persistentvolume", pv_name),
            ));
        };
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        for key in TOPOLOGY_LABELS {
            if let Some(v) = labels.get(key) {
                topologies.push((key.to_string(), zones_to_set(v)));
            }
        }
    }
    if topologies.is_empty() {
        return Ok(None);
    }
    Ok(Some(ZoneState { topologies }))
}

/// `translateToGALabel`.
fn ga_label(key: &str) -> &str {
    match key {
        "failure-domain.beta.kubernetes.io/zone" => "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region" => "topology.kubernetes.io/region",
        other => other,
    }
}

/// VolumeZone Filter: a node without any zone/region label is fine; otherwise every volume
/// topology label must be on the node (the beta key falls back to the GA one) with one of the
/// volume's values.
pub fn zone_filter(state: Option<&ZoneState>, node: &NodeInfo) -> Option<Status> {
    let s = state?;
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let labels = node.node.metadata.labels.as_ref().unwrap_or(&EMPTY);
    if !TOPOLOGY_LABELS.iter().any(|k| labels.contains_key(*k)) {
        return None;
    }
    for (key, values) in &s.topologies {
        let v = labels.get(key).or_else(|| labels.get(ga_label(key)));
        if !v.is_some_and(|v| values.contains(v)) {
            return Some(unresolvable(VOLUME_ZONE, ERR_REASON_ZONE_CONFLICT));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::framework::Algorithm;
    use crate::testutil::{node, node_with, raw_node};
    use rand::SeedableRng;
    use serde_json::{Value, json};

    fn claim(name: &str, spec: Value, extra_meta: Value) -> Arc<PersistentVolumeClaim> {
        let mut meta = json!({"name": name, "namespace": "ns"});
        if let (Some(m), Some(e)) = (meta.as_object_mut(), extra_meta.as_object()) {
            m.extend(e.clone());
        }
        Arc::new(serde_json::from_value(json!({"metadata": meta, "spec": spec})).expect("pvc"))
    }

    fn bound_claim(name: &str, pv: &str) -> Arc<PersistentVolumeClaim> {
        claim(
            name,
            json!({"volumeName": pv, "accessModes": ["ReadWriteOnce"]}),
            json!({"annotations": {ANN_BIND_COMPLETED: "yes"}}),
        )
    }

    fn volume(name: &str, labels: Value, node_affinity: Value) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "spec": {"nodeAffinity": node_affinity}}))
            .expect("pv"),
        )
    }

    fn class(name: &str, mode: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": mode}))
            .expect("class"),
        )
    }

    fn pod_using(claims: &[&str]) -> Pod {
        let vols: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        crate::testutil::pod(json!({"volumes": vols}))
    }

    fn catalog(
        claims: Vec<Arc<PersistentVolumeClaim>>,
        volumes: Vec<Arc<PersistentVolume>>,
        classes: Vec<Arc<StorageClass>>,
    ) -> VolumeCatalog {
        let mut c = VolumeCatalog::default();
        claims.into_iter().for_each(|x| c.upsert_claim(x));
        volumes.into_iter().for_each(|x| c.upsert_volume(x));
        classes.into_iter().for_each(|x| c.upsert_class(x));
        c
    }

    fn reasons(s: Status) -> (Code, Vec<String>) {
        (s.code, s.reasons)
    }

    #[test]
    fn a_missing_claim_is_reported_by_volume_restrictions_prefilter() {
        let err = restrictions_pre_filter(&pod_using(&["data"]), &VolumeCatalog::default(), &[])
            .expect_err("missing");
        assert_eq!(
            reasons(err),
            (
                Code::UnschedulableAndUnresolvable,
                vec!["persistentvolumeclaim \"data\" not found".to_string()]
            )
        );
        let err = binding_pre_filter(&pod_using(&["data"]), &VolumeCatalog::default())
            .expect_err("missing");
        assert_eq!(
            err.reasons,
            vec!["persistentvolumeclaim \"data\" not found".to_string()]
        );
    }

    #[test]
    fn a_terminating_claim_is_being_deleted() {
        let c = catalog(
            vec![claim(
                "data",
                json!({}),
                json!({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
            )],
            vec![],
            vec![],
        );
        let err = binding_pre_filter(&pod_using(&["data"]), &c).expect_err("terminating");
        assert_eq!(
            reasons(err),
            (
                Code::UnschedulableAndUnresolvable,
                vec!["persistentvolumeclaim \"data\" is being deleted".to_string()]
            )
        );
    }

    #[test]
    fn an_unbound_immediate_claim_rejects_the_pod_in_prefilter() {
        let no_class = catalog(vec![claim("data", json!({}), json!({}))], vec![], vec![]);
        let err = binding_pre_filter(&pod_using(&["data"]), &no_class).expect_err("unbound");
        assert_eq!(err.reasons, vec![ERR_REASON_UNBOUND_IMMEDIATE.to_string()]);
        let immediate = catalog(
            vec![claim(
                "data",
                json!({"storageClassName": "fast"}),
                json!({}),
            )],
            vec![],
            vec![class("fast", "Immediate")],
        );
        assert!(binding_pre_filter(&pod_using(&["data"]), &immediate).is_err());
        // A volume name without the bind-completed annotation is not bound yet.
        let half = catalog(
            vec![claim("data", json!({"volumeName": "pv1"}), json!({}))],
            vec![],
            vec![],
        );
        assert!(binding_pre_filter(&pod_using(&["data"]), &half).is_err());
    }

    #[test]
    fn an_unbound_wait_for_first_consumer_claim_finds_no_volume_to_bind_on_any_node() {
        let c = catalog(
            vec![claim(
                "data",
                json!({"storageClassName": "local"}),
                json!({}),
            )],
            vec![],
            vec![class("local", "WaitForFirstConsumer")],
        );
        let state = binding_pre_filter(&pod_using(&["data"]), &c).expect("ok");
        let s = binding_filter(state.as_ref(), &node(json!({"name": "a"}))).expect("rejected");
        assert_eq!(
            reasons(s),
            (
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_BIND_CONFLICT.to_string()]
            )
        );
    }

    #[test]
    fn a_bound_volume_with_node_affinity_admits_only_matching_nodes() {
        let affinity = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}});
        let c = catalog(
            vec![bound_claim("data", "pv1")],
            vec![volume("pv1", json!({}), affinity)],
            vec![],
        );
        let state = binding_pre_filter(&pod_using(&["data"]), &c).expect("ok");
        let a = node(json!({"name": "a", "labels": {"kubernetes.io/hostname": "a"}}));
        let b = node(json!({"name": "b", "labels": {"kubernetes.io/hostname": "b"}}));
        assert_eq!(binding_filter(state.as_ref(), &a), None);
        assert_eq!(
            binding_filter(state.as_ref(), &b).map(reasons),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_NODE_CONFLICT.to_string()]
            ))
        );
    }

    #[test]
    fn a_claim_bound_to_a_missing_volume_makes_every_node_unavailable() {
        let c = catalog(vec![bound_claim("data", "gone")], vec![], vec![]);
        let state = binding_pre_filter(&pod_using(&["data"]), &c).expect("ok");
        assert_eq!(
            binding_filter(state.as_ref(), &node(json!({"name": "a"}))).map(|s| s.reasons),
            Some(vec![ERR_REASON_PV_NOT_EXIST.to_string()])
        );
    }

    #[test]
    fn pods_without_claims_skip_the_volume_plugins() {
        let p = crate::testutil::pod(json!({"volumes": [{"name": "tmp", "emptyDir": {}}]}));
        let c = VolumeCatalog::default();
        assert_eq!(restrictions_pre_filter(&p, &c, &[]), Ok(None));
        assert_eq!(binding_pre_filter(&p, &c), Ok(None));
        assert_eq!(zone_pre_filter(&p, &c), Ok(None));
    }

    #[test]
    fn an_ephemeral_volume_waits_for_its_claim_to_be_created() {
        let p = crate::testutil::pod(json!({"volumes": [{"name": "scratch", "ephemeral": {
            "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}}]}));
        let err = binding_pre_filter(&p, &VolumeCatalog::default()).expect_err("missing");
        assert_eq!(
            err.reasons,
            vec![
                "waiting for ephemeral volume controller to create the persistentvolumeclaim \"p-scratch\""
                    .to_string()
            ]
        );
    }

    #[test]
    fn a_read_write_once_pod_claim_in_use_by_a_scheduled_pod_conflicts_until_it_is_removed() {
        let c = catalog(
            vec![claim(
                "solo",
                json!({"accessModes": ["ReadWriteOncePod"]}),
                json!({}),
            )],
            vec![],
            vec![],
        );
        let mut user = pod_using(&["solo"]);
        user.metadata.name = Some("user".into());
        user.metadata.uid = Some("user-uid".into());
        let n = node_with(json!({"name": "a"}), vec![user.clone()]);
        let other = node(json!({"name": "b"}));
        let p = pod_using(&["solo"]);
        let mut state = restrictions_pre_filter(&p, &c, &[&n, &other])
            .expect("ok")
            .expect("state");
        assert_eq!(state.conflicting_ref_count, 1);
        assert_eq!(
            restrictions_filter(&p, Some(&state), &other).map(reasons),
            Some((
                Code::Unschedulable,
                vec![ERR_REASON_RWOP_CONFLICT.to_string()]
            ))
        );
        // Preemption removing the user lifts the conflict.
        state.update_with_pod(&PodInfo::new(Arc::new(user)), &p, -1);
        assert_eq!(restrictions_filter(&p, Some(&state), &other), None);
        // Nobody uses it: PreFilter skips.
        assert_eq!(restrictions_pre_filter(&p, &c, &[&other]), Ok(None));
    }

    #[test]
    fn the_same_inline_disk_mounted_read_write_twice_conflicts_on_the_node() {
        let disk = |ro: bool| {
            crate::testutil::pod(json!({"volumes": [{"name": "d",
                "gcePersistentDisk": {"pdName": "disk-1", "readOnly": ro}}]}))
        };
        let n = node_with(json!({"name": "a"}), vec![disk(false)]);
        assert_eq!(
            restrictions_filter(&disk(false), None, &n).map(|s| s.reasons),
            Some(vec![ERR_REASON_DISK_CONFLICT.to_string()])
        );
        let ro = node_with(json!({"name": "a"}), vec![disk(true)]);
        assert_eq!(restrictions_filter(&disk(true), None, &ro), None);
    }

    #[test]
    fn a_zonal_volume_admits_only_nodes_of_its_zones() {
        let c = catalog(
            vec![bound_claim("data", "pv1")],
            vec![volume(
                "pv1",
                json!({"topology.kubernetes.io/zone": "z1__z2"}),
                Value::Null,
            )],
            vec![],
        );
        let state = zone_pre_filter(&pod_using(&["data"]), &c).expect("ok");
        let zoned =
            |z: &str| node(json!({"name": z, "labels": {"topology.kubernetes.io/zone": z}}));
        assert_eq!(zone_filter(state.as_ref(), &zoned("z1")), None);
        assert_eq!(zone_filter(state.as_ref(), &zoned("z2")), None);
        assert_eq!(
            zone_filter(state.as_ref(), &zoned("z3")).map(reasons),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_ZONE_CONFLICT.to_string()]
            ))
        );
        // A node without any zone or region label has no constraint.
        assert_eq!(
            zone_filter(state.as_ref(), &node(json!({"name": "plain"}))),
            None
        );
        // The beta label on the volume is checked against the GA label on the node.
        let beta = catalog(
            vec![bound_claim("data", "pv1")],
            vec![volume(
                "pv1",
                json!({"failure-domain.beta.kubernetes.io/zone": "z1"}),
                Value::Null,
            )],
            vec![],
        );
        let state = zone_pre_filter(&pod_using(&["data"]), &beta).expect("ok");
        assert_eq!(zone_filter(state.as_ref(), &zoned("z1")), None);
        assert!(zone_filter(state.as_ref(), &zoned("z2")).is_some());
    }

    #[test]
    fn a_missing_claim_fails_the_whole_attempt_with_upstreams_message() {
        let mut c = Cache::default();
        for n in ["a", "b"] {
            c.upsert_node(Arc::new(raw_node(json!({"name": n}))));
        }
        let mut alg = Algorithm::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let err = alg
            .schedule(&pod_using(&["data"]), &c, &mut rng)
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: persistentvolumeclaim \"data\" not found. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
        c.volumes_mut().upsert_claim(bound_claim("data", "pv1"));
        c.volumes_mut().upsert_volume(volume(
            "pv1",
            json!({}),
            json!({"required": {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}),
        ));
        let r = alg
            .schedule(&pod_using(&["data"]), &c, &mut rng)
            .expect("fits b");
        assert_eq!(r.suggested_host, "b");
    }

    fn static_pv(
        name: &str,
        size: &str,
        modes: Value,
        hostname: Option<&str>,
    ) -> Arc<PersistentVolume> {
        let mut spec = json!({"capacity": {"storage": size}, "accessModes": modes,
            "storageClassName": "local", "hostPath": {"path": "/tmp"}});
        if let Some(h) = hostname {
            spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [h]}]}]}});
        }
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "resourceVersion": "7"},
                "spec": spec, "status": {"phase": "Available"}}))
            .expect("pv"),
        )
    }

    fn local_claim(name: &str, size: &str) -> Arc<PersistentVolumeClaim> {
        claim(
            name,
            json!({"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}}}),
            json!({"uid": format!("{name}-uid")}),
        )
    }

    fn host(n: &str) -> NodeInfo {
        node(json!({"name": n, "labels": {"kubernetes.io/hostname": n}}))
    }

    #[test]
    fn a_wait_for_first_consumer_claim_binds_the_smallest_matching_volume_on_the_node() {
        let c = catalog(
            vec![local_claim("data", "2Gi")],
            vec![
                static_pv("big-a", "10Gi", json!(["ReadWriteOnce"]), Some("a")),
                static_pv("small-a", "5Gi", json!(["ReadWriteOnce"]), Some("a")),
                static_pv("tiny-a", "1Gi", json!(["ReadWriteOnce"]), Some("a")),
                static_pv("rox-b", "5Gi", json!(["ReadOnlyMany"]), Some("b")),
            ],
            vec![class("local", "WaitForFirstConsumer")],
        );
        let p = pod_using(&["data"]);
        let state = binding_pre_filter(&p, &c).expect("ok");
        assert_eq!(binding_filter(state.as_ref(), &host("a")), None);
        assert_eq!(
            binding_filter(state.as_ref(), &host("b")).map(|s| s.reasons),
            Some(vec![ERR_REASON_BIND_CONFLICT.to_string()]),
            "access modes must match"
        );
        assert_eq!(
            static_bindings_for(&p, &c, &host("a")),
            vec![StaticBinding {
                namespace: "ns".into(),
                claim: "data".into(),
                claim_uid: "data-uid".into(),
                volume: "small-a".into(),
                volume_resource_version: Some("7".into()),
            }]
        );
    }

    #[test]
    fn an_assumed_volume_is_not_offered_to_another_claim() {
        let mut c = catalog(
            vec![local_claim("one", "1Gi"), local_claim("two", "1Gi")],
            vec![static_pv("only", "1Gi", json!(["ReadWriteOnce"]), None)],
            vec![class("local", "WaitForFirstConsumer")],
        );
        let first = static_bindings_for(&pod_using(&["one"]), &c, &host("a"));
        assert_eq!(first.len(), 1);
        c.assume(&first);
        let state = binding_pre_filter(&pod_using(&["two"]), &c).expect("ok");
        assert!(binding_filter(state.as_ref(), &host("a")).is_some());
        // The claim it was assumed for still finds it (pre-bound).
        let state = binding_pre_filter(&pod_using(&["one"]), &c).expect("ok");
        assert_eq!(binding_filter(state.as_ref(), &host("a")), None);
        c.forget(&first);
        let state = binding_pre_filter(&pod_using(&["two"]), &c).expect("ok");
        assert_eq!(binding_filter(state.as_ref(), &host("a")), None);
    }

    #[test]
    fn two_claims_of_one_pod_need_two_distinct_volumes() {
        let c = catalog(
            vec![local_claim("one", "1Gi"), local_claim("two", "1Gi")],
            vec![static_pv("only", "1Gi", json!(["ReadWriteOnce"]), None)],
            vec![class("local", "WaitForFirstConsumer")],
        );
        let state = binding_pre_filter(&pod_using(&["one", "two"]), &c).expect("ok");
        assert!(binding_filter(state.as_ref(), &host("a")).is_some());
    }

    #[test]
    fn unavailable_too_small_or_other_class_volumes_do_not_match() {
        let mut pending: PersistentVolume =
            (*static_pv("pending", "5Gi", json!(["ReadWriteOnce"]), None)).clone();
        pending.status = Some(serde_json::from_value(json!({"phase": "Pending"})).expect("status"));
        let mut other: PersistentVolume =
            (*static_pv("other", "5Gi", json!(["ReadWriteOnce"]), None)).clone();
        other.spec.as_mut().expect("spec").storage_class_name = Some("slow".into());
        let c = catalog(
            vec![local_claim("data", "2Gi")],
            vec![
                Arc::new(pending),
                Arc::new(other),
                static_pv("small", "1Gi", json!(["ReadWriteOnce"]), None),
            ],
            vec![class("local", "WaitForFirstConsumer")],
        );
        let state = binding_pre_filter(&pod_using(&["data"]), &c).expect("ok");
        assert!(binding_filter(state.as_ref(), &host("a")).is_some());
    }

    #[test]
    fn prebind_waits_until_the_claim_is_bound_to_the_chosen_volume() {
        let b = StaticBinding {
            namespace: "ns".into(),
            claim: "data".into(),
            claim_uid: "data-uid".into(),
            volume: "pv1".into(),
            volume_resource_version: None,
        };
        let pv = static_pv("pv1", "1Gi", json!(["ReadWriteOnce"]), None);
        let mut c = catalog(vec![local_claim("data", "1Gi")], vec![pv.clone()], vec![]);
        assert_eq!(check_bindings(&c, std::slice::from_ref(&b)), Ok(false));
        c.upsert_claim(claim(
            "data",
            json!({"volumeName": "pv1"}),
            json!({"uid": "data-uid", "annotations": {ANN_BIND_COMPLETED: "yes"}}),
        ));
        assert_eq!(check_bindings(&c, std::slice::from_ref(&b)), Ok(true));
        let mut stolen = (*pv).clone();
        stolen.spec.as_mut().expect("spec").claim_ref = Some(
            serde_json::from_value(json!({"namespace": "ns", "name": "other", "uid": "x"}))
                .expect("ref"),
        );
        c.upsert_volume(Arc::new(stolen));
        assert!(check_bindings(&c, &[b]).is_err());
    }
}
