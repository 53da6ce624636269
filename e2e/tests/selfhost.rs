//! The cluster e2e test: a real local node (containerd + runc + CNI + the stock kubelet) with
//! etcd and kube-apiserver as static pods and Ferrite pivoted into its own Deployments, driven
//! through the `ferrite bootstrap` commands a user runs. One test, in order: `up`; the static
//! (mirror) pods and both Ferrite Deployments at 2/2 with a pod of each holding its Lease and no
//! stock controller manager or scheduler; a user Deployment's pods Running; every Ferrite
//! replica deleted and `recover` bringing them back; `down` leaving no host state behind.
//!
//! Needs root (as CI has). What the machine lacks is installed: the stock components and
//! containerd by `e2e/stock/build.sh`, the Debian packages by `ferrite bootstrap up` itself. The
//! node is taken down when the test ends, also when it fails. A node that a user's
//! `e2e/cluster-up.sh` left running is not touched: the test fails and says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::stock;
use ferrite_e2e::testing::{self, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const REGISTRY: &str = "/run/ferrite/node";
/// Node directories of this test start with this (short: containerd's socket paths must fit a
/// sockaddr_un).
const DIR_PREFIX: &str = "/tmp/ferrite-e2e-node-";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn ferrite() -> PathBuf {
    stock::ferrite_binary()
}

/// Runs `ferrite bootstrap <args>`, returning stdout; stderr (the progress log) is kept for the
/// error.
fn bootstrap(args: &[&str]) -> Result<String> {
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
fn build_stock() -> Result<()> {
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
struct NodeGuard {
    dir: PathBuf,
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
fn clear_leftovers() -> Result<()> {
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

/// A snapshot of the host state a node leaves outside its directory.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    iptables_chains: BTreeSet<String>,
    kubepods_cgroups: BTreeSet<String>,
    links: BTreeSet<String>,
    paths: BTreeSet<String>,
    ip_forward: String,
}

fn host_state() -> HostState {
    let mut iptables_chains = BTreeSet::new();
    for tool in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            let out = Command::new(tool)
                .args(["-w", "-t", table, "-S"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for line in out
                .lines()
                .filter(|l| l.contains("KUBE-") || l.contains("CNI-"))
            {
                iptables_chains.insert(format!("{tool} {table}: {line}"));
            }
        }
    }
    let kubepods_cgroups = std::fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("kubepods"))
                .filter(|p| p.exists())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let links = std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ferrite") || n.starts_with("veth"))
                .collect()
        })
        .unwrap_or_default();
    let paths = [
        "/var/lib/kubelet",
        "/var/log/containers",
        "/var/log/pods",
        "/var/lib/cni",
        "/run/containerd",
        REGISTRY,
    ]
    .iter()
    .filter(|p| Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    HostState {
        iptables_chains,
        kubepods_cgroups,
        links,
        paths,
        ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy() != me)
                .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .filter(|c| c.contains(needle) && !c.contains("bootstrap down"))
                .collect()
        })
        .unwrap_or_default()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

async fn client(dir: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(dir.join("admin.conf"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

fn running_and_ready(p: &Pod) -> bool {
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

fn selector(component: &str) -> String {
    format!("app.kubernetes.io/instance=ferrite,app.kubernetes.io/component={component}")
}

/// Both Ferrite Deployments are 2/2 (status written by Ferrite's own deployment controller),
/// every replica Running and Ready, and each Lease held by one of the component's pods.
async fn ferrite_is_self_hosted(client: &kube::Client) -> Result<()> {
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

async fn wait_self_hosted(client: &kube::Client, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match ferrite_is_self_hosted(client).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_node_hosts_ferrite_recovers_it_and_leaves_nothing_behind() -> Result<()> {
    testing::init_logging();
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "a local node needs root (containerd, runc, the kubelet, iptables)"
    );
    build_stock()?;
    ensure!(
        ferrite().is_file(),
        "{} is missing: build it with `cargo build --bin ferrite`",
        ferrite().display()
    );
    clear_leftovers()?;
    let before = host_state();
    let dir = PathBuf::from(format!("{DIR_PREFIX}{}", std::process::id()));
    let dir_s = dir.display().to_string();
    let chart = repo_root().join("charts/ferrite").display().to_string();
    let guard = NodeGuard { dir: dir.clone() };

    // up: the node, the static pods, the pivot.
    let out = bootstrap(&["up", "--dir", &dir_s, "--chart", &chart])?;
    ensure!(
        out.contains(&format!("export KUBECONFIG={dir_s}/admin.conf")),
        "up printed {out:?}"
    );
    let client = client(&dir).await?;
    ferrite_is_self_hosted(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let all = pods.list(&ListParams::default()).await?;
    let node = gethostname();
    for name in [format!("etcd-{node}"), format!("kube-apiserver-{node}")] {
        let pod = all
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            .with_context(|| format!("no pod {name} in kube-system"))?;
        let mirror = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        ensure!(mirror, "{name} is not a static pod's mirror");
        ensure!(running_and_ready(pod), "{name} is not Running and Ready");
    }
    for p in &all.items {
        let component = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("component"))
            .cloned()
            .unwrap_or_default();
        ensure!(
            component != "kube-controller-manager" && component != "kube-scheduler",
            "a stock component runs: {:?}",
            p.metadata.name
        );
    }

    // A user's Deployment: Ferrite's deployment and replicaset controllers and its scheduler
    // make its pods, the kubelet runs them.
    let ns = testing::namespace(&client, "selfhost").await?;
    let sandbox = sandbox_image(&dir)?;
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    // No node-lifecycle controller lifts the not-ready taint on this node yet.
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
                    "containers": [{"name": "pause", "image": sandbox, "imagePullPolicy": "Never"}],
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments.create(&PostParams::default(), &web).await?;
    let user_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the user Deployment's 3 pods Running and the Deployment available",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || async {
            let list = user_pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running = list.items.iter().filter(|p| running_and_ready(p)).count();
            let d = deployments.get("web").await.ok()?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            (running == 3 && available == 3).then_some(())
        },
    )
    .await?;

    // Every Ferrite replica gone: nothing in the cluster can bring them back.
    remove_every_ferrite_replica(&client).await?;
    bootstrap(&["recover", "--dir", &dir_s])?;
    wait_self_hosted(&client, Duration::from_secs(60)).await?;

    // down: nothing of the node is left on the host.
    drop(client);
    drop(guard);
    ensure!(!dir.exists(), "{dir_s} is still there");
    let after = host_state();
    ensure!(
        after == before,
        "host state differs after down:\nbefore {before:#?}\nafter {after:#?}"
    );
    ensure!(
        mounts_under(&dir).is_empty(),
        "mounts left: {:?}",
        mounts_under(&dir)
    );
    let left = processes_mentioning(&dir_s);
    ensure!(left.is_empty(), "processes left: {left:?}");
    for port in [6443, 2379, 2380, 10250] {
        ensure!(
            std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
            "port {port} is still taken"
        );
    }
    Ok(())
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

/// The node's pause image (containerd's pinned sandbox image), the one image a user pod can run
/// here without a registry.
fn sandbox_image(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("containerd/config.toml"))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("sandbox = "))
        .map(|v| v.trim_matches('"').to_string())
        .context("no sandbox image in containerd's configuration")
}

/// Deletes both Ferrite Deployments, then whatever ReplicaSets and pods of theirs remain (the
/// garbage collector that would remove them ran in the pods being deleted), until none has been
/// seen for a few seconds.
async fn remove_every_ferrite_replica(client: &kube::Client) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    for component in ["controller-manager", "scheduler"] {
        let name = format!("ferrite-{component}");
        match deployments.delete(&name, &now).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut seen = 0;
        for component in ["controller-manager", "scheduler"] {
            let lp = ListParams::default().labels(&selector(component));
            for rs in replica_sets.list(&lp).await?.items {
                seen += 1;
                if let Some(n) = rs.metadata.name {
                    let _ = replica_sets.delete(&n, &now).await;
                }
            }
            for p in pods.list(&lp).await?.items {
                seen += 1;
                if let Some(n) = p.metadata.name {
                    let _ = pods.delete(&n, &now).await;
                }
            }
        }
        if seen == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(5) {
                return Ok(());
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() > deadline {
            bail!("Ferrite's ReplicaSets and pods keep coming back");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
