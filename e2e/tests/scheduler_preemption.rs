//! `ferrite scheduler`'s DefaultPreemption against the stock apiserver: a high-priority pod that
//! fits nowhere evicts a lower-priority pod (which first gets the DisruptionTarget condition and
//! a Preempted event), is nominated to the freed node and bound there once the victim is gone;
//! a pod whose PriorityClass says `preemptionPolicy: Never` waits instead, with upstream's
//! FailedScheduling message; and victims protected by a PodDisruptionBudget are spared when
//! another node has unprotected ones.
//!
//! The bed's two kwok nodes (4 CPUs each) are filled by pods placed with `nodeName`; every test
//! holds one lock and removes its pods.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
const FINALIZER: &str = "ferrite.test/hold";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 2;
        o.scheduler = Component::Ferrite;
        o.controller_manager = Component::None;
        o
    })
    .await
}

struct Test {
    client: kube::Client,
    ns: String,
    pods: Api<Pod>,
    nodes: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start(prefix: &str) -> Result<Test> {
        let serial = SERIAL.lock().await;
        let client = bed().await.client().await?;
        let ns = testing::namespace(&client, prefix).await?;
        testing::ensure_default_service_account(&client, &ns).await?;
        let classes: Api<PriorityClass> = Api::all(client.clone());
        for (name, value, policy) in [
            ("ferrite-test-low", 100, "PreemptLowerPriority"),
            ("ferrite-test-mid", 500, "PreemptLowerPriority"),
            ("ferrite-test-high", 1000, "PreemptLowerPriority"),
            ("ferrite-test-high-never", 1000, "Never"),
        ] {
            let pc: PriorityClass = serde_json::from_value(json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "preemptionPolicy": policy,
            }))?;
            match classes.create(&PostParams::default(), &pc).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut nodes: Vec<String> = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        nodes.sort();
        ensure!(nodes.len() >= 2, "two nodes expected, got {nodes:?}");
        let pods = Api::namespaced(client.clone(), &ns);
        Ok(Test {
            client,
            ns,
            pods,
            nodes,
            _serial: serial,
        })
    }

    /// A pod of `class` requesting `cpu`, on `node` when given (placed, not scheduled).
    async fn create(
        &self,
        name: &str,
        class: &str,
        cpu: &str,
        node: Option<&str>,
        extra: Value,
    ) -> Result<Pod> {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"priorityClassName": class, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": cpu}}}]},
        });
        if let Some(n) = node {
            pod["spec"]["nodeName"] = json!(n);
        }
        if let (Some(p), Some(e)) = (pod["metadata"].as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        Ok(self
            .pods
            .create(&PostParams::default(), &serde_json::from_value(pod)?)
            .await?)
    }

    async fn bound_to(&self, name: &str) -> Result<String> {
        testing::bound_node(&self.pods, name, TIMEOUT).await
    }

    async fn failed_scheduling(&self, name: &str) -> Result<String> {
        eventually(
            &format!("FailedScheduling for {name}"),
            TIMEOUT,
            POLL,
            || async {
                testing::events_about(&self.client, &self.ns, name, "FailedScheduling")
                    .await
                    .into_iter()
                    .next()
                    .and_then(|e| e.message)
            },
        )
        .await
    }

    async fn gone(&self, name: &str) -> Result<()> {
        let pods = self.pods.clone();
        eventually(&format!("pod {name} to be deleted"), TIMEOUT, POLL, || {
            let pods = pods.clone();
            async move {
                match pods.get_opt(name).await {
                    Ok(None) => Some(()),
                    _ => None,
                }
            }
        })
        .await
    }

    async fn cleanup(&self) -> Result<()> {
        let list = self.pods.list(&ListParams::default()).await?;
        for p in list.items {
            if p.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                let name = p.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"finalizers": null}});
                self.pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.pods
            .delete_collection(&dp, &ListParams::default())
            .await?;
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
async fn a_high_priority_pod_preempts_a_low_priority_pod_and_is_bound_to_the_freed_node()
-> Result<()> {
    let t = Test::start("preempt").await?;
    let result = async {
        // Both nodes full: a held (finalizer) low-priority victim candidate on the first, a
        // mid-priority pod on the second, so the first node's pod is the cheaper victim.
        let (first, second) = (&t.nodes[0], &t.nodes[1]);
        t.create(
            "low",
            "ferrite-test-low",
            "4",
            Some(first),
            json!({"finalizers": [FINALIZER]}),
        )
        .await?;
        t.create("mid", "ferrite-test-mid", "4", Some(second), json!({}))
            .await?;
        for extra in &t.nodes[2..] {
            t.create(
                &format!("fill-{extra}"),
                "ferrite-test-high",
                "4",
                Some(extra),
                json!({}),
            )
            .await?;
        }
        t.create("high", "ferrite-test-high", "3", None, json!({}))
            .await?;

        // The victim gets DisruptionTarget and is deleted (held by the finalizer).
        let pods = t.pods.clone();
        let (reason, message) = eventually("low to be preempted", TIMEOUT, POLL, || {
            let pods = pods.clone();
            async move {
                let p = pods.get("low").await.ok()?;
                p.metadata.deletion_timestamp.as_ref()?;
                let c = p
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")?;
                Some((c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
            }
        })
        .await?;
        ensure!(reason == "PreemptionByScheduler", "reason {reason}");
        ensure!(
            message == "default-scheduler: preempting to accommodate a higher priority pod",
            "message {message}"
        );
        // The preemptor is nominated to the victim's node meanwhile and still unbound.
        let pods = t.pods.clone();
        let nominated = eventually("high to be nominated", TIMEOUT, POLL, || {
            let pods = pods.clone();
            async move {
                pods.get("high")
                    .await
                    .ok()?
                    .status?
                    .nominated_node_name
                    .filter(|n| !n.is_empty())
            }
        })
        .await?;
        ensure!(
            &nominated == first,
            "nominated to {nominated}, expected {first}"
        );
        let high = t.pods.get("high").await?;
        ensure!(
            high.spec.and_then(|s| s.node_name).is_none(),
            "bound while the victim still terminates"
        );
        let mid = t.pods.get("mid").await?;
        ensure!(
            mid.metadata.deletion_timestamp.is_none(),
            "mid was preempted too"
        );

        // The Preempted event names the preemptor and the node.
        let uid = high.metadata.uid.clone().unwrap_or_default();
        let want = format!("Preempted by pod {uid} on node {first}");
        let events: Api<Event> = Api::namespaced(t.client.clone(), &t.ns);
        eventually("the Preempted event", TIMEOUT, POLL, || {
            let events = events.clone();
            let want = want.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .any(|e| {
                        e.involved_object.name.as_deref() == Some("low")
                            && e.reason.as_deref() == Some("Preempted")
                            && e.message.as_deref() == Some(want.as_str())
                    })
                    .then_some(())
            }
        })
        .await?;

        // Releasing the victim lets the preemptor land on its nominated node.
        let patch = json!({"metadata": {"finalizers": null}});
        t.pods
            .patch("low", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        t.gone("low").await?;
        let node = t.bound_to("high").await?;
        ensure!(&node == first, "high bound to {node}, expected {first}");
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_preemption_policy_never_waits_with_failed_scheduling() -> Result<()> {
    let t = Test::start("preempt-never").await?;
    let result = async {
        for (i, n) in t.nodes.iter().enumerate() {
            t.create(&format!("low-{i}"), "ferrite-test-low", "4", Some(n), json!({}))
                .await?;
        }
        t.create("polite", "ferrite-test-high-never", "1", None, json!({}))
            .await?;
        let n = t.nodes.len();
        let msg = t.failed_scheduling("polite").await?;
        let want = format!(
            "0/{n} nodes are available: {n} Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        );
        ensure!(msg == want, "message {msg:?}, expected {want:?}");
        // Nothing was evicted, and the pod stays pending.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for i in 0..n {
            let p = t.pods.get(&format!("low-{i}")).await?;
            ensure!(p.metadata.deletion_timestamp.is_none(), "low-{i} was evicted");
        }
        let p = t.pods.get("polite").await?;
        let spec = p.spec.context("spec")?;
        ensure!(spec.node_name.is_none(), "polite was bound");
        ensure!(
            spec.preemption_policy.as_deref() == Some("Never"),
            "policy {:?}",
            spec.preemption_policy
        );
        Ok(())
    }
    .await;
    t.cleanup().await.context("cleanup")?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victims_protected_by_a_pod_disruption_budget_are_spared_when_others_can_go() -> Result<()>
{
    let t = Test::start("preempt-pdb").await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(t.client.clone(), &t.ns);
    let result = async {
        // The guarded pod has the lower priority, so without its budget its node would be
        // picked (lowest highest-priority victim); the budget (0 disruptions allowed: no
        // disruption controller runs, as with an unhealthy budget) makes the other node win.
        let (first, second) = (&t.nodes[0], &t.nodes[1]);
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "guard"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        }))?;
        pdbs.create(&PostParams::default(), &pdb).await?;
        t.create(
            "guarded",
            "ferrite-test-low",
            "4",
            Some(first),
            json!({"labels": {"app": "guarded"}}),
        )
        .await?;
        t.create(
            "unguarded",
            "ferrite-test-mid",
            "4",
            Some(second),
            json!({"labels": {"app": "free"}}),
        )
        .await?;
        for extra in &t.nodes[2..] {
            t.create(
                &format!("fill-{extra}"),
                "ferrite-test-high",
                "4",
                Some(extra),
                json!({}),
            )
            .await?;
        }
        // Let the scheduler's PDB informer (a watch of its own) see the budget, created first,
        // before the preemptor arrives.
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.create("high", "ferrite-test-high", "3", None, json!({}))
            .await?;
        t.gone("unguarded").await?;
        let node = t.bound_to("high").await?;
        ensure!(&node == second, "high bound to {node}, expected {second}");
        let guarded = t.pods.get("guarded").await?;
        ensure!(
            guarded.metadata.deletion_timestamp.is_none(),
            "the guarded pod was preempted"
        );
        Ok(())
    }
    .await;
    let _ = pdbs.delete("guard", &DeleteParams::default()).await;
    t.cleanup().await.context("cleanup")?;
    result
}
