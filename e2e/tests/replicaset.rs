//! The ReplicaSet controller run by the Ferrite controller manager (`--controllers=replicaset`)
//! over a stock apiserver and scheduler, with kwok moving bound pods to Running/Ready: scaling,
//! deletion ranking, adoption and release, the ReplicaFailure condition under a quota,
//! minReadySeconds, and no overshoot while pods are deleted in bulk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Pod, ResourceQuota};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        // 110 pods per kwok node: room for the 1000-replica stress test.
        o.nodes = 12;
        o.controller_manager = Component::Ferrite;
        o.scheduler = Component::Stock;
        o.ferrite_args = vec!["--controllers=replicaset".into()];
        o
    })
    .await
}

fn cm_log(bed: &Bed) -> String {
    bed.log_tail("controller-manager")
}

/// A namespace with a `default` service account (pod admission needs it).
async fn setup(prefix: &str) -> Result<(&'static Bed, kube::Client, String)> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    // The Ferrite serviceaccount controller may have made it already.
    testing::ensure_default_service_account(&client, &ns).await?;
    Ok((bed, client, ns))
}

fn replica_set(name: &str, replicas: i32, min_ready_seconds: i32) -> Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready_seconds,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}, "annotations": {"note": "from-template"}},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))?)
}

async fn create_rs(client: &kube::Client, ns: &str, rs: &ReplicaSet) -> Result<ReplicaSet> {
    Ok(Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), rs)
        .await?)
}

async fn scale(client: &kube::Client, ns: &str, name: &str, replicas: i32) -> Result<()> {
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    Ok(())
}

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn running_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The active pods `rs` owns, read from the apiserver.
async fn owned_pods(client: &kube::Client, ns: &str, uid: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| owned_by(p, uid) && active(p))
        .collect())
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Waits until `rs` owns exactly `n` active pods, all Running and Ready, and its status says so.
async fn wait_running(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    rs: &ReplicaSet,
    n: usize,
) -> Result<Vec<Pod>> {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), ns);
    eventually(
        &format!("{name} to run exactly {n} ready pods"),
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            let pods = owned_pods(client, ns, &uid).await.ok()?;
            let cur = rss.get(&name).await.ok()?;
            let st = cur.status.clone()?;
            let want = i32::try_from(n).ok()?;
            (pods.len() == n
                && pods.iter().all(running_ready)
                && st.replicas == want
                && st.ready_replicas.unwrap_or(0) == want
                && st.available_replicas.unwrap_or(0) == want
                && st.fully_labeled_replicas.unwrap_or(0) == want
                && st.observed_generation == cur.metadata.generation)
                .then_some(pods)
        },
    )
    .await
    .with_context(|| cm_log(bed))
}

async fn events_for(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("ReplicaSet")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

async fn set_unready(client: &kube::Client, ns: &str, pod: &str) -> Result<()> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "ContainersReady", "status": "False"},
            ]}})),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_and_down_to_the_exact_count_with_pods_running() -> Result<()> {
    let (bed, client, ns) = setup("rs-scale").await?;
    let rs = create_rs(&client, &ns, &replica_set("web", 3, 0)?).await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pods = wait_running(bed, &client, &ns, &rs, 3).await?;
    for p in &pods {
        let refs = p.metadata.owner_references.clone().unwrap_or_default();
        ensure!(refs.len() == 1, "one owner reference: {refs:?}");
        let r = &refs[0];
        ensure!(
            r.kind == "ReplicaSet"
                && r.api_version == "apps/v1"
                && r.name == "web"
                && r.uid == uid
                && r.controller == Some(true)
                && r.block_owner_deletion == Some(true),
            "controller reference: {r:?}"
        );
        ensure!(p.metadata.generate_name.as_deref() == Some("web-"));
        ensure!(
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("note"))
                .map(String::as_str)
                == Some("from-template")
        );
    }
    scale(&client, &ns, "web", 5).await?;
    wait_running(bed, &client, &ns, &rs, 5).await?;
    scale(&client, &ns, "web", 1).await?;
    wait_running(bed, &client, &ns, &rs, 1).await?;
    let created = eventually(
        "SuccessfulCreate and SuccessfulDelete events",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let created = events_for(&client, &ns, "web", "SuccessfulCreate").await;
            let deleted = events_for(&client, &ns, "web", "SuccessfulDelete").await;
            (!created.is_empty() && !deleted.is_empty()).then_some((created, deleted))
        },
    )
    .await?;
    for e in created.0 {
        let m = e.message.unwrap_or_default();
        ensure!(m.starts_with("Created pod: web-"), "{m}");
        ensure!(e.source.and_then(|s| s.component).as_deref() == Some("replicaset-controller"));
    }
    for e in created.1 {
        let m = e.message.unwrap_or_default();
        ensure!(m.starts_with("Deleted pod: web-"), "{m}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_unscheduled_and_unready_pods_before_ready_ones() -> Result<()> {
    let (bed, client, ns) = setup("rs-rank").await?;
    let rs = create_rs(&client, &ns, &replica_set("rank", 3, 0)?).await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pods = wait_running(bed, &client, &ns, &rs, 3).await?;
    let unready = name_of(&pods[0]);
    set_unready(&client, &ns, &unready).await?;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    eventually(
        "readyReplicas to drop to 2",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let st = rss.get("rank").await.ok()?.status?;
            (st.ready_replicas.unwrap_or(0) == 2).then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;

    // An orphan that matches but can never be scheduled: adopted, it makes one pod too many,
    // and as the only unassigned pod it is the one deleted.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unschedulable", "labels": {"app": "rank", "tier": "web"}},
        "spec": {
            "nodeSelector": {"no-such-label": "anywhere"},
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))?;
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    pod_api.create(&PostParams::default(), &orphan).await?;
    eventually(
        "the unschedulable orphan to be adopted and deleted",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let gone = match pod_api.get_opt("unschedulable").await.ok()? {
                None => true,
                Some(p) => p.metadata.deletion_timestamp.is_some(),
            };
            gone.then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    let left: Vec<String> = owned_pods(&client, &ns, &uid)
        .await?
        .iter()
        .map(name_of)
        .collect();
    let mut before: Vec<String> = pods.iter().map(name_of).collect();
    before.sort();
    let mut after = left.clone();
    after.sort();
    ensure!(
        after == before,
        "the three original pods stay: {after:?} vs {before:?}"
    );

    // Scale down by one: the unready pod goes, the ready ones stay.
    scale(&client, &ns, "rank", 2).await?;
    let left = eventually(
        "two pods left",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let pods = owned_pods(&client, &ns, &uid).await.ok()?;
            (pods.len() == 2).then_some(pods)
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    ensure!(
        left.iter().all(|p| name_of(p) != unready),
        "the unready pod {unready} must be deleted first; left {:?}",
        left.iter().map(name_of).collect::<Vec<_>>()
    );
    wait_running(bed, &client, &ns, &rs, 2).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_a_matching_orphan_and_releases_a_pod_whose_labels_stop_matching() -> Result<()> {
    let (bed, client, ns) = setup("rs-adopt").await?;
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "adopt", "tier": "web"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))?;
    pod_api.create(&PostParams::default(), &orphan).await?;
    let rs = create_rs(&client, &ns, &replica_set("adopt", 3, 0)?).await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pods = wait_running(bed, &client, &ns, &rs, 3).await?;
    ensure!(
        pods.iter().any(|p| name_of(p) == "orphan"),
        "the orphan is adopted instead of a third pod being created: {:?}",
        pods.iter().map(name_of).collect::<Vec<_>>()
    );
    let adopted = pod_api.get("orphan").await?;
    let refs = adopted.metadata.owner_references.unwrap_or_default();
    ensure!(
        refs.len() == 1
            && refs[0].uid == uid
            && refs[0].controller == Some(true)
            && refs[0].block_owner_deletion == Some(true),
        "{refs:?}"
    );

    // Relabel one of the pods the RS created: it is released (still running, no owner) and
    // replaced.
    let victim = pods
        .iter()
        .map(name_of)
        .find(|n| n != "orphan")
        .context("a created pod")?;
    pod_api
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
        )
        .await?;
    eventually(
        "the relabelled pod to be released",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let p = pod_api.get(&victim).await.ok()?;
            (p.metadata.deletion_timestamp.is_none()
                && p.metadata.owner_references.unwrap_or_default().is_empty())
            .then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    let now = wait_running(bed, &client, &ns, &rs, 3).await?;
    ensure!(now.iter().all(|p| name_of(p) != victim));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_quota_makes_creates_fail_with_a_replica_failure_condition_until_raised() -> Result<()>
{
    let (bed, client, ns) = setup("rs-quota").await?;
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "pods"}, "spec": {"hard": {"pods": "2"}},
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    // No resourcequota controller runs on this bed: publish the usage it would, so that quota
    // admission (which refuses while a quota's status is unknown) counts from zero.
    quotas
        .patch_status(
            "pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": {"pods": "2"}, "used": {"pods": "0"}}})),
        )
        .await?;
    let rs = create_rs(&client, &ns, &replica_set("quota", 3, 0)?).await?;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    let cond = eventually(
        "a ReplicaFailure condition",
        Duration::from_secs(90),
        Duration::from_millis(250),
        || async {
            let st = rss.get("quota").await.ok()?.status?;
            st.conditions?
                .into_iter()
                .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    ensure!(cond.status.as_deref() == Some("True"), "{cond:?}");
    ensure!(cond.reason.as_deref() == Some("FailedCreate"), "{cond:?}");
    let message = cond.message.unwrap_or_default();
    ensure!(message.contains("exceeded quota"), "{message}");
    let events = eventually(
        "a FailedCreate event",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let e = events_for(&client, &ns, "quota", "FailedCreate").await;
            (!e.is_empty()).then_some(e)
        },
    )
    .await?;
    ensure!(events[0].type_.as_deref() == Some("Warning"));
    let em = events[0].message.clone().unwrap_or_default();
    ensure!(
        em.starts_with("Error creating: ") && em.contains("exceeded quota"),
        "{em}"
    );

    quotas
        .patch(
            "pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"pods": "10"}}})),
        )
        .await?;
    quotas
        .patch_status(
            "pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": {"pods": "10"}}})),
        )
        .await?;
    wait_running(bed, &client, &ns, &rs, 3).await?;
    eventually(
        "the ReplicaFailure condition to be cleared",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let st = rss.get("quota").await.ok()?.status?;
            (!st.conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_.as_deref() == Some("ReplicaFailure")))
            .then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn available_replicas_wait_for_min_ready_seconds() -> Result<()> {
    const MIN_READY: i64 = 15;
    let (bed, client, ns) = setup("rs-minready").await?;
    let rs = create_rs(&client, &ns, &replica_set("slow", 2, 15)?).await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    let mut saw_ready_but_unavailable = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        ensure!(
            Instant::now() < deadline,
            "availableReplicas never reached 2\n{}",
            cm_log(bed)
        );
        let st = rss.get("slow").await?.status.unwrap_or_default();
        let pods = owned_pods(&client, &ns, &uid).await?;
        let now = Timestamp::now();
        // The latest time a pod became ready: none may count as available before +15s.
        let ready_at = pods
            .iter()
            .filter_map(|p| {
                p.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status == "True")?
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0)
            })
            .max();
        let available = st.available_replicas.unwrap_or(0);
        let ready = st.ready_replicas.unwrap_or(0);
        if ready == 2 && available < 2 {
            saw_ready_but_unavailable = true;
        }
        if available == 2 {
            let at = ready_at.context("available pods must be ready")?;
            // Pod times have a one-second resolution.
            let earliest = at
                .checked_add(SignedDuration::from_secs(MIN_READY - 1))
                .context("time")?;
            ensure!(
                now >= earliest,
                "available at {now} before {MIN_READY}s after ready at {at}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        saw_ready_but_unavailable,
        "pods were ready for a while without being available"
    );
    Ok(())
}

/// The non-terminating pods `uid` owns among those labelled `app=<app>`, by name, read as
/// metadata only (a full list of 1000 pods every 100 ms would load the small machine).
async fn owned_pod_names(
    pods: &Api<Pod>,
    app: &str,
    uid: &str,
) -> Result<std::collections::BTreeSet<String>> {
    Ok(pods
        .list_metadata(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true) && r.uid == uid)
        })
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// What the every-100 ms watcher saw.
#[derive(Default)]
struct Watch {
    observations: usize,
    /// (owned non-terminating pods, the ceiling in force) for every observation above it.
    overshoots: Vec<(usize, usize)>,
    /// Pods that vanished or began terminating while neither the test nor a scale-down could
    /// have deleted them: the controller removing pods it should never have created.
    controller_deletes: Vec<String>,
}

/// Shared between the test and its watcher.
#[derive(Default)]
struct Stress {
    stop: AtomicBool,
    /// `spec.replicas`, except that a scale-down keeps the old value until the controller has
    /// reached the new one (the pods above it are then expected, not an overshoot).
    ceiling: AtomicUsize,
    /// The controller legitimately deletes pods: a scale-down or a delete-collection by the test
    /// (whose victims the test cannot name) is in progress.
    deletes_expected: AtomicBool,
    deleted_by_test: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// Deletes `names` all at once, noting them as the test's own deletions first.
async fn delete_pods(pods: &Api<Pod>, stress: &Stress, names: Vec<String>) -> Result<()> {
    if let Ok(mut mine) = stress.deleted_by_test.lock() {
        mine.extend(names.iter().cloned());
    }
    let deletes = names.iter().map(|n| {
        let api = pods.clone();
        async move { api.delete(n, &DeleteParams::default()).await }
    });
    for r in futures::future::join_all(deletes).await {
        match r {
            // Already gone (or going).
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => bail!("deleting: {e}"),
        }
    }
    Ok(())
}

/// `batch` of the currently owned pods, starting at `skip`.
async fn some_pods(pods: &Api<Pod>, uid: &str, skip: usize, batch: usize) -> Result<Vec<String>> {
    Ok(owned_pod_names(pods, "stress", uid)
        .await?
        .into_iter()
        .skip(skip)
        .take(batch)
        .collect())
}

/// At the size (kubernetes/kubernetes pkg/controller/replicaset: expectations guard
/// against the informer cache lagging behind the controller's own creates and deletes): 1000
/// replicas scaled 1000 → 600 → 1000 while pods are deleted in bulk, with a watcher checking
/// every 100 ms that the owned, non-terminating pods never exceed `spec.replicas`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_deletes_never_make_the_replica_set_overshoot() -> Result<()> {
    const FULL: usize = 1000;
    const SCALED_DOWN: usize = 600;
    let started = Instant::now();
    let (bed, client, ns) = setup("rs-stress").await?;
    let rs = create_rs(
        &client,
        &ns,
        &replica_set("stress", i32::try_from(FULL)?, 0)?,
    )
    .await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let pod_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let stress = Arc::new(Stress::default());
    stress.ceiling.store(FULL, Ordering::SeqCst);

    let watcher = {
        let (pods, uid, stress) = (pod_api.clone(), uid.clone(), stress.clone());
        tokio::spawn(async move {
            let mut seen = Watch::default();
            let mut previous = std::collections::BTreeSet::new();
            while !stress.stop.load(Ordering::SeqCst) {
                // Read the flags before the list: a window that closes during the list still
                // counts as open for it.
                let ceiling = stress.ceiling.load(Ordering::SeqCst);
                let expected = stress.deletes_expected.load(Ordering::SeqCst);
                if let Ok(now) = owned_pod_names(&pods, "stress", &uid).await {
                    let expected = expected || stress.deletes_expected.load(Ordering::SeqCst);
                    let ceiling = ceiling.max(stress.ceiling.load(Ordering::SeqCst));
                    seen.observations += 1;
                    if now.len() > ceiling {
                        seen.overshoots.push((now.len(), ceiling));
                    }
                    if !expected && let Ok(mine) = stress.deleted_by_test.lock() {
                        seen.controller_deletes.extend(
                            previous
                                .difference(&now)
                                .filter(|n| !mine.contains(*n))
                                .cloned(),
                        );
                    }
                    previous = now;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    let wait_for = |n: usize| {
        let (pods, uid) = (pod_api.clone(), uid.clone());
        async move {
            eventually(
                &format!("the replica set to own exactly {n} pods"),
                Duration::from_secs(150),
                Duration::from_millis(250),
                || async {
                    let have = owned_pod_names(&pods, "stress", &uid).await.ok()?.len();
                    (have == n).then_some(())
                },
            )
            .await
            .with_context(|| cm_log(bed))
        }
    };

    let mut phases = Vec::new();
    let mut phase = |name: &'static str| phases.push((name, started.elapsed()));
    wait_for(FULL).await?;
    phase("1000 up");
    // A bulk delete at a steady size.
    let doomed = some_pods(&pod_api, &uid, 7, 200).await?;
    delete_pods(&pod_api, &stress, doomed).await?;
    wait_for(FULL).await?;
    phase("200 deleted and replaced");
    // Scale down while a batch is deleted: until the controller reaches 600, pods above it are
    // expected and so are its own deletes.
    stress.deletes_expected.store(true, Ordering::SeqCst);
    let doomed = some_pods(&pod_api, &uid, 300, 150).await?;
    let (scaled, deleted) = tokio::join!(
        scale(&client, &ns, "stress", i32::try_from(SCALED_DOWN)?),
        delete_pods(&pod_api, &stress, doomed)
    );
    scaled?;
    deleted?;
    wait_for(SCALED_DOWN).await?;
    // The controller's view of the test's concurrent deletes may lag, so it may legitimately
    // delete a few too many and then replace them (upstream behaves the same): wait until the
    // count has held at 600 for a while before deletes count as unexpected again.
    let settled_since = Instant::now();
    let mut held_since = Instant::now();
    while held_since.elapsed() < Duration::from_secs(3) {
        ensure!(
            settled_since.elapsed() < Duration::from_secs(120),
            "the replica set never settled at {SCALED_DOWN} pods\n{}",
            cm_log(bed)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        if owned_pod_names(&pod_api, "stress", &uid).await?.len() != SCALED_DOWN {
            held_since = Instant::now();
        }
    }
    phase("scaled down to 600");
    stress.ceiling.store(SCALED_DOWN, Ordering::SeqCst);
    // Let the watcher take a fresh baseline before attributing deletes again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stress.deletes_expected.store(false, Ordering::SeqCst);
    // Scale back up while batches are deleted: the ceiling rises before the spec does.
    stress.ceiling.store(FULL, Ordering::SeqCst);
    scale(&client, &ns, "stress", i32::try_from(FULL)?).await?;
    for batch in 0..3 {
        let doomed = some_pods(&pod_api, &uid, batch * 11, 100).await?;
        delete_pods(&pod_api, &stress, doomed).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(FULL).await?;
    phase("scaled up to 1000");
    // Everything at once.
    stress.deletes_expected.store(true, Ordering::SeqCst);
    pod_api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=stress"),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stress.deletes_expected.store(false, Ordering::SeqCst);
    wait_for(FULL).await?;
    phase("all deleted and replaced");
    // Let a lagging controller show any overshoot before judging.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stress.stop.store(true, Ordering::SeqCst);
    let seen = watcher.await?;
    eprintln!(
        "phases (elapsed): {phases:?}, {} observations",
        seen.observations
    );
    ensure!(
        seen.observations > 50,
        "only {} observations",
        seen.observations
    );
    ensure!(
        seen.overshoots.is_empty(),
        "saw more non-terminating owned pods than spec.replicas (count, replicas): {:?}\n{}",
        seen.overshoots,
        cm_log(bed)
    );
    ensure!(
        seen.controller_deletes.is_empty(),
        "the controller deleted {} pods it should never have created: {:?}\n{}",
        seen.controller_deletes.len(),
        seen.controller_deletes,
        cm_log(bed)
    );
    let status = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .get("stress")
        .await?
        .status
        .context("status")?;
    ensure!(
        status.replicas <= i32::try_from(FULL)?,
        "status.replicas {} above {FULL}",
        status.replicas
    );
    Api::<ReplicaSet>::namespaced(client.clone(), &ns)
        .delete("stress", &DeleteParams::default())
        .await?;
    pod_api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=stress"),
        )
        .await?;
    Ok(())
}
