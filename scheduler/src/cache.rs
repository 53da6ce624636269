//! The scheduler's cache (pkg/scheduler/backend/cache): per-node aggregates of the pods bound or
//! assumed there. A pod is *assumed* onto a node when the scheduling cycle picks it, before the
//! binding is written, so the next cycle already sees the node as occupied; it is confirmed when
//! the informer shows it bound, and forgotten if binding fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::plugins::inter_pod_affinity::{NamespaceLabels, PodAffinityTerms};
use crate::plugins::volumes::VolumeCatalog;
use crate::resources::{PodResources, Resource, pod_resources};

/// A host port in use: (hostIP, protocol, port), with upstream's defaults filled in
/// ("0.0.0.0", "TCP").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

/// `util.GetHostPorts`: ports with a hostPort of regular containers and of sidecars.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    sidecars
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            ip: p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_string()),
            protocol: p
                .protocol
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "TCP".to_string()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// A pod with what the cache derives from it once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub resources: PodResources,
    pub ports: Vec<HostPort>,
    /// The parsed pod (anti-)affinity, for pods that declare any (`PodsWithAffinity`). A pod
    /// whose terms do not parse (the API validates them, so only in theory) counts as having
    /// none.
    pub affinity: Option<Arc<PodAffinityTerms>>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let resources = pod_resources(&pod);
        let ports = host_ports(&pod);
        let affinity = PodAffinityTerms::declared(&pod)
            .then(|| PodAffinityTerms::parse(&pod).ok())
            .flatten()
            .map(Arc::new);
        PodInfo {
            pod,
            resources,
            ports,
            affinity,
        }
    }

    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    pub fn priority(&self) -> i32 {
        pod_priority(&self.pod)
    }
}

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Size and spread of one image (`ImageStateSummary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageState {
    pub size: i64,
    pub num_nodes: usize,
}

/// Upstream `framework.NodeInfo`.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub pods: Vec<PodInfo>,
    pub requested: Resource,
    pub non_zero_requested: Resource,
    pub allocatable: Resource,
    pub used_ports: Vec<HostPort>,
    /// Normalized image name → state (sizes from this node, spread across all nodes).
    pub image_states: HashMap<String, ImageState>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let allocatable =
            Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        NodeInfo {
            node,
            pods: Vec::new(),
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            allocatable,
            used_ports: Vec::new(),
            image_states: HashMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn add_pod(&mut self, pi: PodInfo) {
        self.requested.add(&pi.resources.requested);
        self.non_zero_requested.add(&pi.resources.non_zero);
        self.used_ports.extend(pi.ports.iter().cloned());
        self.pods.push(pi);
    }

    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid() == uid) else {
            return false;
        };
        let pi = self.pods.swap_remove(i);
        self.requested.sub(&pi.resources.requested);
        self.non_zero_requested.sub(&pi.resources.non_zero);
        for port in &pi.ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        true
    }
}

/// `normalizedImageName`: an image without a tag means `:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let colon = name.rfind(':');
    let slash = name.rfind('/');
    if colon.map(|c| c as isize).unwrap_or(-1) <= slash.map(|s| s as isize).unwrap_or(-1) {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// `PodNominator`: pods that preemption nominated to a node (or whose
/// `status.nominatedNodeName` says so), counted by lower- or equal-priority pods' filters on
/// that node until they are bound or leave the queue.
#[derive(Clone, Debug, Default)]
pub struct Nominator {
    by_node: BTreeMap<String, Vec<PodInfo>>,
    node_of: HashMap<String, String>,
}

impl Nominator {
    /// `AddNominatedPod`: (re-)nominates the pod to `node`.
    pub fn nominate(&mut self, pod: Arc<Pod>, node: &str) {
        let pi = PodInfo::new(pod);
        let uid = pi.uid().to_string();
        self.remove(&uid);
        if node.is_empty() {
            return;
        }
        self.by_node.entry(node.to_string()).or_default().push(pi);
        self.node_of.insert(uid, node.to_string());
    }

    /// `DeleteNominatedPodIfExists`.
    pub fn remove(&mut self, uid: &str) {
        let Some(node) = self.node_of.remove(uid) else {
            return;
        };
        if let Some(list) = self.by_node.get_mut(&node) {
            list.retain(|p| p.uid() != uid);
            if list.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    /// `NominatedPodsForNode`.
    pub fn pods_for_node(&self, node: &str) -> &[PodInfo] {
        self.by_node
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.node_of.get(uid).map(String::as_str)
    }

    /// A pending pod as the informer shows it (`AddNominatedPod` / `UpdateNominatedPod`): a
    /// nominatedNodeName in its status nominates it; one that was set and is now cleared ends
    /// the nomination; otherwise an in-memory nomination (whose status patch may not have
    /// landed yet) is kept.
    pub fn observe_pending(&mut self, old: Option<&Pod>, new: &Arc<Pod>) {
        let nnn = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty())
        };
        let uid = new.metadata.uid.clone().unwrap_or_default();
        match nnn(new) {
            Some(node) => self.nominate(new.clone(), &node),
            None if old.and_then(nnn).is_some() => self.remove(&uid),
            None => {
                if let Some(node) = self.node_of(&uid).map(str::to_string) {
                    self.nominate(new.clone(), &node);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct PodState {
    node: String,
    assumed: bool,
}

/// The cache: nodes by name (sorted, which is the order nodes are visited in), pods by uid.
#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    /// Pods bound to nodes the cache does not know yet (upstream keeps "ghost" NodeInfos).
    orphans: HashMap<String, Vec<PodInfo>>,
    pods: HashMap<String, PodState>,
    /// Namespace labels, for pod affinity terms' namespaceSelector.
    namespaces: NamespaceLabels,
    nominator: Nominator,
    /// PVCs, PVs and StorageClasses, for the volume plugins.
    volumes: VolumeCatalog,
}

impl Cache {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    pub fn namespaces(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    pub fn volumes(&self) -> &VolumeCatalog {
        &self.volumes
    }

    pub fn volumes_mut(&mut self) -> &mut VolumeCatalog {
        &mut self.volumes
    }

    pub fn nominator(&self) -> &Nominator {
        &self.nominator
    }

    pub fn nominator_mut(&mut self) -> &mut Nominator {
        &mut self.nominator
    }

    pub fn upsert_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespaces.insert(name.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut info = NodeInfo::new(node);
        let pods = match self.nodes.remove(&name) {
            Some(old) => old.pods,
            None => self.orphans.remove(&name).unwrap_or_default(),
        };
        for p in pods {
            info.add_pod(p);
        }
        self.nodes.insert(name, info);
        self.rebuild_image_states();
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.remove(name)
            && !info.pods.is_empty()
        {
            self.orphans.insert(name.to_string(), info.pods);
        }
        self.rebuild_image_states();
    }

    /// Image sizes per node and how many nodes have each image (`createImageStateSummary`).
    fn rebuild_image_states(&mut self) {
        let mut spread: HashMap<String, usize> = HashMap::new();
        let mut per_node: Vec<(String, HashMap<String, i64>)> = Vec::new();
        for (name, info) in &self.nodes {
            let mut images = HashMap::new();
            for image in info
                .node
                .status
                .as_ref()
                .and_then(|s| s.images.as_ref())
                .into_iter()
                .flatten()
            {
                for n in image.names.iter().flatten() {
                    images.insert(normalized_image_name(n), image.size_bytes.unwrap_or(0));
                }
            }
            for n in images.keys() {
                *spread.entry(n.clone()).or_default() += 1;
            }
            per_node.push((name.clone(), images));
        }
        for (name, images) in per_node {
            if let Some(info) = self.nodes.get_mut(&name) {
                info.image_states = images
                    .into_iter()
                    .map(|(n, size)| {
                        let num_nodes = spread.get(&n).copied().unwrap_or(1);
                        (n, ImageState { size, num_nodes })
                    })
                    .collect();
            }
        }
    }

    fn place(&mut self, node: &str, pi: PodInfo) {
        match self.nodes.get_mut(node) {
            Some(info) => info.add_pod(pi),
            None => self.orphans.entry(node.to_string()).or_default().push(pi),
        }
    }

    fn unplace(&mut self, node: &str, uid: &str) {
        if let Some(info) = self.nodes.get_mut(node) {
            info.remove_pod(uid);
        } else if let Some(list) = self.orphans.get_mut(node) {
            list.retain(|p| p.uid() != uid);
        }
    }

    /// `AssumePod`: counts the pod on `node` before the binding is written.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut assumed = pod.clone();
        if let Some(spec) = assumed.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        let pi = PodInfo::new(Arc::new(assumed));
        let uid = pi.uid().to_string();
        // An assumed pod is no longer nominated (`DeleteNominatedPodIfExists` in `assume`).
        self.nominator.remove(&uid);
        if let Some(old) = self.pods.remove(&uid) {
            self.unplace(&old.node, &uid);
        }
        self.place(node, pi);
        self.pods.insert(
            uid,
            PodState {
                node: node.to_string(),
                assumed: true,
            },
        );
    }

    /// `ForgetPod`: the binding failed; the node no longer counts the pod.
    pub fn forget(&mut self, uid: &str) {
        if let Some(state) = self.pods.get(uid)
            && state.assumed
        {
            let node = state.node.clone();
            self.pods.remove(uid);
            self.unplace(&node, uid);
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|s| s.assumed)
    }

    /// A pod as the informer shows it. Bound, non-terminal pods count on their node (confirming
    /// an assumed pod); anything else is removed.
    pub fn upsert_pod(&mut self, pod: Arc<Pod>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if let Some(old) = self.pods.remove(&uid) {
            self.unplace(&old.node, &uid);
        }
        if node.is_some() {
            self.nominator.remove(&uid);
        }
        if let Some(node) = node.filter(|_| !terminal) {
            self.place(&node, PodInfo::new(pod));
            self.pods.insert(
                uid,
                PodState {
                    node,
                    assumed: false,
                },
            );
        }
    }

    pub fn remove_pod(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(old) = self.pods.remove(&uid) {
            self.unplace(&old.node, &uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
                    "images": [{"names": ["registry/app:1", "registry/app@sha256:abc"], "sizeBytes": 300}]},
            }))
            .expect("node"),
        )
    }

    fn pod(uid: &str, node: Option<&str>, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
        }))
        .expect("pod")
    }

    #[test]
    fn assumed_pods_count_until_forgotten() {
        let mut cache = Cache::default();
        cache.upsert_node(node("n1", "4"));
        cache.assume(&pod("a", None, "1"), "n1");
        let n = cache.node("n1").expect("n1");
        assert_eq!(n.requested.milli_cpu, 1000);
        assert_eq!(n.pods.len(), 1);
        assert_eq!(n.used_ports.len(), 1);
        assert!(cache.is_assumed("a"));
        cache.forget("a");
        let n = cache.node("n1").expect("n1");
        assert_eq!(n.requested.milli_cpu, 0);
        assert!(n.used_ports.is_empty());
    }

    #[test]
    fn a_bound_pod_from_the_informer_confirms_the_assumed_one_without_double_counting() {
        let mut cache = Cache::default();
        cache.upsert_node(node("n1", "4"));
        cache.assume(&pod("a", None, "1"), "n1");
        cache.upsert_pod(Arc::new(pod("a", Some("n1"), "1")));
        assert!(!cache.is_assumed("a"));
        assert_eq!(cache.node("n1").expect("n1").requested.milli_cpu, 1000);
        cache.forget("a");
        assert_eq!(
            cache.node("n1").expect("n1").requested.milli_cpu,
            1000,
            "a confirmed pod is not forgotten"
        );
    }

    #[test]
    fn terminal_and_deleted_pods_free_their_node() {
        let mut cache = Cache::default();
        cache.upsert_node(node("n1", "4"));
        let p = pod("a", Some("n1"), "1");
        cache.upsert_pod(Arc::new(p.clone()));
        let mut done = p.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        cache.upsert_pod(Arc::new(done));
        assert_eq!(cache.node("n1").expect("n1").pods.len(), 0);
        cache.upsert_pod(Arc::new(p.clone()));
        cache.remove_pod(&p);
        assert_eq!(cache.node("n1").expect("n1").pods.len(), 0);
    }

    #[test]
    fn pods_seen_before_their_node_are_counted_when_it_arrives() {
        let mut cache = Cache::default();
        cache.upsert_pod(Arc::new(pod("a", Some("n1"), "1")));
        cache.upsert_node(node("n1", "4"));
        assert_eq!(cache.node("n1").expect("n1").requested.milli_cpu, 1000);
    }

    #[test]
    fn pods_with_pod_affinity_carry_their_parsed_terms_and_others_none() {
        let mut with = pod("a", Some("n1"), "1");
        with.spec.as_mut().expect("spec").affinity = Some(
            serde_json::from_value(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}))
            .expect("affinity"),
        );
        let pi = PodInfo::new(Arc::new(with));
        let terms = pi.affinity.expect("parsed");
        assert_eq!(terms.required_anti_affinity.len(), 1);
        assert!(terms.required_anti_affinity[0].namespaces.contains("ns"));
        assert!(
            PodInfo::new(Arc::new(pod("b", Some("n1"), "1")))
                .affinity
                .is_none()
        );
    }

    #[test]
    fn namespace_labels_follow_the_informer() {
        let mut cache = Cache::default();
        cache.upsert_namespace("ns", [("team".to_string(), "a".to_string())].into());
        assert_eq!(cache.namespaces()["ns"]["team"], "a");
        cache.remove_namespace("ns");
        assert!(cache.namespaces().is_empty());
    }

    #[test]
    fn image_states_are_normalized_and_counted_across_nodes() {
        let mut cache = Cache::default();
        cache.upsert_node(node("n1", "4"));
        cache.upsert_node(node("n2", "4"));
        let st = cache.node("n1").expect("n1").image_states["registry/app:1"];
        assert_eq!(
            st,
            ImageState {
                size: 300,
                num_nodes: 2
            }
        );
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(
            normalized_image_name("host:5000/nginx"),
            "host:5000/nginx:latest"
        );
    }
}
