//! The pivot, bootkube-style: with the apiserver up and no controller manager or scheduler
//! anywhere, a temporary Ferrite control plane (the `ferrite controller-manager` and
//! `ferrite scheduler` processes, with the bootstrap kubeconfigs) runs just long enough for the
//! Helm chart's Deployments to be created, scheduled and Running; then it stops, releasing its
//! Leases, and the Deployments' pods take them over and manage themselves from then on.
//! Recovery is the same step: when no replica is left, nothing in the cluster can recreate one,
//! so the temporary control plane runs again until the Deployments are back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Deserialize as _;

use crate::certs::CLUSTER_ADMINS_GROUP;

/// The chart's release and resource names (release `ferrite` in kube-system).
pub const RELEASE: &str = "ferrite";
pub const NAMESPACE: &str = "kube-system";
pub const COMPONENTS: [&str; 2] = ["controller-manager", "scheduler"];

pub fn deployment_name(component: &str) -> String {
    format!("{RELEASE}-{component}")
}

/// The Lease each component's leader holds (the chart leaves the default names).
pub fn lease_name(component: &str) -> String {
    format!("ferrite-{component}")
}

pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Polls `check` every half second until it yields a value or `timeout` passes; the error
/// names what was awaited and the last reason it was not there yet.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn apiserver_ready(client: &kube::Client) -> std::result::Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match client.request_text(req).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(body),
        Err(e) => Err(e.to_string()),
    }
}

/// kubeadm's `kubeadm:cluster-admins` ClusterRoleBinding (admin.conf's group → cluster-admin),
/// created with super-admin.conf's `system:masters` credentials.
pub async fn bind_cluster_admins(super_admin: &kube::Client) -> Result<()> {
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ADMINS_GROUP.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: CLUSTER_ADMINS_GROUP.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(super_admin.clone())
        .patch(
            CLUSTER_ADMINS_GROUP,
            &PatchParams::apply("ferrite-bootstrap").force(),
            &Patch::Apply(&crb),
        )
        .await?;
    Ok(())
}

/// How the chart is installed on this node.
#[derive(Clone, Debug)]
pub struct ChartInstall {
    pub helm: PathBuf,
    pub chart: PathBuf,
    pub values: PathBuf,
    pub kubeconfig: PathBuf,
}

/// The values of a single-node, self-hosted install. Two replicas of each component share the
/// node: with host networking their secure ports would collide, so they use the pod network
/// (the node's bridge) and reach the apiserver at the node's address directly (there is no
/// kube-proxy to route the `kubernetes` Service's ClusterIP).
pub fn single_node_values(image: &str, tag: &str, apiserver_host: &str, port: u16) -> String {
    let v = serde_json::json!({
        "image": { "repository": image, "tag": tag, "pullPolicy": "Never" },
        "hostNetwork": false,
        "apiServer": { "host": apiserver_host, "port": port },
    });
    serde_yaml::to_string(&v).unwrap_or_default()
}

/// The CustomResourceDefinitions in the chart's `crds/` directory.
pub fn chart_crds(chart: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let dir = chart.join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd = CustomResourceDefinition::deserialize(doc)
                .with_context(|| format!("{} is not a CustomResourceDefinition", file.display()))?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

/// Applies the chart's CRDs (server-side apply). Helm installs a chart's `crds/` on the first
/// install only and never upgrades them, so `up` applies them itself: a re-run with a newer
/// Ferrite brings its configuration kinds up to date.
pub async fn apply_chart_crds(client: &kube::Client, chart: &Path) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in chart_crds(chart)? {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("ferrite-bootstrap").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying the CRD {name}"))?;
    }
    Ok(())
}

pub fn helm_upgrade(install: &ChartInstall) -> Result<()> {
    let chart = install.chart.display().to_string();
    let values = install.values.display().to_string();
    let kubeconfig = install.kubeconfig.display().to_string();
    crate::host::run(
        &install.helm,
        &[
            "upgrade",
            "--install",
            RELEASE,
            &chart,
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            &kubeconfig,
            "--values",
            &values,
        ],
    )
    .map(|_| ())
}

/// Where one component's Deployment stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentStatus {
    pub deployment_exists: bool,
    /// `ready/desired` as `kubectl get deployment` prints it, from the Deployment's status.
    pub ready: i32,
    pub desired: i32,
    /// The status reflects the current spec and every replica runs the current template.
    pub rolled_out: bool,
    /// Names of the component's pods that are Running and Ready.
    pub ready_pods: Vec<String>,
    /// The Lease holder, when it is one of the component's pods.
    pub leader_pod: Option<String>,
}

impl ComponentStatus {
    /// Both replicas run the current template, are Ready, and one of them leads.
    pub fn settled(&self) -> bool {
        self.deployment_exists
            && self.rolled_out
            && self.desired > 0
            && self.ready == self.desired
            && self.ready_pods.len() as i32 >= self.desired
            && self.leader_pod.is_some()
    }

    /// The pods can take over: as many Ready pods as desired, current template.
    pub fn pods_ready(&self) -> bool {
        self.deployment_exists
            && self.rolled_out
            && self.desired > 0
            && self.ready_pods.len() as i32 >= self.desired
    }
}

/// The pod a Lease holder identity names: client-go identities are `<hostname>_<uuid>`, and a
/// pod's hostname is its name.
pub fn holder_pod<'a>(holder: &str, pods: &'a [String]) -> Option<&'a String> {
    let host = holder.rsplit_once('_').map(|(h, _)| h).unwrap_or(holder);
    pods.iter().find(|p| p.as_str() == host)
}

pub fn deployment_rolled_out(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let want = d.spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
}

pub fn pod_ready(p: &Pod) -> bool {
    let Some(status) = p.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && p.metadata.deletion_timestamp.is_none()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub async fn component_status(client: &kube::Client, component: &str) -> Result<ComponentStatus> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut st = ComponentStatus::default();
    let Some(d) = deployments.get_opt(&deployment_name(component)).await? else {
        return Ok(st);
    };
    st.deployment_exists = true;
    st.desired = d.spec.replicas.unwrap_or(1);
    st.ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    // Pods of the current template carry the ReplicaSet's pod-template-hash; the Deployment's
    // own status says whether they are all of it.
    st.rolled_out = deployment_rolled_out(&d);
    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}");
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    st.ready_pods = listed
        .items
        .iter()
        .filter(|p| pod_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    if let Some(lease) = leases.get_opt(&lease_name(component)).await?
        && let Some(holder) = lease.spec.and_then(|s| s.holder_identity)
    {
        st.leader_pod = holder_pod(&holder, &st.ready_pods).cloned();
    }
    Ok(st)
}

/// The temporary control plane: the two components as child processes of this command, with
/// the bootstrap kubeconfigs, the chart's Lease names, and no serving port.
pub struct TemporaryControlPlane {
    children: Vec<(String, std::process::Child)>,
}

impl TemporaryControlPlane {
    pub fn start(ferrite: &Path, dir: &Path) -> Result<TemporaryControlPlane> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let conf = |f: &str| format!("--kubeconfig={}", dir.join(f).display());
        let pki = |f: &str| dir.join("pki").join(f).display().to_string();
        let cm_args = vec![
            "controller-manager".to_string(),
            conf("controller-manager.conf"),
            "--secure-port=0".into(),
            "--leader-elect=true".into(),
            "--use-service-account-credentials=true".into(),
            format!("--root-ca-file={}", pki("ca.crt")),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            format!("--cluster-signing-cert-file={}", pki("ca.crt")),
            format!("--cluster-signing-key-file={}", pki("ca.key")),
        ];
        let sched_args = vec![
            "scheduler".to_string(),
            conf("scheduler.conf"),
            "--secure-port=0".into(),
            "--leader-elect=true".into(),
        ];
        let mut children = Vec::new();
        for (name, args) in [
            ("temporary-controller-manager", cm_args),
            ("temporary-scheduler", sched_args),
        ] {
            let log = std::fs::File::options()
                .create(true)
                .append(true)
                .open(logs.join(format!("{name}.log")))?;
            let mut cmd = Command::new(ferrite);
            cmd.args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // They must not outlive this command, even when it is killed.
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting the {name}"))?;
            children.push((name.to_string(), child));
        }
        Ok(TemporaryControlPlane { children })
    }

    /// A child that exited early is an error worth its log.
    pub fn check(&mut self, dir: &Path) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log")))
                    .unwrap_or_default();
                bail!(
                    "the {name} exited ({status}); last log lines:\n{}",
                    crate::host::tail(&log, 20)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM: each releases its Lease on the way out, so the pods take over within one
    /// retry period instead of a whole lease duration.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        for (_, child) in &self.children {
            crate::host::signal_and_wait(child.id() as i32, Duration::from_secs(15));
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for TemporaryControlPlane {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// What `ensure_ferrite` did.
#[derive(Debug)]
pub struct PivotReport {
    /// Whether the temporary control plane had to run.
    pub temporary_control_plane: bool,
    pub statuses: Vec<(String, ComponentStatus)>,
}

async fn statuses(client: &kube::Client) -> Result<Vec<(String, ComponentStatus)>> {
    let mut out = Vec::new();
    for c in COMPONENTS {
        out.push((c.to_string(), component_status(client, c).await?));
    }
    Ok(out)
}

fn describe(st: &[(String, ComponentStatus)]) -> String {
    st.iter()
        .map(|(c, s)| {
            format!(
                "{c}: deployment {} {}/{} rolled-out={} ready-pods={:?} leader={:?}",
                if s.deployment_exists {
                    "present"
                } else {
                    "absent"
                },
                s.ready,
                s.desired,
                s.rolled_out,
                s.ready_pods,
                s.leader_pod
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Installs (or upgrades) the chart and makes sure Ferrite's Deployments run and lead: when a
/// pod of each component already leads, they roll themselves out; otherwise the temporary
/// control plane runs until the pods are Ready, then hands over.
pub async fn ensure_ferrite(
    client: &kube::Client,
    install: &ChartInstall,
    ferrite: &Path,
    dir: &Path,
    timeout: Duration,
) -> Result<PivotReport> {
    apply_chart_crds(client, &install.chart).await?;
    helm_upgrade(install)?;
    let current = statuses(client).await?;
    let leaders_alive = current.iter().all(|(_, s)| s.leader_pod.is_some());
    if leaders_alive {
        let st = wait_for("Ferrite's Deployments to settle", timeout, || async {
            let st = statuses(client).await.map_err(|e| e.to_string())?;
            if st.iter().all(|(_, s)| s.settled()) {
                Ok(st)
            } else {
                Err(describe(&st))
            }
        })
        .await?;
        return Ok(PivotReport {
            temporary_control_plane: false,
            statuses: st,
        });
    }
    tracing::info!("starting the temporary control plane");
    let mut temp = TemporaryControlPlane::start(ferrite, dir)?;
    let pods_ready = wait_for(
        "Ferrite's pods to run beside the temporary control plane",
        timeout,
        || {
            let check = temp.check(dir);
            async move {
                check.map_err(|e| format!("{e:#}"))?;
                let st = statuses(client).await.map_err(|e| e.to_string())?;
                if st.iter().all(|(_, s)| s.pods_ready()) {
                    Ok(())
                } else {
                    Err(describe(&st))
                }
            }
        },
    )
    .await;
    tracing::info!("stopping the temporary control plane");
    temp.stop();
    pods_ready?;
    let st = wait_for("Ferrite's pods to take both Leases", timeout, || async {
        let st = statuses(client).await.map_err(|e| e.to_string())?;
        if st.iter().all(|(_, s)| s.settled()) {
            Ok(st)
        } else {
            Err(describe(&st))
        }
    })
    .await?;
    Ok(PivotReport {
        temporary_control_plane: true,
        statuses: st,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_crds_are_read_from_its_crds_directory() {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(|root| root.join("charts").join("ferrite"))
            .unwrap_or_default();
        let crds = chart_crds(&chart).expect("the chart's CRDs parse");
        let names: Vec<&str> = crds
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            [
                "controllerconfigurations.config.ferrite.dev",
                "schedulerprofiles.config.ferrite.dev"
            ]
        );
    }

    #[test]
    fn a_lease_holder_is_matched_to_the_pod_named_by_its_hostname() {
        let pods = vec![
            "ferrite-scheduler-7d9f-abcde".to_string(),
            "ferrite-scheduler-7d9f-fghij".to_string(),
        ];
        assert_eq!(
            holder_pod("ferrite-scheduler-7d9f-fghij_0f8e-11", &pods),
            Some(&pods[1])
        );
        // The temporary control plane runs on the node: its hostname is no pod's name.
        assert_eq!(holder_pod("node-a_0f8e-11", &pods), None);
        assert_eq!(holder_pod("", &pods), None);
    }

    #[test]
    fn a_component_is_settled_only_when_every_replica_is_ready_and_a_pod_leads() {
        let mut s = ComponentStatus {
            deployment_exists: true,
            ready: 2,
            desired: 2,
            rolled_out: true,
            ready_pods: vec!["a".into(), "b".into()],
            leader_pod: None,
        };
        assert!(s.pods_ready());
        assert!(!s.settled(), "nobody leads yet");
        s.leader_pod = Some("a".into());
        assert!(s.settled());
        s.ready_pods.pop();
        assert!(!s.settled() && !s.pods_ready());
        let absent = ComponentStatus::default();
        assert!(!absent.settled() && !absent.pods_ready());
    }

    #[test]
    fn single_node_values_use_the_pod_network_and_the_apiserver_address() {
        let v: serde_yaml::Value = serde_yaml::from_str(&single_node_values(
            "localhost/ferrite",
            "t1",
            "192.0.2.2",
            6443,
        ))
        .expect("yaml");
        assert_eq!(v["hostNetwork"].as_bool(), Some(false));
        assert_eq!(v["apiServer"]["host"].as_str(), Some("192.0.2.2"));
        assert_eq!(v["apiServer"]["port"].as_u64(), Some(6443));
        assert_eq!(v["image"]["pullPolicy"].as_str(), Some("Never"));
    }

    #[test]
    fn a_deployment_whose_status_lags_its_spec_is_not_rolled_out() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2}
        }))
        .expect("deployment");
        assert!(!deployment_rolled_out(&d));
        if let Some(s) = d.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert!(deployment_rolled_out(&d));
        if let Some(s) = d.status.as_mut() {
            s.replicas = Some(3);
        }
        assert!(!deployment_rolled_out(&d), "an old pod is still there");
    }
}
