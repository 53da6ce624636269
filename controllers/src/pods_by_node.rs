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
        let k = key(pod);
        let node = node_name(pod);
        let mut index = self.write();
        if index.node_of.get(&k).map(String::as_str) == Some(node) {
            return;
        }
        Self::unlink(&mut index, &k);
        if !node.is_empty() {
            index
                .by_node
                .entry(node.to_owned())
                .or_default()
                .insert(k.clone());
            index.node_of.insert(k, node.to_owned());
        }
    }

    fn remove(&self, k: &PodKey) {
        Self::unlink(&mut self.write(), k);
    }

    fn unlink(index: &mut Index, k: &PodKey) {
        if let Some(old) = index.node_of.remove(k)
            && let Some(set) = index.by_node.get_mut(&old)
        {
            set.remove(k);
            if set.is_empty() {
                index.by_node.remove(&old);
            }
        }
    }

    /// The cached pods bound to `node`.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let keys: Vec<PodKey> = {
            let index = self
                .index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            index
                .by_node
                .get(node)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        };
        keys.iter()
            .filter_map(|(ns, name)| self.pods.get(Some(ns), name))
            // The cache may already hold a newer version bound elsewhere.
            .filter(|p| node_name(p) == node)
            .collect()
    }
}
