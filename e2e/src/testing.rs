//! The test-side API: one shared bed per test binary (each test gets its own client and
//! namespace), private beds for tests that stop the apiserver, and polling helpers.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use crate::bed::{Bed, BedOptions};
use crate::process::{self, Mode};

static SHARED: OnceCell<Bed> = OnceCell::const_new();

/// The bed shared by every test of this test binary, started on first use with the options
/// `configure` makes (the first caller's options win, so one test binary uses one shape).
pub async fn shared_bed(configure: impl FnOnce(BedOptions) -> BedOptions) -> &'static Bed {
    init_logging();
    match SHARED
        .get_or_try_init(|| async {
            let dir = fresh_dir("shared");
            process::remove_at_exit(&dir);
            Bed::up(configure(BedOptions::new(dir)), Mode::Attached).await
        })
        .await
    {
        Ok(bed) => bed,
        Err(e) => panic!("the test bed did not start: {e:#}"),
    }
}

/// A bed of the test's own (for tests that stop or restart parts of it); stopped and removed on
/// drop.
pub struct PrivateBed(Option<Bed>);

impl PrivateBed {
    pub async fn start(configure: impl FnOnce(BedOptions) -> BedOptions) -> Result<PrivateBed> {
        init_logging();
        let dir = fresh_dir("private");
        process::remove_at_exit(&dir);
        Ok(PrivateBed(Some(
            Bed::up(configure(BedOptions::new(dir)), Mode::Attached).await?,
        )))
    }
}

impl std::ops::Deref for PrivateBed {
    type Target = Bed;
    fn deref(&self) -> &Bed {
        // Only `Drop` takes the bed out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("bed taken before drop"))
    }
}

impl Drop for PrivateBed {
    fn drop(&mut self) {
        if let Some(bed) = self.0.take() {
            bed.down();
        }
    }
}

fn fresh_dir(kind: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir();
    remove_stale_dirs(&root);
    let n = N.fetch_add(1, Ordering::SeqCst);
    root.join(format!("ferrite-bed-{}-{kind}-{n}", std::process::id()))
}

/// Beds of test processes that were killed before their exit hook ran.
fn remove_stale_dirs(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("ferrite-bed-") else {
            continue;
        };
        let pid: u32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid != 0 && !process::alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Creates a namespace `<prefix>-<random>` for one test.
pub async fn namespace(client: &kube::Client, prefix: &str) -> Result<String> {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

/// Creates the `default` ServiceAccount in `ns` unless it exists: without a serviceaccount
/// controller (no controller manager, or a stock one told not to run it) pods cannot be admitted
/// in a new namespace.
pub async fn ensure_default_service_account(client: &kube::Client, ns: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
    match Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// `kubectl apply -f <path>` (a file or a directory) against the bed as its admin; returns
/// kubectl's output.
pub fn kubectl_apply(bed: &Bed, path: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new(crate::stock::binary("kubectl"))
        .arg("--kubeconfig")
        .arg(bed.kubeconfig())
        .args(["apply", "-f"])
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply -f {} failed: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until each named CustomResourceDefinition is Established (its API is served).
pub async fn crds_established(client: &kube::Client, names: &[&str]) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in names {
        eventually(
            &format!("the CRD {name} to be established"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let crd = crds.get_opt(name).await.ok()??;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// Polls `probe` every `every` until it returns Some, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A bearer token for a service account allowed to `get` the non-resource URL `/metrics` (as a
/// Prometheus scraper is), made in namespace `ns`.
pub async fn metrics_reader_token(client: &kube::Client, ns: &str) -> Result<String> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "metrics-reader"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&pp, &sa)
        .await?;
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{ns}-metrics-reader")},
        "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
    }))?;
    Api::<ClusterRole>::all(client.clone())
        .create(&pp, &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{ns}-metrics-reader")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{ns}-metrics-reader")},
        "subjects": [{"kind": "ServiceAccount", "name": "metrics-reader", "namespace": ns}],
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &binding)
        .await?;
    service_account_token(client, ns, "metrics-reader").await
}

/// A token for service account `ns/name` (TokenRequest, as `kubectl create token` does).
pub async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> Result<String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let body: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}
    }))?;
    let tr: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_subresource("token", name, &PostParams::default(), &body)
        .await?;
    Ok(tr.status.and_then(|s| s.token).unwrap_or_default())
}

/// GETs `https://127.0.0.1:<port><path>` on a component's secure port (self-signed, so the
/// certificate is not verified), with an optional bearer token. Returns status and body.
pub async fn get_secure(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut req = http.get(format!("https://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// `leader_election_master_status{name="<lease>"}` from a metrics text: Some(true) when leading.
pub fn master_status(metrics: &str, lease: &str) -> Option<bool> {
    let prefix = format!("leader_election_master_status{{name=\"{lease}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim() == "1")
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn,kube_client=off".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_test_writer()
        .try_init();
}

/// The node pod `name` is bound to, waiting up to `timeout` for the binding.
pub async fn bound_node(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    timeout: Duration,
) -> Result<String> {
    eventually(
        &format!("pod {name} to be bound"),
        timeout,
        Duration::from_millis(250),
        || async {
            let p = pods.get(name).await.ok()?;
            p.spec.and_then(|s| s.node_name).filter(|n| !n.is_empty())
        },
    )
    .await
}

/// The events with `reason` about the object called `name` in namespace `ns`, in list order
/// (empty when the list fails, for callers that poll).
pub async fn events_about(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::core::v1::Event> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&kube::api::ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason)
        })
        .collect()
}
