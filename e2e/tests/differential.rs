//! Differential test of Deployment + ReplicaSet fidelity: one scripted scenario run on a bed whose
//! controller manager is the stock kube-controller-manager and on one whose controller manager is
//! Ferrite's (both with the stock scheduler and kwok nodes), then the normalised end states are
//! compared. The scenario mirrors what `kubectl` users do (kubernetes/kubernetes
//! pkg/controller/deployment, pkg/controller/replicaset): rolling updates, scaling, pause/resume,
//! `kubectl rollout undo`, a Recreate rollout and a rollout that exceeds its progress deadline.
//! ReplicaSet names carry a pod-template hash that differs by design (Ferrite hashes the
//! template's JSON, upstream a spew dump), so names are normalised away.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, PrivateBed, eventually};
use ferrite_e2e::{Bed, Component, stock};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const REVISION: &str = "deployment.kubernetes.io/revision";
const POLL: Duration = Duration::from_millis(200);
/// Generous: both beds run at once on a small, shared machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// One ReplicaSet, name normalised away: (revision annotation, spec.replicas, status.replicas).
type RsState = (String, i32, i32);

/// The normalised end state of one Deployment.
#[derive(Debug, PartialEq, Eq)]
struct DeploymentState {
    replica_set_count: usize,
    replica_sets: Vec<RsState>,
    revision: String,
    /// replicas, updated, ready, available, unavailable.
    status: [i32; 5],
    /// (type, status, reason), sorted by type.
    conditions: Vec<(String, String, String)>,
    /// Reasons of the events the deployment and replicaset controllers recorded on the
    /// Deployment and its ReplicaSets.
    event_reasons: BTreeSet<String>,
    /// How many distinct ScalingReplicaSet messages the Deployment received.
    scaling_messages: usize,
    /// Those messages with each ReplicaSet name replaced by `rs@<revision>`.
    scaling_messages_by_revision: BTreeSet<String>,
}

async fn start_bed(cm: Component) -> Result<PrivateBed> {
    PrivateBed::start(|mut o| {
        o.nodes = 3;
        o.controller_manager = cm;
        o.scheduler = Component::Stock;
        o
    })
    .await
}

fn cm_log(bed: &Bed) -> String {
    bed.log_tail("controller-manager")
}

fn deployment(name: &str, replicas: i32, image: &str, strategy: Value) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
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

async fn patch(api: &Api<Deployment>, name: &str, body: Value) -> Result<()> {
    api.patch(name, &PatchParams::default(), &Patch::Strategic(body))
        .await?;
    Ok(())
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) -> Result<()> {
    patch(
        api,
        name,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": format!("registry.k8s.io/pause:{image}")}
        ]}}}}),
    )
    .await
}

fn observed(d: &Deployment) -> bool {
    d.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        >= d.metadata.generation.unwrap_or(0)
}

/// `kubectl rollout status`'s idea of done: the latest spec observed, every replica updated and
/// available, no old replicas left.
fn rolled_out(d: &Deployment) -> bool {
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    observed(d)
        && s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.ready_replicas.unwrap_or(0) == want
}

async fn wait_deployment(
    bed: &Bed,
    api: &Api<Deployment>,
    name: &str,
    what: &str,
    done: impl Fn(&Deployment) -> bool,
) -> Result<Deployment> {
    eventually(
        &format!("deployment {name} {what}"),
        STEP_TIMEOUT,
        POLL,
        || async { api.get(name).await.ok().filter(&done) },
    )
    .await
    .with_context(|| cm_log(bed))
}

async fn wait_rolled_out(bed: &Bed, api: &Api<Deployment>, name: &str) -> Result<Deployment> {
    wait_deployment(bed, api, name, "rolled out", rolled_out).await
}

fn condition_reason(d: &Deployment, type_: &str) -> Option<String> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
        .and_then(|c| c.reason.clone())
}

fn owned_by(rs: &ReplicaSet, uid: &str) -> bool {
    rs.metadata.owner_references.as_ref().is_some_and(|os| {
        os.iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    })
}

/// Every ReplicaSet of the namespace has caught up with its spec (no terminating pods counted).
async fn replica_sets_settled(rs_api: &Api<ReplicaSet>) -> Option<Vec<ReplicaSet>> {
    let rss = rs_api.list(&ListParams::default()).await.ok()?.items;
    rss.iter()
        .all(|rs| {
            let s = rs.status.as_ref();
            s.and_then(|s| s.observed_generation).unwrap_or(0)
                >= rs.metadata.generation.unwrap_or(0)
                && s.map(|s| s.replicas).unwrap_or(0) == rs.spec.replicas.unwrap_or(1)
        })
        .then_some(rss)
}

fn event_component(e: &Event) -> &str {
    e.source
        .as_ref()
        .and_then(|s| s.component.as_deref())
        .or(e.reporting_component.as_deref())
        .unwrap_or("")
}

fn normalise(d: &Deployment, rss: &[ReplicaSet], events: &[Event]) -> DeploymentState {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<&ReplicaSet> = rss.iter().filter(|rs| owned_by(rs, &uid)).collect();
    let rs_names: BTreeSet<String> = owned
        .iter()
        .filter_map(|rs| rs.metadata.name.clone())
        .collect();
    let revision_of = |annotations: Option<&BTreeMap<String, String>>| {
        annotations
            .and_then(|a| a.get(REVISION))
            .cloned()
            .unwrap_or_default()
    };
    let mut replica_sets: Vec<RsState> = owned
        .iter()
        .map(|rs| {
            (
                revision_of(rs.metadata.annotations.as_ref()),
                rs.spec.replicas.unwrap_or(1),
                rs.status.as_ref().map(|s| s.replicas).unwrap_or(0),
            )
        })
        .collect();
    replica_sets.sort();
    let s = d.status.clone().unwrap_or_default();
    let mut conditions: Vec<(String, String, String)> = s
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            (
                c.type_.unwrap_or_default(),
                c.status.unwrap_or_default(),
                c.reason.unwrap_or_default(),
            )
        })
        .collect();
    conditions.sort();
    let name = d.metadata.name.clone().unwrap_or_default();
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                event_component(e),
                "deployment-controller" | "replicaset-controller"
            )
        })
        .filter(|e| match e.involved_object.kind.as_deref() {
            Some("Deployment") => e.involved_object.name.as_deref() == Some(name.as_str()),
            Some("ReplicaSet") => e
                .involved_object
                .name
                .as_ref()
                .is_some_and(|n| rs_names.contains(n)),
            _ => false,
        })
        .collect();
    let event_reasons = ours.iter().filter_map(|e| e.reason.clone()).collect();
    let scaling: BTreeSet<String> = ours
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ScalingReplicaSet")
                && e.involved_object.kind.as_deref() == Some("Deployment")
        })
        .filter_map(|e| e.message.clone())
        .collect();
    // Longest names first, so no name is replaced inside a longer one.
    let mut by_length: Vec<(&String, String)> = owned
        .iter()
        .filter_map(|rs| {
            let name = rs.metadata.name.as_ref()?;
            Some((name, revision_of(rs.metadata.annotations.as_ref())))
        })
        .collect();
    by_length.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    // Which message the event aggregator folds into "(combined from similar events): …" (the 10th
    // distinct one within 10 minutes) depends on event timing, not on the controller: compare
    // only the plain messages.
    let scaling_messages_by_revision = scaling
        .iter()
        .filter(|m| !m.starts_with("(combined from similar events)"))
        .map(|m| {
            by_length.iter().fold(m.clone(), |m, (name, rev)| {
                m.replace(name.as_str(), &format!("rs@{rev}"))
            })
        })
        .collect();
    DeploymentState {
        replica_set_count: owned.len(),
        replica_sets,
        revision: revision_of(d.metadata.annotations.as_ref()),
        status: [
            s.replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.unavailable_replicas.unwrap_or(0),
        ],
        conditions,
        event_reasons,
        scaling_messages: scaling.len(),
        scaling_messages_by_revision,
    }
}

fn kubectl(bed: &Bed, args: &[&str]) -> Result<String> {
    let out = Command::new(stock::binary("kubectl"))
        .arg(format!("--kubeconfig={}", bed.kubeconfig().display()))
        .args(args)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "kubectl {args:?} failed: {text}");
    Ok(text)
}

/// Runs the scenario on `bed` and returns the normalised end state of each Deployment by name.
async fn scenario(bed: &Bed) -> Result<BTreeMap<String, DeploymentState>> {
    let client = bed.client().await?;
    bed.wait_nodes_ready(&client, STEP_TIMEOUT).await?;
    let ns = testing::namespace(&client, "diff").await?;
    // Both controller managers make the namespace's `default` ServiceAccount (pod admission
    // needs it); wait for it on both beds alike.
    let sa_api = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    eventually(
        "the default service account",
        STEP_TIMEOUT,
        POLL,
        || async { sa_api.get_opt("default").await.ok().flatten() },
    )
    .await
    .with_context(|| cm_log(bed))?;
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let rolling =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});

    // Rolling updates, scaling, pause/resume and undo.
    api.create(&pp, &deployment("web", 4, "3.9", rolling.clone())?)
        .await?;
    wait_rolled_out(bed, &api, "web").await?;
    set_image(&api, "web", "3.10").await?;
    wait_rolled_out(bed, &api, "web").await?;
    patch(&api, "web", json!({"spec": {"replicas": 6}})).await?;
    wait_rolled_out(bed, &api, "web").await?;
    patch(&api, "web", json!({"spec": {"paused": true}})).await?;
    wait_deployment(bed, &api, "web", "paused observed", observed).await?;
    set_image(&api, "web", "3.8").await?;
    wait_deployment(bed, &api, "web", "first paused edit observed", observed).await?;
    set_image(&api, "web", "3.7").await?;
    wait_deployment(bed, &api, "web", "second paused edit observed", observed).await?;
    patch(&api, "web", json!({"spec": {"paused": false}})).await?;
    wait_rolled_out(bed, &api, "web").await?;
    kubectl(bed, &["-n", &ns, "rollout", "undo", "deployment/web"])?;
    wait_deployment(bed, &api, "web", "rolled back to 3.10", |d| {
        rolled_out(d)
            && d.spec
                .template
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                == Some("registry.k8s.io/pause:3.10")
    })
    .await?;

    // Recreate, created and updated once.
    api.create(
        &pp,
        &deployment("recreate", 3, "3.9", json!({"type": "Recreate"}))?,
    )
    .await?;
    wait_rolled_out(bed, &api, "recreate").await?;
    set_image(&api, "recreate", "3.10").await?;
    wait_rolled_out(bed, &api, "recreate").await?;

    // Pods that can never schedule, and a 10 s progress deadline.
    let mut stuck = deployment("stuck", 2, "3.9", rolling)?;
    {
        let spec = &mut stuck.spec;
        spec.progress_deadline_seconds = Some(10);
        if let Some(pod) = spec.template.spec.as_mut() {
            pod.node_selector = Some(BTreeMap::from([(
                "ferrite.test/nobody".to_owned(),
                "has-this".to_owned(),
            )]));
        }
    }
    api.create(&pp, &stuck).await?;
    wait_deployment(bed, &api, "stuck", "past its progress deadline", |d| {
        observed(d)
            && condition_reason(d, "Progressing").as_deref() == Some("ProgressDeadlineExceeded")
    })
    .await?;

    // Settle: every ReplicaSet's status caught up (terminated pods gone), and no event still on
    // its way (the recorders send asynchronously).
    let rs_api = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    eventually("replica sets settled", STEP_TIMEOUT, POLL, || {
        replica_sets_settled(&rs_api)
    })
    .await
    .with_context(|| cm_log(bed))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = eventually("replica sets settled", STEP_TIMEOUT, POLL, || {
        replica_sets_settled(&rs_api)
    })
    .await?;
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let mut out = BTreeMap::new();
    for name in ["web", "recreate", "stuck"] {
        let d = api.get(name).await?;
        out.insert(name.to_owned(), normalise(&d, &rss, &events));
    }
    Ok(out)
}

async fn run_on(cm: Component) -> Result<BTreeMap<String, DeploymentState>> {
    let bed = start_bed(cm).await?;
    scenario(&bed)
        .await
        .with_context(|| format!("the scenario on the {cm:?} bed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ferrite_controller_manager_ends_deployments_in_the_same_state_as_the_stock_one()
-> Result<()> {
    // Both scenarios run at once on two private beds: the end states do not depend on timing.
    let (stock, ferrite) = tokio::try_join!(run_on(Component::Stock), run_on(Component::Ferrite))?;
    for (name, s) in &stock {
        eprintln!("stock   {name}: {s:?}");
        eprintln!("ferrite {name}: {:?}", ferrite.get(name));
    }
    ensure!(
        stock == ferrite,
        "end states differ:\nstock:   {stock:#?}\nferrite: {ferrite:#?}"
    );
    Ok(())
}
