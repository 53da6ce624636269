//! The essential controllers a cluster needs once kube-controller-manager is gone, run by the
//! Ferrite controller manager (`--controllers=*`) over a stock apiserver and scheduler:
//! serviceaccount, root-ca-certificate-publisher, clusterrole-aggregation, pod-garbage-collector
//! and ttl-after-finished.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::bed::kwok_node;
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 1;
        o.controller_manager = Component::Ferrite;
        o.scheduler = Component::Stock;
        o
    })
    .await
}

/// The Ferrite controller manager's log, to explain a timeout.
fn cm_log(bed: &Bed) -> String {
    bed.log_tail("controller-manager")
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(v)?)
}

async fn wait_default_sa(bed: &Bed, client: &kube::Client, ns: &str) -> Result<ServiceAccount> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    eventually(
        "the default service account",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { api.get_opt("default").await.ok().flatten() },
    )
    .await
    .with_context(|| cm_log(bed))
}

async fn wait_root_ca(bed: &Bed, client: &kube::Client, ns: &str, ca: &str) -> Result<ConfigMap> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    eventually(
        "kube-root-ca.crt with the bed's CA",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            api.get_opt(ROOT_CA_CONFIG_MAP)
                .await
                .ok()
                .flatten()
                .filter(|cm| {
                    cm.data
                        .as_ref()
                        .and_then(|d| d.get("ca.crt"))
                        .map(String::as_str)
                        == Some(ca)
                        && cm.data.as_ref().map(BTreeMap::len) == Some(1)
                })
        },
    )
    .await
    .with_context(|| cm_log(bed))
}

fn bed_ca(bed: &Bed) -> Result<String> {
    std::fs::read_to_string(bed.path("pki/ca.crt")).context("reading the bed's CA")
}

fn pod(name: &str, node: Option<&str>, finalizer: bool) -> Result<Pod> {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    });
    if let Some(node) = node {
        p["spec"]["nodeName"] = json!(node);
    }
    if finalizer {
        p["metadata"]["finalizers"] = json!(["ferrite.test/hold"]);
    }
    obj(p)
}

async fn drop_finalizers(api: &Api<Pod>, name: &str) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_new_namespace_gets_the_default_service_account_and_root_ca_and_admits_pods() -> Result<()>
{
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-ns").await?;
    let ca = bed_ca(bed)?;

    wait_default_sa(bed, &client, &ns).await?;
    let cm = wait_root_ca(bed, &client, &ns, &ca).await?;
    let description = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/description"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        description
            .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver"),
        "description annotation: {description:?}"
    );

    // The ServiceAccount admission plugin needs `default`; the test never created it.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let created = eventually(
        "a pod to be admitted",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let p = pod("web", None, false).ok()?;
            match pods.create(&PostParams::default(), &p).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::info!(error = %e, "pod not admitted yet");
                    None
                }
            }
        },
    )
    .await?;
    let spec = created.spec.unwrap_or_default();
    ensure!(
        spec.service_account_name.as_deref() == Some("default"),
        "service account: {:?}",
        spec.service_account_name
    );
    // The projected token volume the admission plugin adds reads kube-root-ca.crt.
    ensure!(
        spec.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "no kube-api-access volume was injected"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_default_service_account_is_recreated() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-sa").await?;
    let first = wait_default_sa(bed, &client, &ns).await?;
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    api.delete("default", &DeleteParams::default()).await?;
    let uid = first.metadata.uid.clone();
    eventually(
        "a new default service account",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            api.get_opt("default")
                .await
                .ok()
                .flatten()
                .filter(|sa| sa.metadata.uid != uid)
        },
    )
    .await
    .with_context(|| cm_log(bed))?;

    // An existing account is never updated: a label we add stays.
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"labels": {"mine": "yes"}}, "automountServiceAccountToken": false}),
        ),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sa = api.get("default").await?;
    ensure!(
        sa.automount_service_account_token == Some(false),
        "the controller changed an existing account: {sa:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_edited_or_deleted_root_ca_config_map_is_repaired() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-ca").await?;
    let ca = bed_ca(bed)?;
    wait_root_ca(bed, &client, &ns, &ca).await?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);

    api.patch(
        ROOT_CA_CONFIG_MAP,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "tampered", "extra": "x"}})),
    )
    .await?;
    wait_root_ca(bed, &client, &ns, &ca).await?;

    api.delete(ROOT_CA_CONFIG_MAP, &DeleteParams::default())
        .await?;
    let cm = wait_root_ca(bed, &client, &ns, &ca).await?;
    ensure!(
        cm.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/description")),
        "recreated without the description"
    );
    Ok(())
}

#[tokio::test]
async fn without_root_ca_file_the_client_configurations_ca_is_published() -> Result<()> {
    // Upstream falls back to the CA its own kubeconfig trusts; `--root-ca-file=` unsets the
    // bed's default. A bed of its own: the shared one already publishes from the file.
    let bed = testing::PrivateBed::start(|mut o| {
        o.nodes = 0;
        o.controller_manager = Component::Ferrite;
        o.ferrite_args = vec![
            "--root-ca-file=".into(),
            "--controllers=root-ca-cert-publisher".into(),
        ];
        o
    })
    .await?;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-client-ca").await?;
    let want: Vec<Vec<u8>> = pem::parse_many(bed_ca(&bed)?)?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    eventually(
        "kube-root-ca.crt with the kubeconfig's CA",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let cm = api.get_opt(ROOT_CA_CONFIG_MAP).await.ok().flatten()?;
            let published = cm.data?.get("ca.crt")?.clone();
            let got: Vec<Vec<u8>> = pem::parse_many(published)
                .ok()?
                .into_iter()
                .map(|p| p.into_contents())
                .collect();
            (got == want).then_some(())
        },
    )
    .await
    .with_context(|| bed.log_tail("controller-manager"))?;
    Ok(())
}

fn has_rule(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.as_deref().unwrap_or_default().iter().any(|r| {
        r.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == group)
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[tokio::test]
async fn the_edit_role_is_aggregated_and_lets_a_bound_user_create_deployments() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-rbac").await?;
    let roles = Api::<ClusterRole>::all(client.clone());
    eventually(
        "ClusterRole edit to allow creating deployments",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            roles
                .get_opt("edit")
                .await
                .ok()
                .flatten()
                .filter(|r| has_rule(r, "apps", "deployments", "create"))
        },
    )
    .await
    .with_context(|| cm_log(bed))?;

    let binding: RoleBinding = obj(json!({
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let sars = Api::<SubjectAccessReview>::all(client.clone());
    let review = |namespace: String| {
        obj::<SubjectAccessReview>(json!({
            "spec": {"user": "alice", "resourceAttributes": {
                "namespace": namespace, "verb": "create", "group": "apps", "resource": "deployments"}},
        }))
    };
    let allowed = eventually(
        "alice to be allowed to create deployments",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let r = sars
                .create(&PostParams::default(), &review(ns.clone()).ok()?)
                .await
                .ok()?;
            r.status.filter(|s| s.allowed)
        },
    )
    .await;
    ensure!(allowed.is_ok(), "{allowed:?}");
    let elsewhere = sars
        .create(&PostParams::default(), &review("default".into())?)
        .await?;
    ensure!(
        !elsewhere.status.is_some_and(|s| s.allowed),
        "alice may create deployments outside her namespace"
    );
    Ok(())
}

#[tokio::test]
async fn a_custom_aggregated_role_follows_the_roles_it_selects() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let label = "ferrite.test/aggregate";
    let roles = Api::<ClusterRole>::all(client.clone());
    let pp = PostParams::default();
    let target = format!("agg-{tag}");
    roles
        .create(
            &pp,
            &obj(json!({
                "metadata": {"name": target},
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {label: tag}}]},
            }))?,
        )
        .await?;
    for (name, resource) in [("b", "secrets"), ("a", "configmaps")] {
        roles
            .create(
                &pp,
                &obj(json!({
                    "metadata": {"name": format!("part-{name}-{tag}"), "labels": {label: tag}},
                    "rules": [
                        {"apiGroups": [""], "resources": [resource], "verbs": ["get"]},
                        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                    ],
                }))?,
            )
            .await?;
    }
    let rules_of = |role: &ClusterRole| -> Vec<(String, String)> {
        role.rules
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    r.resources.clone().unwrap_or_default().join(","),
                    r.verbs.join(","),
                )
            })
            .collect()
    };
    let expect = |want: Vec<(&str, &str)>| {
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let roles = roles.clone();
        let target = target.clone();
        async move {
            eventually(
                &format!("{target} to have rules {want:?}"),
                Duration::from_secs(30),
                Duration::from_millis(200),
                || async {
                    let r = roles.get(&target).await.ok()?;
                    (rules_of(&r) == want).then_some(())
                },
            )
            .await
        }
    };
    // Union in role-name order (part-a before part-b), the shared pods rule once.
    expect(vec![
        ("configmaps", "get"),
        ("pods", "list"),
        ("secrets", "get"),
    ])
    .await
    .with_context(|| cm_log(bed))?;

    // A change to a selected role is followed; so is a role leaving the selection.
    roles
        .patch(
            &format!("part-a-{tag}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["watch"]}]})),
        )
        .await?;
    expect(vec![
        ("configmaps", "watch"),
        ("secrets", "get"),
        ("pods", "list"),
    ])
    .await?;
    roles
        .delete(&format!("part-b-{tag}"), &DeleteParams::default())
        .await?;
    expect(vec![("configmaps", "watch")]).await?;
    for name in [target, format!("part-a-{tag}")] {
        let _ = roles.delete(&name, &DeleteParams::default()).await;
    }
    Ok(())
}

#[tokio::test]
async fn pods_of_a_deleted_node_are_marked_as_disruption_targets_and_deleted() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-orphan").await?;
    wait_default_sa(bed, &client, &ns).await?;
    let node_name = format!("doomed-{:08x}", rand::random::<u32>());
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .create(&PostParams::default(), &kwok_node(&node_name))
        .await?;

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(
        &PostParams::default(),
        &pod("plain", Some(&node_name), false)?,
    )
    .await?;
    pods.create(
        &PostParams::default(),
        &pod("held", Some(&node_name), true)?,
    )
    .await?;
    eventually(
        "kwok to run the pods",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let list = pods.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(())
        },
    )
    .await?;

    nodes.delete(&node_name, &DeleteParams::default()).await?;
    let started = std::time::Instant::now();
    // gcCheckPeriod 20 s + quarantine 40 s: at most about a minute.
    eventually(
        "the orphaned pods to be deleted",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || async {
            let plain_gone = pods.get_opt("plain").await.ok()?.is_none();
            let held_deleting = pods
                .get_opt("held")
                .await
                .ok()?
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            (plain_gone && held_deleting).then_some(())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    tracing::info!(elapsed = ?started.elapsed(), "orphans collected");
    ensure!(
        started.elapsed() >= Duration::from_secs(30),
        "orphans were deleted after {:?}, before the 40 s quarantine could pass",
        started.elapsed()
    );

    // The pod our finalizer holds shows what PodGC wrote before deleting it.
    let held = pods
        .get_opt("held")
        .await?
        .context("the held pod vanished: its finalizer was removed by someone else")?;
    let status = held.status.unwrap_or_default();
    ensure!(
        status.phase.as_deref() == Some("Failed"),
        "phase {:?}",
        status.phase
    );
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .context("no DisruptionTarget condition")?;
    ensure!(
        condition.status == "True"
            && condition.reason.as_deref() == Some("DeletionByPodGC")
            && condition.message.as_deref() == Some("PodGC: node no longer exists"),
        "condition {condition:?}"
    );
    drop_finalizers(&pods, "held").await?;
    Ok(())
}

#[tokio::test]
async fn an_unscheduled_terminating_pod_is_marked_failed_and_force_deleted() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-unscheduled").await?;
    wait_default_sa(bed, &client, &ns).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mut p = pod("nowhere", None, true)?;
    if let Some(spec) = p.spec.as_mut() {
        spec.node_selector = Some(BTreeMap::from([(
            "ferrite.test/no-such-node".to_owned(),
            "x".to_owned(),
        )]));
    }
    pods.create(&PostParams::default(), &p).await?;
    pods.delete("nowhere", &DeleteParams::default()).await?;
    // Held by our finalizer, so what PodGC did stays visible: phase Failed.
    let pod = eventually(
        "the unscheduled terminating pod to be marked Failed",
        Duration::from_secs(45),
        Duration::from_millis(500),
        || async {
            pods.get_opt("nowhere")
                .await
                .ok()?
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    ensure!(
        pod.spec.and_then(|s| s.node_name).is_none(),
        "the pod was scheduled after all"
    );
    drop_finalizers(&pods, "nowhere").await?;
    eventually(
        "the pod to be gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { pods.get_opt("nowhere").await.ok()?.is_none().then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_finished_job_is_deleted_in_the_foreground_once_its_ttl_expires() -> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "essentials-ttl").await?;
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    // The test finishes the Job itself, so it hands the Job to another controller (managedBy):
    // Ferrite's Job controller leaves it alone, as upstream's does.
    let job: Job = obj(json!({
        "metadata": {"name": "done"},
        "spec": {
            "ttlSecondsAfterFinished": 5,
            "managedBy": "example.com/test-controller",
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    }))?;
    let created = jobs.create(&PostParams::default(), &job).await?;
    // A dependent that blocks its owner's deletion and is held by a finalizer of ours: while it
    // exists, a foreground deletion keeps the Job with its foregroundDeletion finalizer.
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let dependent: ConfigMap = obj(json!({
        "metadata": {"name": "dependent", "finalizers": ["example.com/hold"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "done",
                "uid": created.metadata.uid, "blockOwnerDeletion": true}]},
    }))?;
    configmaps
        .create(&PostParams::default(), &dependent)
        .await?;

    let finished = Timestamp::now().round(k8s_openapi::jiff::Unit::Second)?;
    let at = finished.to_string();
    let status = json!({"status": {
        "startTime": at, "completionTime": at, "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": at, "lastProbeTime": at},
            {"type": "Complete", "status": "True", "lastTransitionTime": at, "lastProbeTime": at},
        ],
    }});
    jobs.patch_status("done", &PatchParams::default(), &Patch::Merge(status))
        .await?;

    let deleted = eventually(
        "the Job to be deleted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            jobs.get_opt("done")
                .await
                .ok()?
                .filter(|j| j.metadata.deletion_timestamp.is_some())
        },
    )
    .await
    .with_context(|| cm_log(bed))?;
    let deletion = deleted
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .context("no deletionTimestamp")?;
    let expiry = finished + SignedDuration::from_secs(5);
    ensure!(
        deletion >= expiry,
        "deleted at {deletion}, before the TTL expired at {expiry}"
    );
    ensure!(
        deletion <= expiry + SignedDuration::from_secs(10),
        "deleted at {deletion}, long after the TTL expired at {expiry}"
    );
    ensure!(
        deleted
            .metadata
            .finalizers
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|f| f == "foregroundDeletion"),
        "not a foreground deletion: {:?}",
        deleted.metadata.finalizers
    );
    // The garbage collector deletes the dependent first; once it is gone, the Job goes too.
    configmaps
        .patch(
            "dependent",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually(
        "the Job to be gone",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { jobs.get_opt("done").await.ok()?.is_none().then_some(()) },
    )
    .await?;
    Ok(())
}
