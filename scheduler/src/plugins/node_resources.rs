//! NodeResourcesFit and NodeResourcesBalancedAllocation
//! (pkg/scheduler/framework/plugins/noderesources): the pod's requests must fit the node's
//! allocatable minus what is already requested there; the default LeastAllocated strategy
//! prefers emptier nodes (cpu and memory, weight 1 each) and BalancedAllocation prefers placements
//! that keep cpu and memory use even.

use super::{Code, MAX_NODE_SCORE, Status};
use crate::cache::NodeInfo;
use crate::config::{ResourceSpec, ScoringStrategy, ShapePoint};
use crate::resources::PodResources;

pub const FIT_NAME: &str = "NodeResourcesFit";
pub const BALANCED_NAME: &str = "NodeResourcesBalancedAllocation";

/// `fitsRequest`: every shortage, in upstream's order (pods, cpu, memory, ephemeral-storage,
/// scalar resources by name). The status is unresolvable when a request exceeds the node's whole
/// allocatable, since no preemption can help then.
pub fn filter(pod: &PodResources, node: &NodeInfo) -> Option<Status> {
    let req = &pod.requested;
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    if node.pods.len() as i64 + 1 > alloc.allowed_pod_number {
        reasons.push("Too many pods".to_string());
    }
    if !req.is_zero() {
        let mut check = |name: &str, want: i64, have: i64, used: i64| {
            if want > 0 && want > have - used {
                reasons.push(format!("Insufficient {name}"));
                unresolvable |= want > have;
            }
        };
        check("cpu", req.milli_cpu, alloc.milli_cpu, used.milli_cpu);
        check("memory", req.memory, alloc.memory, used.memory);
        check(
            "ephemeral-storage",
            req.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        );
        for (name, want) in &req.scalar {
            let have = alloc.scalar.get(name).copied().unwrap_or(0);
            let in_use = used.scalar.get(name).copied().unwrap_or(0);
            check(name, *want, have, in_use);
        }
    }
    if reasons.is_empty() {
        return None;
    }
    Some(Status {
        code: if unresolvable {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        },
        reasons,
        plugin: FIT_NAME,
    })
}

/// `leastRequestedScore`.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// NodeResourcesFit's score with the default LeastAllocated strategy: non-zero requests (100m /
/// 200Mi for containers that set none), cpu and memory weighted 1 each; resources the node does
/// not report are left out.
pub fn least_allocated_score(pod: &PodResources, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested.memory + pod.non_zero.memory,
            node.allocatable.memory,
        ),
    ];
    let (mut sum, mut weights) = (0, 0);
    for (requested, allocatable) in pairs {
        if allocatable == 0 {
            continue;
        }
        sum += least_requested(requested, allocatable);
        weights += 1;
    }
    if weights == 0 { 0 } else { sum / weights }
}

/// `calculateResourceAllocatableRequest` for NodeResourcesFit (non-zero cpu/memory requests):
/// the node's allocatable and what would be requested with the pod; (0, 0) for an extended
/// resource the pod does not ask for, so that it is left out of the score.
fn allocatable_and_requested(pod: &PodResources, node: &NodeInfo, resource: &str) -> (i64, i64) {
    match resource {
        "cpu" => (
            node.allocatable.milli_cpu,
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
        ),
        "memory" => (
            node.allocatable.memory,
            node.non_zero_requested.memory + pod.non_zero.memory,
        ),
        "ephemeral-storage" => (
            node.allocatable.ephemeral_storage,
            node.requested.ephemeral_storage + pod.requested.ephemeral_storage,
        ),
        other => {
            let want = pod.requested.scalar.get(other).copied().unwrap_or(0);
            if want == 0 {
                return (0, 0);
            }
            match node.allocatable.scalar.get(other) {
                Some(have) => (
                    *have,
                    node.requested.scalar.get(other).copied().unwrap_or(0) + want,
                ),
                None => (0, 0),
            }
        }
    }
}

/// `mostRequestedScore`: pods without requests get minimum values, so `requested` may exceed
/// the capacity; it is capped there.
pub fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// `helper.BuildBrokenLinearFunction`: linear between the shape's points, flat outside them.
pub fn broken_linear(shape: &[ShapePoint], p: i64) -> i64 {
    for (i, point) in shape.iter().enumerate() {
        if p <= point.utilization {
            if i == 0 {
                return point.score;
            }
            let prev = shape[i - 1];
            return prev.score
                + (point.score - prev.score) * (p - prev.utilization)
                    / (point.utilization - prev.utilization);
        }
    }
    shape.last().map(|p| p.score).unwrap_or(0)
}

/// `buildRequestedToCapacityRatioScorerFunction`: each resource's utilization (capped at 100)
/// through the shape; only positive scores count, and the weighted mean is rounded.
fn requested_to_capacity_ratio(
    shape: &[ShapePoint],
    weights: &[i64],
    requested: &[i64],
    allocatable: &[i64],
) -> i64 {
    const MAX_UTILIZATION: i64 = 100;
    let (mut sum, mut weight_sum) = (0i64, 0i64);
    for i in 0..requested.len() {
        if allocatable[i] == 0 {
            continue;
        }
        let utilization = if requested[i] > allocatable[i] {
            MAX_UTILIZATION
        } else {
            requested[i] * MAX_UTILIZATION / allocatable[i]
        };
        let score = broken_linear(shape, utilization);
        if score > 0 {
            sum += score * weights[i];
            weight_sum += weights[i];
        }
    }
    if weight_sum == 0 {
        return 0;
    }
    (sum as f64 / weight_sum as f64).round() as i64
}

/// NodeResourcesFit's Score with the profile's scoring strategy (`resourceAllocationScorer`
/// with `leastResourceScorer`, `mostResourceScorer` or the RequestedToCapacityRatio scorer).
pub fn fit_score(strategy: &ScoringStrategy, pod: &PodResources, node: &NodeInfo) -> i64 {
    let resources = strategy.resources();
    let (allocatable, requested): (Vec<i64>, Vec<i64>) = resources
        .iter()
        .map(|r| allocatable_and_requested(pod, node, &r.name))
        .unzip();
    let weights: Vec<i64> = resources.iter().map(|r| r.weight).collect();
    let per_resource = |f: fn(i64, i64) -> i64| {
        let (mut sum, mut weight_sum) = (0, 0);
        for i in 0..resources.len() {
            if allocatable[i] == 0 {
                continue;
            }
            sum += f(requested[i], allocatable[i]) * weights[i];
            weight_sum += weights[i];
        }
        if weight_sum == 0 { 0 } else { sum / weight_sum }
    };
    match strategy {
        ScoringStrategy::LeastAllocated(_) => per_resource(least_requested),
        ScoringStrategy::MostAllocated(_) => per_resource(most_requested),
        ScoringStrategy::RequestedToCapacityRatio { shape, .. } => {
            requested_to_capacity_ratio(shape, &weights, &requested, &allocatable)
        }
    }
}

/// `balancedResourceScore`: (1 − standard deviation of the requested fractions) × 100.
fn balanced_resource_score(requested: &[i64], allocatable: &[i64]) -> i64 {
    let fractions: Vec<f64> = requested
        .iter()
        .zip(allocatable)
        .filter(|(_, a)| **a != 0)
        .map(|(r, a)| (*r as f64 / *a as f64).min(1.0))
        .collect();
    let std = match fractions.len() {
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n if n > 2 => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            (fractions
                .iter()
                .map(|f| (f - mean) * (f - mean))
                .sum::<f64>()
                / n as f64)
                .sqrt()
        }
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// Whether BalancedAllocation scores this pod at all: PreScore skips best-effort pods (no cpu or
/// memory request) so they do not pile onto one node (kubernetes/kubernetes#129138).
pub fn balanced_allocation_applies(pod: &PodResources) -> bool {
    pod.requested.milli_cpu != 0 || pod.requested.memory != 0
}

/// NodeResourcesBalancedAllocation (v1.37 `balancedResourceScorer`): actual requests; the score
/// rewards the improvement in balance the pod brings, mapped back into [50, 100].
pub fn balanced_allocation_score(pod: &PodResources, node: &NodeInfo) -> i64 {
    let allocatable = [node.allocatable.milli_cpu, node.allocatable.memory];
    let allocated = [node.requested.milli_cpu, node.requested.memory];
    let requested = [
        allocated[0] + pod.requested.milli_cpu,
        allocated[1] + pod.requested.memory,
    ];
    let with_pod = balanced_resource_score(&requested, &allocatable);
    let without_pod = balanced_resource_score(&allocated, &allocatable);
    MAX_NODE_SCORE / 2 + (MAX_NODE_SCORE / 2 + with_pod - without_pod) / 2
}

/// A pod's actual request of one resource (BalancedAllocation uses requests as they are).
fn pod_request(pod: &PodResources, resource: &str) -> i64 {
    match resource {
        "cpu" => pod.requested.milli_cpu,
        "memory" => pod.requested.memory,
        "ephemeral-storage" => pod.requested.ephemeral_storage,
        other => pod.requested.scalar.get(other).copied().unwrap_or(0),
    }
}

/// The node's allocatable and requested amounts of one resource (`useRequested`); an extended
/// resource the pod does not ask for is left out as (0, 0).
fn node_allocatable_and_requested(node: &NodeInfo, resource: &str, pod_request: i64) -> (i64, i64) {
    match resource {
        "cpu" => (node.allocatable.milli_cpu, node.requested.milli_cpu),
        "memory" => (node.allocatable.memory, node.requested.memory),
        "ephemeral-storage" => (
            node.allocatable.ephemeral_storage,
            node.requested.ephemeral_storage,
        ),
        _ if pod_request == 0 => (0, 0),
        other => match node.allocatable.scalar.get(other) {
            Some(have) => (
                *have,
                node.requested.scalar.get(other).copied().unwrap_or(0),
            ),
            None => (0, 0),
        },
    }
}

/// BalancedAllocation's PreScore with configured resources: best-effort pods (no request of
/// any configured resource) are skipped.
pub fn balanced_allocation_applies_for(resources: &[ResourceSpec], pod: &PodResources) -> bool {
    resources.iter().any(|r| pod_request(pod, &r.name) != 0)
}

/// [`balanced_allocation_score`] over NodeResourcesBalancedAllocationArgs' `resources`.
pub fn balanced_allocation_score_for(
    resources: &[ResourceSpec],
    pod: &PodResources,
    node: &NodeInfo,
) -> i64 {
    let mut allocatable = Vec::with_capacity(resources.len());
    let mut allocated = Vec::with_capacity(resources.len());
    let mut requested = Vec::with_capacity(resources.len());
    for r in resources {
        let want = pod_request(pod, &r.name);
        let (have, used) = node_allocatable_and_requested(node, &r.name, want);
        allocatable.push(have);
        allocated.push(used);
        requested.push(used + want);
    }
    let with_pod = balanced_resource_score(&requested, &allocatable);
    let without_pod = balanced_resource_score(&allocated, &allocatable);
    MAX_NODE_SCORE / 2 + (MAX_NODE_SCORE / 2 + with_pod - without_pod) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::pod_resources;
    use crate::testutil::{node, node_with, pod, pod_requesting};
    use serde_json::json;

    fn res(cpu: i64, mem: i64) -> PodResources {
        pod_resources(&pod_requesting("p", cpu, mem))
    }

    fn sized(cpu: i64, mem: i64, pods: i64) -> serde_json::Value {
        json!({"allocatable": {"cpu": format!("{cpu}m"), "memory": format!("{mem}"), "pods": format!("{pods}")}})
    }

    fn reasons(s: Option<Status>) -> Option<(Code, Vec<String>)> {
        s.map(|s| (s.code, s.reasons))
    }

    // Cases of TestEnoughRequests in fit_test.go (node 10 cpu / 20 memory / 32 pods).
    #[test]
    fn a_pod_without_requests_fits_a_full_node() {
        let n = node_with(sized(10, 20, 32), vec![pod_requesting("a", 10, 20)]);
        assert_eq!(filter(&pod_resources(&pod(json!({}))), &n), None);
    }

    #[test]
    fn too_much_cpu_is_insufficient_cpu() {
        let n = node_with(sized(10, 20, 32), vec![pod_requesting("a", 8, 19)]);
        assert_eq!(
            reasons(filter(&res(3, 1), &n)),
            Some((Code::Unschedulable, vec!["Insufficient cpu".into()]))
        );
    }

    #[test]
    fn too_much_cpu_and_memory_reports_both() {
        let n = node_with(sized(10, 20, 32), vec![pod_requesting("a", 9, 19)]);
        assert_eq!(
            reasons(filter(&res(2, 2), &n)),
            Some((
                Code::Unschedulable,
                vec!["Insufficient cpu".into(), "Insufficient memory".into()]
            ))
        );
    }

    #[test]
    fn a_request_above_allocatable_is_unresolvable() {
        let n = node(sized(10, 20, 32));
        assert_eq!(
            reasons(filter(&res(11, 1), &n)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec!["Insufficient cpu".into()]
            ))
        );
    }

    #[test]
    fn equal_to_the_remaining_capacity_fits() {
        let n = node_with(sized(10, 20, 32), vec![pod_requesting("a", 5, 5)]);
        assert_eq!(filter(&res(5, 15), &n), None);
    }

    #[test]
    fn a_node_at_its_pod_limit_has_too_many_pods() {
        let n = node_with(sized(10, 20, 1), vec![pod_requesting("a", 0, 0)]);
        assert_eq!(
            reasons(filter(&res(1, 1), &n)),
            Some((Code::Unschedulable, vec!["Too many pods".into()]))
        );
        let n = node_with(sized(10, 20, 1), vec![pod_requesting("a", 10, 20)]);
        assert_eq!(
            reasons(filter(&res(1, 1), &n)),
            Some((
                Code::Unschedulable,
                vec![
                    "Too many pods".into(),
                    "Insufficient cpu".into(),
                    "Insufficient memory".into()
                ]
            ))
        );
    }

    #[test]
    fn extended_resources_must_fit_too() {
        let p = pod_resources(&pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/aaa": "2"}}}]}),
        ));
        let n = node(
            json!({"allocatable": {"cpu": "10", "memory": "20", "pods": "32", "example.com/aaa": "5"}}),
        );
        assert_eq!(filter(&p, &n), None);
        let none = node(sized(10, 20, 32));
        assert_eq!(
            reasons(filter(&p, &none)),
            Some((
                Code::UnschedulableAndUnresolvable,
                vec!["Insufficient example.com/aaa".into()]
            ))
        );
    }

    /// A pod whose containers request (cpu, memory); `""` leaves the resource unset.
    fn multi(containers: &[(&str, &str)]) -> PodResources {
        let cs: Vec<_> = containers
            .iter()
            .map(|(cpu, mem)| {
                let mut r = serde_json::Map::new();
                if !cpu.is_empty() {
                    r.insert("cpu".into(), json!(cpu));
                }
                if !mem.is_empty() {
                    r.insert("memory".into(), json!(mem));
                }
                json!({"name": "c", "resources": {"requests": r}})
            })
            .collect();
        pod_resources(&pod(json!({"containers": cs})))
    }

    fn empty_pod() -> PodResources {
        pod_resources(&pod(json!({"containers": []})))
    }

    /// st.MakeNode().Capacity(cpu, memory) with pods placed on it.
    fn cap(cpu: &str, mem: &str, existing: &[&[(&str, &str)]]) -> NodeInfo {
        let mut n = node(json!({"allocatable": {"cpu": cpu, "memory": mem}}));
        for (i, containers) in existing.iter().enumerate() {
            let mut p = pod(json!({"containers": containers.iter().map(|(c, m)| {
                let mut r = serde_json::Map::new();
                if !c.is_empty() { r.insert("cpu".into(), json!(c)); }
                if !m.is_empty() { r.insert("memory".into(), json!(m)); }
                json!({"name": "c", "resources": {"requests": r}})
            }).collect::<Vec<_>>()}));
            p.metadata.uid = Some(format!("existing-{i}"));
            n.add_pod(crate::cache::PodInfo::new(std::sync::Arc::new(p)));
        }
        n
    }

    // TestLeastAllocatedScoringStrategy in least_allocated_test.go.
    #[test]
    fn least_allocated_matches_upstream_table() {
        let requested = multi(&[("1000", "2000"), ("2000", "3000")]);
        let cases: Vec<(&str, PodResources, NodeInfo, i64)> = vec![
            (
                "nothing scheduled, nothing requested",
                empty_pod(),
                cap("4000", "10000", &[]),
                100,
            ),
            (
                "differently sized nodes (1)",
                requested.clone(),
                cap("4000", "10000", &[]),
                37,
            ),
            (
                "differently sized nodes (2)",
                requested.clone(),
                cap("6000", "10000", &[]),
                50,
            ),
            (
                "no resources requested, pods scheduled (1)",
                empty_pod(),
                cap("10000", "20000", &[&[("3000", "0")], &[("3000", "0")]]),
                70,
            ),
            (
                "no resources requested, pods scheduled (2)",
                empty_pod(),
                cap("10000", "20000", &[&[("3000", "0")], &[("3000", "5000")]]),
                57,
            ),
            (
                "resources requested, pods scheduled (1)",
                requested.clone(),
                cap("10000", "20000", &[&[("3000", "0")]]),
                57,
            ),
            (
                "resources requested, pods scheduled (2)",
                requested.clone(),
                cap("10000", "20000", &[&[("3000", "5000")]]),
                45,
            ),
            (
                "differently sized nodes with pods",
                requested.clone(),
                cap("10000", "50000", &[&[("3000", "5000")]]),
                60,
            ),
            (
                "requested resources exceed node capacity (1)",
                multi(&[("3000", "0")]),
                cap("4000", "10000", &[&[("3000", "0")]]),
                50,
            ),
            (
                "requested resources exceed node capacity (2)",
                multi(&[("3000", "0")]),
                cap("4000", "10000", &[&[("3000", "5000")]]),
                25,
            ),
            (
                "zero node resources",
                empty_pod(),
                cap("0", "0", &[&[("3000", "0")]]),
                0,
            ),
        ];
        for (name, pod, node, want) in cases {
            assert_eq!(least_allocated_score(&pod, &node), want, "{name}");
        }
    }

    // TestNodeResourcesBalancedAllocation in balanced_allocation_test.go (the v1.37 scorer).
    #[test]
    fn balanced_allocation_matches_upstream_table() {
        assert!(
            !balanced_allocation_applies(&empty_pod()),
            "best-effort pods skip PreScore"
        );
        let requested = multi(&[("1000m", "2000"), ("2000m", "3000")]);
        let cpu_pods: &[(&str, &str)] = &[("1000m", ""), ("2000m", "")];
        let both_pods: &[(&str, &str)] = &[("1000m", "2000"), ("2000m", "3000")];
        let cases: Vec<(&str, PodResources, NodeInfo, i64)> = vec![
            (
                "nothing scheduled, differently sized nodes (1)",
                requested.clone(),
                cap("4000m", "10000", &[]),
                68,
            ),
            (
                "nothing scheduled, differently sized nodes (2)",
                requested.clone(),
                cap("6000m", "10000", &[]),
                75,
            ),
            (
                "pods scheduled with resources (1)",
                requested.clone(),
                cap("10000m", "20000", &[cpu_pods]),
                73,
            ),
            (
                "pods scheduled with resources (2)",
                requested.clone(),
                cap("10000m", "20000", &[both_pods]),
                74,
            ),
            (
                "differently sized nodes (2)",
                requested.clone(),
                cap("10000m", "50000", &[both_pods]),
                70,
            ),
            (
                "reach max score",
                multi(&[("", "2000"), ("", "3000")]),
                cap("3000m", "5000", &[cpu_pods]),
                100,
            ),
            (
                "reach min score",
                multi(&[("", "2000"), ("", "3000")]),
                cap("3000m", "5000", &[]),
                50,
            ),
            (
                "at node capacity (1)",
                multi(cpu_pods),
                cap("6000m", "10000", &[cpu_pods]),
                62,
            ),
            (
                "at node capacity (2)",
                multi(cpu_pods),
                cap("6000m", "10000", &[both_pods]),
                62,
            ),
        ];
        for (name, pod, node, want) in cases {
            assert!(balanced_allocation_applies(&pod), "{name}");
            assert_eq!(balanced_allocation_score(&pod, &node), want, "{name}");
            // The configurable form with the default resources agrees.
            let defaults = crate::config::default_resources();
            assert!(balanced_allocation_applies_for(&defaults, &pod), "{name}");
            assert_eq!(
                balanced_allocation_score_for(&defaults, &pod, &node),
                want,
                "{name}"
            );
        }
    }

    fn resources(cpu: i64, mem: i64) -> Vec<crate::config::ResourceSpec> {
        vec![
            crate::config::ResourceSpec {
                name: "cpu".into(),
                weight: cpu,
            },
            crate::config::ResourceSpec {
                name: "memory".into(),
                weight: mem,
            },
        ]
    }

    /// A pod with two containers, as upstream's score tests build them (requests summed).
    fn two_container_pod(cpu: [i64; 2], mem: [i64; 2]) -> PodResources {
        pod_resources(&pod(json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": format!("{}m", cpu[0]), "memory": format!("{}", mem[0])}}},
            {"name": "b", "resources": {"requests": {"cpu": format!("{}m", cpu[1]), "memory": format!("{}", mem[1])}}},
        ]})))
    }

    fn no_containers() -> PodResources {
        pod_resources(&pod(json!({"containers": []})))
    }

    fn sized_node(cpu: i64, mem: i64) -> NodeInfo {
        node(
            json!({"allocatable": {"cpu": format!("{cpu}m"), "memory": format!("{mem}"), "pods": "32"}}),
        )
    }

    // most_allocated_test.go: "nothing scheduled, nothing requested".
    #[test]
    fn most_allocated_scores_an_empty_pod_on_empty_nodes_zero() {
        let s = ScoringStrategy::MostAllocated(resources(1, 1));
        assert_eq!(fit_score(&s, &no_containers(), &sized_node(4000, 10000)), 0);
    }

    // most_allocated_test.go: "nothing scheduled, resources requested, differently sized
    // nodes": cpu 3000/4000 = 75, memory 5000/10000 = 50 → 62; on 6000/10000 → 50.
    #[test]
    fn most_allocated_prefers_the_node_the_pod_fills_most() {
        let s = ScoringStrategy::MostAllocated(resources(1, 1));
        let p = two_container_pod([1000, 2000], [2000, 3000]);
        assert_eq!(fit_score(&s, &p, &sized_node(4000, 10000)), 62);
        assert_eq!(fit_score(&s, &p, &sized_node(6000, 10000)), 50);
    }

    #[test]
    fn most_allocated_caps_requests_above_capacity_and_weighs_resources() {
        // cpu 6000 on 4000 is capped at 100; memory 5000/10000 = 50; weights cpu 3, memory 1.
        let s = ScoringStrategy::MostAllocated(resources(3, 1));
        let p = two_container_pod([3000, 3000], [2000, 3000]);
        assert_eq!(
            fit_score(&s, &p, &sized_node(4000, 10000)),
            (100 * 3 + 50) / 4
        );
        assert_eq!(most_requested(5, 0), 0);
    }

    #[test]
    fn least_allocated_with_default_resources_matches_the_default_score() {
        let s = ScoringStrategy::LeastAllocated(resources(1, 1));
        let p = two_container_pod([1000, 2000], [2000, 3000]);
        let n = sized_node(6000, 10000);
        assert_eq!(fit_score(&s, &p, &n), least_allocated_score(&p, &n));
    }

    fn least_shape() -> Vec<ShapePoint> {
        // {0, 10}, {100, 0} scaled to 0..100.
        vec![
            ShapePoint {
                utilization: 0,
                score: 100,
            },
            ShapePoint {
                utilization: 100,
                score: 0,
            },
        ]
    }

    // requested_to_capacity_ratio_test.go: "nothing scheduled, nothing requested (default -
    // least requested nodes have priority)" and "…, resources requested, differently sized
    // nodes": 75% cpu → 25, 50% memory → 50, rounded mean 38; 50%/50% → 50.
    #[test]
    fn requested_to_capacity_ratio_follows_the_shape_and_rounds_the_mean() {
        let s = ScoringStrategy::RequestedToCapacityRatio {
            resources: resources(1, 1),
            shape: least_shape(),
        };
        assert_eq!(
            fit_score(&s, &no_containers(), &sized_node(4000, 10000)),
            100
        );
        let p = two_container_pod([1000, 2000], [2000, 3000]);
        assert_eq!(fit_score(&s, &p, &sized_node(4000, 10000)), 38);
        assert_eq!(fit_score(&s, &p, &sized_node(6000, 10000)), 50);
    }

    #[test]
    fn requested_to_capacity_ratio_leaves_out_resources_scoring_zero() {
        // cpu over capacity → utilization 100 → score 0, left out; memory 50% → 50.
        let s = ScoringStrategy::RequestedToCapacityRatio {
            resources: resources(1, 1),
            shape: least_shape(),
        };
        let p = two_container_pod([3000, 3000], [2000, 3000]);
        assert_eq!(fit_score(&s, &p, &sized_node(4000, 10000)), 50);
    }

    // helper/shape_score_test.go style: flat before the first point and after the last,
    // linear in between.
    #[test]
    fn the_broken_linear_function_interpolates_between_points() {
        let shape = [
            ShapePoint {
                utilization: 10,
                score: 1,
            },
            ShapePoint {
                utilization: 90,
                score: 9,
            },
        ];
        let got: Vec<i64> = [0, 10, 50, 90, 100]
            .iter()
            .map(|p| broken_linear(&shape, *p))
            .collect();
        assert_eq!(got, vec![1, 1, 5, 9, 9]);
    }
}
