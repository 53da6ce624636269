//! `ferrite`: one binary, several components (hyperkube style).
//!
//!   ferrite controller-manager [flags]   kube-controller-manager's replacement
//!   ferrite scheduler [flags]            kube-scheduler's replacement
//!   ferrite bootstrap up|recover|down    a local self-hosted node (etcd and kube-apiserver as
//!                                        static pods, Ferrite as its own Deployments)
//!   ferrite crds [--output-dir DIR]      the CustomResourceDefinitions of Ferrite's
//!                                        configuration (config.ferrite.dev), as YAML

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferrite_runtime::component::{self, CommonOptions, ComponentSpec, EXIT_USAGE};
use ferrite_runtime::flags::{parse_duration_flag, parse_go_bool};
use ferrite_runtime::serving::{CONTROLLER_MANAGER_SECURE_PORT, SCHEDULER_SECURE_PORT};

#[derive(Parser)]
#[command(
    name = "ferrite",
    version,
    about = "Kubernetes' controller manager and scheduler, in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller manager (replaces kube-controller-manager).
    ControllerManager(Box<ControllerManagerArgs>),
    /// Run the scheduler (replaces kube-scheduler).
    Scheduler(Box<SchedulerArgs>),
    /// Bring up, recover or remove a self-hosted control plane on this machine.
    #[command(subcommand)]
    Bootstrap(BootstrapCommand),
    /// Print the CustomResourceDefinitions of Ferrite's configuration (ControllerConfiguration,
    /// SchedulerProfile), generated from their Rust types.
    Crds(CrdsArgs),
}

#[derive(Args)]
struct CrdsArgs {
    /// Write one file per CRD (`<group>_<plural>.yaml`) into this directory instead of printing
    /// them all to stdout.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum BootstrapCommand {
    /// Bring a local node up (containerd, runc, CNI, the kubelet; etcd and kube-apiserver as
    /// static pods) and pivot Ferrite into its own Deployments. Idempotent.
    Up(UpArgs),
    /// Restore Ferrite's Deployments when no replica is left, with a temporary control plane.
    Recover(RecoverArgs),
    /// Stop the node and remove all of its state from the host.
    Down(DirArgs),
}

#[derive(Args)]
struct DirArgs {
    /// The node's state directory (PKI, kubeconfigs, manifests, containerd, kubelet, etcd).
    #[arg(long, default_value = "/var/lib/ferrite")]
    dir: PathBuf,
}

#[derive(Args)]
struct RecoverArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// How long to wait for each stage, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The node's name (default: the host name, lower-cased).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address and the apiserver's advertise address (default: the source address
    /// of the default route).
    #[arg(long)]
    node_ip: Option<String>,
    /// This node's pod subnet (the CNI bridge's addresses).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_subnet: String,
    /// The service CIDR (--service-cluster-ip-range).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// The Linux bridge of the pod network.
    #[arg(long, default_value = "ferrite0")]
    bridge: String,
    /// The Ferrite Helm chart (default: charts/ferrite of the checkout this binary or the
    /// current directory is in).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Where built image archives are cached (default: images/ under the stock cache).
    #[arg(long)]
    image_cache: Option<PathBuf>,
    /// How long to wait for each stage, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
struct ControllerManagerArgs {
    #[command(flatten)]
    common: CommonOptions,
    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo' enables
    /// the controller named 'foo', '-foo' disables the controller named 'foo'.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Give each controller its own service account credentials (upstream default false; kubeadm
    /// sets true).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    use_service_account_credentials: bool,
    /// CA bundle published to every namespace as kube-root-ca.crt; empty or unset: the CA this
    /// process's client configuration trusts.
    #[arg(long, value_parser = path_or_empty)]
    root_ca_file: Option<PathBuf>,
    /// Key used to sign service account tokens.
    #[arg(long)]
    service_account_private_key_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_cert_file: Option<PathBuf>,
    #[arg(long)]
    cluster_signing_key_file: Option<PathBuf>,
    #[arg(long, default_value = "kubernetes")]
    cluster_name: String,
    #[arg(long)]
    cluster_cidr: Option<String>,
    #[arg(long)]
    service_cluster_ip_range: Option<String>,
    /// Should CIDRs for Pods be allocated and set on the cloud provider. Requires --cluster-cidr.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    allocate_node_cidrs: bool,
    /// Type of CIDR allocator to use.
    #[arg(long, default_value = "RangeAllocator")]
    cidr_allocator_type: String,
    /// Mask size for node cidr in cluster. Default is 24 for IPv4 and 64 for IPv6.
    #[arg(long, default_value_t = 0)]
    node_cidr_mask_size: i32,
    /// Mask size for IPv4 node cidr in dual-stack cluster. Default is 24.
    #[arg(long = "node-cidr-mask-size-ipv4", default_value_t = 0)]
    node_cidr_mask_size_ipv4: i32,
    /// Mask size for IPv6 node cidr in dual-stack cluster. Default is 64.
    #[arg(long = "node-cidr-mask-size-ipv6", default_value_t = 0)]
    node_cidr_mask_size_ipv6: i32,
    /// Number of terminated pods that can exist before the terminated pod garbage collector
    /// starts deleting terminated pods. If <= 0, the terminated pod garbage collector is disabled.
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: i64,
    /// The period for syncing NodeStatus in NodeLifecycleController.
    #[arg(long, default_value = "5s", value_parser = parse_duration_flag)]
    node_monitor_period: Duration,
    /// Amount of time which we allow running Node to be unresponsive before marking it unhealthy.
    /// Must be N times more than kubelet's nodeStatusUpdateFrequency, where N means number of
    /// retries allowed for kubelet to post node status. This value should also be greater than
    /// the sum of HTTP2_PING_TIMEOUT_SECONDS and HTTP2_READ_IDLE_TIMEOUT_SECONDS.
    #[arg(long, default_value = "50s", value_parser = parse_duration_flag)]
    node_monitor_grace_period: Duration,
    /// Amount of time which we allow starting Node to be unresponsive before marking it
    /// unhealthy.
    #[arg(long, default_value = "1m0s", value_parser = parse_duration_flag)]
    node_startup_grace_period: Duration,
    /// Number of nodes per second on which pods are deleted in case of node failure when a zone
    /// is healthy (see --unhealthy-zone-threshold for definition of healthy/unhealthy). Zone
    /// refers to entire cluster in non-multizone clusters.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    node_eviction_rate: f32,
    /// Number of nodes per second on which pods are deleted in case of node failure when a zone
    /// is unhealthy (see --unhealthy-zone-threshold for definition of healthy/unhealthy). Zone
    /// refers to entire cluster in non-multizone clusters. This value is implicitly overridden
    /// to 0 if the cluster size is smaller than --large-cluster-size-threshold.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    secondary_node_eviction_rate: f32,
    /// Number of nodes from which node-lifecycle-controller treats the cluster as large for the
    /// eviction logic purposes. --secondary-node-eviction-rate is implicitly overridden to 0 for
    /// clusters this size or smaller.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    large_cluster_size_threshold: i32,
    /// Fraction of Nodes in a zone which needs to be not Ready (minimum 3) for zone to be
    /// treated as unhealthy.
    #[arg(long, default_value_t = 0.55, allow_negative_numbers = true)]
    unhealthy_zone_threshold: f32,
    /// The number of deployment objects that are allowed to sync concurrently.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_deployment_syncs: i32,
    /// The number of replica sets that are allowed to sync concurrently.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_replicaset_syncs: i32,
    /// The number of job objects that are allowed to sync concurrently.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_job_syncs: i32,
    /// The number of cron job objects that are allowed to sync concurrently.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_cron_job_syncs: i32,
    /// The number of garbage collector workers that are allowed to sync concurrently.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_gc_syncs: i32,
    /// The number of TTL-after-finished controller workers that are allowed to sync
    /// concurrently.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    concurrent_ttl_after_finished_syncs: i32,
    /// klog verbosity; maps onto log levels (RUST_LOG overrides).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

#[derive(Args)]
struct SchedulerArgs {
    #[command(flatten)]
    common: CommonOptions,
    /// Path to a KubeSchedulerConfiguration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// klog verbosity; maps onto log levels (RUST_LOG overrides).
    #[arg(short = 'v', long = "v", default_value_t = 2)]
    verbosity: u8,
}

// glibc's malloc keeps per-thread arenas that hold on to freed memory; mimalloc returns it, and
// peak RSS is one of the figures Ferrite is measured on.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONTROLLER_MANAGER: ComponentSpec = ComponentSpec {
    name: "controller-manager",
    lease_name: "ferrite-controller-manager",
    secure_port: CONTROLLER_MANAGER_SECURE_PORT,
    qps: 20.0,
    burst: 30,
    cert_pair_name: "kube-controller-manager",
};

const SCHEDULER: ComponentSpec = ComponentSpec {
    name: "scheduler",
    lease_name: "ferrite-scheduler",
    secure_port: SCHEDULER_SECURE_PORT,
    qps: 50.0,
    burst: 100,
    cert_pair_name: "kube-scheduler",
};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        EXIT_USAGE
                    } else {
                        0
                    },
                );
            }
            // One clear line, as the design asks: clap's first line names the flag and the problem.
            let text = e.to_string();
            eprintln!(
                "ferrite: {}",
                text.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            std::process::exit(EXIT_USAGE);
        }
    };
    let code = match cli.command {
        Command::ControllerManager(args) => controller_manager(*args),
        Command::Scheduler(args) => scheduler(*args),
        Command::Bootstrap(cmd) => bootstrap(cmd),
        Command::Crds(args) => crds(args),
    };
    std::process::exit(code);
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferrite: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// A path flag that may be given empty (`--root-ca-file=`), which Go flags allow.
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

fn controller_manager(mut args: ControllerManagerArgs) -> i32 {
    // An empty path is unset, as with upstream's string flags.
    args.root_ca_file = args.root_ca_file.filter(|p| !p.as_os_str().is_empty());
    // Validate everything before anything starts.
    let enabled = match ferrite_controllers::names::enabled(&args.controllers) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ferrite controller-manager: {e}");
            return EXIT_USAGE;
        }
    };
    for (flag, path) in [
        ("--root-ca-file", &args.root_ca_file),
        (
            "--service-account-private-key-file",
            &args.service_account_private_key_file,
        ),
    ] {
        if let Some(p) = path
            && !p.is_file()
        {
            eprintln!(
                "ferrite controller-manager: {flag}: {} does not exist",
                p.display()
            );
            return EXIT_USAGE;
        }
    }
    // Upstream accepts a zero period and then checks node health in a busy loop.
    if args.node_monitor_period.is_zero() {
        eprintln!("ferrite controller-manager: --node-monitor-period must be greater than zero");
        return EXIT_USAGE;
    }
    for (flag, value) in [
        ("--node-eviction-rate", args.node_eviction_rate),
        (
            "--secondary-node-eviction-rate",
            args.secondary_node_eviction_rate,
        ),
        ("--unhealthy-zone-threshold", args.unhealthy_zone_threshold),
    ] {
        if !value.is_finite() {
            eprintln!("ferrite controller-manager: {flag}: {value} is not a finite number");
            return EXIT_USAGE;
        }
    }
    let ipam_flags = ferrite_controllers::node_ipam::config::NodeIpamFlags {
        allocate_node_cidrs: args.allocate_node_cidrs,
        cidr_allocator_type: args.cidr_allocator_type.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        service_cluster_ip_range: args.service_cluster_ip_range.clone(),
        node_cidr_mask_size: args.node_cidr_mask_size,
        node_cidr_mask_size_ipv4: args.node_cidr_mask_size_ipv4,
        node_cidr_mask_size_ipv6: args.node_cidr_mask_size_ipv6,
    };
    // Upstream checks the CIDRs only when it starts the node-ipam controller.
    let node_ipam = if enabled.contains(ferrite_controllers::node_ipam::NAME) {
        ipam_flags.config()
    } else {
        ipam_flags.validate().map(|()| None)
    };
    let node_ipam = match node_ipam {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrite controller-manager: {e}");
            return EXIT_USAGE;
        }
    };
    let options = ferrite_controllers::manager::ManagerOptions {
        root_ca_file: args.root_ca_file.clone(),
        cluster_name: args.cluster_name.clone(),
        use_service_account_credentials: args.use_service_account_credentials,
        client_ca: None,
        node_ipam,
    };
    // The flags are the base; the ControllerConfiguration named `default` overrides them while
    // the manager runs. The value parsers keep the counts at 1 or more.
    let count = |n: i32| usize::try_from(n).unwrap_or(1);
    let settings = ferrite_controllers::configuration::ControllerSettings {
        node_lifecycle: ferrite_controllers::configuration::NodeLifecycleSettings {
            node_monitor_period: args.node_monitor_period,
            node_monitor_grace_period: args.node_monitor_grace_period,
            node_startup_grace_period: args.node_startup_grace_period,
            node_eviction_rate: args.node_eviction_rate,
            secondary_node_eviction_rate: args.secondary_node_eviction_rate,
            large_cluster_size_threshold: args.large_cluster_size_threshold,
            unhealthy_zone_threshold: args.unhealthy_zone_threshold,
        },
        enabled,
        concurrent_deployment_syncs: count(args.concurrent_deployment_syncs),
        concurrent_replicaset_syncs: count(args.concurrent_replicaset_syncs),
        concurrent_job_syncs: count(args.concurrent_job_syncs),
        concurrent_cron_job_syncs: count(args.concurrent_cron_job_syncs),
        concurrent_gc_syncs: count(args.concurrent_gc_syncs),
        concurrent_ttl_after_finished_syncs: count(args.concurrent_ttl_after_finished_syncs),
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
    };
    component::init_logging(args.verbosity);
    runtime().block_on(component::run(
        &CONTROLLER_MANAGER,
        args.common,
        move |ctx| ferrite_controllers::manager::run(ctx, settings, options),
    ))
}

/// The CRDs `ferrite crds` prints: (file name, YAML document).
fn crd_documents() -> Result<Vec<(String, String)>, String> {
    use ferrite_controllers::configuration::ControllerConfiguration;
    use ferrite_scheduler::profiles::SchedulerProfile;
    use kube::CustomResourceExt;
    [ControllerConfiguration::crd(), SchedulerProfile::crd()]
        .into_iter()
        .map(|crd| {
            let file = format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural);
            let yaml = serde_yaml::to_string(&crd).map_err(|e| e.to_string())?;
            Ok((
                file,
                format!(
                    "# Generated by `ferrite crds` from Ferrite's Rust types; do not edit.\n{yaml}"
                ),
            ))
        })
        .collect()
}

fn crds(args: CrdsArgs) -> i32 {
    let written = crd_documents().and_then(|docs| match &args.output_dir {
        None => {
            print!("{}", yaml_stream(&docs));
            Ok(())
        }
        Some(dir) => write_crds(dir, &docs),
    });
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferrite crds: {e}");
            1
        }
    }
}

/// Every CRD as one YAML stream (what `ferrite crds` prints).
fn yaml_stream(docs: &[(String, String)]) -> String {
    let all: Vec<&str> = docs.iter().map(|(_, yaml)| yaml.as_str()).collect();
    all.join("---\n")
}

/// One file per CRD in `dir` (what `ferrite crds --output-dir` writes).
fn write_crds(dir: &std::path::Path, docs: &[(String, String)]) -> Result<(), String> {
    for (file, yaml) in docs {
        let path = dir.join(file);
        std::fs::write(&path, yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `charts/ferrite` in the first ancestor of the current directory or of this binary that has
/// one (a checkout's `target/debug/ferrite` finds its own chart).
fn find_chart() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    [cwd, exe]
        .into_iter()
        .flatten()
        .flat_map(|start| {
            start
                .ancestors()
                .map(|d| d.join("charts").join("ferrite"))
                .collect::<Vec<_>>()
        })
        .find(|c| c.join("Chart.yaml").is_file())
}

fn bootstrap(cmd: BootstrapCommand) -> i32 {
    use ferrite_bootstrap::node;
    use std::time::Duration;
    // Bootstrap polls an apiserver that is still starting: the client's own error logs of each
    // refused attempt are noise (the wait reports the last reason when it gives up).
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("RUST_LOG", "info,kube_client=off") };
    }
    component::init_logging(2);
    let fail = |e: anyhow::Error| {
        eprintln!("ferrite bootstrap: {e:#}");
        1
    };
    match cmd {
        BootstrapCommand::Up(args) => {
            let Some(chart) = args.chart.or_else(find_chart) else {
                eprintln!("ferrite bootstrap up: --chart: no charts/ferrite found; pass --chart");
                return EXIT_USAGE;
            };
            let ferrite = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ferrite bootstrap up: cannot find this binary: {e}");
                    return 1;
                }
            };
            let opts = node::UpOptions {
                dir: args.dir.dir.clone(),
                node_name: args.node_name,
                node_ip: args.node_ip,
                pod_subnet: args.pod_subnet,
                service_cidr: args.service_cidr,
                bridge: args.bridge,
                chart,
                ferrite,
                image_cache: args
                    .image_cache
                    .unwrap_or_else(|| ferrite_bootstrap::stock::cache_root().join("images")),
                timeout: Duration::from_secs(args.timeout),
            };
            match runtime().block_on(node::up(&opts)) {
                Ok(report) => {
                    println!("export KUBECONFIG={}", report.kubeconfig.display());
                    0
                }
                Err(e) => fail(e),
            }
        }
        BootstrapCommand::Recover(args) => {
            match runtime().block_on(node::recover(
                &args.dir.dir,
                Duration::from_secs(args.timeout),
            )) {
                Ok(report) => {
                    for (component, st) in report.statuses {
                        println!(
                            "ferrite-{component}: {}/{} ready, leader {}",
                            st.ready,
                            st.desired,
                            st.leader_pod.unwrap_or_default()
                        );
                    }
                    0
                }
                Err(e) => fail(e),
            }
        }
        BootstrapCommand::Down(args) => match runtime().block_on(node::down(&args.dir)) {
            Ok(()) => 0,
            Err(e) => fail(e),
        },
    }
}

fn scheduler(mut args: SchedulerArgs) -> i32 {
    let config = match &args.config {
        None => ferrite_scheduler::config::SchedulerConfig::default(),
        Some(path) => {
            let loaded = std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    ferrite_scheduler::config::parse(&text).map_err(|e| e.to_string())
                });
            match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferrite scheduler: --config {}: {e}", path.display());
                    return EXIT_USAGE;
                }
            }
        }
    };
    if args.config.is_some()
        && let Err(e) = apply_scheduler_config(&config, &mut args.common)
    {
        eprintln!("ferrite scheduler: --config: {e}");
        return EXIT_USAGE;
    }
    component::init_logging(args.verbosity);
    runtime().block_on(component::run(&SCHEDULER, args.common, move |ctx| {
        ferrite_scheduler::run_with(ctx, config)
    }))
}

/// With `--config`, the client connection and leader election come from the file, as
/// kube-scheduler's options do (cmd/kube-scheduler/app/options: the deprecated `--kubeconfig`,
/// `--kube-api-qps`, `--kube-api-burst` flags are then ignored; unset file fields take the v1
/// defaults).
fn apply_scheduler_config(
    config: &ferrite_scheduler::config::SchedulerConfig,
    common: &mut CommonOptions,
) -> Result<(), String> {
    let cc = &config.client_connection;
    common.client.kubeconfig = cc
        .kubeconfig
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(PathBuf::from);
    common.client.kube_api_qps = Some(cc.qps.unwrap_or(SCHEDULER.qps));
    common.client.kube_api_burst = Some(
        cc.burst
            .map(|b| u32::try_from(b).map_err(|_| format!("clientConnection.burst: {b}")))
            .transpose()?
            .unwrap_or(SCHEDULER.burst),
    );
    let le = &config.leader_election;
    let defaults = ferrite_runtime::leader_election::LeaderElectionOptions::default();
    let duration = |field: &str, v: &Option<String>, default| match v {
        Some(v) => ferrite_runtime::flags::parse_duration_flag(v)
            .map_err(|e| format!("leaderElection.{field}: {e}")),
        None => Ok(default),
    };
    common.leader_election = ferrite_runtime::leader_election::LeaderElectionOptions {
        leader_elect: le.leader_elect.unwrap_or(true),
        lease_duration: duration("leaseDuration", &le.lease_duration, defaults.lease_duration)?,
        renew_deadline: duration("renewDeadline", &le.renew_deadline, defaults.renew_deadline)?,
        retry_period: duration("retryPeriod", &le.retry_period, defaults.retry_period)?,
        resource_lock: le.resource_lock.clone().unwrap_or(defaults.resource_lock),
        resource_name: le.resource_name.clone().filter(|n| !n.is_empty()),
        resource_namespace: le
            .resource_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or(defaults.resource_namespace),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    fn yaml_files(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    }

    /// `crds/` and the chart's copy are exactly what `ferrite crds --output-dir` writes: a type
    /// changed without regenerating them fails here, naming the stale file and the fix.
    #[test]
    fn the_committed_crds_are_what_ferrite_crds_generates() {
        let generated = tempfile::tempdir().expect("a temporary directory");
        let docs = crd_documents().expect("the CRDs serialize");
        write_crds(generated.path(), &docs).expect("written");
        let want = yaml_files(generated.path());
        assert_eq!(
            want,
            BTreeSet::from([
                "config.ferrite.dev_controllerconfigurations.yaml".to_string(),
                "config.ferrite.dev_schedulerprofiles.yaml".to_string(),
            ])
        );
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for committed in ["crds", "charts/ferrite/crds"] {
            let dir = repo.join(committed);
            assert_eq!(
                yaml_files(&dir),
                want,
                "{committed}/ holds other CRD files than `ferrite crds` generates; run `cargo run -- crds --output-dir {committed}` and remove the others"
            );
            for file in &want {
                let fresh =
                    std::fs::read_to_string(generated.path().join(file)).expect("generated");
                let old = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                assert!(
                    old == fresh,
                    "{committed}/{file} is stale: run `cargo run -- crds --output-dir {committed}`"
                );
            }
        }
    }

    #[test]
    fn ferrite_crds_prints_every_crd_as_one_yaml_stream() {
        let text = yaml_stream(&crd_documents().expect("the CRDs serialize"));
        let docs: Vec<&str> = text.split("\n---\n").collect();
        assert_eq!(docs.len(), 2, "{text}");
        for (doc, name) in docs.iter().zip([
            "controllerconfigurations.config.ferrite.dev",
            "schedulerprofiles.config.ferrite.dev",
        ]) {
            assert!(doc.contains("kind: CustomResourceDefinition"), "{doc}");
            assert!(doc.contains(&format!("name: {name}")), "{doc}");
            assert!(doc.contains("scope: Cluster"), "{doc}");
        }
    }
}
