//! The Deployment controller run by a Ferrite controller manager (`--controllers=deployment`)
//! beside a stock controller manager that runs everything else (`--controllers=*,-deployment`,
//! so the ReplicaSet controller is stock), with the stock scheduler and kwok moving bound pods to
//! Running/Ready: rolling-update bounds at every observed step, proportional scaling mid-rollout,
//! pause/resume, `kubectl rollout` undo/history/restart/status, the progress deadline, history
//! cleanup and adoption of an orphan ReplicaSet.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component, stock};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const REVISION: &str = "deployment.kubernetes.io/revision";
const POLL: Duration = Duration::from_millis(100);
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(120);

static FERRITE: OnceCell<()> = OnceCell::const_new();

async fn bed() -> &'static Bed {
    let bed = testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.controller_manager = Component::Stock;
        o.stock_controller_manager_args = vec!["--controllers=*,-deployment".into()];
        o.scheduler = Component::Stock;
        o
    })
    .await;
    FERRITE
        .get_or_init(|| async {
            // Only the Deployment controller runs here, beside the stock controller manager.
            let flags = [
                "--controllers=deployment",
                "--leader-elect-resource-name=ferrite-deployment-test",
            ];
            if let Err(e) = bed.start_ferrite("ferrite-cm", "controller-manager", &flags) {
                panic!("starting the Ferrite controller manager: {e:#}");
            }
        })
        .await;
    bed
}

fn cm_log(bed: &Bed) -> String {
    bed.log_tail("ferrite-cm")
}

async fn setup(prefix: &str) -> Result<(&'static Bed, kube::Client, String)> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    Ok((bed, client, ns))
}

/// A Deployment `name` with `replicas`, image tag `image`, and the given strategy.
fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "c", "image": format!("registry.k8s.io/pause:{image}")}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))?)
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

async fn create(client: &kube::Client, ns: &str, d: &Deployment) -> Result<Deployment> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), d)
        .await?)
}

async fn patch(client: &kube::Client, ns: &str, name: &str, body: Value) -> Result<Deployment> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Strategic(body))
        .await?)
}

async fn set_image(client: &kube::Client, ns: &str, name: &str, image: &str) -> Result<()> {
    patch(
        client,
        ns,
        name,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": format!("registry.k8s.io/pause:{image}")}
        ]}}}}),
    )
    .await?;
    Ok(())
}

async fn get(client: &kube::Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()
}

async fn replica_sets(client: &kube::Client, ns: &str) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn revision_of(rs: &ReplicaSet) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(REVISION).cloned()
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
        .map(|c| {
            (
                c.status.clone().unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// `kubectl rollout status`'s idea of done: the latest spec observed, every replica updated
/// and available, no old replicas left.
fn rolled_out(d: &Deployment) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
}

async fn wait_rolled_out(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Deployment> {
    eventually(
        &format!("deployment {ns}/{name} rolled out"),
        ROLLOUT_TIMEOUT,
        POLL,
        || async { get(client, ns, name).await.filter(rolled_out) },
    )
    .await
    .with_context(|| cm_log(bed))
}

fn kubectl(bed: &Bed, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(stock::binary("kubectl"))
        .arg(format!("--kubeconfig={}", bed.kubeconfig().display()))
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

async fn events_for(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_max_surge_and_max_unavailable_at_every_step() -> Result<()> {
    let (bed, client, ns) = setup("deploy-rolling").await?;
    // 6 replicas: 25% surge rounds up to 2, 25% unavailable rounds down to 1.
    let (replicas, surge, unavailable) = (6, 2, 1);
    create(
        &client,
        &ns,
        &deployment("web", replicas, "3.9", rolling(json!("25%"), json!("25%")))?,
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    set_image(&client, &ns, "web", "3.10").await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let deadline = std::time::Instant::now() + ROLLOUT_TIMEOUT;
    let (mut steps, mut saw_both) = (0, false);
    loop {
        let rss = replica_sets(&client, &ns).await;
        let total: i32 = rss.iter().map(spec_replicas).sum();
        ensure!(
            total <= replicas + surge,
            "replica sets ask for {total} pods, more than {replicas} + {surge}: {:?}",
            rss.iter()
                .map(|r| (r.metadata.name.clone(), spec_replicas(r)))
                .collect::<Vec<_>>()
        );
        let available = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .count();
        ensure!(
            i32::try_from(available)? >= replicas - unavailable,
            "only {available} pods available, fewer than {replicas} - {unavailable}"
        );
        saw_both |= rss.iter().filter(|r| spec_replicas(r) > 0).count() == 2;
        steps += 1;
        if let Some(d) = get(&client, &ns, "web").await
            && rolled_out(&d)
            && rss.len() == 2
            && rss.iter().filter(|r| spec_replicas(r) > 0).count() == 1
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("rollout did not finish in time\n{}", cm_log(bed));
        }
        tokio::time::sleep(POLL).await;
    }
    ensure!(
        saw_both,
        "never observed the rollout in progress ({steps} observations)"
    );

    // Events read as upstream's.
    let evs = events_for(&client, &ns, "web").await;
    let scaling: Vec<&str> = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message.as_deref())
        .collect();
    ensure!(
        scaling
            .iter()
            .any(|m| m.starts_with("Scaled up replica set web-") && m.ends_with(" from 0 to 6")),
        "no initial scale-up event: {scaling:?}"
    );
    ensure!(
        scaling
            .iter()
            .any(|m| m.starts_with("Scaled down replica set web-")),
        "no scale-down event: {scaling:?}"
    );
    // The new ReplicaSet carries the hash label everywhere and revision 2.
    let d = get(&client, &ns, "web").await.context("deployment")?;
    let new_rs = replica_sets(&client, &ns)
        .await
        .into_iter()
        .find(|r| spec_replicas(r) == replicas)
        .context("new replica set")?;
    let hash = new_rs
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .context("hash label")?;
    ensure!(new_rs.metadata.name == Some(format!("web-{hash}")));
    ensure!(
        new_rs
            .spec
            .selector
            .match_labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            == Some(&hash)
    );
    ensure!(revision_of(&new_rs).as_deref() == Some("2"));
    ensure!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str)
            == Some("2")
    );
    let available = condition(&d, "Available").context("Available condition")?;
    ensure!(
        available.0 == "True" && available.1 == "MinimumReplicasAvailable",
        "{available:?}"
    );
    let progressing = condition(&d, "Progressing").context("Progressing condition")?;
    ensure!(
        progressing.1 == "NewReplicaSetAvailable"
            && progressing.2 == format!("ReplicaSet \"web-{hash}\" has successfully progressed."),
        "{progressing:?}"
    );
    Ok(())
}

/// New pods that no kwok node can take: they stay Pending and never become Ready.
fn unschedulable_template_patch(image: &str) -> Value {
    json!({"spec": {"template": {"spec": {
        "nodeSelector": {"ferrite.test/nowhere": "true"},
        "containers": [{"name": "c", "image": format!("registry.k8s.io/pause:{image}")}],
    }}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_in_the_middle_of_a_rollout_is_proportional() -> Result<()> {
    let (bed, client, ns) = setup("deploy-proportional").await?;
    create(
        &client,
        &ns,
        &deployment("web", 10, "3.9", rolling(json!(3), json!(2)))?,
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    patch(&client, &ns, "web", unschedulable_template_patch("3.10")).await?;
    // Stalls with old 8 (10 - 2 unavailable) and new 5 (13 allowed in all).
    let sizes = |rss: &[ReplicaSet]| {
        let mut v: Vec<(Option<String>, i32)> = rss
            .iter()
            .map(|r| (revision_of(r), spec_replicas(r)))
            .collect();
        v.sort();
        v
    };
    eventually(
        "rollout stalled at old 8 / new 5",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let rss = replica_sets(&client, &ns).await;
            (sizes(&rss) == [(Some("1".into()), 8), (Some("2".into()), 5)]).then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    patch(&client, &ns, "web", json!({"spec": {"replicas": 20}})).await?;
    // 23 allowed now, 10 more: old 8·23/13 → 14 (+6), new gets the remaining 4 → 9.
    eventually(
        "proportional scale-up to old 14 / new 9",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let rss = replica_sets(&client, &ns).await;
            (sizes(&rss) == [(Some("1".into()), 14), (Some("2".into()), 9)]).then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    for rs in replica_sets(&client, &ns).await {
        let ann = rs.metadata.annotations.clone().unwrap_or_default();
        ensure!(
            ann.get("deployment.kubernetes.io/desired-replicas")
                .map(String::as_str)
                == Some("20"),
            "{ann:?}"
        );
        ensure!(
            ann.get("deployment.kubernetes.io/max-replicas")
                .map(String::as_str)
                == Some("23"),
            "{ann:?}"
        );
    }
    // And it stays there: the rollout cannot progress.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = replica_sets(&client, &ns).await;
    ensure!(
        sizes(&rss) == [(Some("1".into()), 14), (Some("2".into()), 9)],
        "{:?}",
        sizes(&rss)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_edit_resume_makes_exactly_one_new_revision() -> Result<()> {
    let (bed, client, ns) = setup("deploy-pause").await?;
    create(
        &client,
        &ns,
        &deployment("web", 2, "3.9", rolling(json!(1), json!(0)))?,
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    patch(&client, &ns, "web", json!({"spec": {"paused": true}})).await?;
    eventually(
        "Progressing DeploymentPaused",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let d = get(&client, &ns, "web").await?;
            (condition(&d, "Progressing")?.1 == "DeploymentPaused").then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    set_image(&client, &ns, "web", "3.10").await?;
    patch(
        &client,
        &ns,
        "web",
        json!({"spec": {"template": {"metadata": {"labels": {"edit": "2"}}}}}),
    )
    .await?;
    // Paused: observed, but nothing rolls.
    eventually("paused edit observed", ROLLOUT_TIMEOUT, POLL, || async {
        let d = get(&client, &ns, "web").await?;
        let s = d.status.as_ref()?;
        (s.observed_generation >= d.metadata.generation).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        replica_sets(&client, &ns).await.len() == 1,
        "a paused deployment rolled out"
    );

    patch(&client, &ns, "web", json!({"spec": {"paused": false}})).await?;
    let d = wait_rolled_out(bed, &client, &ns, "web").await?;
    let mut revs: Vec<Option<String>> = replica_sets(&client, &ns)
        .await
        .iter()
        .map(revision_of)
        .collect();
    revs.sort();
    ensure!(
        revs == [Some("1".into()), Some("2".into())],
        "revisions {revs:?}"
    );
    ensure!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str)
            == Some("2")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_status_history_undo_and_restart_work() -> Result<()> {
    let (bed, client, ns) = setup("deploy-kubectl").await?;
    create(
        &client,
        &ns,
        &deployment("web", 2, "3.9", rolling(json!("25%"), json!("25%")))?,
    )
    .await?;
    let target = "deployment/web";
    let (ok, out) = kubectl(
        bed,
        &["-n", &ns, "rollout", "status", target, "--timeout=120s"],
    )?;
    ensure!(
        ok && out.contains("successfully rolled out"),
        "rollout status: {out}\n{}",
        cm_log(bed)
    );

    set_image(&client, &ns, "web", "3.10").await?;
    let (ok, out) = kubectl(
        bed,
        &["-n", &ns, "rollout", "status", target, "--timeout=120s"],
    )?;
    ensure!(
        ok && out.contains("successfully rolled out"),
        "rollout status: {out}\n{}",
        cm_log(bed)
    );
    let d = get(&client, &ns, "web").await.context("deployment")?;
    ensure!(
        rolled_out(&d),
        "rollout status returned before the rollout was done: {:?}",
        d.status
    );

    let (ok, out) = kubectl(bed, &["-n", &ns, "rollout", "history", target])?;
    ensure!(ok, "history: {out}");
    let revs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    ensure!(revs == ["1", "2"], "history: {out}");

    let (ok, out) = kubectl(bed, &["-n", &ns, "rollout", "undo", target])?;
    ensure!(ok, "undo: {out}");
    let (ok, out) = kubectl(
        bed,
        &["-n", &ns, "rollout", "status", target, "--timeout=120s"],
    )?;
    ensure!(ok, "rollout status after undo: {out}\n{}", cm_log(bed));
    let d = wait_rolled_out(bed, &client, &ns, "web").await?;
    let image = d
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    ensure!(
        image.as_deref() == Some("registry.k8s.io/pause:3.9"),
        "image after undo {image:?}"
    );
    // The first ReplicaSet came back as revision 3, remembering revision 1.
    let back = eventually(
        "revision 3 on the first replica set",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            replica_sets(&client, &ns)
                .await
                .into_iter()
                .find(|r| revision_of(r).as_deref() == Some("3"))
        },
    )
    .await?;
    let history = back
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision-history"))
        .cloned();
    ensure!(
        history.as_deref() == Some("1"),
        "revision history {history:?}"
    );
    ensure!(
        replica_sets(&client, &ns).await.len() == 2,
        "undo made a new replica set"
    );

    let (ok, out) = kubectl(bed, &["-n", &ns, "rollout", "restart", target])?;
    ensure!(ok, "restart: {out}");
    let (ok, out) = kubectl(
        bed,
        &["-n", &ns, "rollout", "status", target, "--timeout=120s"],
    )?;
    ensure!(ok, "rollout status after restart: {out}\n{}", cm_log(bed));
    let d = wait_rolled_out(bed, &client, &ns, "web").await?;
    ensure!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str)
            == Some("4"),
        "revision after restart: {:?}",
        d.metadata.annotations
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_pods_never_become_ready_exceeds_its_progress_deadline() -> Result<()> {
    let (bed, client, ns) = setup("deploy-deadline").await?;
    let mut d = deployment("web", 2, "3.9", rolling(json!(1), json!(0)))?;
    d.spec.progress_deadline_seconds = Some(5);
    create(&client, &ns, &d).await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    patch(&client, &ns, "web", unschedulable_template_patch("3.10")).await?;
    let (status, _reason, message) = eventually(
        "Progressing=False ProgressDeadlineExceeded",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let d = get(&client, &ns, "web").await?;
            condition(&d, "Progressing").filter(|c| c.1 == "ProgressDeadlineExceeded")
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    ensure!(status == "False", "{status}");
    let new_rs = replica_sets(&client, &ns)
        .await
        .into_iter()
        .find(|r| revision_of(r).as_deref() == Some("2"))
        .context("new replica set")?;
    ensure!(
        message
            == format!(
                "ReplicaSet {:?} has timed out progressing.",
                new_rs.metadata.name.unwrap_or_default()
            ),
        "{message}"
    );
    let (ok, out) = kubectl(
        bed,
        &[
            "-n",
            &ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=30s",
        ],
    )?;
    ensure!(
        !ok && out.contains("exceeded its progress deadline"),
        "rollout status: {out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replica_sets_beyond_the_revision_history_limit_are_deleted_oldest_first() -> Result<()>
{
    let (bed, client, ns) = setup("deploy-history").await?;
    let mut d = deployment("web", 1, "3.7", rolling(json!(1), json!(0)))?;
    d.spec.revision_history_limit = Some(1);
    create(&client, &ns, &d).await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    for image in ["3.8", "3.9", "3.10"] {
        set_image(&client, &ns, "web", image).await?;
        wait_rolled_out(bed, &client, &ns, "web").await?;
    }
    eventually(
        "only revisions 3 and 4 left",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let mut revs: Vec<Option<String>> = replica_sets(&client, &ns)
                .await
                .iter()
                .map(revision_of)
                .collect();
            revs.sort();
            (revs == [Some("3".into()), Some("4".into())]).then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_replica_set_matching_the_selector_is_adopted_as_the_new_one() -> Result<()> {
    let (bed, client, ns) = setup("deploy-adopt").await?;
    let d = deployment("web", 2, "3.9", rolling(json!(1), json!(0)))?;
    let orphan: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-orphan", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": serde_json::to_value(&d.spec.template)?,
        },
    }))?;
    Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &orphan)
        .await?;
    let created = create(&client, &ns, &d).await?;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    eventually("orphan adopted", ROLLOUT_TIMEOUT, POLL, || async {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .get("web-orphan")
            .await
            .ok()?;
        rs.metadata
            .owner_references
            .as_ref()?
            .iter()
            .any(|r| r.controller == Some(true) && r.uid == uid && r.kind == "Deployment")
            .then_some(())
    })
    .await
    .with_context(|| cm_log(bed))?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    let names: BTreeMap<String, i32> = replica_sets(&client, &ns)
        .await
        .iter()
        .map(|r| {
            (
                r.metadata.name.clone().unwrap_or_default(),
                spec_replicas(r),
            )
        })
        .collect();
    ensure!(
        names.len() == 1 && names.contains_key("web-orphan"),
        "replica sets {names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_scales_the_new_replica_set_up_only_after_old_pods_are_gone() -> Result<()> {
    let (bed, client, ns) = setup("deploy-recreate").await?;
    create(
        &client,
        &ns,
        &deployment("web", 3, "3.9", json!({"type": "Recreate"}))?,
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    let old_uid = replica_sets(&client, &ns)
        .await
        .first()
        .and_then(|r| r.metadata.uid.clone())
        .context("first replica set")?;
    set_image(&client, &ns, "web", "3.10").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let deadline = std::time::Instant::now() + ROLLOUT_TIMEOUT;
    loop {
        // Replica sets first: old pods cannot come back once gone.
        let rss = replica_sets(&client, &ns).await;
        let new_scaled = rss
            .iter()
            .any(|r| r.metadata.uid.as_deref() != Some(old_uid.as_str()) && spec_replicas(r) > 0);
        let old_pods = pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == old_uid)
            })
            .count();
        ensure!(
            !(new_scaled && old_pods > 0),
            "new replica set scaled up while {old_pods} old pods exist"
        );
        if let Some(d) = get(&client, &ns, "web").await
            && rolled_out(&d)
            && new_scaled
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("recreate did not finish in time\n{}", cm_log(bed));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_already_holding_the_name_bumps_the_collision_count() -> Result<()> {
    use ferrite_controllers::deployment::util::compute_hash;
    let (bed, client, ns) = setup("deploy-collision").await?;
    let mut d = deployment("web", 1, "3.9", rolling(json!(1), json!(0)))?;
    d.spec.paused = Some(true);
    // Created paused, no ReplicaSet is made; the stored (defaulted) template gives the hash.
    let created = create(&client, &ns, &d).await?;
    let hash = compute_hash(&created.spec.template, None);
    let squatter: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("web-{hash}"), "labels": {"app": "other"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "other"}},
            "template": {
                "metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    }))?;
    Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &squatter)
        .await?;
    patch(&client, &ns, "web", json!({"spec": {"paused": false}})).await?;
    let d = wait_rolled_out(bed, &client, &ns, "web").await?;
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    ensure!(collisions == Some(1), "collisionCount {collisions:?}");
    let expected = format!("web-{}", compute_hash(&created.spec.template, Some(1)));
    let names: Vec<String> = replica_sets(&client, &ns)
        .await
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    ensure!(
        names.contains(&expected) && names.len() == 2,
        "replica sets {names:?}, expected {expected}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_rollback_annotation_rolls_back_and_is_cleared() -> Result<()> {
    let (bed, client, ns) = setup("deploy-rollback").await?;
    create(
        &client,
        &ns,
        &deployment("web", 1, "3.9", rolling(json!(1), json!(0)))?,
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    set_image(&client, &ns, "web", "3.10").await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    patch(
        &client,
        &ns,
        "web",
        json!({"metadata": {"annotations": {"deprecated.deployment.rollback.to": "1"}}}),
    )
    .await?;
    let d = eventually(
        "rolled back to revision 1",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            let d = get(&client, &ns, "web").await?;
            let image = d
                .spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            let cleared = d
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key("deprecated.deployment.rollback.to"));
            (cleared && image.as_deref() == Some("registry.k8s.io/pause:3.9")).then_some(d)
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    ensure!(
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .is_some_and(|l| !l.contains_key("pod-template-hash")),
        "the hash label was copied into the deployment template"
    );
    eventually(
        "DeploymentRollback event",
        ROLLOUT_TIMEOUT,
        POLL,
        || async {
            events_for(&client, &ns, "web").await.into_iter().find(|e| {
                e.reason.as_deref() == Some("DeploymentRollback")
                    && e.message.as_deref() == Some("Rolled back deployment \"web\" to revision 1")
            })
        },
    )
    .await?;
    wait_rolled_out(bed, &client, &ns, "web").await?;
    ensure!(
        replica_sets(&client, &ns).await.len() == 2,
        "rollback made a new replica set"
    );
    Ok(())
}
