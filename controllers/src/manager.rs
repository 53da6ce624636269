//! The controller manager: runs every enabled controller Ferrite implements, on one shared set
//! of informers, while this process leads.
//!
//! A controller plugs in with a [`Controller`] entry in [`IMPLEMENTED`]. Its `start` function is
//! called before the informers start: it asks the shared [`InformerFactory`] for the informers it
//! needs, registers its handlers, and returns the future that runs its workers until the token is
//! cancelled. Only after every informer has synced do the workers start, as upstream's
//! `WaitForNamedCacheSync` has it.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use crate::cache::Pod;
use crate::pods_by_node::PodsByNode;

use ferrite_runtime::client::rate_limited_client;
use ferrite_runtime::component::Context;
use ferrite_runtime::credentials::ServiceAccountCredentials;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::InformerFactory;
use ferrite_runtime::metrics::SharedRegistry;
use ferrite_runtime::workqueue::WorkQueueMetrics;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// What every controller gets.
#[derive(Clone)]
pub struct ControllerContext {
    pub client: kube::Client,
    pub informers: Arc<InformerFactory>,
    /// The process recorder; a controller reports as itself with `events.for_controller(name)`.
    pub events: EventRecorder,
    pub registry: SharedRegistry,
    /// Registered once per process; every work queue passes it to `with_metrics`.
    pub queue_metrics: WorkQueueMetrics,
    pub options: Arc<ManagerOptions>,
    /// Cancelled when leadership ends or the process shuts down.
    pub token: CancellationToken,
    /// The pods-by-node index, made by the first controller that asks for it.
    pods_by_node: Arc<OnceLock<PodsByNode>>,
}

impl ControllerContext {
    /// The process's one index of pods by node name (upstream's `spec.nodeName` pod indexer,
    /// which the node-lifecycle and taint-eviction controllers share).
    pub fn pods_by_node(&self) -> PodsByNode {
        self.pods_by_node
            .get_or_init(|| PodsByNode::new(self.informers.informer::<Pod>()))
            .clone()
    }
}

/// Controller settings from flags (upstream names); grows with the controllers.
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    pub root_ca_file: Option<std::path::PathBuf>,
    pub cluster_name: String,
    /// `--use-service-account-credentials`: each controller writes as `kube-system/<its SA>`.
    pub use_service_account_credentials: bool,
    /// `--terminated-pod-gc-threshold` (upstream default 12500; 0 or less disables that part).
    pub terminated_pod_gc_threshold: i64,
    /// PEM of the CA bundle this process's own client trusts: what the root CA publisher
    /// publishes without `--root-ca-file` (upstream uses the client config's CAData). Filled in
    /// from the client configuration by [`run`].
    pub client_ca: Option<String>,
    /// The node-lifecycle controller's flags.
    pub node_lifecycle: crate::node_lifecycle::NodeLifecycleOptions,
    /// The node-ipam controller's CIDRs; None without `--allocate-node-cidrs`.
    pub node_ipam: Option<crate::node_ipam::config::NodeIpamConfig>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            root_ca_file: None,
            cluster_name: "kubernetes".into(),
            use_service_account_credentials: false,
            terminated_pod_gc_threshold: crate::podgc::DEFAULT_TERMINATED_POD_GC_THRESHOLD,
            client_ca: None,
            node_lifecycle: crate::node_lifecycle::NodeLifecycleOptions::default(),
            node_ipam: None,
        }
    }
}

/// Upstream doubles the garbage collector's QPS (cmd/kube-controller-manager/app/core.go,
/// `config.QPS *= 2`): collecting an object takes a GET and a DELETE.
fn qps_factor(controller: &str) -> f32 {
    if controller == crate::garbage_collector::NAME {
        2.0
    } else {
        1.0
    }
}

/// DER certificates as one PEM bundle (64-column base64, `\n` line ends, as Go's `pem.Encode`).
fn pem_bundle(der: &[Vec<u8>]) -> String {
    let pems: Vec<pem::Pem> = der
        .iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.clone()))
        .collect();
    pem::encode_many_config(
        &pems,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Sets a controller up (informers, handlers) and returns the future that runs it.
pub type StartFn = fn(&ControllerContext) -> Result<BoxFuture<'static, Result<(), String>>, String>;

pub struct Controller {
    /// Canonical upstream name (see `names::KNOWN`).
    pub name: &'static str,
    pub start: StartFn,
}

/// Controllers Ferrite implements so far. Enabled controllers missing here are reported at
/// start-up and not run.
pub const IMPLEMENTED: &[Controller] = &[
    Controller {
        name: crate::cronjob::NAME,
        start: crate::cronjob::start,
    },
    Controller {
        name: crate::deployment::NAME,
        start: crate::deployment::start,
    },
    Controller {
        name: crate::serviceaccount::NAME,
        start: crate::serviceaccount::start,
    },
    Controller {
        name: crate::root_ca_publisher::NAME,
        start: crate::root_ca_publisher::start,
    },
    Controller {
        name: crate::clusterrole_aggregation::NAME,
        start: crate::clusterrole_aggregation::start,
    },
    Controller {
        name: crate::podgc::NAME,
        start: crate::podgc::start,
    },
    Controller {
        name: crate::ttl_after_finished::NAME,
        start: crate::ttl_after_finished::start,
    },
    Controller {
        name: crate::replicaset::NAME,
        start: crate::replicaset::start,
    },
    Controller {
        name: crate::job::NAME,
        start: crate::job::start,
    },
    Controller {
        name: crate::garbage_collector::NAME,
        start: crate::garbage_collector::start,
    },
    Controller {
        name: crate::node_lifecycle::NAME,
        start: crate::node_lifecycle::start,
    },
    Controller {
        name: crate::taint_eviction::NAME,
        start: crate::taint_eviction::start,
    },
    Controller {
        name: crate::node_ipam::NAME,
        start: crate::node_ipam::start,
    },
];

/// The service account a controller uses with `--use-service-account-credentials`: upstream's
/// names, each bound by the apiserver's bootstrap policy to `system:controller:<name>`
/// (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/controller_policy.go).
pub fn service_account(controller: &str) -> Option<&'static str> {
    Some(match controller {
        "deployment-controller" => "deployment-controller",
        "replicaset-controller" => "replicaset-controller",
        "job-controller" => "job-controller",
        "cronjob-controller" => "cronjob-controller",
        "garbage-collector-controller" => "generic-garbage-collector",
        "serviceaccount-controller" => "service-account-controller",
        "root-ca-certificate-publisher-controller" => "root-ca-cert-publisher",
        "clusterrole-aggregation-controller" => "clusterrole-aggregation-controller",
        "pod-garbage-collector-controller" => "pod-garbage-collector",
        "ttl-after-finished-controller" => "ttl-after-finished-controller",
        "namespace-controller" => "namespace-controller",
        "endpoints-controller" => "endpoint-controller",
        "endpointslice-controller" => "endpointslice-controller",
        "endpointslice-mirroring-controller" => "endpointslicemirroring-controller",
        // The taint-eviction controller uses the node controller's role too
        // (cmd/kube-controller-manager/app/core.go).
        "node-lifecycle-controller" | "node-ipam-controller" | "taint-eviction-controller" => {
            "node-controller"
        }
        "resourcequota-controller" => "resourcequota-controller",
        "replicationcontroller-controller" => "replication-controller",
        "daemonset-controller" => "daemon-set-controller",
        "statefulset-controller" => "statefulset-controller",
        "disruption-controller" => "disruption-controller",
        "ttl-controller" => "ttl-controller",
        _ => return None,
    })
}

/// Runs the enabled controllers until the context's token is cancelled.
pub async fn run(
    ctx: Context,
    enabled: BTreeSet<&'static str>,
    mut options: ManagerOptions,
) -> Result<(), String> {
    if options.client_ca.is_none() {
        options.client_ca = ctx.config.root_cert.as_deref().map(pem_bundle);
    }
    let missing: Vec<&str> = enabled
        .iter()
        .copied()
        .filter(|n| !IMPLEMENTED.iter().any(|c| c.name == *n))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(controllers = ?missing, "enabled controllers that Ferrite does not implement yet are not started");
    }
    let cc = ControllerContext {
        client: ctx.client.clone(),
        informers: ctx.informers.clone(),
        events: ctx.events.clone(),
        queue_metrics: ctx.registry.with(WorkQueueMetrics::register),
        registry: ctx.registry.clone(),
        options: Arc::new(options),
        token: ctx.token.clone(),
        pods_by_node: Arc::default(),
    };
    let credentials = cc.options.use_service_account_credentials.then(|| {
        ServiceAccountCredentials::new(
            ctx.client.clone(),
            ctx.config.clone(),
            ctx.qps,
            ctx.burst,
            ctx.token.clone(),
        )
    });
    let mut runs = Vec::new();
    for c in IMPLEMENTED.iter().filter(|c| enabled.contains(c.name)) {
        let mut own = cc.clone();
        // Each controller gets a client (and so a rate limit) of its own, as upstream's client
        // builder gives every controller its own rest config.
        let qps = ctx.qps * qps_factor(c.name);
        own.client = match &credentials {
            Some(creds) => {
                let sa = service_account(c.name)
                    .ok_or_else(|| format!("no service account is known for {}", c.name))?;
                creds
                    .client_for_with_qps(sa, qps)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => {
                rate_limited_client(ctx.config.clone(), qps, ctx.burst).map_err(|e| e.to_string())
            }
        }
        .map_err(|e| format!("starting {}: {e}", c.name))?;
        let run = (c.start)(&own).map_err(|e| format!("starting {}: {e}", c.name))?;
        runs.push((c.name, run));
    }
    ctx.informers.start(ctx.token.clone());
    ctx.informers.wait_for_cache_sync().await;
    ctx.health.set_ready(true);
    tracing::info!(controllers = ?runs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "caches synced; starting controllers");
    let mut tasks = tokio::task::JoinSet::new();
    for (name, run) in runs {
        tasks.spawn(async move { (name, run.await) });
    }
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                failure.get_or_insert(format!("controller {name} failed: {e}"));
                ctx.token.cancel();
            }
            Err(e) => {
                failure.get_or_insert(format!("a controller task failed: {e}"));
                ctx.token.cancel();
            }
        }
    }
    ctx.token.cancelled().await;
    tracing::info!("controllers stopped");
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ca_is_published_as_lf_pem_that_parses_back_to_the_same_certificates() {
        let der = vec![vec![0x30u8; 100], vec![0x31u8; 10]];
        let bundle = pem_bundle(&der);
        assert!(bundle.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(!bundle.contains('\r'));
        assert!(bundle.lines().all(|l| l.len() <= 64));
        let back: Vec<Vec<u8>> = pem::parse_many(&bundle)
            .unwrap()
            .into_iter()
            .map(|p| p.into_contents())
            .collect();
        assert_eq!(back, der);
    }
}
