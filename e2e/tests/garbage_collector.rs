//! The garbage collector run by the Ferrite controller manager (with the deployment and
//! replicaset controllers) over a stock apiserver and scheduler: background, foreground and
//! orphan cascading deletion, owners of a CRD installed during the test, dangling owner
//! references, and the OwnerRefInvalidNamespace warning for a cluster-scoped dependent of a
//! namespaced owner.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);
const EVERY: Duration = Duration::from_millis(300);

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.controller_manager = Component::Ferrite;
        o.scheduler = Component::Stock;
        o.ferrite_args = vec!["--controllers=garbagecollector,deployment,replicaset".into()];
        o
    })
    .await
}

async fn setup(prefix: &str) -> Result<(kube::Client, String)> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, prefix).await?;
    testing::ensure_default_service_account(&client, &ns).await?;
    Ok((client, ns))
}

fn deployment(name: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        },
    }))?)
}

/// A Deployment with `replicas` pods, once they all exist; returns its ReplicaSets' names.
async fn deployment_with_pods(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: usize,
) -> Result<Vec<String>> {
    let replicas_i32 = i32::try_from(replicas)?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment(name, replicas_i32)?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually("the deployment's pods", TIMEOUT, EVERY, || async {
        let n = pods.list(&ListParams::default()).await.ok()?.items.len();
        (n == replicas).then_some(())
    })
    .await?;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(rss
        .items
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect())
}

async fn count<K>(api: &Api<K>) -> Option<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .ok()
        .map(|l| l.items.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_deployment_in_the_background_removes_its_replica_sets_and_pods() -> Result<()> {
    let (client, ns) = setup("gc-background").await?;
    let rss = deployment_with_pods(&client, &ns, "web", 3).await?;
    ensure!(!rss.is_empty(), "the deployment made no ReplicaSet");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::background())
        .await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the ReplicaSets and pods collected",
        TIMEOUT,
        EVERY,
        || async {
            let left = count(&rs_api).await? + count(&pod_api).await?;
            (left == 0).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn foreground_deletion_deletes_the_dependents_first_and_the_owner_last() -> Result<()> {
    let (client, ns) = setup("gc-foreground").await?;
    deployment_with_pods(&client, &ns, "web", 2).await?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // One pod holds on with a finalizer of its own, so that the owner chain must wait for it.
    let held = pod_api.list(&ListParams::default()).await?.items[0]
        .metadata
        .name
        .clone()
        .context("pod without a name")?;
    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["gc.ferrite.test/hold"]}})),
        )
        .await?;
    let dep_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    dep_api.delete("web", &DeleteParams::foreground()).await?;

    // The other pod goes; the held one is terminating; the Deployment (and ReplicaSet) wait
    // with the foregroundDeletion finalizer.
    eventually(
        "only the held pod left, terminating",
        TIMEOUT,
        EVERY,
        || async {
            let pods = pod_api.list(&ListParams::default()).await.ok()?.items;
            (pods.len() == 1 && pods[0].metadata.deletion_timestamp.is_some()).then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = dep_api
        .get("web")
        .await
        .context("the owner went before its dependents")?;
    ensure!(d.metadata.deletion_timestamp.is_some());
    ensure!(
        d.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string()),
        "the owner lacks the foregroundDeletion finalizer"
    );
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    ensure!(
        count(&rs_api).await == Some(1),
        "the ReplicaSet went before its pod"
    );

    pod_api
        .patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    eventually("the whole chain deleted", TIMEOUT, EVERY, || async {
        let left = count(&dep_api).await? + count(&rs_api).await? + count(&pod_api).await?;
        (left == 0).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_deletion_leaves_the_replica_set_without_owner_references() -> Result<()> {
    let (client, ns) = setup("gc-orphan").await?;
    let rss = deployment_with_pods(&client, &ns, "web", 2).await?;
    let dep_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    dep_api.delete("web", &DeleteParams::orphan()).await?;
    eventually("the Deployment gone", TIMEOUT, EVERY, || async {
        (count(&dep_api).await? == 0).then_some(())
    })
    .await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    for name in &rss {
        let rs = rs_api
            .get(name)
            .await
            .context("an orphaned ReplicaSet was deleted")?;
        ensure!(
            rs.metadata.owner_references.unwrap_or_default().is_empty(),
            "ReplicaSet {name} still has owner references"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    ensure!(
        count(&pod_api).await == Some(2),
        "orphaned pods were deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_map_owned_by_a_custom_resource_of_a_new_crd_is_collected_with_it() -> Result<()> {
    let (client, ns) = setup("gc-crd").await?;
    let suffix = ns.rsplit('-').next().unwrap_or("x").to_string();
    let group = format!("gc{suffix}.ferrite.test");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))?;
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    crd_api.create(&PostParams::default(), &crd).await?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": "w"},
    }))?;
    let created = eventually("the Widget created", TIMEOUT, EVERY, || async {
        widgets.create(&PostParams::default(), &widget).await.ok()
    })
    .await?;
    let uid = created.metadata.uid.context("widget without uid")?;
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": format!("{group}/v1"), "kind": "Widget", "name": "w", "uid": uid,
        }]},
    }))?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &cm).await?;
    // Still owned: not collected while the Widget exists.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        cms.get_opt("owned").await?.is_some(),
        "collected while its owner exists"
    );
    widgets.delete("w", &DeleteParams::default()).await?;
    let collected = eventually("the ConfigMap collected", TIMEOUT, EVERY, || async {
        cms.get_opt("owned").await.ok()?.is_none().then_some(())
    })
    .await;
    let _ = crd_api
        .delete(&format!("widgets.{group}"), &DeleteParams::default())
        .await;
    collected
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_whose_owner_never_existed_is_collected() -> Result<()> {
    let (client, ns) = setup("gc-dangling").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "alive"}}))?,
    )
    .await?;
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "orphan", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
            "uid": "00000000-0000-0000-0000-00000000dead",
        }]}}))?,
    )
    .await?;
    eventually(
        "the dependent of a nonexistent owner collected",
        TIMEOUT,
        EVERY,
        || async { cms.get_opt("orphan").await.ok()?.is_none().then_some(()) },
    )
    .await?;
    ensure!(
        cms.get_opt("alive").await?.is_some(),
        "an unowned ConfigMap was deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_scoped_dependent_of_a_namespaced_owner_gets_a_warning_and_stays() -> Result<()> {
    let (client, ns) = setup("gc-invalid").await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let owner_uid = owner.metadata.uid.context("owner without uid")?;
    let name = format!("{ns}-dependent");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let role = roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid,
            }]}}))?,
        )
        .await?;
    let role_uid = role.metadata.uid.context("role without uid")?;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let found = eventually(
        "the OwnerRefInvalidNamespace warning",
        TIMEOUT,
        EVERY,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.involved_object.uid.as_deref() == Some(&role_uid)
                    && e.reason.as_deref() == Some("OwnerRefInvalidNamespace")
            })
        },
    )
    .await;
    // Never deleted, neither before nor some time after the warning.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = roles.get_opt(&name).await?;
    let _ = roles.delete(&name, &DeleteParams::default()).await;
    let event = found?;
    ensure!(event.type_.as_deref() == Some("Warning"));
    ensure!(
        event
            .message
            .as_deref()
            .is_some_and(|m| m.contains("does not exist in namespace")),
        "unexpected message {:?}",
        event.message
    );
    ensure!(still.is_some(), "the cluster-scoped dependent was deleted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dependent_naming_an_owner_of_another_namespace_gets_a_warning_and_is_collected()
-> Result<()> {
    let (client, owner_ns) = setup("gc-xns-owner").await?;
    let dep_ns = testing::namespace(&client, "gc-xns-dep").await?;
    let owner = Api::<ConfigMap>::namespaced(client.clone(), &owner_ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let owner_uid = owner.metadata.uid.context("owner without uid")?;
    // The owner is in the graph before the dependent shows up (the good parent -> bad child
    // order upstream reports from addDependentToOwners).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deps: Api<ConfigMap> = Api::namespaced(client.clone(), &dep_ns);
    let dep = deps
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "dependent", "ownerReferences": [{
                    "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid,
                }]}}),
            )?,
        )
        .await?;
    let dep_uid = dep.metadata.uid.context("dependent without uid")?;
    // The owner does not exist in the dependent's namespace, so the reference dangles.
    eventually("the dependent collected", TIMEOUT, EVERY, || async {
        deps.get_opt("dependent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), &dep_ns);
    let event = eventually(
        "the OwnerRefInvalidNamespace warning",
        TIMEOUT,
        EVERY,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.involved_object.uid.as_deref() == Some(&dep_uid)
                    && e.reason.as_deref() == Some("OwnerRefInvalidNamespace")
            })
        },
    )
    .await?;
    ensure!(event.type_.as_deref() == Some("Warning"));
    let expected = format!("does not exist in namespace \"{dep_ns}\"");
    ensure!(
        event
            .message
            .as_deref()
            .is_some_and(|m| m.ends_with(&expected)),
        "unexpected message {:?}",
        event.message
    );
    ensure!(
        Api::<ConfigMap>::namespaced(client.clone(), &owner_ns)
            .get_opt("owner")
            .await?
            .is_some(),
        "the owner was deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_resources_sync_error_metric_is_exported() -> Result<()> {
    let (client, ns) = setup("gc-metrics").await?;
    let port = bed()
        .await
        .state()
        .controller_manager_port
        .context("no controller manager port")?;
    let reader = testing::metrics_reader_token(&client, &ns).await?;
    eventually("the GC metric on /metrics", TIMEOUT, EVERY, || async {
        let (status, body) = testing::get_secure(port, "/metrics", Some(&reader))
            .await
            .ok()?;
        (status == 200
            && body
                .lines()
                .any(|l| l.starts_with("garbagecollector_controller_resources_sync_error_total")))
        .then_some(())
    })
    .await
}
