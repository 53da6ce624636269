//! Pods by the node they are bound to: upstream's `spec.nodeName` pod indexer
//! (`controller.AddPodNodeNameIndexer`), which the node-lifecycle and taint-eviction controllers
//! use to find a node's pods without scanning every pod in the cluster.
//!
//! The shared informer only indexes by namespace, so each controller that needs this keeps one,
//! fed by its pod handler. It holds keys only; the pods themselves stay in the informer's cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use ferrite_runtime::informer::{Change, Informer};

use crate::cache::Pod;

/// `(namespace, name)` of a pod.
pub type PodKey = (String, String);

#[derive(Default)]
struct Index {
    by_node: HashMap<String, HashSet<PodKey>>,
    node_of: HashMap<PodKey, String>,
}

impl Index {
    /// Files `k` under `node` (an unbound pod, `""`, under none).
    fn put(&mut self, k: PodKey, node: &str) {
        if self.node_of.get(&k).map(String::as_str) == Some(node) {
            return;
        }
        self.unlink(&k);
        if !node.is_empty() {
            self.by_node
                .entry(node.to_owned())
                .or_default()
                .insert(k.clone());
            self.node_of.insert(k, node.to_owned());
        }
    }

    fn unlink(&mut self, k: &PodKey) {
        if let Some(old) = self.node_of.remove(k)
            && let Some(set) = self.by_node.get_mut(&old)
        {
            set.remove(k);
            if set.is_empty() {
                self.by_node.remove(&old);
            }
        }
    }

    fn keys_on(&self, node: &str) -> Vec<PodKey> {
        self.by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Cheap to clone; clones share the index.
#[derive(Clone)]
pub struct PodsByNode {
    pods: Informer<Pod>,
    index: Arc<RwLock<Index>>,
}

fn key(pod: &Pod) -> PodKey {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

impl PodsByNode {
    /// An index over `pods`, kept current by a handler registered on it.
    pub fn new(pods: Informer<Pod>) -> Self {
        let index = PodsByNode {
            pods: pods.clone(),
            index: Arc::default(),
        };
        let handle = index.clone();
        pods.add_handler(move |change| match change {
            Change::Added(p) => handle.put(p),
            Change::Updated { new, .. } => handle.put(new),
            Change::Deleted(p) => handle.remove(&key(p)),
        });
        index
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, pod: &Pod) {
        self.write().put(key(pod), node_name(pod));
    }

    fn remove(&self, k: &PodKey) {
        self.write().unlink(k);
    }

    /// The cached pods bound to `node`.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let keys = self
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys_on(node);
        keys.iter()
            .filter_map(|(ns, name)| self.pods.get(Some(ns), name))
            // The cache may already hold a newer version bound elsewhere.
            .filter(|p| node_name(p) == node)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> PodKey {
        ("ns".to_owned(), name.to_owned())
    }

    fn sorted(mut v: Vec<PodKey>) -> Vec<PodKey> {
        v.sort();
        v
    }

    #[test]
    fn pods_are_filed_under_their_node_and_move_with_it() {
        let mut index = Index::default();
        index.put(k("a"), "n1");
        index.put(k("b"), "n1");
        index.put(k("c"), "");
        assert_eq!(sorted(index.keys_on("n1")), vec![k("a"), k("b")]);
        index.put(k("a"), "n2");
        assert_eq!(index.keys_on("n1"), vec![k("b")]);
        assert_eq!(index.keys_on("n2"), vec![k("a")]);
        index.unlink(&k("b"));
        assert!(index.keys_on("n1").is_empty());
        assert!(!index.by_node.contains_key("n1"), "empty nodes are dropped");
        index.put(k("a"), "");
        assert!(index.node_of.is_empty() && index.by_node.is_empty());
    }
}
