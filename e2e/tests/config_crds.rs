//! The configuration CRDs on the test bed, applied from the repository's `crds/` as a user
//! would (`kubectl apply -f crds/`), with a Ferrite controller manager and scheduler running as
//! the bed's component identities (granted what the chart grants them: read their kind, update
//! its status):
//!
//! - a `ControllerConfiguration` that disables a controller stops it (a new namespace gets no
//!   `default` ServiceAccount while another controller visibly handles that namespace), and
//!   enabling it again starts it (the namespace gets its account);
//! - an invalid `ControllerConfiguration` gets `Valid=False` with the reason and a Warning event,
//!   the previous configuration keeps working, also under a new leader that never saw it valid
//!   (it reads the spec in force from the status), and deleting the object brings the flags
//!   back;
//! - a `SchedulerProfile` that changes a weight or disables a score plugin changes where the
//!   next pods go. The bed's nodes are identical and empty; node A carries a `PreferNoSchedule`
//!   taint (TaintToleration, weight 3, scores A 0 and the others 100) and the pods prefer A by
//!   node affinity (NodeAffinity, weight 2, scores A 100 and the others 0), so the default
//!   profile puts them elsewhere (300 against 200) and every profile below decides by at least
//!   100 points, far more than the few points a pod's requests move the resource scores.
//!
//! One controller manager and one scheduler serve all tests, which share the one `default`
//! ControllerConfiguration and the `default-scheduler` profile and so run one at a time. They
//! start before the CRDs exist, as on a cluster where the CRDs are installed later: the flags
//! are in force until then, and every test also shows that the objects are picked up once the
//! CRDs can be read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_controllers::configuration::{ControllerConfiguration, ControllerConfigurationSpec};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component};
use ferrite_runtime::live_config::ConfigStatus;
use ferrite_scheduler::profiles::{SchedulerProfile, SchedulerProfileSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::object::HasStatus;
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard, OnceCell};

static SERIAL: Mutex<()> = Mutex::const_new(());
static SETUP: OnceCell<()> = OnceCell::const_new();

const CONTROLLER_MANAGER: &str = "live-controller-manager";
const SCHEDULER: &str = "live-scheduler";
const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
/// How long a disabled controller is given to show that it still acts, after another
/// controller has handled the same namespace.
const QUIET: Duration = Duration::from_secs(3);

const NODE_A: &str = "kwok-node-0";
const AVOID_TAINT: &str = "config-crds.ferrite.dev/avoid";
const PREFER_LABEL: &str = "config-crds.ferrite.dev/prefer";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 3;
        o.controller_manager = Component::None;
        o.scheduler = Component::None;
        o
    })
    .await
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// What the chart grants each component on its configuration kind, bound to the bed's
/// component users.
fn configuration_roles() -> serde_json::Value {
    let mut items = Vec::new();
    for (user, resource) in [
        ("system:kube-controller-manager", "controllerconfigurations"),
        ("system:kube-scheduler", "schedulerprofiles"),
    ] {
        let name = format!("config-crds-test:{resource}");
        items.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": ["config.ferrite.dev"], "resources": [resource],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["config.ferrite.dev"], "resources": [format!("{resource}/status")],
                 "verbs": ["update"]},
            ],
        }));
        items.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }));
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Once per test binary: the two components, then the CRDs from `crds/` and the roles.
async fn set_up(bed: &'static Bed) -> Result<()> {
    SETUP
        .get_or_try_init(|| async {
            // The flags' base: only the serviceaccount controller.
            bed.start_ferrite(
                CONTROLLER_MANAGER,
                "controller-manager",
                &["--controllers=serviceaccount"],
            )?;
            bed.start_ferrite(SCHEDULER, "scheduler", &[])?;
            // Without the CRDs the flags are in force.
            let client = bed.client().await?;
            let ns = testing::namespace(&client, "before-crds").await?;
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
            let acted = eventually(
                "the controller manager to act on its flags",
                TIMEOUT,
                POLL,
                || {
                    let accounts = accounts.clone();
                    async move { accounts.get_opt("default").await.ok()?.map(|_| ()) }
                },
            )
            .await;
            ensure!(
                acted.is_ok(),
                "{acted:?}\n{}",
                bed.log_tail(CONTROLLER_MANAGER)
            );
            let applied = testing::kubectl_apply(bed, &repo_root().join("crds"))?;
            ensure!(
                applied.contains("controllerconfigurations.config.ferrite.dev")
                    && applied.contains("schedulerprofiles.config.ferrite.dev"),
                "kubectl apply -f crds/: {applied}"
            );
            testing::crds_established(
                &client,
                &[
                    "controllerconfigurations.config.ferrite.dev",
                    "schedulerprofiles.config.ferrite.dev",
                ],
            )
            .await?;
            let roles = bed.path("config-crds-roles.json");
            std::fs::write(&roles, configuration_roles().to_string())?;
            testing::kubectl_apply(bed, &roles)?;
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

struct Test {
    bed: &'static Bed,
    client: kube::Client,
    configurations: Api<ControllerConfiguration>,
    profiles: Api<SchedulerProfile>,
    _serial: MutexGuard<'static, ()>,
}

impl Test {
    async fn start() -> Result<Test> {
        let serial = SERIAL.lock().await;
        let bed = bed().await;
        set_up(bed).await?;
        let client = bed.client().await?;
        Ok(Test {
            bed,
            configurations: Api::all(client.clone()),
            profiles: Api::all(client.clone()),
            client,
            _serial: serial,
        })
    }

    fn logs(&self) -> String {
        format!(
            "controller manager:\n{}\nscheduler:\n{}",
            self.bed.log_tail(CONTROLLER_MANAGER),
            self.bed.log_tail(SCHEDULER)
        )
    }

    /// Creates or replaces the `default` ControllerConfiguration's spec; returns its generation.
    async fn configure(&self, spec: serde_json::Value) -> Result<i64> {
        let spec: ControllerConfigurationSpec = serde_json::from_value(spec)?;
        let object = ControllerConfiguration::new("default", spec);
        let applied = self
            .configurations
            .patch(
                "default",
                &PatchParams::apply("config-crds-test").force(),
                &Patch::Apply(&object),
            )
            .await?;
        applied.metadata.generation.context("no generation")
    }

    async fn delete_configuration(&self) -> Result<()> {
        let _ = self
            .configurations
            .delete("default", &DeleteParams::default())
            .await;
        let api = self.configurations.clone();
        eventually(
            "the ControllerConfiguration to be gone",
            TIMEOUT,
            POLL,
            || {
                let api = api.clone();
                async move { api.get_opt("default").await.ok()?.is_none().then_some(()) }
            },
        )
        .await
    }

    async fn profile(&self, spec: serde_json::Value) -> Result<i64> {
        let spec: SchedulerProfileSpec = serde_json::from_value(spec)?;
        let object = SchedulerProfile::new("default-scheduler", spec);
        let applied = self
            .profiles
            .patch(
                "default-scheduler",
                &PatchParams::apply("config-crds-test").force(),
                &Patch::Apply(&object),
            )
            .await?;
        applied.metadata.generation.context("no generation")
    }

    async fn delete_profile(&self) -> Result<()> {
        let _ = self
            .profiles
            .delete("default-scheduler", &DeleteParams::default())
            .await;
        let api = self.profiles.clone();
        eventually("the SchedulerProfile to be gone", TIMEOUT, POLL, || {
            let api = api.clone();
            async move {
                api.get_opt("default-scheduler")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            }
        })
        .await
    }

    async fn namespace(&self, prefix: &str) -> Result<String> {
        testing::namespace(&self.client, prefix).await
    }

    async fn has_default_account(&self, ns: &str) -> bool {
        Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .get_opt("default")
            .await
            .ok()
            .flatten()
            .is_some()
    }

    async fn wait_default_account(&self, ns: &str) -> Result<()> {
        let result = eventually(
            &format!("the default ServiceAccount in {ns}"),
            TIMEOUT,
            POLL,
            || async { self.has_default_account(ns).await.then_some(()) },
        )
        .await;
        result.with_context(|| self.logs())
    }

    async fn has_root_ca(&self, ns: &str) -> bool {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt("kube-root-ca.crt")
            .await
            .ok()
            .flatten()
            .is_some()
    }

    async fn wait_root_ca(&self, ns: &str) -> Result<()> {
        let result = eventually(
            &format!("kube-root-ca.crt in {ns}"),
            TIMEOUT,
            POLL,
            || async { self.has_root_ca(ns).await.then_some(()) },
        )
        .await;
        result.with_context(|| self.logs())
    }
}

/// Waits until the object reports on `generation`; returns its status then.
async fn status_for<K>(api: &Api<K>, name: &str, generation: i64) -> Result<ConfigStatus>
where
    K: kube::Resource
        + HasStatus<Status = ConfigStatus>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    eventually(
        &format!("{name} to report on generation {generation}"),
        TIMEOUT,
        POLL,
        || async {
            let o = api.get(name).await.ok()?;
            let status = o.status()?.clone();
            let valid = status.condition("Valid")?;
            (status.observed_generation == Some(generation)
                && valid.observed_generation == Some(generation))
            .then_some(status)
        },
    )
    .await
}

fn valid(status: &ConfigStatus) -> (&str, &str, &str) {
    status
        .condition("Valid")
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_controller_stops_and_starts_again_when_enabled() -> Result<()> {
    let t = Test::start().await?;
    t.delete_configuration().await?;
    // The flags: the serviceaccount controller runs.
    let before = t.namespace("flags").await?;
    t.wait_default_account(&before).await?;

    // Disable it, enable the root CA publisher instead.
    let generation = t
        .configure(json!({"controllers": ["root-ca-cert-publisher"]}))
        .await?;
    let status = status_for(&t.configurations, "default", generation).await?;
    ensure!(valid(&status).0 == "True", "{status:?}");

    let ns = t.namespace("disabled").await?;
    // The manager has handled this namespace under the new configuration...
    t.wait_root_ca(&ns).await?;
    // ...and the stopped controller did not.
    tokio::time::sleep(QUIET).await;
    ensure!(
        !t.has_default_account(&ns).await,
        "the disabled serviceaccount controller still acted\n{}",
        t.logs()
    );

    // Enabled again, it starts and catches up on the namespace it missed.
    let generation = t
        .configure(json!({"controllers": ["serviceaccount", "root-ca-cert-publisher"]}))
        .await?;
    let status = status_for(&t.configurations, "default", generation).await?;
    ensure!(valid(&status).0 == "True", "{status:?}");
    t.wait_default_account(&ns).await?;

    t.delete_configuration().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_and_the_previous_one_stays_in_force() -> Result<()> {
    let t = Test::start().await?;
    // In force: both controllers, which the flags alone would not run.
    let valid_generation = t
        .configure(json!({"controllers": ["serviceaccount", "root-ca-cert-publisher"]}))
        .await?;
    let status = status_for(&t.configurations, "default", valid_generation).await?;
    ensure!(valid(&status).0 == "True", "{status:?}");

    let generation = t
        .configure(json!({"controllers": ["serviceaccount", "no-such-controller"]}))
        .await?;
    let status = status_for(&t.configurations, "default", generation).await?;
    let (state, reason, message) = valid(&status);
    ensure!(
        state == "False" && reason == "UnknownController" && message.contains("no-such-controller"),
        "{status:?}"
    );
    // `kubectl describe` shows it too: a Warning event with the same reason.
    let events: Api<Event> = Api::namespaced(t.client.clone(), "default");
    let warned = eventually(
        "a Warning event on the configuration",
        TIMEOUT,
        POLL,
        || async {
            let lp = ListParams::default().fields("involvedObject.kind=ControllerConfiguration");
            events.list(&lp).await.ok()?.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("UnknownController")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("no-such-controller"))
            })
        },
    )
    .await;
    ensure!(warned.is_ok(), "{warned:?}");

    ensure!(
        status.in_force.as_ref().map(|f| f.generation) == Some(valid_generation),
        "{status:?}"
    );

    // The previous configuration keeps working: both controllers still act.
    let ns = t.namespace("kept").await?;
    t.wait_root_ca(&ns).await?;
    t.wait_default_account(&ns).await?;

    // So it does under a new leader, which only ever sees the invalid generation.
    t.bed
        .stop_process(CONTROLLER_MANAGER, Duration::from_secs(10));
    t.bed.start_ferrite(
        CONTROLLER_MANAGER,
        "controller-manager",
        &["--controllers=serviceaccount"],
    )?;
    let ns = t.namespace("new-leader").await?;
    t.wait_root_ca(&ns).await?;
    t.wait_default_account(&ns).await?;

    // A ControllerConfiguration under another name is not read, and says so.
    let other = ControllerConfiguration::new("other", ControllerConfigurationSpec::default());
    let created = t
        .configurations
        .create(&PostParams::default(), &other)
        .await?;
    let status = status_for(
        &t.configurations,
        "other",
        created.metadata.generation.unwrap_or_default(),
    )
    .await?;
    ensure!(
        valid(&status).0 == "False" && valid(&status).1 == "NotDefault",
        "{status:?}"
    );
    t.configurations
        .delete("other", &DeleteParams::default())
        .await?;

    // Deleted, the flags are in force again: accounts, but no root CA publisher.
    t.delete_configuration().await?;
    let reverted = eventually(
        "a namespace handled under the flags alone",
        TIMEOUT,
        Duration::from_millis(10),
        || async {
            let ns = t.namespace("flags-again").await.ok()?;
            t.wait_default_account(&ns).await.ok()?;
            tokio::time::sleep(QUIET).await;
            (!t.has_root_ca(&ns).await).then_some(())
        },
    )
    .await;
    ensure!(reverted.is_ok(), "{reverted:?}\n{}", t.logs());
    Ok(())
}

/// Node A's taint and label for the placement test, added or removed.
async fn mark_node_a(client: &kube::Client, on: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(NODE_A).await?;
    let mut taints: Vec<serde_json::Value> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key != AVOID_TAINT)
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .collect();
    if on {
        taints.push(json!({"key": AVOID_TAINT, "effect": "PreferNoSchedule"}));
    }
    let label = if on { json!("yes") } else { json!(null) };
    nodes
        .patch(
            NODE_A,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {PREFER_LABEL: label}},
                "spec": {"taints": taints},
            })),
        )
        .await?;
    Ok(())
}

/// Creates a pod that prefers node A, waits for its node, and deletes it again.
async fn place(t: &Test, pods: &Api<Pod>, name: &str) -> Result<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [
                    {"key": PREFER_LABEL, "operator": "In", "values": ["yes"]}]}}]}},
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let node = eventually(
        &format!("pod {name} to be bound"),
        TIMEOUT,
        POLL,
        || async {
            let p = pods.get(name).await.ok()?;
            p.spec?.node_name.filter(|n| !n.is_empty())
        },
    )
    .await
    .with_context(|| t.logs())?;
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete(name, &dp).await?;
    eventually(&format!("pod {name} to be gone"), TIMEOUT, POLL, || async {
        pods.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await?;
    Ok(node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_profile_changes_where_the_next_pods_go() -> Result<()> {
    let t = Test::start().await?;
    t.delete_profile().await?;
    let ns = t.namespace("placement").await?;
    testing::ensure_default_service_account(&t.client, &ns).await?;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), &ns);
    mark_node_a(&t.client, true).await?;
    let outcome = async {
        // Default profile: TaintToleration (3 x 100 elsewhere) beats NodeAffinity (2 x 100 on A).
        let node = place(&t, &pods, "default-profile").await?;
        ensure!(node != NODE_A, "the default profile chose {node}");

        // A weight: NodeAffinity 5 (500 on A) beats TaintToleration (300 elsewhere).
        let generation = t
            .profile(
                json!({"plugins": {"score": {"enabled": [{"name": "NodeAffinity", "weight": 5}]}}}),
            )
            .await?;
        let status = status_for(&t.profiles, "default-scheduler", generation).await?;
        ensure!(valid(&status).0 == "True", "{status:?}");
        let node = place(&t, &pods, "heavier-affinity").await?;
        ensure!(node == NODE_A, "NodeAffinity weight 5 chose {node}");

        // NodeAffinity's score disabled: only the taint counts, away from A.
        let generation = t
            .profile(json!({"plugins": {"score": {"disabled": [{"name": "NodeAffinity"}]}}}))
            .await?;
        let status = status_for(&t.profiles, "default-scheduler", generation).await?;
        ensure!(valid(&status).0 == "True", "{status:?}");
        let node = place(&t, &pods, "no-affinity-score").await?;
        ensure!(
            node != NODE_A,
            "without NodeAffinity's score {node} was chosen"
        );

        // TaintToleration's score disabled: only the affinity counts, to A.
        let generation = t
            .profile(json!({"plugins": {"score": {"disabled": [{"name": "TaintToleration"}]}}}))
            .await?;
        let status = status_for(&t.profiles, "default-scheduler", generation).await?;
        ensure!(valid(&status).0 == "True", "{status:?}");
        let node = place(&t, &pods, "no-taint-score").await?;
        ensure!(
            node == NODE_A,
            "without TaintToleration's score {node} was chosen"
        );

        // Invalid: refused with the framework's message; the previous profile stays in force
        // (the default profile would avoid A).
        let generation = t
            .profile(json!({"plugins": {"score": {"enabled": [{"name": "NoSuchPlugin"}]}}}))
            .await?;
        let status = status_for(&t.profiles, "default-scheduler", generation).await?;
        let (state, reason, message) = valid(&status);
        ensure!(
            state == "False" && reason == "InvalidProfile" && message.contains("NoSuchPlugin"),
            "{status:?}"
        );
        let node = place(&t, &pods, "after-invalid").await?;
        ensure!(node == NODE_A, "after an invalid profile {node} was chosen");

        // Deleted: the default profile again.
        t.delete_profile().await?;
        let mut attempt = 0;
        let reverted = eventually("the default profile to be back", TIMEOUT, POLL, || {
            attempt += 1;
            let name = format!("reverted-{attempt}");
            let (t, pods) = (&t, &pods);
            async move { (place(t, pods, &name).await.ok()? != NODE_A).then_some(()) }
        })
        .await;
        ensure!(reverted.is_ok(), "{reverted:?}\n{}", t.logs());
        anyhow::Ok(())
    }
    .await;
    mark_node_a(&t.client, false).await?;
    let _ = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    outcome
}
