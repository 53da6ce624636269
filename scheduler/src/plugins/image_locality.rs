//! ImageLocality (pkg/scheduler/framework/plugins/imagelocality): prefers nodes that already
//! have the pod's images, weighing each image's size by how many nodes share it so that pods do
//! not pile onto the one node with a popular image.

use k8s_openapi::api::core::v1::Pod;

use super::MAX_NODE_SCORE;
use crate::cache::{ImageState, NodeInfo, normalized_image_name};

pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

fn scaled_image_score(state: &ImageState, total_nodes: usize) -> i64 {
    let spread = state.num_nodes as f64 / total_nodes as f64;
    (state.size as f64 * spread) as i64
}

/// `calculatePriority`.
fn calculate_priority(sum: i64, image_count: usize) -> i64 {
    let max_threshold = MAX_CONTAINER_THRESHOLD * image_count as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max_threshold.max(MIN_THRESHOLD));
    if max_threshold <= MIN_THRESHOLD {
        return 0;
    }
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
}

/// Score over init containers, containers and image volumes.
pub fn score(pod: &Pod, node: &NodeInfo, total_nodes: usize) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let mut images: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    images.extend(
        spec.volumes
            .iter()
            .flatten()
            .filter_map(|v| v.image.as_ref())
            .map(|i| i.reference.as_deref().unwrap_or_default()),
    );
    let sum: i64 = images
        .iter()
        .filter_map(|i| node.image_states.get(&normalized_image_name(i)))
        .map(|st| scaled_image_score(st, total_nodes.max(1)))
        .sum();
    calculate_priority(sum, images.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::testutil::{pod, raw_node};
    use serde_json::json;
    use std::sync::Arc;

    // The node images of TestImageLocalityPriority in image_locality_test.go.
    fn cache() -> Cache {
        let mut c = Cache::default();
        c.upsert_node(Arc::new(raw_node(json!({"name": "node1", "images": [
            {"names": ["gcr.io/40:latest", "gcr.io/40:v1"], "sizeBytes": 40 * MB},
            {"names": ["gcr.io/300:latest", "gcr.io/300:v1"], "sizeBytes": 300 * MB},
            {"names": ["gcr.io/2000:latest"], "sizeBytes": 2000 * MB},
        ]}))));
        c.upsert_node(Arc::new(raw_node(json!({"name": "node2", "images": [
            {"names": ["gcr.io/250:latest"], "sizeBytes": 250 * MB},
            {"names": ["gcr.io/10:latest", "gcr.io/10:v1"], "sizeBytes": 10 * MB},
        ]}))));
        c
    }

    fn scores(images: &[&str]) -> Vec<i64> {
        let c = cache();
        let containers: Vec<_> = images
            .iter()
            .map(|i| json!({"name": "c", "image": i}))
            .collect();
        let p = pod(json!({"containers": containers}));
        c.nodes().map(|n| score(&p, n, 2)).collect()
    }

    #[test]
    fn two_images_spread_on_two_nodes_prefer_the_larger() {
        // node1: 40MB*1/2 = 20MB → below threshold → 0; node2: 250MB/2 = 125MB → 100*(125-23)/(2000-23) = 5.
        assert_eq!(scores(&["gcr.io/40", "gcr.io/250"]), vec![0, 5]);
    }

    #[test]
    fn images_present_only_on_one_node_score_there() {
        // node1: (40+300)/2 = 170MB → 100*(170-23)/(2000-23) = 7; node2: 5MB → 0.
        assert_eq!(scores(&["gcr.io/40", "gcr.io/300", "gcr.io/10"]).len(), 2);
        assert_eq!(scores(&["gcr.io/40", "gcr.io/300"]), vec![7, 0]);
    }

    #[test]
    fn a_huge_image_is_capped_per_container() {
        // node1: 2000MB/2 = 1000MB with one container → the maximum.
        assert_eq!(scores(&["gcr.io/2000"]), vec![100, 0]);
    }
}
