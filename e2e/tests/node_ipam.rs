//! The node-ipam controller (range allocator) run by the Ferrite controller manager
//! (`--controllers=nodeipam --allocate-node-cidrs`) over a stock apiserver with kwok nodes.
//!
//! The cluster CIDR is kept tiny so that running out is part of the scenario: 10.244.0.0/24 cut
//! into /26s is four node CIDRs, and the service range 10.244.0.0/26 takes the first, leaving three.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::bed::kwok_node;
use ferrite_e2e::stock::ferrite_binary;
use ferrite_e2e::testing::{self, eventually, get_secure};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const CLUSTER_CIDR: &str = "10.244.0.0/24";
const FREE: [&str; 3] = ["10.244.0.64/26", "10.244.0.128/26", "10.244.0.192/26"];

fn pod_cidrs(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default()
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref().and_then(|s| s.pod_cidr.clone())
}

async fn wait_cidr(bed: &Bed, nodes: &Api<Node>, name: &str) -> Result<String> {
    eventually(
        &format!("a pod CIDR on {name}"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let n = nodes.get(name).await.ok()?;
            let cidrs = pod_cidrs(&n);
            (cidrs.len() == 1 && pod_cidr(&n).as_ref() == cidrs.first()).then(|| cidrs[0].clone())
        },
    )
    .await
    .with_context(|| bed.log_tail("controller-manager"))
}

fn flags() -> Vec<String> {
    vec![
        "--controllers=nodeipam".into(),
        "--allocate-node-cidrs=true".into(),
        format!("--cluster-cidr={CLUSTER_CIDR}"),
        "--node-cidr-mask-size=26".into(),
        "--service-cluster-ip-range=10.244.0.0/26".into(),
    ]
}

#[tokio::test]
async fn nodes_get_distinct_cidrs_outside_the_service_range_and_a_deleted_nodes_cidr_is_reused()
-> Result<()> {
    allocation_with(Component::Ferrite).await
}

/// The same scenario against the stock kube-controller-manager: the expectations are upstream's.
#[tokio::test]
async fn the_stock_controller_manager_allocates_the_same_way() -> Result<()> {
    allocation_with(Component::Stock).await
}

async fn allocation_with(component: Component) -> Result<()> {
    let bed = testing::PrivateBed::start(|mut o| {
        o.nodes = 2;
        o.controller_manager = component;
        o.ferrite_args = flags();
        o.stock_controller_manager_args = flags();
        o
    })
    .await?;
    let client = bed.client().await?;
    let nodes = Api::<Node>::all(client.clone());
    let free: BTreeSet<String> = FREE.iter().map(|s| s.to_string()).collect();

    let mut taken = BTreeSet::new();
    for name in ["kwok-node-0", "kwok-node-1"] {
        taken.insert(wait_cidr(&bed, &nodes, name).await?);
    }
    ensure!(taken.len() == 2, "two nodes share a CIDR: {taken:?}");
    ensure!(
        taken.is_subset(&free),
        "CIDRs outside the free ones: {taken:?}"
    );

    nodes
        .create(&PostParams::default(), &kwok_node("ipam-third"))
        .await?;
    let third = wait_cidr(&bed, &nodes, "ipam-third").await?;
    ensure!(
        free.contains(&third) && !taken.contains(&third),
        "the third node got {third}, taken: {taken:?}"
    );

    // Nothing left: the fourth waits, with a CIDRNotAvailable event.
    nodes
        .create(&PostParams::default(), &kwok_node("ipam-fourth"))
        .await?;
    let events = Api::<Event>::namespaced(client.clone(), "default");
    eventually(
        "a CIDRNotAvailable event for ipam-fourth",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=ipam-fourth"))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CIDRNotAvailable")
                        && e.message.as_deref()
                            == Some("Node ipam-fourth status is now: CIDRNotAvailable")
                        && e.source.as_ref().and_then(|s| s.component.as_deref())
                            == Some("cidrAllocator")
                })
                .then_some(())
        },
    )
    .await
    .with_context(|| bed.log_tail("controller-manager"))?;
    ensure!(
        pod_cidrs(&nodes.get("ipam-fourth").await?).is_empty(),
        "the fourth node got a CIDR from an exhausted range"
    );

    // The third node goes: its CIDR is freed and the fourth gets it.
    nodes.delete("ipam-third", &DeleteParams::default()).await?;
    let fourth = wait_cidr(&bed, &nodes, "ipam-fourth").await?;
    ensure!(
        fourth == third,
        "the fourth node got {fourth}, not the freed {third}"
    );

    // Upstream's metric names (the typo in `cirdset` included).
    let port = bed
        .state()
        .controller_manager_port
        .context("no controller manager port")?;
    let ns = testing::namespace(&client, "ipam").await?;
    let token = testing::metrics_reader_token(&client, &ns).await?;
    let body = eventually(
        "the controller manager's metrics",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match get_secure(port, "/metrics", Some(&token)).await {
                Ok((200, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await?;
    let label = format!("{{clusterCIDR=\"{CLUSTER_CIDR}\"}}");
    for (metric, want) in [
        ("node_ipam_controller_cirdset_max_cidrs", 4.0),
        ("node_ipam_controller_cidrset_usage_cidrs", 1.0),
        ("node_ipam_controller_cidrset_cidrs_releases_total", 1.0),
    ] {
        let prefix = format!("{metric}{label} ");
        let got = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok());
        ensure!(got == Some(want), "{metric}: {got:?}, want {want}");
    }
    Ok(())
}

async fn run_ferrite(args: &[&str]) -> Result<(Option<i32>, String)> {
    let child = tokio::process::Command::new(ferrite_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running ferrite (run `cargo build --bins` first)")?;
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .context("ferrite still runs after 10s")??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn inconsistent_cidr_flags_are_one_line_and_exit_code_2() -> Result<()> {
    for (args, needle) in [
        (vec!["--allocate-node-cidrs"], "--cluster-cidr"),
        (
            vec![
                "--allocate-node-cidrs",
                "--cluster-cidr=10.0.0.0/16",
                "--node-cidr-mask-size=8",
            ],
            "--node-cidr-mask-size",
        ),
        (
            vec![
                "--allocate-node-cidrs",
                "--cluster-cidr=10.0.0.0/16,10.1.0.0/16",
            ],
            "dual stack",
        ),
        (
            vec!["--service-cluster-ip-range=10.0.0.0/16,fd00::/108,10.1.0.0/16"],
            "--service-cluster-ip-range",
        ),
        (
            vec![
                "--allocate-node-cidrs",
                "--cluster-cidr=10.0.0.0/16",
                "--cidr-allocator-type=CloudAllocator",
            ],
            "CloudAllocator",
        ),
    ] {
        let mut full = vec!["controller-manager"];
        full.extend(args.iter().copied());
        let (code, stderr) = run_ferrite(&full).await?;
        ensure!(
            code == Some(2),
            "{args:?}: exit code {code:?}, stderr: {stderr}"
        );
        ensure!(
            stderr.lines().count() == 1 && stderr.contains(needle),
            "{args:?}: want one line mentioning {needle:?}, got {stderr:?}"
        );
    }
    Ok(())
}
