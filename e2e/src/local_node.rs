//! A real local node for cluster e2e tests: `ferrite bootstrap up` in a directory of the test's
//! own, taken down when the test ends (also when it fails), and the checks that Ferrite hosts
//! itself there. Needs root; the stock components are built (or found cached) by
//! `e2e/stock/build.sh`, the Debian packages are installed by `ferrite bootstrap up` itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::stock;

pub const NAMESPACE: &str = "kube-system";
pub const REGISTRY: &str = "/run/ferrite/node";
/// Node directories of these tests start with this (short: containerd's socket paths must fit a
/// sockaddr_un).
pub const DIR_PREFIX: &str = "/tmp/ferrite-e2e-node-";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

pub fn ferrite() -> PathBuf {
    stock::ferrite_binary()
}

/// Runs `ferrite bootstrap <args>`, returning stdout; stderr (the progress log) is kept for the
/// error.
pub fn bootstrap(args: &[&str]) -> Result<String> {
    let started = Instant::now();
    let out = Command::new(ferrite())
        .arg("bootstrap")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} bootstrap", ferrite().display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "ferrite bootstrap {} took {:.1}s:\n{stderr}",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    ensure!(
        out.status.success(),
        "ferrite bootstrap {} failed ({}):\n{stderr}",
        args.join(" "),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The stock components a node needs, built (or found cached) by build.sh; a failed build fails
/// the test with its output.
pub fn build_stock() -> Result<()> {
    let out = Command::new(repo_root().join("e2e/stock/build.sh"))
        .args(["kubernetes", "etcd", "helm", "node"])
        .output()
        .context("running e2e/stock/build.sh")?;
    ensure!(
        out.status.success(),
        "e2e/stock/build.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Takes the node down when the test ends, however it ends.
pub struct NodeGuard {
    pub dir: PathBuf,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if self.dir.exists() {
            let dir = self.dir.display().to_string();
            if let Err(e) = bootstrap(&["down", "--dir", &dir]) {
                eprintln!("cleaning up the node failed: {e:#}");
            }
        }
    }
}

/// A node left by an earlier run of this test that was killed is this test's to remove; any
/// other running node belongs to a user.
pub fn clear_leftovers() -> Result<()> {
    let Ok(dir) = std::fs::read_to_string(REGISTRY) else {
        return Ok(());
    };
    let dir = dir.trim();
    if dir.starts_with(DIR_PREFIX) {
        bootstrap(&["down", "--dir", dir])?;
        return Ok(());
    }
    let running = Path::new(dir).join("kubelet.pid").exists();
    ensure!(
        !running,
        "a Ferrite node from e2e/cluster-up.sh runs in {dir}; stop it (`ferrite bootstrap down --dir {dir}`) before running this test"
    );
    Ok(())
}

pub async fn client(dir: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.conf"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

pub fn running_and_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else {
        return false;
    };
    s.phase.as_deref() == Some("Running")
        && p.metadata.deletion_timestamp.is_none()
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub fn selector(component: &str) -> String {
    format!("app.kubernetes.io/instance=ferrite,app.kubernetes.io/component={component}")
}

/// Both Ferrite Deployments are 2/2 (status written by Ferrite's own deployment controller),
/// every replica Running and Ready, and each Lease held by one of the component's pods.
pub async fn ferrite_is_self_hosted(client: &kube::Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    for component in ["controller-manager", "scheduler"] {
        let name = format!("ferrite-{component}");
        let d = deployments.get(&name).await?;
        let status = d.status.unwrap_or_default();
        ensure!(
            d.spec.replicas == Some(2)
                && status.ready_replicas == Some(2)
                && status.available_replicas == Some(2),
            "{name} is not 2/2: {status:?}"
        );
        let list = pods
            .list(&ListParams::default().labels(&selector(component)))
            .await?;
        let ready: Vec<String> = list
            .items
            .iter()
            .filter(|p| running_and_ready(p))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        ensure!(ready.len() == 2, "{name}: Running and Ready pods {ready:?}");
        let holder = leases
            .get(&name)
            .await?
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        let host = holder.rsplit_once('_').map(|(h, _)| h).unwrap_or_default();
        ensure!(
            ready.iter().any(|p| p == host),
            "Lease {name} is held by {holder:?}, not by one of {ready:?}"
        );
    }
    Ok(())
}

pub async fn wait_self_hosted(client: &kube::Client, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match ferrite_is_self_hosted(client).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(report(client, NAMESPACE).await));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Root, the stock components and the `ferrite` binary are there, and no node of an earlier,
/// killed run of these tests is left. Run before anything else touches the host.
pub fn prepare() -> Result<()> {
    crate::testing::init_logging();
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "a local node needs root (containerd, runc, the kubelet, iptables)"
    );
    enough_disk(Path::new(DIR_PREFIX).parent().unwrap_or(Path::new("/")))?;
    build_stock()?;
    ensure!(
        ferrite().is_file(),
        "{} is missing: build it with `cargo build --bin ferrite`",
        ferrite().display()
    );
    clear_leftovers()
}

/// Below 1 % free the node's kubelet reports DiskPressure (its eviction threshold here), the node
/// gets the `disk-pressure` NoSchedule taint and user pods stay Pending: say so up front rather
/// than as a scheduling failure minutes later.
fn enough_disk(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    ensure!(
        unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0,
        "statvfs {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    let free = st.f_bavail as f64 * st.f_frsize as f64;
    let total = st.f_blocks as f64 * st.f_frsize as f64;
    ensure!(
        total > 0.0 && free / total >= 0.02,
        "the disk holding {} has {:.1} GiB of {:.1} GiB free (under 2 %): the node's kubelet would report DiskPressure and taint the node; free some space first",
        dir.display(),
        free / f64::from(1u32 << 30),
        total / f64::from(1u32 << 30)
    );
    Ok(())
}

/// A node brought up by `ferrite bootstrap up` in a directory of its own; down on drop.
pub struct LocalNode {
    pub dir: PathBuf,
    pub client: kube::Client,
    /// What `up` printed on stdout.
    pub up_output: String,
    pub guard: NodeGuard,
}

impl LocalNode {
    pub async fn up() -> Result<LocalNode> {
        let dir = PathBuf::from(format!("{DIR_PREFIX}{}", std::process::id()));
        let guard = NodeGuard { dir: dir.clone() };
        let dir_s = dir.display().to_string();
        let chart = repo_root().join("charts/ferrite").display().to_string();
        let up_output = bootstrap(&["up", "--dir", &dir_s, "--chart", &chart])?;
        let client = client(&dir).await?;
        Ok(LocalNode {
            dir,
            client,
            up_output,
            guard,
        })
    }

    pub fn dir_str(&self) -> String {
        self.dir.display().to_string()
    }
}

/// What the cluster looks like, for a failed wait: the nodes with their taints and readiness,
/// the pods of `ns` and of kube-system with phase, node and the reasons of their false
/// conditions, the events of `ns`, and the tail of each Ferrite pod's log.
pub async fn report(client: &kube::Client, ns: &str) -> String {
    use k8s_openapi::api::core::v1::{Event, Node};
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Ok(nodes) = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let kwok = |n: &&Node| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("type"))
                .is_some_and(|t| t == "kwok")
        };
        for n in nodes.items.iter().filter(|n| !kwok(n)) {
            let taints: Vec<String> = n
                .spec
                .iter()
                .flat_map(|s| s.taints.iter().flatten())
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            let ready = n
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{} ({})", c.status, c.reason.clone().unwrap_or_default()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "node {}: Ready={ready} taints={taints:?}",
                n.metadata.name.clone().unwrap_or_default()
            );
        }
    }
    for namespace in [ns, NAMESPACE] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let Ok(list) = pods.list(&ListParams::default()).await else {
            continue;
        };
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            let unmet: Vec<String> = status
                .conditions
                .iter()
                .flatten()
                .filter(|c| c.status != "True")
                .map(|c| {
                    format!(
                        "{}={} {}",
                        c.type_,
                        c.status,
                        c.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            let waiting: Vec<String> = status
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .map(|w| {
                    format!(
                        "{} {}",
                        w.reason.clone().unwrap_or_default(),
                        w.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "pod {namespace}/{name}: {} node={node:?} deleting={} unmet={unmet:?} waiting={waiting:?}",
                status.phase.unwrap_or_default(),
                p.metadata.deletion_timestamp.is_some()
            );
            if namespace == NAMESPACE && name.starts_with("ferrite-") {
                let params = kube::api::LogParams {
                    tail_lines: Some(15),
                    ..Default::default()
                };
                if let Ok(log) = pods.logs(&name, &params).await {
                    let _ = writeln!(out, "--- log of {name}:\n{log}---");
                }
            }
        }
    }
    if let Ok(events) = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        for e in events.items.iter().rev().take(30) {
            let _ = writeln!(
                out,
                "event {} {}: {} {}",
                e.involved_object.name.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            );
        }
    }
    out
}
