//! The node-ipam controller with upstream's range allocator (kubernetes/kubernetes
//! pkg/controller/nodeipam, `ipam/range_allocator.go`): with `--allocate-node-cidrs`, every node
//! without `spec.podCIDRs` gets the next free node CIDR of each `--cluster-cidr` (one per IP
//! family), the service range is kept out, CIDRs of existing nodes are taken as in use, and a
//! deleted node's CIDRs are freed.
//!
//! Pure parts: [`cidr_set`] (the bitmap allocator) and [`config`] (flag validation). This file
//! is the shell: a work queue of node names, the sets behind a lock, and a `spec.podCIDR(s)`
//! patch.

pub mod cidr_set;
pub mod config;

use std::sync::{Arc, Mutex};

use ferrite_runtime::events::{EventRecorder, EventType};
use ferrite_runtime::informer::{Change, Informer};
use ferrite_runtime::workqueue::{RateLimiter, WorkQueue, run_workers};
use futures::FutureExt;
use futures::future::BoxFuture;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, Patch, PatchParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::manager::ControllerContext;
use cidr_set::CidrSet;
use config::NodeIpamConfig;

/// Canonical controller name.
pub const NAME: &str = "node-ipam-controller";
/// The events' source component (upstream's range allocator recorder).
pub const EVENT_COMPONENT: &str = "cidrAllocator";
/// `cidrUpdateWorkers`.
const CIDR_UPDATE_WORKERS: usize = 30;
/// `cidrUpdateRetries`.
const CIDR_UPDATE_RETRIES: u32 = 3;

/// The label is upstream's `clusterCIDR`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
struct CidrLabels {
    clusterCIDR: String,
}

#[derive(Clone)]
struct TriesBuckets;

impl MetricConstructor<Histogram> for TriesBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(1.0, 5.0, 5))
    }
}

/// Upstream's `node_ipam_controller_cidrset_*` metrics (ipam/cidrset/metrics.go), by cluster CIDR.
#[derive(Clone)]
pub struct NodeIpamMetrics {
    allocations: Family<CidrLabels, Counter>,
    releases: Family<CidrLabels, Counter>,
    max_cidrs: Family<CidrLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    usage: Family<CidrLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tries: Family<CidrLabels, Histogram, TriesBuckets>,
}

impl NodeIpamMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeIpamMetrics {
            allocations: Family::default(),
            releases: Family::default(),
            max_cidrs: Family::default(),
            usage: Family::default(),
            tries: Family::new_with_constructor(TriesBuckets),
        };
        let sub = registry.sub_registry_with_prefix("node_ipam_controller");
        sub.register(
            "cidrset_cidrs_allocations",
            "Counter measuring total number of CIDR allocations.",
            m.allocations.clone(),
        );
        sub.register(
            "cidrset_cidrs_releases",
            "Counter measuring total number of CIDR releases.",
            m.releases.clone(),
        );
        // Upstream's metric name has this typo.
        sub.register(
            "cirdset_max_cidrs",
            "Maximum number of CIDRs that can be allocated.",
            m.max_cidrs.clone(),
        );
        sub.register(
            "cidrset_usage_cidrs",
            "Gauge measuring percentage of allocated CIDRs.",
            m.usage.clone(),
        );
        sub.register(
            "cidrset_allocation_tries_per_request",
            "Number of endpoints added on each Service sync",
            m.tries.clone(),
        );
        m
    }

    fn labels(set: &CidrSet) -> CidrLabels {
        CidrLabels {
            clusterCIDR: set.cluster().to_string(),
        }
    }

    fn created(&self, set: &CidrSet) {
        self.max_cidrs
            .get_or_create(&Self::labels(set))
            .set(set.max_cidrs() as f64);
    }

    fn allocated(&self, set: &CidrSet, count: u64, tries: Option<u64>) {
        let l = Self::labels(set);
        self.allocations.get_or_create(&l).inc_by(count);
        if let Some(t) = tries {
            self.tries.get_or_create(&l).observe(t as f64);
        }
        self.usage.get_or_create(&l).set(set.usage());
    }

    fn released(&self, set: &CidrSet, count: u64) {
        let l = Self::labels(set);
        self.releases.get_or_create(&l).inc_by(count);
        self.usage.get_or_create(&l).set(set.usage());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Cidr(String),
}

struct Shared {
    client: kube::Client,
    nodes: Informer<Node>,
    recorder: EventRecorder,
    metrics: NodeIpamMetrics,
    sets: Mutex<Vec<CidrSet>>,
    queue: WorkQueue<String>,
}

fn name_of(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => spec
            .and_then(|s| s.pod_cidr.clone())
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect(),
    }
}

/// The controller's `StartFn`.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String> {
    let Some(cfg) = ctx.options.node_ipam.clone() else {
        // Upstream does not start the controller without --allocate-node-cidrs.
        tracing::info!(
            controller = NAME,
            "not started: --allocate-node-cidrs is not set"
        );
        return Ok(async { Ok(()) }.boxed());
    };
    let metrics = ctx.registry.with(NodeIpamMetrics::register);
    let sets = new_sets(&cfg, &metrics)?;
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        nodes: ctx.informers.informer::<Node>(),
        recorder: ctx.events.for_controller(EVENT_COMPONENT),
        metrics,
        sets: Mutex::new(sets),
        queue: WorkQueue::new("cidrallocator_node", RateLimiter::default_controller())
            .with_metrics(&ctx.queue_metrics),
    });
    let s = shared.clone();
    shared.nodes.add_handler(move |change| match change {
        Change::Added(n) | Change::Updated { new: n, .. } => {
            s.queue.add(name_of(n).to_owned());
        }
        Change::Deleted(n) => {
            if let Err(e) = s.release(n) {
                tracing::error!(node = name_of(n), error = %e, "error while processing CIDR release");
            }
        }
    });
    let token = ctx.token.clone();
    Ok(async move {
        tracing::info!(controller = NAME, "starting range CIDR allocator");
        // The CIDRs nodes already have are in use (upstream lists the nodes for this; the
        // synced cache holds the same, and a node deleted meanwhile was already released).
        for node in shared.nodes.store().state() {
            if let Err(e) = shared.occupy(&node) {
                return Err(format!("{NAME}: {e}"));
            }
        }
        let queue = shared.queue.clone();
        run_workers(queue, CIDR_UPDATE_WORKERS, token, move |name: String| {
            let s = shared.clone();
            async move { s.sync_node(&name).await }
        })
        .await;
        tracing::info!(controller = NAME, "shutting down range CIDR allocator");
        Ok(())
    }
    .boxed())
}

/// One CIDR set per cluster CIDR, with the service ranges it overlaps taken out
/// (`filterOutServiceRange`).
fn new_sets(cfg: &NodeIpamConfig, metrics: &NodeIpamMetrics) -> Result<Vec<CidrSet>, String> {
    let mut sets = Vec::new();
    for (cidr, mask) in cfg.cluster_cidrs.iter().zip(&cfg.node_mask_sizes) {
        let set = CidrSet::new(*cidr, *mask).map_err(|e| format!("{NAME}: {e}"))?;
        metrics.created(&set);
        sets.push(set);
    }
    for service in &cfg.service_cidrs {
        for set in sets.iter_mut() {
            let cluster = set.cluster();
            let overlaps = same_family(&cluster, service)
                && (cluster.contains(&service.network()) || service.contains(&cluster.network()));
            if !overlaps {
                continue;
            }
            match set.occupy(service) {
                Ok(n) => metrics.allocated(set, n, None),
                Err(e) => {
                    tracing::error!(cidr = %cluster, service_cidr = %service, error = %e, "error filtering out service cidr out cluster cidr")
                }
            }
        }
    }
    Ok(sets)
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CidrSet>> {
        self.sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn parse(node: &Node, cidr: &str) -> Result<IpNet, Error> {
        cidr.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
            Error::Cidr(format!(
                "failed to parse node {}, CIDR {cidr}",
                name_of(node)
            ))
        })
    }

    /// `occupyCIDRs`: marks the node's CIDRs as in use.
    fn occupy(&self, node: &Node) -> Result<(), Error> {
        let cidrs = pod_cidrs(node);
        let mut sets = self.lock();
        for (idx, cidr) in cidrs.iter().enumerate() {
            let net = Self::parse(node, cidr)?;
            let Some(set) = sets.get_mut(idx) else {
                return Err(Error::Cidr(format!(
                    "node:{} has an allocated cidr: {cidr} at index:{idx} that does not exist in cluster cidrs configuration",
                    name_of(node)
                )));
            };
            let n = set.occupy(&net).map_err(|e| {
                Error::Cidr(format!(
                    "failed to mark cidr[{net}] at idx [{idx}] as occupied for node: {}: {e}",
                    name_of(node)
                ))
            })?;
            self.metrics.allocated(set, n, None);
        }
        Ok(())
    }

    /// `ReleaseCIDR`: frees a deleted node's CIDRs.
    fn release(&self, node: &Node) -> Result<(), Error> {
        let cidrs = pod_cidrs(node);
        let mut sets = self.lock();
        for (idx, cidr) in cidrs.iter().enumerate() {
            let net = Self::parse(node, cidr)?;
            let Some(set) = sets.get_mut(idx) else {
                return Err(Error::Cidr(format!(
                    "node:{} has an allocated cidr: {cidr} at index:{idx} that does not exist in cluster cidrs configuration",
                    name_of(node)
                )));
            };
            tracing::debug!(cidr = %net, node = name_of(node), "release CIDR for node");
            let n = set
                .release(&net)
                .map_err(|e| Error::Cidr(format!("error when releasing CIDR {cidr}: {e}")))?;
            self.metrics.released(set, n);
        }
        Ok(())
    }

    fn release_all(&self, cidrs: &[IpNet]) {
        let mut sets = self.lock();
        for (set, cidr) in sets.iter_mut().zip(cidrs) {
            match set.release(cidr) {
                Ok(n) => self.metrics.released(set, n),
                Err(e) => tracing::error!(cidr = %cidr, error = %e, "error when releasing CIDR"),
            }
        }
    }

    fn record_status_change(&self, node: &Node, status: &str) {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        self.recorder.event(
            &reference,
            EventType::Normal,
            status,
            format!("Node {} status is now: {status}", name_of(node)),
        );
    }

    /// `syncNode` / `AllocateOrOccupyCIDR`.
    async fn sync_node(&self, name: &str) -> Result<(), Error> {
        let Some(node) = self.nodes.get(None, name) else {
            return Ok(());
        };
        if node.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        if !pod_cidrs(&node).is_empty() {
            return self.occupy(&node);
        }
        let allocated = {
            let mut sets = self.lock();
            let mut allocated = Vec::with_capacity(sets.len());
            let mut failure = None;
            for (idx, set) in sets.iter_mut().enumerate() {
                match set.allocate_next() {
                    Ok(a) => {
                        self.metrics.allocated(set, 1, Some(a.tries));
                        allocated.push(a.cidr);
                    }
                    Err(e) => {
                        failure = Some(format!(
                            "failed to allocate cidr from cluster cidr at idx:{idx}: {e}"
                        ));
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                // Upstream keeps what the other families allocated; give it back instead.
                for (set, cidr) in sets.iter_mut().zip(&allocated) {
                    if let Ok(n) = set.release(cidr) {
                        self.metrics.released(set, n);
                    }
                }
                drop(sets);
                self.record_status_change(&node, "CIDRNotAvailable");
                return Err(Error::Cidr(e));
            }
            allocated
        };
        self.update_cidrs_allocation(name, &allocated).await
    }

    /// `updateCIDRsAllocation`: writes the allocated CIDRs unless the node got some meanwhile.
    async fn update_cidrs_allocation(&self, name: &str, allocated: &[IpNet]) -> Result<(), Error> {
        let wanted: Vec<String> = allocated.iter().map(ToString::to_string).collect();
        let Some(node) = self.nodes.get(None, name) else {
            self.release_all(allocated);
            return Ok(());
        };
        let current = pod_cidrs(&node);
        if current == wanted {
            return Ok(());
        }
        if !current.is_empty() {
            tracing::error!(node = name, pod_cidrs = ?current, "node already has a CIDR allocated; releasing the new one");
            self.release_all(allocated);
            return Ok(());
        }
        let patch = json!({"spec": {"podCIDR": wanted[0], "podCIDRs": wanted}});
        let api = Api::<Node>::all(self.client.clone());
        let mut last = None;
        for _ in 0..CIDR_UPDATE_RETRIES {
            match api
                .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(node = name, pod_cidrs = ?wanted, "set node PodCIDR");
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(e) = last else { return Ok(()) };
        tracing::error!(node = name, pod_cidrs = ?wanted, error = %e, "failed to update node PodCIDR after multiple attempts");
        self.record_status_change(&node, "CIDRAssignmentFailed");
        let server_timeout =
            matches!(&e, kube::Error::Api(s) if s.code == 504 || s.reason == "ServerTimeout");
        if !server_timeout {
            self.release_all(allocated);
        }
        Err(e.into())
    }
}
