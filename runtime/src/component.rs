//! What `ferrite controller-manager` and `ferrite scheduler` share around their own work: the
//! client, `/healthz` `/readyz` `/metrics` on the secure port, signals, and leader election.
//! The component's work runs only while this process leads.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::client::ClientOptions;
use crate::events::EventRecorder;
use crate::informer::InformerFactory;
use crate::leader_election::{self, LeaderElectionMetrics, LeaderElectionOptions};
use crate::metrics::SharedRegistry;
use crate::serving::{Health, SecureServer, ServingOptions};

/// The flags every component has, with upstream names.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonOptions {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(flatten)]
    pub leader_election: LeaderElectionOptions,
    #[command(flatten)]
    pub serving: ServingOptions,
}

/// Per-component defaults.
pub struct ComponentSpec {
    /// `controller-manager` or `scheduler`.
    pub name: &'static str,
    /// Lease name when `--leader-elect-resource-name` is unset.
    pub lease_name: &'static str,
    /// `--secure-port` default (10257 / 10259).
    pub secure_port: u16,
    /// Client-side QPS and burst defaults (kube-controller-manager 20/30, kube-scheduler 50/100).
    pub qps: f32,
    pub burst: u32,
    /// File names upstream uses in `--cert-dir` (`kube-controller-manager`, `kube-scheduler`).
    pub cert_pair_name: &'static str,
}

/// What the component's work gets while it leads.
pub struct Context {
    pub client: kube::Client,
    /// The connection the client was built from, and its client-side limits, for clients with
    /// other credentials (`--use-service-account-credentials`).
    pub config: kube::Config,
    pub qps: f32,
    pub burst: u32,
    pub registry: SharedRegistry,
    pub health: Health,
    pub informers: Arc<InformerFactory>,
    pub events: EventRecorder,
    /// Cancelled when leadership ends or the process shuts down.
    pub token: CancellationToken,
}

/// Exit codes: 0 clean shutdown, 1 failure while running (lost lease, work failed), 2 bad flags
/// or configuration (nothing was started).
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Runs a component until SIGTERM/SIGINT or a lost lease, returning the process exit code.
pub async fn run<F, Fut>(spec: &ComponentSpec, opts: CommonOptions, work: F) -> i32
where
    F: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let config = match opts.leader_election.clone().into_config(spec.lease_name) {
        Ok(c) => c,
        Err(e) => return usage(spec, e),
    };
    let user_agent = format!("ferrite-{}/{}", spec.name, env!("CARGO_PKG_VERSION"));
    let kube_config = match opts.client.config(&user_agent).await {
        Ok(c) => c,
        Err(e) => return usage(spec, e),
    };
    let (qps, burst) = opts.client.limits(spec.qps, spec.burst);
    let client = match crate::client::rate_limited_client(kube_config.clone(), qps, burst) {
        Ok(c) => c,
        Err(e) => return usage(spec, e),
    };
    let registry = SharedRegistry::default();
    let health = Health::new();
    let metrics = LeaderElectionMetrics::register_shared(&registry);
    if config.leader_elect {
        let adaptor = config.healthz.clone();
        health.add_check(
            leader_election::HealthzAdaptor::NAME,
            Arc::new(move || adaptor.health_check()),
        );
    }
    let mut serving = opts.serving.clone();
    serving
        .cert_pair_name
        .get_or_insert_with(|| spec.cert_pair_name.to_string());
    let server = match SecureServer::bind(
        &serving,
        spec.secure_port,
        client.clone(),
        registry.clone(),
        health.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferrite {}: {e}", spec.name);
            return EXIT_FAILURE;
        }
    };
    // A standby has started no informers, so it has nothing to sync and is ready, as upstream's
    // informer-sync check over a factory with nothing started passes: a Deployment of two
    // replicas reads 2/2, and the standby keeps receiving traffic to its secure port. Leading
    // makes it unready until its own caches have synced (the work sets it ready again).
    if config.leader_elect {
        health.set_ready(true);
    }
    let shutdown = crate::shutdown::on_signals();
    if let Some(server) = server {
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = server.run(token).await {
                tracing::error!(error = %e, "secure serving stopped");
            }
        });
    }

    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let failed = failure.clone();
    let events_token = shutdown.clone();
    let work_client = client.clone();
    let work_registry = registry.clone();
    let work_health = health.clone();
    // Upstream gives leader election a client of its own, so a busy controller or scheduler
    // never starves the lease renewals of its rate limit.
    let election_client = match crate::client::rate_limited_client(kube_config.clone(), qps, burst)
    {
        Ok(c) => c,
        Err(e) => return usage(spec, e),
    };
    let result = leader_election::run(
        election_client,
        config,
        metrics,
        shutdown,
        move |token| async move {
            work_health.set_ready(false);
            let informers = InformerFactory::new(work_client.clone());
            let events = EventRecorder::with_shutdown(
                work_client.clone(),
                spec_component_name(),
                events_token,
            );
            let ctx = Context {
                client: work_client,
                config: kube_config,
                qps,
                burst,
                registry: work_registry,
                health: work_health,
                informers,
                events,
                token,
            };
            if let Err(e) = work(ctx).await {
                tracing::error!(error = %e, "component failed");
                if let Ok(mut f) = failed.lock() {
                    *f = Some(e);
                }
            }
        },
    )
    .await;
    match result {
        Ok(()) => match failure.lock().ok().and_then(|f| f.clone()) {
            Some(e) => {
                eprintln!("ferrite {}: {e}", spec.name);
                EXIT_FAILURE
            }
            None => 0,
        },
        // Upstream exits on a lost lease ("leaderelection lost") so a standby takes over with
        // fresh caches; the same for any other election failure.
        Err(e) => {
            eprintln!("ferrite {}: {e}", spec.name);
            EXIT_FAILURE
        }
    }
}

// The recorder's default component; each controller sets its own with `for_controller`.
fn spec_component_name() -> &'static str {
    "ferrite"
}

fn usage(spec: &ComponentSpec, e: impl std::fmt::Display) -> i32 {
    eprintln!("ferrite {}: {e}", spec.name);
    EXIT_USAGE
}

/// Sets up logging: `RUST_LOG` when set, else klog-style `--v` (0–2 info, 3–4 debug, 5+ trace).
pub fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0..=2 => "info",
        3..=4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default},kube_client=warn,hyper=warn,rustls=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
