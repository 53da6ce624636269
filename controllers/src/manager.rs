//! The controller manager: runs every enabled controller Ferrite implements, on one shared set
//! of informers, while this process leads.
//!
//! A controller plugs in with a [`Controller`] entry in [`IMPLEMENTED`]. Its `start` function
//! asks the shared [`InformerFactory`] for the informers it needs, registers its handlers, and
//! returns the future that runs its workers until its token is cancelled. At start-up the
//! workers start only after every informer has synced, as upstream's `WaitForNamedCacheSync`
//! has it.
//!
//! What runs follows the settings in force ([`crate::configuration`]): the flags, overridden by
//! the `ControllerConfiguration` named `default` while it is valid. When they change, a
//! controller that is no longer enabled is stopped (its token is cancelled, its workers finish
//! the key in hand and end, its informer handlers are dropped), a newly enabled one is started
//! (its handlers replay the shared caches, so it catches up at once), and one whose own
//! settings changed (e.g. its worker count) is stopped and started again with them. Upstream
//! reads its configuration once at start-up; this is Ferrite's addition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use crate::cache::Pod;
use crate::pods_by_node::PodsByNode;

use ferrite_runtime::client::rate_limited_client;
use ferrite_runtime::component::Context;
use ferrite_runtime::credentials::ServiceAccountCredentials;
use ferrite_runtime::events::EventRecorder;
use ferrite_runtime::informer::InformerFactory;
use ferrite_runtime::live_config::{self, InForce};
use ferrite_runtime::metrics::SharedRegistry;
use ferrite_runtime::workqueue::WorkQueueMetrics;
use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::configuration::{self, ControllerConfiguration, ControllerSettings};

/// What every controller gets.
#[derive(Clone)]
pub struct ControllerContext {
    pub client: kube::Client,
    /// The shared informers; handlers registered through this handle end with the controller.
    pub informers: Arc<InformerFactory>,
    /// The process recorder; a controller reports as itself with `events.for_controller(name)`.
    pub events: EventRecorder,
    pub registry: SharedRegistry,
    /// Registered once per process; every work queue passes it to `with_metrics`.
    pub queue_metrics: WorkQueueMetrics,
    pub options: Arc<ManagerOptions>,
    /// The settings in force when the controller started (a change of the ones it depends on
    /// restarts it).
    pub settings: Arc<ControllerSettings>,
    /// Cancelled when the controller is stopped, leadership ends or the process shuts down.
    pub token: CancellationToken,
    /// The pods-by-node index, made by the first controller that asks for it.
    pods_by_node: Arc<OnceLock<PodsByNode>>,
    /// The process's informers, unscoped: the index's handler outlives any one controller.
    process_informers: Arc<InformerFactory>,
}

impl ControllerContext {
    /// The process's one index of pods by node name (upstream's `spec.nodeName` pod indexer,
    /// which the node-lifecycle and taint-eviction controllers share).
    pub fn pods_by_node(&self) -> PodsByNode {
        self.pods_by_node
            .get_or_init(|| PodsByNode::new(self.process_informers.informer::<Pod>()))
            .clone()
    }
}

/// Process-wide options from flags, fixed for the process's life; grows with the controllers.
/// What may change while the manager runs lives in [`ControllerSettings`].
#[derive(Clone, Debug)]
pub struct ManagerOptions {
    pub root_ca_file: Option<std::path::PathBuf>,
    pub cluster_name: String,
    /// `--use-service-account-credentials`: each controller writes as `kube-system/<its SA>`.
    pub use_service_account_credentials: bool,
    /// PEM of the CA bundle this process's own client trusts: what the root CA publisher
    /// publishes without `--root-ca-file` (upstream uses the client config's CAData). Filled in
    /// from the client configuration by [`run`].
    pub client_ca: Option<String>,
    /// The node-ipam controller's CIDRs; None without `--allocate-node-cidrs`.
    pub node_ipam: Option<crate::node_ipam::config::NodeIpamConfig>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            root_ca_file: None,
            cluster_name: "kubernetes".into(),
            use_service_account_credentials: false,
            client_ca: None,
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

/// The settings a snapshot of the `ControllerConfiguration`s puts in force over the flags'.
fn in_force(
    base: &ControllerSettings,
    snapshot: &InForce<ControllerSettings>,
) -> ControllerSettings {
    snapshot
        .values
        .get(configuration::DEFAULT_NAME)
        .map(|s| (**s).clone())
        .unwrap_or_else(|| base.clone())
}

/// The implemented controllers `settings` enables, in [`IMPLEMENTED`]'s order.
fn wanted(settings: &ControllerSettings) -> impl Iterator<Item = &'static Controller> + '_ {
    IMPLEMENTED
        .iter()
        .filter(|c| settings.enabled.contains(c.name))
}

/// What to stop and what to start when the settings in force go from `old` to `new`: a
/// controller no longer enabled stops, a newly enabled one starts, and one whose own settings
/// changed does both.
pub fn transition(
    running: &BTreeSet<&'static str>,
    old: &ControllerSettings,
    new: &ControllerSettings,
) -> (Vec<&'static str>, Vec<&'static str>) {
    let stop: Vec<&'static str> = running
        .iter()
        .copied()
        .filter(|n| !new.enabled.contains(n) || old.scope(n) != new.scope(n))
        .collect();
    let start: Vec<&'static str> = wanted(new)
        .map(|c| c.name)
        .filter(|n| !running.contains(n) || stop.contains(n))
        .collect();
    (stop, start)
}

fn warn_unimplemented(settings: &ControllerSettings) {
    let missing: Vec<&str> = settings
        .enabled
        .iter()
        .copied()
        .filter(|n| !IMPLEMENTED.iter().any(|c| c.name == *n))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(controllers = ?missing, "enabled controllers that Ferrite does not implement yet are not started");
    }
}

/// The controllers' common parts and the running ones.
struct Manager {
    ctx: Context,
    options: Arc<ManagerOptions>,
    queue_metrics: WorkQueueMetrics,
    credentials: Option<ServiceAccountCredentials>,
    /// One client per controller for the process's life, made on its first start: a restart
    /// keeps its rate limiter and (with service account credentials) its token.
    clients: HashMap<&'static str, kube::Client>,
    running: BTreeMap<&'static str, Running>,
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    pods_by_node: Arc<OnceLock<PodsByNode>>,
}

struct Running {
    token: CancellationToken,
    task: tokio::task::Id,
}

type Run = BoxFuture<'static, Result<(), String>>;
/// A finished controller task, as `JoinSet::join_next_with_id` returns it.
type Finished =
    Result<(tokio::task::Id, (&'static str, Result<(), String>)), tokio::task::JoinError>;

impl Manager {
    async fn client_for(&mut self, name: &'static str) -> Result<kube::Client, String> {
        if let Some(c) = self.clients.get(name) {
            return Ok(c.clone());
        }
        // Each controller gets a client (and so a rate limit) of its own, as upstream's client
        // builder gives every controller its own rest config.
        let qps = self.ctx.qps * qps_factor(name);
        let client = match &self.credentials {
            Some(creds) => {
                let sa = service_account(name)
                    .ok_or_else(|| format!("no service account is known for {name}"))?;
                creds
                    .client_for_with_qps(sa, qps)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => rate_limited_client(self.ctx.config.clone(), qps, self.ctx.burst)
                .map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("starting {name}: {e}"))?;
        self.clients.insert(name, client.clone());
        Ok(client)
    }

    /// Sets a controller up (informers, handlers) under a token of its own; the returned future
    /// runs it.
    async fn set_up(
        &mut self,
        c: &'static Controller,
        settings: &Arc<ControllerSettings>,
    ) -> Result<(CancellationToken, Run), String> {
        let client = self.client_for(c.name).await?;
        let token = self.ctx.token.child_token();
        let own = ControllerContext {
            client,
            informers: self.ctx.informers.scoped(token.clone()),
            events: self.ctx.events.clone(),
            registry: self.ctx.registry.clone(),
            queue_metrics: self.queue_metrics.clone(),
            options: self.options.clone(),
            settings: settings.clone(),
            token: token.clone(),
            pods_by_node: self.pods_by_node.clone(),
            process_informers: self.ctx.informers.clone(),
        };
        let run = (c.start)(&own).map_err(|e| format!("starting {}: {e}", c.name))?;
        Ok((token, run))
    }

    fn spawn(&mut self, name: &'static str, token: CancellationToken, run: Run) {
        let handle = self.tasks.spawn(async move { (name, run.await) });
        self.running.insert(
            name,
            Running {
                token,
                task: handle.id(),
            },
        );
    }

    /// Handles a finished controller task; Err when the process must stop.
    fn finished(&mut self, done: Finished) -> Result<(), String> {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let stopped_on_purpose = !self.running.values().any(|r| r.task == id);
        self.running.retain(|_, r| r.task != id);
        match done {
            Ok((_, (_, Ok(())))) => Ok(()),
            Ok((_, (name, Err(e)))) if !stopped_on_purpose => {
                Err(format!("controller {name} failed: {e}"))
            }
            Ok((_, (name, Err(e)))) => {
                tracing::warn!(controller = name, error = %e, "a stopped controller ended with an error");
                Ok(())
            }
            Err(e) => Err(format!("a controller task failed: {e}")),
        }
    }

    /// Moves from `old` to `new` settings: stops what must stop, waits until its workers have
    /// ended, then starts what must start once its informers have synced.
    async fn apply(
        &mut self,
        old: &ControllerSettings,
        new: &Arc<ControllerSettings>,
    ) -> Result<(), String> {
        let running: BTreeSet<&'static str> = self.running.keys().copied().collect();
        let (stop, start) = transition(&running, old, new);
        let mut waiting = BTreeSet::new();
        for name in &stop {
            if let Some(r) = self.running.remove(name) {
                tracing::info!(controller = *name, "stopping controller");
                r.token.cancel();
                waiting.insert(r.task);
            }
        }
        while !waiting.is_empty() {
            let Some(done) = self.tasks.join_next_with_id().await else {
                break;
            };
            let id = match &done {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            waiting.remove(&id);
            self.finished(done)?;
        }
        let mut runs = Vec::new();
        for name in start {
            let Some(c) = IMPLEMENTED.iter().find(|c| c.name == name) else {
                continue;
            };
            runs.push((name, self.set_up(c, new).await?));
        }
        if runs.is_empty() {
            return Ok(());
        }
        // A controller may have asked for informers nobody had started yet.
        self.ctx.informers.wait_for_cache_sync().await;
        for (name, (token, run)) in runs {
            tracing::info!(controller = name, "starting controller");
            self.spawn(name, token, run);
        }
        Ok(())
    }
}

/// Runs the controllers the settings in force enable until the context's token is cancelled.
/// `base` is the flags' settings; the `ControllerConfiguration` named `default` overrides them
/// while it is valid (see [`crate::configuration`]).
pub async fn run(
    ctx: Context,
    base: ControllerSettings,
    mut options: ManagerOptions,
) -> Result<(), String> {
    if options.client_ca.is_none() {
        options.client_ca = ctx.config.root_cert.as_deref().map(pem_bundle);
    }
    let credentials = options.use_service_account_credentials.then(|| {
        ServiceAccountCredentials::new(
            ctx.client.clone(),
            ctx.config.clone(),
            ctx.qps,
            ctx.burst,
            ctx.token.clone(),
        )
    });
    let validate_base = base.clone();
    let mut config = live_config::watch::<ControllerConfiguration, _, _>(
        ctx.client.clone(),
        ctx.token.clone(),
        ctx.events.for_controller("ferrite-controller-manager"),
        move |obj: &ControllerConfiguration| configuration::resolve(&validate_base, obj),
    );
    // The first answer decides what starts, so a controller the configuration disables never
    // runs, not even for a moment after a leader change.
    let first = tokio::select! {
        () = ctx.token.cancelled() => return Ok(()),
        s = config.synced() => s,
    };
    let mut settings = Arc::new(in_force(&base, &first));
    warn_unimplemented(&settings);
    let mut manager = Manager {
        queue_metrics: ctx.registry.with(WorkQueueMetrics::register),
        options: Arc::new(options),
        credentials,
        clients: HashMap::new(),
        running: BTreeMap::new(),
        tasks: JoinSet::new(),
        pods_by_node: Arc::default(),
        ctx,
    };
    let mut runs = Vec::new();
    for c in wanted(&settings) {
        runs.push((c.name, manager.set_up(c, &settings).await?));
    }
    let ctx = &manager.ctx;
    ctx.informers.start(ctx.token.clone());
    ctx.informers.wait_for_cache_sync().await;
    ctx.health.set_ready(true);
    tracing::info!(controllers = ?runs.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "caches synced; starting controllers");
    for (name, (token, run)) in runs {
        manager.spawn(name, token, run);
    }
    config.applied(first.version);

    let token = manager.ctx.token.clone();
    let mut watching = true;
    let mut failure = None;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            changed = config.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let snapshot = config.current();
                let next = Arc::new(in_force(&base, &snapshot));
                if next == settings {
                    config.applied(snapshot.version);
                    continue;
                }
                if next.enabled != settings.enabled {
                    warn_unimplemented(&next);
                }
                if let Err(e) = manager.apply(&settings, &next).await {
                    failure = Some(e);
                    token.cancel();
                    break;
                }
                settings = next;
                config.applied(snapshot.version);
            }
            Some(done) = manager.tasks.join_next_with_id() => {
                if let Err(e) = manager.finished(done) {
                    failure = Some(e);
                    token.cancel();
                    break;
                }
            }
        }
    }
    while let Some(done) = manager.tasks.join_next_with_id().await {
        if let Err(e) = manager.finished(done) {
            failure.get_or_insert(e);
        }
    }
    tracing::info!("controllers stopped");
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(controllers: &[&str]) -> ControllerSettings {
        let list: Vec<String> = controllers.iter().map(|s| s.to_string()).collect();
        ControllerSettings {
            enabled: crate::names::enabled(&list).expect("known names"),
            ..ControllerSettings::default()
        }
    }

    fn names(v: &[&'static str]) -> BTreeSet<&'static str> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_disabled_controller_stops_and_an_enabled_one_starts() {
        let old = settings(&["serviceaccount", "job"]);
        let new = settings(&["job", "deployment"]);
        let running = names(&["serviceaccount-controller", "job-controller"]);
        let (stop, start) = transition(&running, &old, &new);
        assert_eq!(stop, ["serviceaccount-controller"]);
        assert_eq!(start, ["deployment-controller"]);
    }

    #[test]
    fn a_controller_whose_settings_changed_is_restarted_and_the_others_keep_running() {
        let old = settings(&["job", "deployment", "podgc"]);
        let mut new = old.clone();
        new.concurrent_job_syncs = 9;
        let running = names(&[
            "job-controller",
            "deployment-controller",
            "pod-garbage-collector-controller",
        ]);
        let (stop, start) = transition(&running, &old, &new);
        assert_eq!(stop, ["job-controller"]);
        assert_eq!(start, ["job-controller"]);
        new.terminated_pod_gc_threshold = 1;
        let (stop, start) = transition(&running, &old, &new);
        assert_eq!(stop, ["job-controller", "pod-garbage-collector-controller"]);
        assert_eq!(
            start,
            ["pod-garbage-collector-controller", "job-controller"]
        );
    }

    #[test]
    fn enabled_controllers_ferrite_does_not_implement_are_not_started() {
        let old = settings(&["job"]);
        let new = settings(&["job", "namespace"]);
        let (stop, start) = transition(&names(&["job-controller"]), &old, &new);
        assert!(stop.is_empty() && start.is_empty(), "{stop:?} {start:?}");
    }

    #[test]
    fn unchanged_settings_change_nothing() {
        let s = settings(&["*"]);
        let running: BTreeSet<&'static str> = wanted(&s).map(|c| c.name).collect();
        let (stop, start) = transition(&running, &s, &s.clone());
        assert!(stop.is_empty() && start.is_empty());
    }

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
