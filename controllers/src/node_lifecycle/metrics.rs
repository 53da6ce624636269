//! Upstream's `node_collector_*` metrics (kubernetes/kubernetes
//! pkg/controller/nodelifecycle/metrics.go).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::zones::ZoneReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub zone: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct NodeLifecycleMetrics {
    pub zone_health: Family<ZoneLabels, FloatGauge>,
    pub zone_size: Family<ZoneLabels, FloatGauge>,
    pub unhealthy_nodes: Family<ZoneLabels, FloatGauge>,
    pub evictions: Family<ZoneLabels, Counter>,
    pub update_node_health: Histogram,
    pub update_all_nodes_health: Histogram,
}

impl NodeLifecycleMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeLifecycleMetrics {
            zone_health: Family::default(),
            zone_size: Family::default(),
            unhealthy_nodes: Family::default(),
            evictions: Family::default(),
            // 1 ms to about 15 s, and 10 ms to about 3 min, as upstream.
            update_node_health: Histogram::new(exponential_buckets(0.001, 4.0, 8)),
            update_all_nodes_health: Histogram::new(exponential_buckets(0.01, 4.0, 8)),
        };
        let sub = registry.sub_registry_with_prefix("node_collector");
        sub.register(
            "zone_health",
            "Gauge measuring percentage of healthy nodes per zone.",
            m.zone_health.clone(),
        );
        sub.register(
            "zone_size",
            "Gauge measuring number of registered Nodes per zones.",
            m.zone_size.clone(),
        );
        sub.register(
            "unhealthy_nodes_in_zone",
            "Gauge measuring number of not Ready Nodes per zones.",
            m.unhealthy_nodes.clone(),
        );
        sub.register(
            "evictions",
            "Number of Node evictions that happened since current instance of NodeController started.",
            m.evictions.clone(),
        );
        sub.register(
            "update_node_health_duration_seconds",
            "Duration in seconds for NodeController to update the health of a single node.",
            m.update_node_health.clone(),
        );
        sub.register(
            "update_all_nodes_health_duration_seconds",
            "Duration in seconds for NodeController to update the health of all nodes.",
            m.update_all_nodes_health.clone(),
        );
        m
    }

    fn labels(zone: &str) -> ZoneLabels {
        ZoneLabels {
            zone: zone.to_owned(),
        }
    }

    pub fn report(&self, r: &ZoneReport) {
        let l = Self::labels(&r.zone);
        self.zone_size.get_or_create(&l).set(r.size as f64);
        self.zone_health.get_or_create(&l).set(r.health_percent());
        self.unhealthy_nodes
            .get_or_create(&l)
            .set(r.unhealthy as f64);
    }

    /// A zone that lost its last node.
    pub fn zone_gone(&self, zone: &str) {
        let l = Self::labels(zone);
        self.zone_size.get_or_create(&l).set(0.0);
        self.zone_health.get_or_create(&l).set(100.0);
        self.unhealthy_nodes.get_or_create(&l).set(0.0);
    }

    /// A zone seen for the first time starts its eviction counter at zero.
    pub fn init_zone(&self, zone: &str) {
        let _ = self.evictions.get_or_create(&Self::labels(zone));
    }

    pub fn evicted(&self, zone: &str) {
        self.evictions.get_or_create(&Self::labels(zone)).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_lifecycle::zones::ZoneState;

    #[test]
    fn metrics_use_the_upstream_names() {
        let mut registry = Registry::default();
        let m = NodeLifecycleMetrics::register(&mut registry);
        m.init_zone("");
        m.evicted("");
        m.report(&ZoneReport {
            zone: String::new(),
            size: 4,
            unhealthy: 1,
            state: ZoneState::Normal,
        });
        m.update_node_health.observe(0.002);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        for line in [
            "node_collector_evictions_total{zone=\"\"} 1",
            "node_collector_zone_health{zone=\"\"} 75.0",
            "node_collector_zone_size{zone=\"\"} 4.0",
            "node_collector_unhealthy_nodes_in_zone{zone=\"\"} 1.0",
            "node_collector_update_node_health_duration_seconds_count 1",
            "node_collector_update_all_nodes_health_duration_seconds_count 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
