//! The owner/dependent graph: one node per object the collector has observed (or heard of as an
//! owner), keyed by UID, with the owner references of each and the reverse dependents edges.
//!
//! Pure: every change returns the [`Effect`]s the shell carries out (work-queue adds, absent-owner
//! cache entries, events), so the graph is tested without an apiserver.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/garbagecollector/graph.go and the
//! `processGraphChanges` half of graph_builder.go.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Where an object lives: upstream's `objectReference` (owner-reference coordinates plus the
/// namespace). For a virtual node the namespace is the dependent's, a guess until observed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
}

impl fmt::Display for ObjectRef {
    /// upstream `objectReference.String()`, which the `OwnerRefInvalidNamespace` message quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}/{}, namespace: {}, name: {}, uid: {}]",
            self.api_version, self.kind, self.namespace, self.name, self.uid
        )
    }
}

/// The fields of one `metadata.ownerReferences` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub name: Arc<str>,
    pub uid: Arc<str>,
    pub controller: Option<bool>,
    pub block_owner_deletion: Option<bool>,
}

impl OwnerRef {
    pub fn blocks(&self) -> bool {
        self.block_owner_deletion == Some(true)
    }

    /// The reference as an object reference in `namespace`.
    pub fn at(&self, namespace: &Arc<str>) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// `ownerReferenceMatchesCoordinates`: same apiVersion, kind, name and uid.
    fn matches(&self, identity: &ObjectRef) -> bool {
        self.uid == identity.uid
            && self.name == identity.name
            && self.kind == identity.kind
            && self.api_version == identity.api_version
    }
}

/// What the collector keeps of an observed object — only what its decisions need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub identity: ObjectRef,
    pub owners: Vec<OwnerRef>,
    pub being_deleted: bool,
    /// `foregroundDeletion` among the finalizers.
    pub foreground_finalizer: bool,
    /// `orphan` among the finalizers.
    pub orphan_finalizer: bool,
}

impl Observed {
    fn deleting_dependents(&self) -> bool {
        self.being_deleted && self.foreground_finalizer
    }

    fn orphaning(&self) -> bool {
        self.being_deleted && self.orphan_finalizer
    }
}

/// One item of upstream's `graphChanges` queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An informer add or update.
    Upsert(Observed),
    /// An informer delete.
    Delete(ObjectRef),
    /// The collector confirmed through the API that this identity does not exist.
    VirtualDelete(ObjectRef),
}

/// What the shell is to do after a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    AttemptToDelete(ObjectRef),
    /// Rate-limited add (a replacement virtual node, upstream `AddRateLimited`).
    AttemptToDeleteLater(ObjectRef),
    AttemptToOrphan(ObjectRef),
    /// Remember that this owner is absent (upstream `absentOwnerCache.Add`).
    AbsentOwner(ObjectRef),
    /// Warning `OwnerRefInvalidNamespace` on `dependent` about its reference to `owner`.
    InvalidNamespaceOwnerRef {
        dependent: ObjectRef,
        owner: ObjectRef,
    },
}

#[derive(Clone, Debug)]
struct Node {
    identity: ObjectRef,
    owners: Vec<OwnerRef>,
    dependents: HashSet<Arc<str>>,
    /// Created for an owner not observed yet (upstream `virtual`; `!isObserved()`).
    virtual_: bool,
    being_deleted: bool,
    /// One way, as upstream's `markDeletingDependents`.
    deleting_dependents: bool,
    /// The last observed `being_deleted && foregroundDeletion`, to detect the transition
    /// (upstream compares with the informer's old object).
    last_foreground: bool,
    /// The last observed `being_deleted && orphan`.
    last_orphan: bool,
}

impl Node {
    fn virtual_owner(identity: ObjectRef) -> Self {
        Node {
            identity,
            owners: Vec::new(),
            dependents: HashSet::new(),
            virtual_: true,
            being_deleted: false,
            deleting_dependents: false,
            last_foreground: false,
            last_orphan: false,
        }
    }
}

/// A copy of a node and its direct dependents, for a worker to decide on without the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub identity: ObjectRef,
    pub owners: Vec<OwnerRef>,
    pub virtual_: bool,
    pub being_deleted: bool,
    pub deleting_dependents: bool,
    pub dependents: Vec<DependentView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependentView {
    pub identity: ObjectRef,
    pub owners: Vec<OwnerRef>,
    pub deleting_dependents: bool,
}

impl NodeView {
    /// upstream `node.blockingDependents`: dependents whose reference to this node has
    /// `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self) -> Vec<&DependentView> {
        self.dependents
            .iter()
            .filter(|d| {
                d.owners
                    .iter()
                    .any(|o| o.uid == self.identity.uid && o.blocks())
            })
            .collect()
    }
}

/// `uidToNode` with the string interner that keeps repeated apiVersions, kinds and namespaces
/// shared (memory is a headline goal; 20k nodes repeat a handful of them).
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<Arc<str>, Node>,
    strings: HashSet<Arc<str>>,
}

/// `referencesDiffs`: owner references added, removed, and changed (same UID, other content).
fn references_diffs(
    old: &[OwnerRef],
    new: &[OwnerRef],
) -> (Vec<OwnerRef>, Vec<OwnerRef>, Vec<(OwnerRef, OwnerRef)>) {
    let old_by_uid: HashMap<&str, &OwnerRef> = old.iter().map(|o| (&*o.uid, o)).collect();
    let new_uids: HashSet<&str> = new.iter().map(|o| &*o.uid).collect();
    let mut added = Vec::new();
    let mut changed = Vec::new();
    for n in new {
        match old_by_uid.get(&*n.uid) {
            None => added.push(n.clone()),
            Some(o) if *o != n => changed.push(((*o).clone(), n.clone())),
            Some(_) => {}
        }
    }
    let removed = old
        .iter()
        .filter(|o| !new_uids.contains(&*o.uid))
        .cloned()
        .collect();
    (added, removed, changed)
}

/// Whether a dependent refers to `owner` by exactly these coordinates (found a match) and/or by
/// others (found a mismatch); upstream `partitionDependents` for one dependent.
fn dependent_matches(dep: &ObjectRef, owners: &[OwnerRef], owner: &ObjectRef) -> (bool, bool) {
    if !owner.namespace.is_empty() && owner.namespace != dep.namespace {
        return (false, true);
    }
    let mut found = (false, false);
    for o in owners.iter().filter(|o| o.uid == owner.uid) {
        if o.matches(owner) {
            found.0 = true;
        } else {
            found.1 = true;
        }
    }
    found
}

type DepOwners = (ObjectRef, Vec<OwnerRef>);

/// upstream `partitionDependents`; a dependent may land in both lists.
fn partition_dependents<'a>(
    deps: &'a [DepOwners],
    owner: &ObjectRef,
) -> (Vec<&'a DepOwners>, Vec<&'a DepOwners>) {
    let mut matching = Vec::new();
    let mut nonmatching = Vec::new();
    for d in deps {
        let (m, mm) = dependent_matches(&d.0, &d.1, owner);
        if m {
            matching.push(d);
        }
        if mm {
            nonmatching.push(d);
        }
    }
    (matching, nonmatching)
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid)
    }

    /// Returns the shared copy of `s`.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strings.get(s) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    pub fn view(&self, uid: &str) -> Option<NodeView> {
        let node = self.nodes.get(uid)?;
        let dependents = node
            .dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .map(|d| DependentView {
                identity: d.identity.clone(),
                owners: d.owners.clone(),
                deleting_dependents: d.deleting_dependents,
            })
            .collect();
        Some(NodeView {
            identity: node.identity.clone(),
            owners: node.owners.clone(),
            virtual_: node.virtual_,
            being_deleted: node.being_deleted,
            deleting_dependents: node.deleting_dependents,
            dependents,
        })
    }

    /// Observed nodes of one resource that a fresh list (`seen` UIDs) no longer has: deletions
    /// missed while the watch was down (an informer's `Replace` reports them as deletes).
    pub fn missing_after_relist(
        &self,
        api_version: &str,
        kind: &str,
        seen: &HashSet<Arc<str>>,
    ) -> Vec<ObjectRef> {
        self.nodes
            .values()
            .filter(|n| {
                !n.virtual_
                    && &*n.identity.kind == kind
                    && &*n.identity.api_version == api_version
                    && !seen.contains(&n.identity.uid)
            })
            .map(|n| n.identity.clone())
            .collect()
    }

    pub fn apply(&mut self, change: Change) -> Vec<Effect> {
        let mut fx = Vec::new();
        match change {
            Change::Upsert(obs) => self.upsert(obs, &mut fx),
            Change::Delete(identity) => self.delete(identity, false, &mut fx),
            Change::VirtualDelete(identity) => self.delete(identity, true, &mut fx),
        }
        fx
    }

    fn upsert(&mut self, obs: Observed, fx: &mut Vec<Effect>) {
        let uid = obs.identity.uid.clone();
        // A virtual node is now observed: adopt the observed identity, and check the
        // dependents that referred to it by other coordinates (bad child -> good parent order).
        if let Some(existing) = self.nodes.get_mut(&uid)
            && existing.virtual_
        {
            if existing.identity != obs.identity {
                let observed = &obs.identity;
                let deps: Vec<Arc<str>> = existing.dependents.iter().cloned().collect();
                existing.identity = observed.clone();
                for dep_uid in deps {
                    let Some(dep) = self.nodes.get(&dep_uid) else {
                        continue;
                    };
                    let (_, mismatch) = dependent_matches(&dep.identity, &dep.owners, observed);
                    if !mismatch {
                        continue;
                    }
                    if !observed.namespace.is_empty()
                        && dep.identity.namespace != observed.namespace
                        && let Some(owner) = dep.owners.iter().find(|o| o.uid == observed.uid)
                    {
                        fx.push(Effect::InvalidNamespaceOwnerRef {
                            dependent: dep.identity.clone(),
                            owner: owner.at(&dep.identity.namespace),
                        });
                    }
                    fx.push(Effect::AttemptToDelete(dep.identity.clone()));
                }
            }
            if let Some(existing) = self.nodes.get_mut(&uid) {
                existing.virtual_ = false;
            }
        }

        let deleting = obs.deleting_dependents();
        let orphaning = obs.orphaning();
        let (old_foreground, old_orphan) = match self.nodes.get_mut(&uid) {
            None => {
                let node = Node {
                    identity: obs.identity.clone(),
                    owners: obs.owners.clone(),
                    dependents: HashSet::new(),
                    virtual_: false,
                    being_deleted: obs.being_deleted,
                    deleting_dependents: deleting,
                    last_foreground: false,
                    last_orphan: false,
                };
                self.nodes.insert(uid.clone(), node);
                self.add_dependent_to_owners(&uid, &obs.owners, fx);
                (false, false)
            }
            Some(existing) => {
                let (added, removed, changed) = references_diffs(&existing.owners, &obs.owners);
                if obs.being_deleted {
                    existing.being_deleted = true;
                }
                let old = (existing.last_foreground, existing.last_orphan);
                if !added.is_empty() || !removed.is_empty() || !changed.is_empty() {
                    existing.owners = obs.owners.clone();
                    self.add_unblocked_owners_to_delete_queue(&removed, &changed, fx);
                    self.add_dependent_to_owners(&uid, &added, fx);
                    for owner in &removed {
                        if let Some(o) = self.nodes.get_mut(&owner.uid) {
                            o.dependents.remove(&uid);
                        }
                    }
                }
                old
            }
        };
        if let Some(node) = self.nodes.get_mut(&uid) {
            node.last_foreground = deleting;
            node.last_orphan = orphaning;
        }
        // processTransitions
        if orphaning && !old_orphan {
            fx.push(Effect::AttemptToOrphan(obs.identity.clone()));
            return;
        }
        if deleting && !old_foreground {
            let mut deps = Vec::new();
            if let Some(node) = self.nodes.get_mut(&uid) {
                node.deleting_dependents = true;
                deps = node.dependents.iter().cloned().collect();
            }
            for d in deps {
                if let Some(dep) = self.nodes.get(&d) {
                    fx.push(Effect::AttemptToDelete(dep.identity.clone()));
                }
            }
            fx.push(Effect::AttemptToDelete(obs.identity.clone()));
        }
    }

    /// upstream `addUnblockedOwnersToDeleteQueue`: an owner deleting its dependents may be
    /// unblocked by a removed or no longer blocking reference.
    fn add_unblocked_owners_to_delete_queue(
        &self,
        removed: &[OwnerRef],
        changed: &[(OwnerRef, OwnerRef)],
        fx: &mut Vec<Effect>,
    ) {
        let unblocked = removed.iter().filter(|r| r.blocks()).chain(
            changed
                .iter()
                .filter(|(old, new)| old.blocks() && !new.blocks())
                .map(|(_, new)| new),
        );
        for r in unblocked {
            if let Some(owner) = self.nodes.get(&r.uid)
                && owner.deleting_dependents
            {
                fx.push(Effect::AttemptToDelete(owner.identity.clone()));
            }
        }
    }

    /// upstream `addDependentToOwners`: links the dependent to each owner, creating virtual
    /// owners (to be verified through the API), and queues a dependent whose reference
    /// disagrees with an owner's observed coordinates.
    fn add_dependent_to_owners(
        &mut self,
        dep_uid: &Arc<str>,
        owners: &[OwnerRef],
        fx: &mut Vec<Effect>,
    ) {
        let Some(dep_identity) = self.nodes.get(dep_uid).map(|n| n.identity.clone()) else {
            return;
        };
        let mut potentially_invalid = false;
        for owner in owners {
            match self.nodes.get_mut(&owner.uid) {
                None => {
                    let mut node = Node::virtual_owner(owner.at(&dep_identity.namespace));
                    node.dependents.insert(dep_uid.clone());
                    fx.push(Effect::AttemptToDelete(node.identity.clone()));
                    self.nodes.insert(owner.uid.clone(), node);
                }
                Some(node) => {
                    node.dependents.insert(dep_uid.clone());
                    if potentially_invalid {
                        continue;
                    }
                    let owner_namespaced = !node.identity.namespace.is_empty();
                    if owner_namespaced && node.identity.namespace != dep_identity.namespace {
                        if !node.virtual_ {
                            fx.push(Effect::InvalidNamespaceOwnerRef {
                                dependent: dep_identity.clone(),
                                owner: owner.at(&dep_identity.namespace),
                            });
                        }
                        potentially_invalid = true;
                    } else if !owner.matches(&node.identity)
                        || (!owner_namespaced
                            && node.identity.namespace != dep_identity.namespace
                            && node.virtual_)
                    {
                        // Either coordinates disagree, or a virtual cluster-scoped owner may be a
                        // missing namespaced owner referenced from a cluster-scoped child
                        // (kubernetes#98040).
                        potentially_invalid = true;
                    }
                }
            }
        }
        if potentially_invalid {
            fx.push(Effect::AttemptToDelete(dep_identity));
        }
    }

    fn delete(&mut self, deleted: ObjectRef, virtual_event: bool, fx: &mut Vec<Effect>) {
        let Some(existing) = self.nodes.get(&deleted.uid) else {
            return;
        };
        if virtual_event {
            let deps: Vec<DepOwners> = existing
                .dependents
                .iter()
                .filter_map(|d| self.nodes.get(d))
                .map(|d| (d.identity.clone(), d.owners.clone()))
                .collect();
            if existing.virtual_ {
                let (matching, nonmatching) = partition_dependents(&deps, &deleted);
                if !nonmatching.is_empty() {
                    // Some dependents disagree on the owner's coordinates: keep the node.
                    if !matching.is_empty() {
                        fx.push(Effect::AbsentOwner(deleted.clone()));
                        for (d, _) in &matching {
                            fx.push(Effect::AttemptToDelete(d.clone()));
                        }
                    }
                    if existing.identity == deleted {
                        // getAlternateOwnerIdentity: the first other identity a nonmatching
                        // dependent uses, in a stable order.
                        let mut alternates: Vec<ObjectRef> = nonmatching
                            .iter()
                            .flat_map(|(dep, owners)| {
                                owners
                                    .iter()
                                    .filter(|o| o.uid == deleted.uid)
                                    .map(|o| {
                                        let mut id = o.at(&dep.namespace);
                                        // The verified identity shows this kind is cluster-scoped.
                                        if deleted.namespace.is_empty()
                                            && id.api_version == deleted.api_version
                                            && id.kind == deleted.kind
                                        {
                                            id.namespace = deleted.namespace.clone();
                                        }
                                        id
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .filter(|id| *id != deleted)
                            .collect();
                        alternates.sort();
                        alternates.dedup();
                        let next = alternates
                            .iter()
                            .find(|id| **id > deleted)
                            .or_else(|| alternates.first())
                            .cloned();
                        if let Some(next) = next
                            && let Some(node) = self.nodes.get_mut(&deleted.uid)
                        {
                            node.identity = next.clone();
                            fx.push(Effect::AttemptToDeleteLater(next));
                        }
                    }
                    return;
                }
            } else if existing.identity != deleted {
                // An observed node is never removed by a virtual delete of other coordinates;
                // dependents that used those coordinates are checked again.
                let (_, invalid) = partition_dependents(&deps, &existing.identity);
                if !invalid.is_empty() {
                    fx.push(Effect::AbsentOwner(deleted.clone()));
                    for (d, _) in invalid {
                        fx.push(Effect::AttemptToDelete(d.clone()));
                    }
                }
                return;
            }
        }
        self.remove_node(&deleted, fx);
    }

    /// upstream `removeNode` plus the queueing after it: dependents are checked (their owner is
    /// gone), and owners deleting their dependents are checked (one fewer blocker).
    fn remove_node(&mut self, deleted: &ObjectRef, fx: &mut Vec<Effect>) {
        let Some(node) = self.nodes.remove(&deleted.uid) else {
            return;
        };
        for owner in &node.owners {
            if let Some(o) = self.nodes.get_mut(&owner.uid) {
                o.dependents.remove(&node.identity.uid);
            }
        }
        if !node.dependents.is_empty() {
            fx.push(Effect::AbsentOwner(deleted.clone()));
        }
        for d in &node.dependents {
            if let Some(dep) = self.nodes.get(d) {
                fx.push(Effect::AttemptToDelete(dep.identity.clone()));
            }
        }
        for owner in &node.owners {
            if let Some(o) = self.nodes.get(&owner.uid)
                && o.deleting_dependents
            {
                fx.push(Effect::AttemptToDelete(o.identity.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: &str, name: &str, uid: &str) -> ObjectRef {
        let api_version = match kind {
            "ReplicaSet" | "Deployment" => "apps/v1",
            "ClusterRole" => "rbac.authorization.k8s.io/v1",
            _ => "v1",
        };
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn owner_ref(owner: &ObjectRef, block: bool) -> OwnerRef {
        OwnerRef {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn obs(identity: &ObjectRef, owners: Vec<OwnerRef>) -> Observed {
        Observed {
            identity: identity.clone(),
            owners,
            being_deleted: false,
            foreground_finalizer: false,
            orphan_finalizer: false,
        }
    }

    fn deps(g: &Graph, uid: &str) -> Vec<String> {
        let mut v: Vec<String> = g
            .view(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .map(|d| d.identity.name.to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn an_object_without_owners_becomes_a_lone_observed_node() {
        let mut g = Graph::new();
        let cm = id("ConfigMap", "ns", "cm", "u1");
        assert!(g.apply(Change::Upsert(obs(&cm, vec![]))).is_empty());
        let v = g.view("u1").unwrap();
        assert!(!v.virtual_);
        assert!(v.dependents.is_empty());
    }

    #[test]
    fn a_dependent_of_an_unseen_owner_creates_a_virtual_owner_queued_for_verification() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        let fx = g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        assert_eq!(fx, vec![Effect::AttemptToDelete(rs.clone())]);
        let owner = g.view("rs-uid").unwrap();
        assert!(owner.virtual_);
        assert_eq!(owner.identity, rs);
        assert_eq!(deps(&g, "rs-uid"), vec!["pod"]);
    }

    #[test]
    fn observing_a_virtual_owner_marks_it_observed_without_queueing_matching_dependents() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let fx = g.apply(Change::Upsert(obs(&rs, vec![])));
        assert!(fx.is_empty());
        assert!(!g.view("rs-uid").unwrap().virtual_);
        assert_eq!(deps(&g, "rs-uid"), vec!["pod"]);
    }

    #[test]
    fn a_dependent_of_a_known_owner_is_linked_without_work() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        let pod = id("Pod", "ns", "pod", "pod-uid");
        assert!(
            g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])))
                .is_empty()
        );
        assert_eq!(deps(&g, "rs-uid"), vec!["pod"]);
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents_and_remembers_it_as_absent() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let fx = g.apply(Change::Delete(rs.clone()));
        assert_eq!(
            fx,
            vec![
                Effect::AbsentOwner(rs.clone()),
                Effect::AttemptToDelete(pod.clone())
            ]
        );
        assert!(!g.contains("rs-uid"));
    }

    #[test]
    fn deleting_a_dependent_unlinks_it_and_queues_an_owner_deleting_its_dependents() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let mut deleting = obs(&rs, vec![]);
        deleting.being_deleted = true;
        deleting.foreground_finalizer = true;
        g.apply(Change::Upsert(deleting));
        let fx = g.apply(Change::Delete(pod.clone()));
        assert_eq!(fx, vec![Effect::AttemptToDelete(rs.clone())]);
        assert!(deps(&g, "rs-uid").is_empty());
    }

    #[test]
    fn an_owner_entering_foreground_deletion_queues_itself_and_its_dependents() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let mut deleting = obs(&rs, vec![]);
        deleting.being_deleted = true;
        deleting.foreground_finalizer = true;
        let fx = g.apply(Change::Upsert(deleting.clone()));
        assert_eq!(
            fx,
            vec![
                Effect::AttemptToDelete(pod.clone()),
                Effect::AttemptToDelete(rs.clone())
            ]
        );
        let v = g.view("rs-uid").unwrap();
        assert!(v.deleting_dependents && v.being_deleted);
        // The same state observed again is no new transition.
        assert!(g.apply(Change::Upsert(deleting)).is_empty());
    }

    #[test]
    fn an_owner_entering_orphan_deletion_is_queued_for_orphaning_once() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let mut orphaning = obs(&rs, vec![]);
        orphaning.being_deleted = true;
        orphaning.orphan_finalizer = true;
        assert_eq!(
            g.apply(Change::Upsert(orphaning.clone())),
            vec![Effect::AttemptToOrphan(rs.clone())]
        );
        assert!(g.apply(Change::Upsert(orphaning)).is_empty());
    }

    #[test]
    fn changing_owner_references_moves_the_dependent_between_owners() {
        let mut g = Graph::new();
        let a = id("ReplicaSet", "ns", "a", "a-uid");
        let b = id("ReplicaSet", "ns", "b", "b-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&a, vec![])));
        g.apply(Change::Upsert(obs(&b, vec![])));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&a, true)])));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&b, true)])));
        assert!(deps(&g, "a-uid").is_empty());
        assert_eq!(deps(&g, "b-uid"), vec!["pod"]);
    }

    #[test]
    fn dropping_a_blocking_reference_unblocks_an_owner_deleting_its_dependents() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        let mut deleting = obs(&rs, vec![]);
        deleting.being_deleted = true;
        deleting.foreground_finalizer = true;
        g.apply(Change::Upsert(deleting));
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let fx = g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, false)])));
        assert_eq!(fx, vec![Effect::AttemptToDelete(rs.clone())]);
        let fx = g.apply(Change::Upsert(obs(&pod, vec![])));
        assert!(
            fx.is_empty(),
            "a non-blocking reference removed unblocks nothing"
        );
    }

    #[test]
    fn a_virtual_delete_removes_a_virtual_owner_and_queues_its_dependents() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        let pod = id("Pod", "ns", "pod", "pod-uid");
        g.apply(Change::Upsert(obs(&pod, vec![owner_ref(&rs, true)])));
        let fx = g.apply(Change::VirtualDelete(rs.clone()));
        assert_eq!(
            fx,
            vec![
                Effect::AbsentOwner(rs.clone()),
                Effect::AttemptToDelete(pod)
            ]
        );
        assert!(!g.contains("rs-uid"));
    }

    #[test]
    fn a_virtual_delete_with_other_coordinates_never_removes_an_observed_node() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        let mut other = rs.clone();
        other.name = "other".into();
        assert!(g.apply(Change::VirtualDelete(other)).is_empty());
        assert!(g.contains("rs-uid"));
    }

    #[test]
    fn a_dependent_in_another_namespace_than_its_observed_owner_gets_an_invalid_namespace_warning()
    {
        let mut g = Graph::new();
        let owner = id("ConfigMap", "a", "owner", "o-uid");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        let dep = id("ConfigMap", "b", "dep", "d-uid");
        let fx = g.apply(Change::Upsert(obs(&dep, vec![owner_ref(&owner, false)])));
        assert_eq!(
            fx,
            vec![
                Effect::InvalidNamespaceOwnerRef {
                    dependent: dep.clone(),
                    owner: owner_ref(&owner, false).at(&dep.namespace),
                },
                Effect::AttemptToDelete(dep.clone())
            ]
        );
    }

    #[test]
    fn a_cluster_scoped_dependent_of_an_observed_namespaced_owner_gets_an_invalid_namespace_warning()
     {
        let mut g = Graph::new();
        let owner = id("ConfigMap", "a", "owner", "o-uid");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        let dep = id("ClusterRole", "", "dep", "d-uid");
        let fx = g.apply(Change::Upsert(obs(&dep, vec![owner_ref(&owner, false)])));
        assert!(matches!(fx[0], Effect::InvalidNamespaceOwnerRef { .. }));
        assert_eq!(fx[1], Effect::AttemptToDelete(dep));
    }

    #[test]
    fn observing_an_owner_in_another_namespace_than_its_dependent_warns_about_the_dependent() {
        let mut g = Graph::new();
        let owner = id("ConfigMap", "a", "owner", "o-uid");
        let dep = id("ConfigMap", "b", "dep", "d-uid");
        g.apply(Change::Upsert(obs(&dep, vec![owner_ref(&owner, false)])));
        let fx = g.apply(Change::Upsert(obs(&owner, vec![])));
        assert_eq!(
            fx,
            vec![
                Effect::InvalidNamespaceOwnerRef {
                    dependent: dep.clone(),
                    owner: owner_ref(&owner, false).at(&dep.namespace),
                },
                Effect::AttemptToDelete(dep)
            ]
        );
        assert_eq!(g.view("o-uid").unwrap().identity, owner);
    }

    #[test]
    fn a_relist_reports_observed_nodes_it_no_longer_lists() {
        let mut g = Graph::new();
        let a = id("ConfigMap", "ns", "a", "a-uid");
        let b = id("ConfigMap", "ns", "b", "b-uid");
        let virtual_owner = id("ConfigMap", "ns", "v", "v-uid");
        g.apply(Change::Upsert(obs(&a, vec![])));
        g.apply(Change::Upsert(obs(
            &b,
            vec![owner_ref(&virtual_owner, false)],
        )));
        let seen: HashSet<Arc<str>> = [Arc::from("a-uid")].into_iter().collect();
        assert_eq!(g.missing_after_relist("v1", "ConfigMap", &seen), vec![b]);
    }

    #[test]
    fn blocking_dependents_are_those_whose_reference_blocks_owner_deletion() {
        let mut g = Graph::new();
        let rs = id("ReplicaSet", "ns", "rs", "rs-uid");
        g.apply(Change::Upsert(obs(&rs, vec![])));
        g.apply(Change::Upsert(obs(
            &id("Pod", "ns", "blocking", "p1"),
            vec![owner_ref(&rs, true)],
        )));
        g.apply(Change::Upsert(obs(
            &id("Pod", "ns", "free", "p2"),
            vec![owner_ref(&rs, false)],
        )));
        let v = g.view("rs-uid").unwrap();
        let names: Vec<&str> = v
            .blocking_dependents()
            .iter()
            .map(|d| &*d.identity.name)
            .collect();
        assert_eq!(names, vec!["blocking"]);
    }

    #[test]
    fn a_virtual_delete_that_some_dependents_disagree_with_switches_to_their_identity() {
        let mut g = Graph::new();
        let as_rs = id("ReplicaSet", "ns", "owner", "o-uid");
        let mut as_cm = id("ConfigMap", "ns", "owner", "o-uid");
        as_cm.api_version = "v1".into();
        let a = id("Pod", "ns", "a", "a-uid");
        let b = id("Pod", "ns", "b", "b-uid");
        g.apply(Change::Upsert(obs(&a, vec![owner_ref(&as_rs, false)])));
        g.apply(Change::Upsert(obs(&b, vec![owner_ref(&as_cm, false)])));
        assert_eq!(g.view("o-uid").unwrap().identity, as_rs);
        let fx = g.apply(Change::VirtualDelete(as_rs.clone()));
        assert_eq!(
            fx,
            vec![
                Effect::AbsentOwner(as_rs.clone()),
                Effect::AttemptToDelete(a.clone()),
                Effect::AttemptToDeleteLater(as_cm.clone()),
            ]
        );
        let v = g.view("o-uid").unwrap();
        assert!(v.virtual_);
        assert_eq!(v.identity, as_cm);
        // Once the first dependent is collected and the owner is confirmed absent under the
        // other identity too, the node goes.
        g.apply(Change::Delete(a.clone()));
        let fx = g.apply(Change::VirtualDelete(as_cm.clone()));
        assert!(fx.contains(&Effect::AttemptToDelete(b)));
        assert!(!g.contains("o-uid"));
    }

    #[test]
    fn an_observed_owner_is_not_removed_by_a_virtual_delete_under_a_dependents_wrong_coordinates() {
        let mut g = Graph::new();
        let owner = id("ConfigMap", "ns", "owner", "o-uid");
        g.apply(Change::Upsert(obs(&owner, vec![])));
        let mut wrong = owner.clone();
        wrong.name = "renamed".into();
        let dep = id("Pod", "ns", "dep", "d-uid");
        g.apply(Change::Upsert(obs(&dep, vec![owner_ref(&wrong, false)])));
        let fx = g.apply(Change::VirtualDelete(wrong.clone()));
        assert_eq!(
            fx,
            vec![Effect::AbsentOwner(wrong), Effect::AttemptToDelete(dep)]
        );
        assert!(g.contains("o-uid"));
    }

    #[test]
    fn interning_shares_repeated_strings() {
        let mut g = Graph::new();
        let a = g.intern("apps/v1");
        let b = g.intern("apps/v1");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
