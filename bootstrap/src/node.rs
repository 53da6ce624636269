//! `ferrite bootstrap up | recover | down`: one local node (containerd + runc + CNI + the stock
//! kubelet) running etcd and kube-apiserver as static pods, with Ferrite pivoted into its own
//! Deployments. Every step is idempotent: `up` on a running node only does what is missing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use serde::{Deserialize, Serialize};

use crate::certs::{self, ClusterIdentity};
use crate::host::{self, Daemon};
use crate::images::{self, Ctr, ImageSpec};
use crate::manifests::{self, ControlPlaneConfig};
use crate::node_config::{self, NodeConfig, NodePaths};
use crate::pivot::{self, ChartInstall};
use crate::stock;

/// Which node directory the host's one node lives in: the host-wide state (ports, the bridge,
/// cgroups, iptables chains) admits one node at a time.
pub const REGISTRY: &str = "/run/ferrite/node";
pub const APISERVER_PORT: u16 = 6443;

/// Everything `up` needs; the defaults are a user's.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub node_name: Option<String>,
    pub node_ip: Option<String>,
    pub pod_subnet: String,
    pub service_cidr: String,
    pub bridge: String,
    pub chart: PathBuf,
    pub ferrite: PathBuf,
    pub image_cache: PathBuf,
    pub timeout: Duration,
}

/// The binaries a node runs, from the stock cache.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub kubelet: PathBuf,
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub shim: PathBuf,
    pub helm: PathBuf,
    pub pause: PathBuf,
}

impl Binaries {
    pub fn from_cache() -> Binaries {
        Binaries {
            kubelet: stock::binary("kubelet"),
            kube_apiserver: stock::binary("kube-apiserver"),
            etcd: stock::binary("etcd"),
            containerd: stock::binary("containerd"),
            ctr: stock::binary("ctr"),
            shim: stock::binary("containerd-shim-runc-v2"),
            helm: stock::binary("helm"),
            pause: stock::binary("pause"),
        }
    }

    fn check(&self) -> Result<()> {
        let missing: Vec<String> = [
            &self.kubelet,
            &self.kube_apiserver,
            &self.etcd,
            &self.containerd,
            &self.ctr,
            &self.shim,
            &self.helm,
            &self.pause,
        ]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
        if !missing.is_empty() {
            bail!(
                "missing stock binaries (build them with `e2e/stock/build.sh kubernetes etcd helm node`): {}",
                missing.join(", ")
            );
        }
        Ok(())
    }
}

/// What `recover` and `down` need to find again, in `<dir>/node.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeState {
    pub node_name: String,
    pub node_ip: String,
    pub bridge: String,
    pub chart: PathBuf,
    pub ferrite: PathBuf,
    /// net.ipv4.ip_forward before the node set it (restored by `down`).
    pub ip_forward_before: Option<String>,
    /// Host paths outside the node directory that the kubelet, containerd and the CNI plugins
    /// create when absent; `down` removes those that were absent before `up`.
    pub host_paths_created: Vec<PathBuf>,
    /// Whether a `kubepods` cgroup existed before `up` (then `down` leaves it alone).
    pub kubepods_before: bool,
    /// KUBE-/CNI- iptables chains that existed before `up` (`down` leaves them alone).
    #[serde(default)]
    pub iptables_chains_before: Vec<String>,
}

/// Host paths the node's components create outside its directory (hard-coded in the kubelet,
/// containerd and libcni).
pub const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/cni",
    "/run/containerd",
    "/etc/cni",
    "/opt/cni",
];

fn state_path(dir: &Path) -> PathBuf {
    dir.join("node.json")
}

fn load_state(dir: &Path) -> Option<NodeState> {
    let text = std::fs::read_to_string(state_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn save_state(dir: &Path, state: &NodeState) -> Result<()> {
    std::fs::write(state_path(dir), serde_json::to_vec_pretty(state)?)?;
    Ok(())
}

fn registered_dir() -> Option<PathBuf> {
    std::fs::read_to_string(REGISTRY)
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| !p.as_os_str().is_empty())
}

fn daemons(dir: &Path) -> [Daemon; 2] {
    [Daemon::new("kubelet", dir), Daemon::new("containerd", dir)]
}

fn node_running(dir: &Path) -> bool {
    daemons(dir).iter().any(|d| d.pid().is_some())
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a local node needs root (containerd, runc, the kubelet, iptables)");
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()?.join(p))
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Unchanged files are left alone: the kubelet and containerd watch some of them.
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn elapsed(t: Instant) -> String {
    format!("{:.1}s", t.elapsed().as_secs_f64())
}

/// What `up` reports.
#[derive(Debug)]
pub struct UpReport {
    pub kubeconfig: PathBuf,
    pub pivot: pivot::PivotReport,
}

pub async fn up(opts: &UpOptions) -> Result<UpReport> {
    require_root()?;
    let started = Instant::now();
    let dir = absolute(&opts.dir)?;
    if let Some(other) = registered_dir()
        && other != dir
    {
        if node_running(&other) {
            bail!(
                "a Ferrite node already runs from {} (stop it with `ferrite bootstrap down --dir {}`)",
                other.display(),
                other.display()
            );
        }
        tracing::info!(dir = %other.display(), "removing the leftovers of a node that is gone");
        down(&other).await?;
    }
    host::ensure_packages(host::PACKAGES)?;
    let bins = Binaries::from_cache();
    bins.check()?;
    let chart = absolute(&opts.chart)?;
    if !chart.join("Chart.yaml").is_file() {
        bail!("{} is not a Helm chart (no Chart.yaml)", chart.display());
    }
    let ferrite = absolute(&opts.ferrite)?;
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all("/run/ferrite")?;
    std::fs::write(REGISTRY, dir.display().to_string())?;

    let fresh = load_state(&dir).is_none();
    let mut state = load_state(&dir).unwrap_or_default();
    if fresh {
        state.node_name = match &opts.node_name {
            Some(n) => n.clone(),
            None => gethostname::gethostname().to_string_lossy().to_lowercase(),
        };
        state.node_ip = match &opts.node_ip {
            Some(ip) => ip.clone(),
            None => host::default_node_ip()?,
        };
        state.bridge = opts.bridge.clone();
        state.ip_forward_before = host::read_ip_forward();
        state.host_paths_created = HOST_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        state.kubepods_before = !host::top_level_cgroups("kubepods").is_empty();
        state.iptables_chains_before = host::iptables_node_chains();
    }
    state.chart = chart.clone();
    state.ferrite = ferrite.clone();
    save_state(&dir, &state)?;
    let node_ip: IpAddr = state
        .node_ip
        .parse()
        .with_context(|| format!("node IP {:?}", state.node_ip))?;
    let paths = NodePaths::new(&dir);

    // PKI and kubeconfigs: generated once, kept across `up`s.
    let id = ClusterIdentity {
        cluster_name: "kubernetes".into(),
        node_name: state.node_name.clone(),
        node_ip,
        service_vip: first_address(&opts.service_cidr)?,
        dns_domain: "cluster.local".into(),
        apiserver_url: format!("https://{}", socket(node_ip, APISERVER_PORT)),
    };
    if !paths.pki().join("ca.crt").is_file() {
        for f in certs::generate(&id)? {
            write_file(&dir.join(&f.path), &f.contents, f.private)?;
        }
    }
    tracing::info!(elapsed = elapsed(started), "pki ready");

    // Images (built once per content, cached outside the node directory).
    let kube_v = stock::version("KUBERNETES_VERSION").unwrap_or("unpinned");
    let etcd_v = stock::version("ETCD_VERSION").unwrap_or("unpinned");
    let pause_tag = images::file_digest(&bins.pause)?[..12].to_string();
    let ferrite_tag = format!(
        "{}-{}",
        env!("CARGO_PKG_VERSION"),
        &images::file_digest(&ferrite)?[..12]
    );
    let image_specs = vec![
        ImageSpec::single_binary("pause", &pause_tag, &bins.pause, "/pause"),
        ImageSpec::single_binary("etcd", etcd_v, &bins.etcd, "/usr/local/bin/etcd"),
        ImageSpec::single_binary(
            "kube-apiserver",
            kube_v,
            &bins.kube_apiserver,
            "/usr/local/bin/kube-apiserver",
        ),
        images::with_shared_libraries("ferrite", &ferrite_tag, &ferrite, "/ferrite")?,
    ];
    let mut archives = Vec::new();
    for spec in &image_specs {
        archives.push(images::build(spec, &opts.image_cache)?);
    }
    tracing::info!(elapsed = elapsed(started), "images built");

    // containerd and the pod network.
    let config = NodeConfig {
        paths: paths.clone(),
        node_name: state.node_name.clone(),
        sandbox_image: image_specs[0].reference(),
        runc: PathBuf::from("/usr/sbin/runc"),
        cni_bin_dir: PathBuf::from("/usr/lib/cni"),
        pod_subnet: opts.pod_subnet.clone(),
        bridge: state.bridge.clone(),
        cluster_dns: nth_address(&opts.service_cidr, 10)?.to_string(),
        dns_domain: "cluster.local".into(),
    };
    // The CNI configuration must be there before containerd starts (it reads it at start-up
    // and the node stays NotReady without one).
    write_file(
        &paths.cni_conf_dir().join("10-ferrite.conflist"),
        &node_config::cni_conflist(&config),
        false,
    )?;
    let containerd_changed = std::fs::read_to_string(paths.containerd_config())
        .ok()
        .as_deref()
        != Some(node_config::containerd_toml(&config).as_str());
    write_file(
        &paths.containerd_config(),
        &node_config::containerd_toml(&config),
        false,
    )?;
    let [kubelet, containerd] = daemons(&dir);
    if containerd_changed && containerd.pid().is_some() {
        containerd.stop(Duration::from_secs(10));
    }
    if containerd.pid().is_none() {
        let mut cmd = Command::new(&bins.containerd);
        cmd.arg("--config").arg(paths.containerd_config());
        // containerd starts its shim by name from PATH.
        let path = format!(
            "{}:{}",
            bins.shim
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path);
        containerd.start(cmd, &paths.logs().join("containerd.log"))?;
    }
    let ctr = Ctr {
        binary: bins.ctr.clone(),
        socket: paths.containerd_socket(),
    };
    pivot::wait_for("containerd", Duration::from_secs(30), || async {
        ctr.images().map(|_| ()).map_err(|e| format!("{e:#}"))
    })
    .await?;
    for (spec, archive) in image_specs.iter().zip(&archives) {
        ctr.import(spec, archive, &dir.join("images"))?;
    }
    tracing::info!(elapsed = elapsed(started), "containerd up, images imported");

    // The static pods and the kubelet.
    let cp = ControlPlaneConfig {
        node_name: state.node_name.clone(),
        node_ip,
        apiserver_port: APISERVER_PORT,
        service_cidr: opts.service_cidr.clone(),
        dns_domain: "cluster.local".into(),
        pki_dir: paths.pki(),
        etcd_data_dir: paths.etcd_data(),
        etcd_image: image_specs[1].reference(),
        apiserver_image: image_specs[2].reference(),
    };
    write_file(
        &paths.manifests().join("etcd.yaml"),
        &manifests::to_yaml(&manifests::etcd_pod(&cp)),
        false,
    )?;
    write_file(
        &paths.manifests().join("kube-apiserver.yaml"),
        &manifests::to_yaml(&manifests::apiserver_pod(&cp)),
        false,
    )?;
    let kubelet_changed = std::fs::read_to_string(paths.kubelet_config())
        .ok()
        .as_deref()
        != Some(node_config::kubelet_config(&config).as_str());
    write_file(
        &paths.kubelet_config(),
        &node_config::kubelet_config(&config),
        false,
    )?;
    if kubelet_changed && kubelet.pid().is_some() {
        kubelet.stop(Duration::from_secs(10));
    }
    if kubelet.pid().is_none() {
        let mut cmd = Command::new(&bins.kubelet);
        cmd.args(node_config::kubelet_args(&config, &state.node_ip));
        kubelet.start(cmd, &paths.logs().join("kubelet.log"))?;
    }

    let super_admin = pivot::client(&dir.join("super-admin.conf")).await?;
    pivot::wait_for("the apiserver", opts.timeout, || async {
        if kubelet.pid().is_none() {
            return Err(format!(
                "the kubelet exited; last log lines:\n{}",
                host::tail(
                    &std::fs::read_to_string(paths.logs().join("kubelet.log")).unwrap_or_default(),
                    20
                )
            ));
        }
        pivot::apiserver_ready(&super_admin).await
    })
    .await?;
    tracing::info!(elapsed = elapsed(started), "apiserver ready");
    pivot::bind_cluster_admins(&super_admin).await?;
    let admin = pivot::client(&paths.admin_kubeconfig()).await?;
    let nodes: Api<Node> = Api::all(admin.clone());
    pivot::wait_for("the node to register", opts.timeout, || async {
        match nodes.get_opt(&state.node_name).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not registered yet".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;

    // The pivot.
    let values = dir.join("ferrite-values.yaml");
    write_file(
        &values,
        &pivot::single_node_values(
            &image_specs[3].repository,
            &image_specs[3].tag,
            &state.node_ip,
            APISERVER_PORT,
        ),
        false,
    )?;
    let install = ChartInstall {
        helm: bins.helm.clone(),
        chart,
        values,
        kubeconfig: paths.admin_kubeconfig(),
    };
    let report = pivot::ensure_ferrite(&admin, &install, &ferrite, &dir, opts.timeout).await?;
    tracing::info!(elapsed = elapsed(started), "Ferrite runs as Deployments");
    wait_mirror_pods(&admin, &state.node_name, opts.timeout).await?;
    tracing::info!(elapsed = elapsed(started), "node up");
    Ok(UpReport {
        kubeconfig: paths.admin_kubeconfig(),
        pivot: report,
    })
}

/// The static pods' mirror pods are Running and Ready (the kubelet posts them once their
/// priority class exists).
async fn wait_mirror_pods(client: &kube::Client, node: &str, timeout: Duration) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pivot::NAMESPACE);
    for name in ["etcd", "kube-apiserver"] {
        let pod = format!("{name}-{node}");
        pivot::wait_for(&format!("the mirror pod {pod}"), timeout, || async {
            match pods.get_opt(&pod).await {
                Ok(Some(p)) if pivot::pod_ready(&p) => Ok(()),
                Ok(_) => Err("not Running and Ready yet".into()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    Ok(())
}

/// Restores Ferrite's Deployments when no replica is left (or they were deleted): the chart is
/// applied again and the temporary control plane runs until the pods lead again.
pub async fn recover(dir: &Path, timeout: Duration) -> Result<pivot::PivotReport> {
    require_root()?;
    let dir = absolute(dir)?;
    let Some(state) = load_state(&dir) else {
        bail!(
            "no node in {} (run `ferrite bootstrap up` first)",
            dir.display()
        );
    };
    if !node_running(&dir) {
        bail!(
            "the node in {} is not running (run `ferrite bootstrap up --dir {}`)",
            dir.display(),
            dir.display()
        );
    }
    let paths = NodePaths::new(&dir);
    let admin = pivot::client(&paths.admin_kubeconfig()).await?;
    pivot::wait_for("the apiserver", timeout, || pivot::apiserver_ready(&admin)).await?;
    let install = ChartInstall {
        helm: Binaries::from_cache().helm,
        chart: state.chart.clone(),
        values: dir.join("ferrite-values.yaml"),
        kubeconfig: paths.admin_kubeconfig(),
    };
    pivot::ensure_ferrite(&admin, &install, &state.ferrite, &dir, timeout).await
}

/// Stops the node and removes every trace of it: its processes (the temporary control plane,
/// the kubelet, containerd, the shims and every container), mounts, pod cgroups, the bridge,
/// the kubelet's and the CNI plugins' iptables chains, ip_forward, the host directories the
/// components created, and the node directory itself. Safe to run twice, or on a node that
/// crashed half-way.
pub async fn down(dir: &Path) -> Result<()> {
    require_root()?;
    let dir = absolute(dir)?;
    // `up` records the state before it starts anything: without it there is no node here, at
    // most a directory, and nothing outside the directory is touched.
    let Some(state) = load_state(&dir) else {
        for d in daemons(&dir) {
            d.stop(Duration::from_secs(10));
        }
        host::unmount_under(&dir);
        if dir.join("pki").exists() || dir.join("containerd").exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        forget_registration(&dir);
        return Ok(());
    };
    let paths = NodePaths::new(&dir);
    let conf = |f: &str| format!("--kubeconfig={}", dir.join(f).display());
    for needle in [conf("controller-manager.conf"), conf("scheduler.conf")] {
        for pid in host::pids_with_cmdline(&needle) {
            host::signal_and_wait(pid, Duration::from_secs(5));
        }
    }
    let [kubelet, containerd] = daemons(&dir);
    kubelet.stop(Duration::from_secs(10));
    containerd.stop(Duration::from_secs(10));
    let shim_needle = format!("-address {}", paths.containerd_socket().display());
    for pid in host::pids_with_cmdline(&shim_needle) {
        host::signal_and_wait(pid, Duration::from_secs(2));
    }
    if !state.kubepods_before {
        host::remove_cgroup_trees(&host::top_level_cgroups("kubepods"));
    }
    host::unmount_under(&dir);
    for p in &state.host_paths_created {
        host::unmount_under(p);
    }
    if !state.bridge.is_empty() {
        let _ = host::run("ip", &["link", "del", &state.bridge]);
    }
    host::remove_iptables_chains(&state.iptables_chains_before);
    if let Some(v) = &state.ip_forward_before {
        host::write_ip_forward(v);
    }
    for p in &state.host_paths_created {
        let _ = std::fs::remove_dir_all(p);
    }
    if dir.exists() {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let left = host::mounts_under(&info, &dir);
        if !left.is_empty() {
            bail!(
                "mounts under {} could not be removed: {:?}",
                dir.display(),
                left
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    forget_registration(&dir);
    Ok(())
}

fn forget_registration(dir: &Path) {
    if registered_dir().as_deref() == Some(dir) {
        let _ = std::fs::remove_file(REGISTRY);
        let _ = std::fs::remove_dir("/run/ferrite");
    }
}

fn socket(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

/// The `n`-th address of a CIDR (1: the `kubernetes` Service, 10: cluster DNS, as kubeadm).
pub fn nth_address(cidr: &str, n: u32) -> Result<IpAddr> {
    let (base, bits) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr:?} is not a CIDR"))?;
    let base: std::net::Ipv4Addr = base
        .parse()
        .with_context(|| format!("{cidr:?}: only IPv4 service CIDRs are supported"))?;
    let bits: u32 = bits.parse().with_context(|| format!("{cidr:?}"))?;
    if bits > 30 {
        bail!("{cidr:?} is too small");
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    let net = u32::from(base) & mask;
    Ok(IpAddr::V4(std::net::Ipv4Addr::from(net + n)))
}

pub fn first_address(cidr: &str) -> Result<IpAddr> {
    nth_address(cidr, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_kubeconfigs_are_written_0600_and_the_rest_0644() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferrite-node-test-{}", std::process::id()));
        let id = ClusterIdentity {
            cluster_name: "kubernetes".into(),
            node_name: "node-a".into(),
            node_ip: "192.0.2.10".parse().expect("ip"),
            service_vip: "10.96.0.1".parse().expect("ip"),
            dns_domain: "cluster.local".into(),
            apiserver_url: "https://192.0.2.10:6443".into(),
        };
        for f in certs::generate(&id).expect("generate") {
            write_file(&dir.join(&f.path), &f.contents, f.private).expect("write");
        }
        let mode = |rel: &str| {
            std::fs::metadata(dir.join(rel))
                .expect("written")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("pki/ca.key"), 0o600);
        assert_eq!(mode("pki/etcd/peer.key"), 0o600);
        assert_eq!(mode("pki/sa.key"), 0o600);
        assert_eq!(mode("admin.conf"), 0o600);
        assert_eq!(mode("pki/ca.crt"), 0o644);
        assert_eq!(mode("pki/sa.pub"), 0o644);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn service_addresses_come_from_the_service_cidr() {
        assert_eq!(
            first_address("10.96.0.0/12").expect("vip").to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            nth_address("10.96.0.0/12", 10).expect("dns").to_string(),
            "10.96.0.10"
        );
        assert!(first_address("10.96.0.0").is_err());
        assert!(first_address("fd00::/108").is_err());
    }
}
