//! `ferrite scheduler`'s volume plugins against the stock apiserver, with the stock PV
//! controller (and the node lifecycle controller, which lifts the nodes' not-ready taint) and no CSI driver: a pod whose claim does not
//! exist, is being deleted, or is unbound with immediate binding waits with upstream's
//! FailedScheduling message; a claim bound to a volume with node affinity restricts its pods to
//! that node; a ReadWriteOncePod claim admits one pod only; a WaitForFirstConsumer claim is bound
//! to a matching local volume on the node the scheduler picks, and a second one finds none.
//!
//! Volumes are pre-bound (claimRef) for the PV controller to bind; the protection finalizers that
//! admission adds are removed on cleanup since their controllers do not run.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.scheduler = Component::Ferrite;
        o.controller_manager = Component::Stock;
        o.stock_controller_manager_args = vec![
            "--controllers=persistentvolume-binder-controller,node-lifecycle-controller".into(),
        ];
        o
    })
    .await
}

struct Test {
    client: kube::Client,
    ns: String,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    volumes: Api<PersistentVolume>,
    nodes: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start(prefix: &str) -> Result<Test> {
        let serial = SERIAL.lock().await;
        let client = bed().await.client().await?;
        let ns = testing::namespace(&client, prefix).await?;
        testing::ensure_default_service_account(&client, &ns).await?;
        let mut nodes: Vec<String> = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        nodes.sort();
        Ok(Test {
            pods: Api::namespaced(client.clone(), &ns),
            claims: Api::namespaced(client.clone(), &ns),
            volumes: Api::all(client.clone()),
            client,
            ns,
            nodes,
            _serial: serial,
        })
    }

    async fn pod(&self, name: &str, claim: &str) -> Result<()> {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        }))?;
        self.pods.create(&PostParams::default(), &pod).await?;
        Ok(())
    }

    fn pv_name(&self, name: &str) -> String {
        format!("{}-{name}", self.ns)
    }

    /// A hostPath volume of `class` (optionally pinned to `node`, optionally pre-bound to the
    /// claim `claim`).
    async fn volume(
        &self,
        name: &str,
        class: &str,
        access_mode: &str,
        node: Option<&str>,
        claim: Option<&str>,
    ) -> Result<()> {
        let mut pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": self.pv_name(name)},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [access_mode],
                "storageClassName": class, "hostPath": {"path": "/tmp/ferrite"}},
        });
        if let Some(c) = claim {
            pv["spec"]["claimRef"] = json!({"namespace": self.ns, "name": c});
        }
        if let Some(n) = node {
            pv["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}]}});
        }
        self.volumes
            .create(&PostParams::default(), &serde_json::from_value(pv)?)
            .await?;
        Ok(())
    }

    /// A volume (optionally pinned to `node`) pre-bound to a new claim, once the PV controller
    /// has bound them.
    async fn bound_pair(&self, name: &str, access_mode: &str, node: Option<&str>) -> Result<()> {
        self.volume(name, "", access_mode, node, Some(name)).await?;
        self.claim(
            name,
            json!({"accessModes": [access_mode], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}),
            json!({}),
        )
        .await?;
        self.claim_bound(name).await.map(|_| ())
    }

    /// The volume the claim is bound to, once the PV controller has bound it.
    async fn claim_bound(&self, name: &str) -> Result<String> {
        let claims = self.claims.clone();
        eventually(&format!("claim {name} to be Bound"), TIMEOUT, POLL, || {
            let claims = claims.clone();
            async move {
                let c = claims.get(name).await.ok()?;
                (c.status?.phase.as_deref() == Some("Bound"))
                    .then(|| c.spec?.volume_name)
                    .flatten()
            }
        })
        .await
    }

    async fn claim(&self, name: &str, spec: Value, annotations: Value) -> Result<()> {
        let pvc = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        });
        self.claims
            .create(&PostParams::default(), &serde_json::from_value(pvc)?)
            .await?;
        Ok(())
    }

    async fn bound_to(&self, name: &str) -> Result<String> {
        let r = testing::bound_node(&self.pods, name, TIMEOUT).await;
        if r.is_err() {
            // Say why: the pod's PodScheduled condition.
            let p = self.pods.get(name).await?;
            let why = p
                .status
                .and_then(|s| s.conditions)
                .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled"))
                .and_then(|c| c.message);
            return r.with_context(|| format!("PodScheduled: {why:?}"));
        }
        r
    }

    /// Waits for a FailedScheduling event about `name` saying `want`, and for the pod's
    /// PodScheduled=False condition to say the same. (An earlier attempt may have said
    /// something else while the scheduler's informers caught up with the test's objects.)
    async fn expect_failed_scheduling(&self, name: &str, want: &str) -> Result<()> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let seen = eventually(
            &format!("FailedScheduling for {name} saying {want:?}"),
            TIMEOUT,
            POLL,
            || {
                let events = events.clone();
                async move {
                    let list = events.list(&ListParams::default()).await.ok()?;
                    list.items
                        .iter()
                        .any(|e| {
                            e.involved_object.name.as_deref() == Some(name)
                                && e.reason.as_deref() == Some("FailedScheduling")
                                && e.message.as_deref() == Some(want)
                        })
                        .then_some(())
                }
            },
        )
        .await;
        if seen.is_err() {
            let list = events.list(&ListParams::default()).await?;
            let got: Vec<String> = list
                .items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name))
                .filter_map(|e| e.message)
                .collect();
            return seen.with_context(|| format!("events: {got:?}"));
        }
        let pods = self.pods.clone();
        eventually(
            "PodScheduled=False with the same message",
            TIMEOUT,
            POLL,
            || {
                let pods = pods.clone();
                async move {
                    let p = pods.get(name).await.ok()?;
                    p.status?
                        .conditions?
                        .into_iter()
                        .any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.message.as_deref() == Some(want)
                        })
                        .then_some(())
                }
            },
        )
        .await
    }

    fn unresolvable(&self, reason: &str) -> String {
        let n = self.nodes.len();
        format!(
            "0/{n} nodes are available: {reason}. preemption: 0/{n} nodes are available: \
             {n} Preemption is not helpful for scheduling."
        )
    }

    async fn cleanup(&self) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.pods
            .delete_collection(&dp, &ListParams::default())
            .await?;
        let unfinalize = json!({"metadata": {"finalizers": null}});
        let pp = PatchParams::default();
        for c in self.claims.list(&ListParams::default()).await?.items {
            let name = c.metadata.name.unwrap_or_default();
            self.claims
                .patch(&name, &pp, &Patch::Merge(&unfinalize))
                .await?;
            let _ = self.claims.delete(&name, &DeleteParams::default()).await;
        }
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let _ = classes
            .delete(&self.pv_name("local"), &DeleteParams::default())
            .await;
        let prefix = format!("{}-", self.ns);
        for v in self.volumes.list(&ListParams::default()).await?.items {
            let name = v.metadata.name.unwrap_or_default();
            if !name.starts_with(&prefix) {
                continue;
            }
            self.volumes
                .patch(&name, &pp, &Patch::Merge(&unfinalize))
                .await?;
            let _ = self.volumes.delete(&name, &DeleteParams::default()).await;
        }
        let pods = self.pods.clone();
        eventually("the test's pods to be gone", TIMEOUT, POLL, || {
            let pods = pods.clone();
            async move {
                pods.list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_claim_does_not_exist_waits_and_is_scheduled_once_it_is_bound() -> Result<()> {
    let t = Test::start("vol-missing").await?;
    let result = async {
        t.pod("web", "nope").await?;
        let want = t.unresolvable("persistentvolumeclaim \"nope\" not found");
        t.expect_failed_scheduling("web", &want).await?;
        // The claim appearing, bound, lets the pod in (PVC Add event).
        t.bound_pair("nope", "ReadWriteOnce", None).await?;
        t.bound_to("web").await?;
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_claim_is_being_deleted_waits() -> Result<()> {
    let t = Test::start("vol-deleting").await?;
    let result = async {
        t.claim(
            "doomed",
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}),
            json!({}),
        )
        .await?;
        // Held by the pvc-protection finalizer that admission adds.
        t.claims.delete("doomed", &DeleteParams::default()).await?;
        let claims = t.claims.clone();
        eventually("doomed to be terminating", TIMEOUT, POLL, || {
            let claims = claims.clone();
            async move {
                claims
                    .get("doomed")
                    .await
                    .ok()?
                    .metadata
                    .deletion_timestamp
                    .map(|_| ())
            }
        })
        .await
        .context("the claim has no protection finalizer")?;
        t.pod("web", "doomed").await?;
        let want = t.unresolvable("persistentvolumeclaim \"doomed\" is being deleted");
        t.expect_failed_scheduling("web", &want).await?;
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_an_unbound_immediate_claim_waits() -> Result<()> {
    let t = Test::start("vol-unbound").await?;
    let result = async {
        t.claim(
            "pending",
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}),
            json!({}),
        )
        .await?;
        t.pod("web", "pending").await?;
        let want = t.unresolvable("pod has unbound immediate PersistentVolumeClaims");
        t.expect_failed_scheduling("web", &want).await?;
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_volume_with_node_affinity_land_on_its_node() -> Result<()> {
    let t = Test::start("vol-affinity").await?;
    let result = async {
        let target = t.nodes.last().context("no nodes")?.clone();
        t.bound_pair("local", "ReadWriteOnce", Some(&target))
            .await?;
        for i in 0..3 {
            t.pod(&format!("web-{i}"), "local").await?;
        }
        for i in 0..3 {
            let node = t.bound_to(&format!("web-{i}")).await?;
            ensure!(node == target, "web-{i} on {node}, expected {target}");
        }
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_once_pod_claim_admits_a_single_pod() -> Result<()> {
    let t = Test::start("vol-rwop").await?;
    let result = async {
        t.bound_pair("solo", "ReadWriteOncePod", None).await?;
        t.pod("first", "solo").await?;
        t.bound_to("first").await?;
        t.pod("second", "solo").await?;
        let n = t.nodes.len();
        let want = format!(
            "0/{n} nodes are available: {n} node has pod using PersistentVolumeClaim with the \
             same name and ReadWriteOncePod access mode. preemption: 0/{n} nodes are available: \
             {n} No preemption victims found for incoming pod."
        );
        t.expect_failed_scheduling("second", &want).await?;
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_first_consumer_claim_binds_a_local_volume_on_the_chosen_node() -> Result<()> {
    let t = Test::start("vol-wffc").await?;
    let result = async {
        let class = t.pv_name("local");
        let sc: StorageClass = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer",
        }))?;
        Api::<StorageClass>::all(t.client.clone())
            .create(&PostParams::default(), &sc)
            .await?;
        let target = t.nodes.last().context("no nodes")?.clone();
        t.volume("local-pv", &class, "ReadWriteOnce", Some(&target), None)
            .await?;
        let volumes = t.volumes.clone();
        let pv = t.pv_name("local-pv");
        eventually("the volume to be Available", TIMEOUT, POLL, || {
            let volumes = volumes.clone();
            let pv = pv.clone();
            async move {
                let v = volumes.get(&pv).await.ok()?;
                (v.status?.phase.as_deref() == Some("Available")).then_some(())
            }
        })
        .await?;
        for c in ["data", "more"] {
            t.claim(
                c,
                json!({"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                    "resources": {"requests": {"storage": "1Gi"}}}),
                json!({}),
            )
            .await?;
        }
        t.pod("web", "data").await?;
        let node = t.bound_to("web").await?;
        ensure!(node == target, "web on {node}, expected {target}");
        let bound = t.claim_bound("data").await?;
        ensure!(bound == pv, "data bound to {bound}, expected {pv}");

        // The only volume is taken: the next claim's pod finds none anywhere.
        t.pod("next", "more").await?;
        let want = t.unresolvable(&format!(
            "{} node(s) didn't find available persistent volumes to bind",
            t.nodes.len()
        ));
        t.expect_failed_scheduling("next", &want).await?;
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}
