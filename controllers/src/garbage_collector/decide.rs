//! What the collector does with one item, given what the API says about it and its owners.
//! Pure; the shell fetches, calls these, and performs the outcome.
//!
//! Mirrors kubernetes/kubernetes pkg/controller/garbagecollector/garbagecollector.go
//! (`attemptToDeleteItem`, `classifyReferences`, `isDangling`, `processDeletingDependentsItem`)
//! and patch.go (the patch bodies).

use serde_json::{Value, json};

use super::graph::{NodeView, ObjectRef, OwnerRef};

pub const FINALIZER_DELETE_DEPENDENTS: &str = "foregroundDeletion";
pub const FINALIZER_ORPHAN_DEPENDENTS: &str = "orphan";

/// `metav1.DeletionPropagation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// What a live lookup of one owner found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Not found, or found with another UID (`isDangling` returns true for both).
    Absent,
    Present {
        being_deleted: bool,
        foreground_finalizer: bool,
    },
}

/// `classifyReferences`' three classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefClass {
    /// The owner exists and is not waiting for its dependents' deletion.
    Solid,
    /// The owner does not exist.
    Dangling,
    /// The owner is being deleted with the `foregroundDeletion` finalizer.
    WaitingForDependentsDeletion,
}

pub fn classify(state: &OwnerState) -> RefClass {
    match state {
        OwnerState::Absent => RefClass::Dangling,
        OwnerState::Present {
            being_deleted: true,
            foreground_finalizer: true,
        } => RefClass::WaitingForDependentsDeletion,
        OwnerState::Present { .. } => RefClass::Solid,
    }
}

/// A cluster-scoped object names an owner of a namespaced kind: an owner reference carries no
/// namespace, so there is nowhere to look; upstream forgets the item without retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cluster-scoped objects cannot refer to namespaced owners")]
pub struct NamespacedOwnerOfClusterScoped;

/// The namespace to GET an owner in (`resourceDefaultNamespace`): the dependent's for a
/// namespaced kind, none for a cluster-scoped kind.
pub fn owner_namespace(
    dependent_namespace: &str,
    owner_namespaced: bool,
) -> Result<&str, NamespacedOwnerOfClusterScoped> {
    match (owner_namespaced, dependent_namespace.is_empty()) {
        (true, true) => Err(NamespacedOwnerOfClusterScoped),
        (true, false) => Ok(dependent_namespace),
        (false, _) => Ok(""),
    }
}

/// Before any lookup: an item already being deleted (and not waiting for its own dependents)
/// only awaits its final removal.
pub fn nothing_to_do_while_deleting(item: &NodeView) -> bool {
    item.being_deleted && !item.deleting_dependents
}

/// The outcome of `attemptToDeleteItem` once the owners are classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// At least one solid owner and nothing to clean up, or no owners at all.
    Keep,
    /// A solid owner remains; drop the references to these (dangling or waiting) owners so that
    /// waiting owners are not stuck behind this item.
    RemoveOwnerReferences(Vec<String>),
    /// An owner waits for its dependents and this item has dependents of its own: delete it in
    /// the foreground. First make its own references non-blocking if one of its dependents is
    /// itself deleting dependents (upstream's cycle guard).
    DeleteForeground { unblock_first: bool },
    /// No solid owner: collect it.
    Delete(Propagation),
}

/// upstream `attemptToDeleteItem`'s switch. `refs` is every owner reference of the live item
/// with its class; `finalizers` are the live item's.
pub fn decide(refs: &[(OwnerRef, RefClass)], item: &NodeView, finalizers: &[String]) -> Decision {
    if refs.is_empty() {
        return Decision::Keep;
    }
    let of = |c: RefClass| refs.iter().filter(move |(_, k)| *k == c).map(|(r, _)| r);
    let solid = of(RefClass::Solid).count();
    let dangling: Vec<String> = of(RefClass::Dangling).map(|r| r.uid.to_string()).collect();
    let waiting: Vec<String> = of(RefClass::WaitingForDependentsDeletion)
        .map(|r| r.uid.to_string())
        .collect();
    if solid > 0 {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        return Decision::RemoveOwnerReferences(dangling.into_iter().chain(waiting).collect());
    }
    if !waiting.is_empty() && !item.dependents.is_empty() {
        return Decision::DeleteForeground {
            unblock_first: item.dependents.iter().any(|d| d.deleting_dependents),
        };
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    Decision::Delete(if has(FINALIZER_ORPHAN_DEPENDENTS) {
        Propagation::Orphan
    } else if has(FINALIZER_DELETE_DEPENDENTS) {
        Propagation::Foreground
    } else {
        Propagation::Background
    })
}

/// upstream `processDeletingDependentsItem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeletingDependents {
    /// No dependent blocks any more: remove `foregroundDeletion` so the owner goes.
    RemoveFinalizer,
    /// Check these blocking dependents (those not themselves deleting dependents).
    Check(Vec<ObjectRef>),
}

pub fn deleting_dependents(item: &NodeView) -> DeletingDependents {
    let blocking = item.blocking_dependents();
    if blocking.is_empty() {
        return DeletingDependents::RemoveFinalizer;
    }
    DeletingDependents::Check(
        blocking
            .into_iter()
            .filter(|d| !d.deleting_dependents)
            .map(|d| d.identity.clone())
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Patch bodies (patch.go)
// ---------------------------------------------------------------------------------------------

/// `GenerateDeleteOwnerRefStrategicMergeBytes`: deletes the references to `owner_uids`, with
/// the dependent's UID as a precondition.
pub fn delete_owner_refs_strategic(dependent_uid: &str, owner_uids: &[String]) -> Value {
    let deletes: Vec<Value> = owner_uids
        .iter()
        .map(|u| json!({"$patch": "delete", "uid": u}))
        .collect();
    json!({"metadata": {"ownerReferences": deletes, "uid": dependent_uid}})
}

/// `deleteOwnerRefJSONMergePatch`, for resources without strategic merge (custom resources):
/// the full remaining list under a resourceVersion precondition.
pub fn delete_owner_refs_merge(
    resource_version: &str,
    current: &[Value],
    owner_uids: &[String],
) -> Value {
    let kept: Vec<&Value> = current
        .iter()
        .filter(|r| {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
            !owner_uids.iter().any(|u| u == uid)
        })
        .collect();
    json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": kept}})
}

/// `unblockOwnerReferencesStrategicMergePatch`: every blocking reference set to
/// `blockOwnerDeletion: false`.
pub fn unblock_owner_refs_strategic(item: &NodeView) -> Value {
    let refs: Vec<Value> = item
        .owners
        .iter()
        .filter(|o| o.blocks())
        .map(|o| {
            let mut r = json!({
                "apiVersion": &*o.api_version,
                "kind": &*o.kind,
                "name": &*o.name,
                "uid": &*o.uid,
                "blockOwnerDeletion": false,
            });
            if let (Some(c), Some(m)) = (o.controller, r.as_object_mut()) {
                m.insert("controller".into(), Value::Bool(c));
            }
            r
        })
        .collect();
    json!({"metadata": {"ownerReferences": refs, "uid": &*item.identity.uid}})
}

/// `unblockOwnerReferencesJSONMergePatch`.
pub fn unblock_owner_refs_merge(resource_version: &str, current: &[Value]) -> Value {
    let refs: Vec<Value> = current
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.get("blockOwnerDeletion") == Some(&Value::Bool(true))
                && let Some(m) = r.as_object_mut()
            {
                m.insert("blockOwnerDeletion".into(), Value::Bool(false));
            }
            r
        })
        .collect();
    json!({"metadata": {"resourceVersion": resource_version, "ownerReferences": refs}})
}

/// `removeFinalizer`'s merge patch, or `None` when `target` is already gone.
pub fn remove_finalizer_patch(
    resource_version: &str,
    finalizers: &[String],
    target: &str,
) -> Option<Value> {
    if !finalizers.iter().any(|f| f == target) {
        return None;
    }
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != target).collect();
    Some(json!({"metadata": {"resourceVersion": resource_version, "finalizers": kept}}))
}

/// `OwnerRefInvalidNamespace`'s message (graph_builder.go `reportInvalidNamespaceOwnerRef`).
pub fn invalid_namespace_message(owner: &ObjectRef, dependent_namespace: &str) -> String {
    format!("ownerRef {owner} does not exist in namespace {dependent_namespace:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::garbage_collector::graph::DependentView;

    fn oref(uid: &str, block: bool) -> OwnerRef {
        OwnerRef {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("owner-{uid}").into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn item(dependents: Vec<DependentView>) -> NodeView {
        NodeView {
            identity: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: "pod".into(),
                uid: "item".into(),
            },
            owners: vec![oref("a", true)],
            virtual_: false,
            being_deleted: false,
            deleting_dependents: false,
            dependents,
        }
    }

    fn dependent(name: &str, owner_uid: &str, block: bool, deleting: bool) -> DependentView {
        DependentView {
            identity: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: name.into(),
                uid: format!("{name}-uid").into(),
            },
            owners: vec![oref(owner_uid, block)],
            deleting_dependents: deleting,
        }
    }

    const PRESENT: OwnerState = OwnerState::Present {
        being_deleted: false,
        foreground_finalizer: false,
    };

    #[test]
    fn owners_classify_as_dangling_solid_or_waiting() {
        assert_eq!(classify(&OwnerState::Absent), RefClass::Dangling);
        assert_eq!(classify(&PRESENT), RefClass::Solid);
        let waiting = OwnerState::Present {
            being_deleted: true,
            foreground_finalizer: true,
        };
        assert_eq!(classify(&waiting), RefClass::WaitingForDependentsDeletion);
        let orphaning = OwnerState::Present {
            being_deleted: true,
            foreground_finalizer: false,
        };
        assert_eq!(classify(&orphaning), RefClass::Solid);
    }

    #[test]
    fn an_item_without_owner_references_is_kept() {
        assert_eq!(decide(&[], &item(vec![]), &[]), Decision::Keep);
    }

    #[test]
    fn an_item_with_only_solid_owners_is_kept() {
        let refs = [(oref("a", true), RefClass::Solid)];
        assert_eq!(decide(&refs, &item(vec![]), &[]), Decision::Keep);
    }

    #[test]
    fn a_solid_owner_keeps_the_item_but_dangling_and_waiting_references_are_removed() {
        let refs = [
            (oref("a", true), RefClass::Solid),
            (oref("b", true), RefClass::Dangling),
            (oref("c", true), RefClass::WaitingForDependentsDeletion),
        ];
        assert_eq!(
            decide(&refs, &item(vec![]), &[]),
            Decision::RemoveOwnerReferences(vec!["b".into(), "c".into()])
        );
    }

    #[test]
    fn an_item_whose_owners_all_dangle_is_deleted_in_the_background() {
        let refs = [(oref("a", true), RefClass::Dangling)];
        assert_eq!(
            decide(&refs, &item(vec![]), &[]),
            Decision::Delete(Propagation::Background)
        );
    }

    #[test]
    fn existing_orphan_or_foreground_finalizers_on_the_item_set_the_propagation() {
        let refs = [(oref("a", true), RefClass::Dangling)];
        assert_eq!(
            decide(&refs, &item(vec![]), &["orphan".into()]),
            Decision::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(&refs, &item(vec![]), &["foregroundDeletion".into()]),
            Decision::Delete(Propagation::Foreground)
        );
    }

    #[test]
    fn an_item_with_dependents_whose_owner_waits_is_deleted_in_the_foreground() {
        let refs = [(oref("a", true), RefClass::WaitingForDependentsDeletion)];
        let it = item(vec![dependent("d", "item", true, false)]);
        assert_eq!(
            decide(&refs, &it, &[]),
            Decision::DeleteForeground {
                unblock_first: false
            }
        );
    }

    #[test]
    fn a_dependent_itself_deleting_dependents_makes_the_item_unblock_its_references_first() {
        let refs = [(oref("a", true), RefClass::WaitingForDependentsDeletion)];
        let it = item(vec![dependent("d", "item", true, true)]);
        assert_eq!(
            decide(&refs, &it, &[]),
            Decision::DeleteForeground {
                unblock_first: true
            }
        );
    }

    #[test]
    fn an_item_without_dependents_whose_owner_waits_is_deleted_in_the_background() {
        let refs = [(oref("a", true), RefClass::WaitingForDependentsDeletion)];
        assert_eq!(
            decide(&refs, &item(vec![]), &[]),
            Decision::Delete(Propagation::Background)
        );
    }

    #[test]
    fn an_item_being_deleted_waits_unless_it_is_deleting_its_dependents() {
        let mut it = item(vec![]);
        it.being_deleted = true;
        assert!(nothing_to_do_while_deleting(&it));
        it.deleting_dependents = true;
        assert!(!nothing_to_do_while_deleting(&it));
    }

    #[test]
    fn an_owner_deleting_dependents_removes_its_finalizer_once_none_blocks() {
        let it = item(vec![dependent("free", "item", false, false)]);
        assert_eq!(
            deleting_dependents(&it),
            DeletingDependents::RemoveFinalizer
        );
    }

    #[test]
    fn an_owner_deleting_dependents_checks_blocking_dependents_not_already_deleting_theirs() {
        let it = item(vec![
            dependent("blocking", "item", true, false),
            dependent("busy", "item", true, true),
            dependent("free", "item", false, false),
        ]);
        match deleting_dependents(&it) {
            DeletingDependents::Check(deps) => {
                let names: Vec<&str> = deps.iter().map(|d| &*d.name).collect();
                assert_eq!(names, vec!["blocking"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_cluster_scoped_dependent_cannot_look_up_a_namespaced_owner() {
        assert_eq!(
            owner_namespace("", true),
            Err(NamespacedOwnerOfClusterScoped)
        );
        assert_eq!(owner_namespace("ns", true), Ok("ns"));
        assert_eq!(owner_namespace("ns", false), Ok(""));
        assert_eq!(owner_namespace("", false), Ok(""));
    }

    #[test]
    fn the_strategic_patch_deletes_owner_references_by_uid_with_a_uid_precondition() {
        assert_eq!(
            delete_owner_refs_strategic("dep", &["a".into(), "b".into()]),
            json!({"metadata": {"ownerReferences": [
                {"$patch": "delete", "uid": "a"}, {"$patch": "delete", "uid": "b"}
            ], "uid": "dep"}})
        );
    }

    #[test]
    fn the_merge_patch_keeps_the_other_references_under_a_resource_version() {
        let current = vec![
            json!({"uid": "a", "name": "x"}),
            json!({"uid": "b", "name": "y"}),
        ];
        assert_eq!(
            delete_owner_refs_merge("7", &current, &["a".into()]),
            json!({"metadata": {"resourceVersion": "7", "ownerReferences": [{"uid": "b", "name": "y"}]}})
        );
    }

    #[test]
    fn unblocking_sets_block_owner_deletion_false_on_blocking_references_only() {
        let mut it = item(vec![]);
        it.owners = vec![oref("a", true), oref("b", false)];
        let p = unblock_owner_refs_strategic(&it);
        let refs = p["metadata"]["ownerReferences"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["uid"], "a");
        assert_eq!(refs[0]["blockOwnerDeletion"], false);
        assert_eq!(p["metadata"]["uid"], "item");
        let merged = unblock_owner_refs_merge(
            "3",
            &[
                json!({"uid": "a", "blockOwnerDeletion": true}),
                json!({"uid": "b"}),
            ],
        );
        assert_eq!(
            merged,
            json!({"metadata": {"resourceVersion": "3", "ownerReferences": [
                {"uid": "a", "blockOwnerDeletion": false}, {"uid": "b"}
            ]}})
        );
    }

    #[test]
    fn removing_a_finalizer_keeps_the_others_and_is_skipped_when_absent() {
        let fins = vec!["foregroundDeletion".to_string(), "other".to_string()];
        assert_eq!(
            remove_finalizer_patch("5", &fins, "foregroundDeletion"),
            Some(json!({"metadata": {"resourceVersion": "5", "finalizers": ["other"]}}))
        );
        assert_eq!(remove_finalizer_patch("5", &fins, "orphan"), None);
    }

    #[test]
    fn the_invalid_namespace_message_reads_as_upstream() {
        let owner = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "b".into(),
            name: "o".into(),
            uid: "u".into(),
        };
        assert_eq!(
            invalid_namespace_message(&owner, "b"),
            "ownerRef [v1/ConfigMap, namespace: b, name: o, uid: u] does not exist in namespace \"b\""
        );
    }
}
