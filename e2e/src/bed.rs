//! The test bed: stock etcd + stock kube-apiserver on loopback (secure serving, RBAC, service
//! account tokens, default admission), kwok managing N fake nodes, and optionally a controller
//! manager and a scheduler, stock or Ferrite. Used by `testbed up|down`, tests and benchmarks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use ferrite_bootstrap::kubeconfig::{self, Credentials};
use ferrite_bootstrap::pki::{CertPair, CertSpec, CertificateAuthority, ServiceAccountKey};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use serde::{Deserialize, Serialize};

use crate::process::{self, Mode, Proc};
use crate::stock;

/// Which controller manager or scheduler the bed runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    None,
    Stock,
    Ferrite,
}

#[derive(Clone, Debug)]
pub struct BedOptions {
    pub dir: PathBuf,
    pub nodes: u32,
    pub controller_manager: Component,
    pub scheduler: Component,
    /// kwok's pod-complete stage: pods owned by a Job move to Succeeded on their own. Tests that
    /// drive pod phases themselves turn it off.
    pub complete_job_pods: bool,
    /// Extra flags for the Ferrite controller manager / scheduler.
    pub ferrite_args: Vec<String>,
    /// Extra flags for the stock controller manager, e.g. `--controllers=*,-deployment` to leave
    /// one controller to a Ferrite controller manager started beside it.
    pub stock_controller_manager_args: Vec<String>,
    /// Extra flags for the apiserver, e.g. `--feature-gates=…`.
    pub apiserver_args: Vec<String>,
}

impl BedOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BedOptions {
            dir: dir.into(),
            nodes: 3,
            controller_manager: Component::None,
            scheduler: Component::None,
            complete_job_pods: true,
            ferrite_args: Vec::new(),
            stock_controller_manager_args: Vec::new(),
            apiserver_args: Vec::new(),
        }
    }
}

/// What `testbed down` needs to find a detached bed again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BedState {
    pub pids: BTreeMap<String, u32>,
    pub apiserver_port: u16,
    pub etcd_port: u16,
    pub etcd_peer_port: u16,
    pub controller_manager_port: Option<u16>,
    pub scheduler_port: Option<u16>,
}

pub struct Bed {
    pub dir: PathBuf,
    pub opts: BedOptions,
    mode: Mode,
    state: Mutex<BedState>,
    procs: Mutex<Vec<Proc>>,
}

pub const CLUSTER_NAME: &str = "ferrite-testbed";
/// The taint the apiserver puts on new nodes until the node-lifecycle controller sees them Ready.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// kwok manages the nodes that carry this annotation.
pub const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

impl Bed {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    pub fn state(&self) -> BedState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.state().apiserver_port)
    }

    /// An admin client, made in the caller's tokio runtime.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig()).await
    }

    /// Starts everything and returns when the apiserver is ready, the nodes are Ready and the
    /// chosen components hold their leases.
    pub async fn up(opts: BedOptions, mode: Mode) -> Result<Bed> {
        let started = Instant::now();
        let dir = opts.dir.clone();
        if dir.join("state.json").exists() {
            bail!(
                "a test bed already runs in {} (run `testbed down --dir {}` first)",
                dir.display(),
                dir.display()
            );
        }
        for bin in ["etcd", "kube-apiserver", "kwok"] {
            let path = stock::binary(bin);
            if !path.is_file() {
                bail!(
                    "{} is missing: run e2e/stock/build.sh first",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("pki"))?;
        let state = BedState {
            apiserver_port: process::free_port()?,
            etcd_port: process::free_port()?,
            etcd_peer_port: process::free_port()?,
            ..Default::default()
        };
        let bed = Bed {
            dir,
            opts,
            mode,
            state: Mutex::new(state),
            procs: Mutex::new(Vec::new()),
        };
        if let Err(e) = bed.start_all(started).await {
            bed.stop_all();
            return Err(e);
        }
        Ok(bed)
    }

    async fn start_all(&self, started: Instant) -> Result<()> {
        self.write_pki()?;
        self.start_etcd().await?;
        self.start_apiserver().await?;
        tracing::info!(elapsed = ?started.elapsed(), "apiserver ready");
        let client = self.client().await?;
        self.start_kwok()?;
        self.create_nodes(&client).await?;
        self.wait_nodes_ready(&client, Duration::from_secs(120))
            .await?;
        let lifts_taints = self.controller_manager_runs_node_lifecycle();
        if !lifts_taints {
            self.clear_not_ready_taints(&client).await?;
        }
        tracing::info!(elapsed = ?started.elapsed(), nodes = self.opts.nodes, "nodes ready");
        if self.opts.controller_manager != Component::None {
            self.start_controller_manager(self.opts.controller_manager, &client)
                .await?;
        }
        if lifts_taints {
            self.wait_not_ready_taints_lifted(&client).await?;
        }
        if self.opts.scheduler != Component::None {
            self.start_scheduler(self.opts.scheduler, &client).await?;
        }
        self.save_state()?;
        tracing::info!(elapsed = ?started.elapsed(), "test bed up");
        Ok(())
    }

    fn save_state(&self) -> Result<()> {
        let state = self.state();
        std::fs::write(
            self.dir.join("state.json"),
            serde_json::to_vec_pretty(&state)?,
        )?;
        Ok(())
    }

    fn write(&self, rel: &str, contents: &str, private: bool) -> Result<()> {
        let path = self.dir.join(rel);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }

    fn write_pki(&self) -> Result<()> {
        let ca = CertificateAuthority::new("ferrite-testbed-ca")?;
        self.write("pki/ca.crt", &ca.pair().cert_pem, false)?;
        self.write("pki/ca.key", &ca.pair().key_pem, true)?;
        let serving = ca.issue(&CertSpec::server(
            "kube-apiserver",
            &[
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
        ))?;
        self.write("pki/apiserver.crt", &serving.cert_pem, false)?;
        self.write("pki/apiserver.key", &serving.key_pem, true)?;
        let sa = ServiceAccountKey::generate()?;
        self.write("pki/sa.key", &sa.private_pem, true)?;
        self.write("pki/sa.pub", &sa.public_pem, false)?;
        let server = self.apiserver_url();
        let users: [(&str, &str, &[&str]); 3] = [
            ("admin", "kubernetes-admin", &["system:masters"]),
            ("controller-manager", "system:kube-controller-manager", &[]),
            ("scheduler", "system:kube-scheduler", &[]),
        ];
        for (file, user, groups) in users {
            let pair: CertPair = ca.issue(&CertSpec::client(user, groups))?;
            let text = kubeconfig::render(
                CLUSTER_NAME,
                &server,
                &ca.pair().cert_pem,
                user,
                Credentials::ClientCert(&pair),
            );
            self.write(&format!("{file}.kubeconfig"), &text, true)?;
        }
        Ok(())
    }

    fn spawn(&self, name: &str, cmd: Command) -> Result<u32> {
        let proc = process::spawn(name, cmd, &self.log(name), self.mode)
            .with_context(|| format!("starting {name}"))?;
        let pid = proc.pid;
        if let Ok(mut state) = self.state.lock() {
            state.pids.insert(name.to_string(), pid);
        }
        if let Ok(mut procs) = self.procs.lock() {
            procs.retain(|p| p.name != name);
            procs.push(proc);
        }
        Ok(pid)
    }

    /// Fails fast with the log's tail when a process we wait for has died.
    fn check_running(&self, name: &str) -> Result<()> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| anyhow!("process table poisoned"))?;
        if let Some(p) = procs.iter_mut().find(|p| p.name == name)
            && !p.is_running()
        {
            bail!(
                "{name} exited during start-up; last log lines:\n{}",
                process::tail(&self.log(name), 30)
            );
        }
        Ok(())
    }

    async fn start_etcd(&self) -> Result<()> {
        let s = self.state();
        let client = format!("http://127.0.0.1:{}", s.etcd_port);
        let peer = format!("http://127.0.0.1:{}", s.etcd_peer_port);
        let mut cmd = Command::new(stock::binary("etcd"));
        cmd.args([
            "--name=testbed",
            &format!("--data-dir={}", self.dir.join("etcd").display()),
            &format!("--listen-client-urls={client}"),
            &format!("--advertise-client-urls={client}"),
            &format!("--listen-peer-urls={peer}"),
            &format!("--initial-advertise-peer-urls={peer}"),
            &format!("--initial-cluster=testbed={peer}"),
            "--log-level=warn",
            // A throwaway store: skipping fsync keeps a loaded bed from being disk-bound. Stock and
            // Ferrite always share the same bed, so comparisons stay fair.
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592",
        ]);
        self.spawn("etcd", cmd)?;
        let url = format!("{client}/health");
        let http = reqwest::Client::new();
        self.wait_for("etcd", Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body = http.get(&url).send().await.ok()?.text().await.ok()?;
                body.contains("\"health\":\"true\"").then_some(())
            }
        })
        .await
    }

    pub fn apiserver_command(&self) -> Command {
        let s = self.state();
        let pki = |f: &str| self.dir.join("pki").join(f).display().to_string();
        let mut cmd = Command::new(stock::binary("kube-apiserver"));
        cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{}", s.etcd_port),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", s.apiserver_port),
            "--advertise-address=127.0.0.1".into(),
            // Endpoints may not point at loopback, and nothing in the bed dials the
            // `kubernetes` Service.
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            "--authorization-mode=Node,RBAC".into(),
            // The default admission chain (ResourceQuota, ServiceAccount, DefaultTolerationSeconds,
            // Priority, …) plus what kubeadm adds.
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", pki("sa.pub")),
            format!("--service-account-signing-key-file={}", pki("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--allow-privileged=true".into(),
            format!("--cert-dir={}", self.dir.join("pki").display()),
            "--profiling=false".into(),
            // Without it the apiserver waits for open watches (up to the 60 s request timeout)
            // after SIGTERM; with it, in-flight requests get 2 s and new ones a 429 + Retry-After.
            "--shutdown-send-retry-after=true".into(),
        ]);
        cmd.args(&self.opts.apiserver_args);
        cmd
    }

    /// Starts (or restarts, on the same port and data) the apiserver and waits for /readyz.
    pub async fn start_apiserver(&self) -> Result<()> {
        self.spawn("kube-apiserver", self.apiserver_command())?;
        let kubeconfig = self.kubeconfig();
        self.wait_for("kube-apiserver", Duration::from_secs(90), || {
            let kubeconfig = kubeconfig.clone();
            async move {
                let client = client_from(&kubeconfig).await.ok()?;
                let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
                let text = client.request_text(req).await.ok()?;
                (text.trim() == "ok").then_some(())
            }
        })
        .await?;
        self.save_state_if_running()
    }

    fn save_state_if_running(&self) -> Result<()> {
        if self.dir.join("state.json").exists() {
            self.save_state()
        } else {
            Ok(())
        }
    }

    /// Stops the apiserver (SIGTERM), e.g. to test behaviour while it is unreachable.
    pub fn stop_apiserver(&self) {
        self.stop_process("kube-apiserver", Duration::from_secs(20));
    }

    /// Kills the apiserver outright (SIGKILL): unreachable from this instant, as in a crash.
    pub fn kill_apiserver(&self) {
        self.stop_process("kube-apiserver", Duration::ZERO);
    }

    fn start_kwok(&self) -> Result<()> {
        let mut cmd = Command::new(stock::binary("kwok"));
        cmd.args([
            format!("--kubeconfig={}", self.kubeconfig().display()),
            "--manage-all-nodes=false".into(),
            format!(
                "--manage-nodes-with-annotation-selector={}={}",
                KWOK_ANNOTATION.0, KWOK_ANNOTATION.1
            ),
            "--node-lease-duration-seconds=40".into(),
            // Room for every pod of a 100-node bed at 110 pods per node.
            "--cidr=10.128.0.0/14".into(),
            "--node-ip=10.127.0.1".into(),
        ]);
        let mut stages = vec![
            "node-initialize",
            "node-heartbeat-with-lease",
            "pod-ready",
            "pod-delete",
        ];
        if self.opts.complete_job_pods {
            stages.push("pod-complete");
        }
        for stage in stages {
            cmd.arg(format!("--config={}", stock::kwok_stage(stage).display()));
        }
        self.spawn("kwok", cmd)?;
        Ok(())
    }

    async fn create_nodes(&self, client: &kube::Client) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        futures::stream::iter(0..self.opts.nodes)
            .map(|i| {
                let nodes = nodes.clone();
                async move {
                    let node = kwok_node(&format!("kwok-node-{i}"));
                    match nodes.create(&PostParams::default(), &node).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                        Err(e) => Err(anyhow!("creating node {i}: {e}")),
                    }
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Whether the bed's controller manager (stock or Ferrite) runs the node-lifecycle
    /// controller, judged from its `--controllers` flags.
    pub fn controller_manager_runs_node_lifecycle(&self) -> bool {
        let component = self.opts.controller_manager;
        if component == Component::None {
            return false;
        }
        let controllers: Vec<String> = self
            .controller_manager_args(component, 0)
            .iter()
            .filter_map(|a| a.strip_prefix("--controllers="))
            .flat_map(|v| v.split(',').map(str::to_owned))
            .collect();
        ferrite_controllers::names::enabled(&controllers)
            .is_ok_and(|on| on.contains(ferrite_controllers::node_lifecycle::NAME))
    }

    /// The apiserver's TaintNodesByCondition admission taints every new node
    /// `node.kubernetes.io/not-ready:NoSchedule`; the node-lifecycle controller lifts it once the
    /// node is Ready. A bed whose controller manager does not run that controller (none at all, or
    /// one told to run only some controllers) lifts it itself, or no pod could be scheduled.
    async fn clear_not_ready_taints(&self, client: &kube::Client) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let list = nodes.list(&ListParams::default()).await?;
        futures::stream::iter(list.items)
            .map(|node| {
                let nodes = nodes.clone();
                async move {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    let taints: Vec<_> = node
                        .spec
                        .and_then(|s| s.taints)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.key != NOT_READY_TAINT)
                        .collect();
                    let patch = serde_json::json!({"spec": {"taints": taints}});
                    nodes
                        .patch(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&patch),
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| anyhow!("untainting node {name}: {e}"))
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Waits until the controller manager's node-lifecycle controller has lifted the not-ready
    /// taint from every node, so that the bed is schedulable when `up` returns.
    async fn wait_not_ready_taints_lifted(&self, client: &kube::Client) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        self.wait_for("controller-manager", Duration::from_secs(60), || {
            let nodes = nodes.clone();
            async move {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                let tainted = list.items.iter().any(|n| {
                    n.spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|ts| ts.iter().any(|t| t.key == NOT_READY_TAINT))
                });
                (!tainted).then_some(())
            }
        })
        .await
    }

    pub async fn wait_nodes_ready(&self, client: &kube::Client, timeout: Duration) -> Result<()> {
        let want = self.opts.nodes as usize;
        let nodes: Api<Node> = Api::all(client.clone());
        self.wait_for("kwok", timeout, || {
            let nodes = nodes.clone();
            async move {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                let ready = list.items.iter().filter(|n| node_ready(n)).count();
                (ready >= want).then_some(())
            }
        })
        .await
    }

    /// The flags both the stock and the Ferrite controller manager get on the bed.
    pub fn controller_manager_args(&self, component: Component, port: u16) -> Vec<String> {
        let kc = self
            .path("controller-manager.kubeconfig")
            .display()
            .to_string();
        let pki = |f: &str| self.dir.join("pki").join(f).display().to_string();
        let args = vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--leader-elect=true".into(),
            "--use-service-account-credentials=true".into(),
            format!("--root-ca-file={}", pki("ca.crt")),
            format!("--service-account-private-key-file={}", pki("sa.key")),
            format!("--cluster-signing-cert-file={}", pki("ca.crt")),
            format!("--cluster-signing-key-file={}", pki("ca.key")),
            format!("--cluster-name={CLUSTER_NAME}"),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
        ];
        match component {
            Component::Ferrite => with_extra(args, &self.opts.ferrite_args),
            Component::Stock => with_extra(args, &self.opts.stock_controller_manager_args),
            Component::None => args,
        }
    }

    pub fn scheduler_args(&self, component: Component, port: u16) -> Vec<String> {
        let kc = self.path("scheduler.kubeconfig").display().to_string();
        let mut args = vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--leader-elect=true".into(),
        ];
        if component == Component::Ferrite {
            args.extend(self.opts.ferrite_args.iter().cloned());
        }
        args
    }

    async fn start_controller_manager(
        &self,
        component: Component,
        client: &kube::Client,
    ) -> Result<()> {
        let port = process::free_port()?;
        let mut cmd = match component {
            Component::Stock => Command::new(stock::binary("kube-controller-manager")),
            _ => {
                let mut c = Command::new(stock::ferrite_binary());
                c.arg("controller-manager");
                c
            }
        };
        cmd.args(self.controller_manager_args(component, port));
        if let Ok(mut s) = self.state.lock() {
            s.controller_manager_port = Some(port);
        }
        let lease = if component == Component::Stock {
            "kube-controller-manager"
        } else {
            "ferrite-controller-manager"
        };
        self.spawn("controller-manager", cmd)?;
        self.wait_lease_held("controller-manager", client, lease)
            .await
    }

    async fn start_scheduler(&self, component: Component, client: &kube::Client) -> Result<()> {
        let port = process::free_port()?;
        let mut cmd = match component {
            Component::Stock => Command::new(stock::binary("kube-scheduler")),
            _ => {
                let mut c = Command::new(stock::ferrite_binary());
                c.arg("scheduler");
                c
            }
        };
        cmd.args(self.scheduler_args(component, port));
        if let Ok(mut s) = self.state.lock() {
            s.scheduler_port = Some(port);
        }
        let lease = if component == Component::Stock {
            "kube-scheduler"
        } else {
            "ferrite-scheduler"
        };
        self.spawn("scheduler", cmd)?;
        self.wait_lease_held("scheduler", client, lease).await
    }

    async fn wait_lease_held(
        &self,
        proc_name: &str,
        client: &kube::Client,
        lease: &str,
    ) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        self.wait_for(proc_name, Duration::from_secs(60), || {
            let leases = leases.clone();
            async move {
                let l = leases.get_opt(lease).await.ok()??;
                let holder = l.spec?.holder_identity?;
                (!holder.is_empty()).then_some(())
            }
        })
        .await
    }

    /// Polls `probe` every 100 ms until it yields Some, failing with `proc_name`'s log tail when
    /// the process dies or `timeout` passes.
    async fn wait_for<F, Fut>(&self, proc_name: &str, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if probe().await.is_some() {
                return Ok(());
            }
            self.check_running(proc_name)?;
            if Instant::now() > deadline {
                bail!(
                    "{proc_name} not ready after {timeout:?}; last log lines:\n{}",
                    process::tail(&self.log(proc_name), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops one process by name (SIGTERM, then SIGKILL after `grace`).
    pub fn stop_process(&self, name: &str, grace: Duration) {
        let Ok(mut procs) = self.procs.lock() else {
            return;
        };
        if let Some(pos) = procs.iter().position(|p| p.name == name) {
            let mut p = procs.remove(pos);
            p.stop(grace);
        }
        if let Ok(mut s) = self.state.lock() {
            s.pids.remove(name);
        }
    }

    /// Stops every process, the components first and etcd last.
    pub fn stop_all(&self) {
        for name in [
            "scheduler",
            "controller-manager",
            "kwok",
            "kube-apiserver",
            "etcd",
        ] {
            self.stop_process(name, Duration::from_secs(10));
        }
        let rest: Vec<String> = self
            .procs
            .lock()
            .map(|p| p.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default();
        for name in rest {
            self.stop_process(&name, Duration::from_secs(10));
        }
    }

    /// Stops everything and removes the bed's directory.
    pub fn down(self) {
        self.stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Starts `ferrite <component>` (scheduler or controller-manager) as process `proc_name` with
    /// the bed's credentials, a free secure port and `extra` flags; returns the port.
    pub fn start_ferrite(&self, proc_name: &str, component: &str, extra: &[&str]) -> Result<u16> {
        let port = process::free_port()?;
        let mut cmd = Command::new(stock::ferrite_binary());
        cmd.arg(component);
        let base = if component == "scheduler" {
            self.scheduler_args(Component::None, port)
        } else {
            self.controller_manager_args(Component::None, port)
        };
        // Later flags win in clap only for single-valued flags; keep the bed's defaults first.
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        cmd.args(with_extra(base, &extra));
        self.spawn(proc_name, cmd)?;
        Ok(port)
    }

    /// Starts a stock component (`kube-scheduler` or `kube-controller-manager`) the same way.
    pub fn start_stock(&self, proc_name: &str, binary: &str, extra: &[&str]) -> Result<u16> {
        let port = process::free_port()?;
        let mut cmd = Command::new(stock::binary(binary));
        let base = if binary == "kube-scheduler" {
            self.scheduler_args(Component::Stock, port)
        } else {
            self.controller_manager_args(Component::Stock, port)
        };
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        cmd.args(with_extra(base, &extra));
        self.spawn(proc_name, cmd)?;
        Ok(port)
    }

    /// Adopts a process the caller started (e.g. a Ferrite candidate in a test) so `stop_all`
    /// and process exit stop it too.
    pub fn spawn_named(&self, name: &str, cmd: Command) -> Result<u32> {
        self.spawn(name, cmd)
    }

    /// Sends `sig` to a named process; returns false when there is none.
    pub fn signal(&self, name: &str, sig: i32) -> bool {
        let Ok(procs) = self.procs.lock() else {
            return false;
        };
        procs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.signal(sig))
            .is_some()
    }

    /// Exit code of a named process that has ended.
    pub fn exit_code(&self, name: &str) -> Option<i32> {
        let mut procs = self.procs.lock().ok()?;
        procs.iter_mut().find(|p| p.name == name)?.try_exit_code()
    }

    /// "<name> log:" and the last 40 lines of a process's log, to explain a test's timeout.
    pub fn log_tail(&self, name: &str) -> String {
        format!("{name} log:\n{}", process::tail(&self.log(name), 40))
    }

    /// The pid of a named process.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.state().pids.get(name).copied()
    }

    pub fn is_running(&self, name: &str) -> bool {
        let Ok(mut procs) = self.procs.lock() else {
            return false;
        };
        procs
            .iter_mut()
            .find(|p| p.name == name)
            .map(|p| p.is_running())
            .unwrap_or(false)
    }
}

/// `base` followed by `extra`, where a flag named in `extra` replaces the bed's default for it
/// (e.g. `--controllers=deployment` instead of `*`, or `--root-ca-file=` to unset it). Both
/// kube-controller-manager and Ferrite append repeated `--controllers` flags, so adding one to
/// the default `*` would still enable everything.
pub fn with_extra(base: Vec<String>, extra: &[String]) -> Vec<String> {
    let name = |a: &str| a.split_once('=').map_or(a, |(n, _)| n).to_owned();
    let replaced: std::collections::HashSet<String> = extra.iter().map(|a| name(a)).collect();
    base.into_iter()
        .filter(|a| !replaced.contains(&name(a)))
        .chain(extra.iter().cloned())
        .collect()
}

/// Stops a detached bed found by its directory and removes its state.
pub fn down_dir(dir: &Path) -> Result<()> {
    let state_file = dir.join("state.json");
    if let Ok(bytes) = std::fs::read(&state_file) {
        let state: BedState =
            serde_json::from_slice(&bytes).context("reading the bed's state.json")?;
        let order = [
            "scheduler",
            "controller-manager",
            "kwok",
            "kube-apiserver",
            "etcd",
        ];
        let mut names: Vec<&String> = state.pids.keys().collect();
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(0));
        for name in names {
            let mut p = Proc::from_pid(name, state.pids[name]);
            if process::alive(p.pid) && is_bed_process(p.pid, dir) {
                p.stop(Duration::from_secs(10));
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Guards against a recycled pid: a bed process names the bed directory on its command line.
fn is_bed_process(pid: u32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        .unwrap_or(false)
}

pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        .unwrap_or(false)
}

/// A fake node as upstream scheduler_perf sizes them: 4 CPU, 32Gi, 110 pods.
pub fn kwok_node(name: &str) -> Node {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_ANNOTATION.0: KWOK_ANNOTATION.1,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
        },
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_extra_flag_replaces_the_beds_default_of_the_same_name() {
        let base = strings(&["--controllers=*", "--root-ca-file=/ca", "--v=2"]);
        let extra = strings(&["--root-ca-file=", "--controllers=job"]);
        assert_eq!(
            with_extra(base, &extra),
            strings(&["--v=2", "--root-ca-file=", "--controllers=job"])
        );
    }

    fn bed_with(cm: Component, ferrite_args: &[&str], stock_args: &[&str]) -> Bed {
        let mut opts = BedOptions::new("/nonexistent");
        opts.controller_manager = cm;
        opts.ferrite_args = strings(ferrite_args);
        opts.stock_controller_manager_args = strings(stock_args);
        Bed {
            dir: opts.dir.clone(),
            opts,
            mode: Mode::Attached,
            state: Mutex::new(BedState::default()),
            procs: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn the_bed_lifts_the_not_ready_taint_only_where_no_node_lifecycle_controller_runs() {
        assert!(!bed_with(Component::None, &[], &[]).controller_manager_runs_node_lifecycle());
        assert!(bed_with(Component::Ferrite, &[], &[]).controller_manager_runs_node_lifecycle());
        assert!(bed_with(Component::Stock, &[], &[]).controller_manager_runs_node_lifecycle());
        assert!(
            !bed_with(Component::Ferrite, &["--controllers=job"], &[])
                .controller_manager_runs_node_lifecycle()
        );
        assert!(
            !bed_with(Component::Stock, &[], &["--controllers=*,-nodelifecycle"])
                .controller_manager_runs_node_lifecycle()
        );
        assert!(
            bed_with(Component::Stock, &[], &["--controllers=*,-deployment"])
                .controller_manager_runs_node_lifecycle()
        );
    }

    #[test]
    fn extra_flags_without_a_default_are_appended() {
        let base = strings(&["--controllers=*"]);
        let extra = strings(&["--leader-elect=false"]);
        assert_eq!(
            with_extra(base, &extra),
            strings(&["--controllers=*", "--leader-elect=false"])
        );
    }
}
