//! `ferrite scheduler --config` runs the profiles of a KubeSchedulerConfiguration: each pod is
//! scheduled by the profile its `spec.schedulerName` names (a MostAllocated profile piles pods
//! onto one node, a LeastAllocated one spreads them), events report the profile's name, pods
//! for other schedulers are left alone, and a file with a field Ferrite does not implement stops
//! the process at startup with a message naming the field.
//!
//! The bed has no default scheduler: this file's tests start one Ferrite scheduler with two
//! profiles, and hold one lock so that their pods do not share nodes' room.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard, OnceCell};

static SERIAL: Mutex<()> = Mutex::const_new(());
static SCHEDULER: OnceCell<()> = OnceCell::const_new();

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
const PROC: &str = "profiles-scheduler";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.scheduler = Component::None;
        o.controller_manager = Component::None;
        o
    })
    .await
}

/// The two-profile configuration, with the bed's credentials as `clientConnection.kubeconfig`
/// (with `--config`, upstream and Ferrite ignore `--kubeconfig`).
fn profiles_config(bed: &Bed) -> String {
    let kubeconfig = bed.path("scheduler.kubeconfig").display().to_string();
    format!(
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: "{kubeconfig}"
  qps: 50
  burst: 100
leaderElection:
  leaderElect: true
  resourceName: ferrite-scheduler-profiles
  resourceNamespace: kube-system
podInitialBackoffSeconds: 1
podMaxBackoffSeconds: 5
profiles:
- schedulerName: bin-packer
  plugins:
    score:
      disabled:
      - name: "*"
      enabled:
      - name: NodeResourcesFit
        weight: 5
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
        - name: memory
          weight: 1
- schedulerName: spreader
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: LeastAllocated
"#
    )
}

/// Starts the profiles' scheduler once per test binary.
async fn start_scheduler(bed: &'static Bed) -> Result<()> {
    SCHEDULER
        .get_or_try_init(|| async {
            let path = bed.path("scheduler-profiles.yaml");
            std::fs::write(&path, profiles_config(bed)).context("writing the config")?;
            let flag = format!("--config={}", path.display());
            bed.start_ferrite(PROC, "scheduler", &[&flag])?;
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

struct Test {
    bed: &'static Bed,
    client: kube::Client,
    ns: String,
    pods: Api<Pod>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start(prefix: &str) -> Result<Test> {
        let serial = SERIAL.lock().await;
        let bed = bed().await;
        start_scheduler(bed).await?;
        let client = bed.client().await?;
        let ns = testing::namespace(&client, prefix).await?;
        testing::ensure_default_service_account(&client, &ns).await?;
        let pods = Api::namespaced(client.clone(), &ns);
        Ok(Test {
            bed,
            client,
            ns,
            pods,
            _serial: serial,
        })
    }

    async fn create(&self, name: &str, scheduler: &str) -> Result<()> {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {
                "schedulerName": scheduler,
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
            },
        }))?;
        self.pods.create(&PostParams::default(), &pod).await?;
        Ok(())
    }

    async fn node_of(&self, name: &str) -> Result<String> {
        testing::bound_node(&self.pods, name, TIMEOUT)
            .await
            .with_context(|| self.bed.log_tail(PROC))
    }

    async fn events_for(&self, pod: &str) -> Result<Vec<Event>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
        Ok(events.list(&lp).await?.items)
    }

    /// Deletes the test's pods at once and waits until they are gone, so the next test finds
    /// empty nodes.
    async fn cleanup(&self) -> Result<()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
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
                    .ok()
                    .filter(|l| l.items.is_empty())
            }
        })
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_most_allocated_profile_piles_its_pods_onto_one_node() -> Result<()> {
    let t = Test::start("binpack").await?;
    let mut nodes = BTreeSet::new();
    for i in 0..4 {
        let name = format!("packed-{i}");
        t.create(&name, "bin-packer").await?;
        nodes.insert(t.node_of(&name).await?);
    }
    ensure!(nodes.len() == 1, "bin-packer pods spread over {nodes:?}");
    // The Scheduled event reports the profile's scheduler name.
    let events = t.events_for("packed-0").await?;
    let scheduled = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Scheduled"))
        .context("no Scheduled event")?;
    let component = scheduled
        .source
        .as_ref()
        .and_then(|s| s.component.clone())
        .unwrap_or_default();
    ensure!(component == "bin-packer", "event reported by {component:?}");
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_allocated_profile_spreads_its_pods() -> Result<()> {
    let t = Test::start("spread").await?;
    let mut nodes = BTreeSet::new();
    for i in 0..3 {
        let name = format!("spread-{i}");
        t.create(&name, "spreader").await?;
        nodes.insert(t.node_of(&name).await?);
    }
    ensure!(nodes.len() == 3, "spreader pods only on {nodes:?}");
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_for_another_scheduler_stays_pending_without_events() -> Result<()> {
    let t = Test::start("foreign").await?;
    t.create("foreign", "nobody").await?;
    // A pod of a profile created afterwards is bound: the scheduler has seen both.
    t.create("witness", "spreader").await?;
    t.node_of("witness").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = t.pods.get("foreign").await?;
    ensure!(
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none(),
        "foreign pod was bound"
    );
    let conditions = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    ensure!(
        !conditions.iter().any(|c| c.type_ == "PodScheduled"),
        "foreign pod got a PodScheduled condition: {conditions:?}"
    );
    let events = t.events_for("foreign").await?;
    ensure!(events.is_empty(), "foreign pod got events: {events:?}");
    t.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_an_unsupported_field_stops_the_scheduler_naming_it() -> Result<()> {
    let bed = bed().await;
    let kubeconfig = bed.path("scheduler.kubeconfig").display().to_string();
    let path = bed.path("scheduler-bad.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             clientConnection:\n  kubeconfig: \"{kubeconfig}\"\nleaderElection:\n  resourceName: ferrite-scheduler-bad\n\
             extenders:\n- urlPrefix: http://127.0.0.1:1\n"
        ),
    )?;
    let flag = format!("--config={}", path.display());
    bed.start_ferrite("bad-config-scheduler", "scheduler", &[&flag])?;
    let code = eventually(
        "the scheduler with a bad config to exit",
        Duration::from_secs(30),
        POLL,
        || async { bed.exit_code("bad-config-scheduler") },
    )
    .await?;
    ensure!(code == 2, "exit code {code}");
    let log = bed.log_tail("bad-config-scheduler");
    ensure!(log.contains("unsupported field \"extenders\""), "{log}");
    Ok(())
}
