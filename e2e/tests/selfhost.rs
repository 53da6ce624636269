//! The cluster e2e test: a real local node (containerd + runc + CNI + the stock kubelet) with
//! etcd and kube-apiserver as static pods and Ferrite pivoted into its own Deployments, driven
//! through the `ferrite bootstrap` commands a user runs. One test, in order: `up`; the static
//! (mirror) pods and both Ferrite Deployments at 2/2 with a pod of each holding its Lease and no
//! stock controller manager or scheduler; a user Deployment's pods Running; the configuration
//! CRDs installed and objects of both kinds reported `Valid` by the leaders; every Ferrite
//! replica deleted and `recover` bringing them back; `down` leaving no host state behind.
//!
//! Needs root (as CI has). What the machine lacks is installed: the stock components and
//! containerd by `e2e/stock/build.sh`, the Debian packages by `ferrite bootstrap up` itself. The
//! node is taken down when the test ends, also when it fails. A node that a user's
//! `e2e/cluster-up.sh` left running is not touched: the test fails and says so.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::local_node::{
    self, LocalNode, NAMESPACE, REGISTRY, ferrite_is_self_hosted, running_and_ready, selector,
};
use ferrite_e2e::testing::{self, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_node_hosts_ferrite_recovers_it_and_leaves_nothing_behind() -> Result<()> {
    local_node::prepare()?;
    let before = host_state();
    let node = LocalNode::up().await?;
    let (dir, dir_s) = (node.dir.clone(), node.dir_str());
    ensure!(
        node.up_output
            .contains(&format!("export KUBECONFIG={dir_s}/admin.conf")),
        "up printed {:?}",
        node.up_output
    );
    let client = node.client.clone();
    ferrite_is_self_hosted(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let all = pods.list(&ListParams::default()).await?;
    let node_name = gethostname();
    for name in [
        format!("etcd-{node_name}"),
        format!("kube-apiserver-{node_name}"),
    ] {
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

    // A user's Deployment, with no tolerations: Ferrite's node-lifecycle controller lifts the
    // not-ready taint the apiserver put on the new node, Ferrite's deployment and replicaset
    // controllers and its scheduler make its pods, the kubelet runs them.
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
                    "containers": [{"name": "pause", "image": sandbox, "imagePullPolicy": "Never"}],
                },
            },
        },
    }))?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments.create(&PostParams::default(), &web).await?;
    let user_pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = eventually(
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
    .await
    {
        return Err(e.context(local_node::report(&client, &ns).await));
    }

    // The configuration CRDs came with the install, and the leaders (as the chart's accounts)
    // report on the objects users write.
    for (kind, plural, name) in [
        (
            "ControllerConfiguration",
            "controllerconfigurations",
            "default",
        ),
        ("SchedulerProfile", "schedulerprofiles", "default-scheduler"),
    ] {
        let ar = kube::api::ApiResource {
            group: "config.ferrite.dev".into(),
            version: "v1alpha1".into(),
            api_version: "config.ferrite.dev/v1alpha1".into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
        let object: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "config.ferrite.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name}, "spec": {},
        }))?;
        api.create(&PostParams::default(), &object).await?;
        eventually(
            &format!("the {kind} {name} to be reported Valid"),
            Duration::from_secs(60),
            Duration::from_secs(1),
            || async {
                let o = api.get(name).await.ok()?;
                let conditions = o.data["status"]["conditions"].as_array()?.clone();
                conditions
                    .iter()
                    .any(|c| c["type"] == "Valid" && c["status"] == "True")
                    .then_some(())
            },
        )
        .await?;
    }

    // Every Ferrite replica gone: nothing in the cluster can bring them back.
    remove_every_ferrite_replica(&client).await?;
    local_node::bootstrap(&["recover", "--dir", &dir_s])?;
    local_node::wait_self_hosted(&client, Duration::from_secs(60)).await?;

    // down: nothing of the node is left on the host.
    drop(client);
    drop(node);
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
