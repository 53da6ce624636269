//! Resource arithmetic for pods and nodes: upstream `framework.Resource` and
//! `resourcehelper.PodRequests` (k8s.io/component-helpers/resource/helpers.go) as the scheduler
//! calls them in `computePodResourceRequest` (pkg/scheduler/framework/types.go).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{milli_value, value};

/// `schedutil.DefaultMilliCPURequest`: what scoring assumes for a container without a CPU request.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// `schedutil.DefaultMemoryRequest`: 200 MB (binary), for a container without a memory request.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Upstream `framework.Resource`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for allocatable: the node's `pods`.
    pub allowed_pod_number: i64,
    /// Extended resources, hugepages and every other resource name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// `NewResource(rl)`: CPU in millicores, everything else as integer values.
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = milli_value(q),
            "memory" => self.memory = value(q),
            "ephemeral-storage" => self.ephemeral_storage = value(q),
            "pods" => self.allowed_pod_number = value(q),
            other => {
                self.scalar.insert(other.to_string(), value(q));
            }
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Per-resource maximum (`maxResourceList`).
    fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A pod's requests as the scheduler accounts them: `requested` for fitting, `non_zero` (with
/// the 100m / 200Mi defaults for containers that leave cpu or memory unset) for LeastAllocated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    pub requested: Resource,
    pub non_zero: Resource,
}

fn container_requests(c: &Container, non_missing: bool) -> Resource {
    let mut r = Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if non_missing {
        let reqs = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        if !reqs.is_some_and(|m| m.contains_key("cpu")) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !reqs.is_some_and(|m| m.contains_key("memory")) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_restartable(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// `resourcehelper.PodRequests`: the sum of regular containers and sidecars (restartable init
/// containers), raised per resource to what any init container needs while it runs next to the
/// sidecars started before it, then pod-level requests for cpu/memory when set
/// (PodLevelResources), plus the pod overhead.
fn pod_requests(pod: &Pod, non_missing: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_missing));
    }
    let mut restartable = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let c_reqs = container_requests(c, non_missing);
        let running = if is_restartable(c) {
            reqs.add(&c_reqs);
            restartable.add(&c_reqs);
            restartable.clone()
        } else {
            let mut tmp = c_reqs;
            tmp.add(&restartable);
            tmp
        };
        init_max.max_with(&running);
    }
    reqs.max_with(&init_max);
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        // Pod-level resources replace the container aggregate for cpu and memory only.
        if let Some(q) = pod_level.get("cpu") {
            reqs.milli_cpu = milli_value(q);
        }
        if let Some(q) = pod_level.get("memory") {
            reqs.memory = value(q);
        }
    }
    reqs.add(&Resource::from_list(spec.overhead.as_ref()));
    reqs
}

/// `computePodResourceRequest` in pkg/scheduler/framework/types.go.
pub fn pod_resources(pod: &Pod) -> PodResources {
    PodResources {
        requested: pod_requests(pod, false),
        non_zero: pod_requests(pod, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn requests_sum_over_containers_plus_overhead() {
        let p = pod(json!({
            "containers": [c("a", "1", "1Gi"), c("b", "500m", "1Gi")],
            "overhead": {"cpu": "250m", "memory": "100Mi"},
        }));
        let r = pod_resources(&p).requested;
        assert_eq!(r.milli_cpu, 1750);
        assert_eq!(r.memory, 2 * 1024 * 1024 * 1024 + 100 * 1024 * 1024);
    }

    #[test]
    fn the_largest_init_container_wins_over_a_smaller_container_sum() {
        let p = pod(json!({
            "initContainers": [c("i1", "3", "1Gi"), c("i2", "1", "4Gi")],
            "containers": [c("a", "1", "1Gi"), c("b", "1", "1Gi")],
        }));
        let r = pod_resources(&p).requested;
        assert_eq!(r.milli_cpu, 3000);
        assert_eq!(r.memory, 4 * 1024 * 1024 * 1024);
    }

    #[test]
    fn sidecars_add_to_containers_and_to_later_init_containers() {
        let mut sidecar = c("s", "1", "1Gi");
        sidecar["restartPolicy"] = json!("Always");
        let p = pod(json!({
            "initContainers": [sidecar, c("i", "2", "1Gi")],
            "containers": [c("a", "1", "1Gi")],
        }));
        let r = pod_resources(&p).requested;
        // Init `i` runs next to the sidecar (3 CPU); afterwards sidecar + a run (2 CPU).
        assert_eq!(r.milli_cpu, 3000);
        assert_eq!(r.memory, 2 * 1024 * 1024 * 1024);
    }

    #[test]
    fn non_zero_requests_default_missing_cpu_and_memory_per_container() {
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "1"}}}]}),
        );
        let r = pod_resources(&p);
        assert_eq!((r.requested.milli_cpu, r.requested.memory), (1000, 0));
        assert_eq!(r.non_zero.milli_cpu, 1100);
        assert_eq!(r.non_zero.memory, 2 * DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn extended_resources_are_scalars() {
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(
            pod_resources(&p).requested.scalar.get("example.com/gpu"),
            Some(&2)
        );
    }
}
