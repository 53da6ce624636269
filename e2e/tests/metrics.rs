//! `ferrite controller-manager` serves `/healthz`, `/readyz` and `/metrics` on its secure port
//! behind upstream's delegated authentication and authorization, and rejects bad flags as a
//! usage error before it starts anything.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ferrite_e2e::Bed;
use ferrite_e2e::process::tail;
use ferrite_e2e::stock::ferrite_binary;
use ferrite_e2e::testing::{self, eventually, get_secure, master_status};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

const PROC: &str = "cm-metrics";
const LEASE: &str = "metrics-test";

async fn bed() -> &'static Bed {
    testing::shared_bed(|mut o| {
        o.nodes = 1;
        o
    })
    .await
}

/// Polls `path` until it answers 200 (no credentials), failing with the process log's tail.
async fn wait_ok(bed: &Bed, port: u16, path: &str) -> Result<()> {
    eventually(
        &format!("{path} to answer 200"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { matches!(get_secure(port, path, None).await, Ok((200, _))).then_some(()) },
    )
    .await
    .with_context(|| format!("{PROC} log:\n{}", tail(&bed.log(PROC), 30)))
}

#[tokio::test]
async fn metrics_are_served_only_to_callers_the_apiserver_authorizes_while_health_is_open()
-> Result<()> {
    let bed = bed().await;
    let client = bed.client().await?;
    let ns = testing::namespace(&client, "metrics").await?;
    let port = bed.start_ferrite(
        PROC,
        "controller-manager",
        &[&format!("--leader-elect-resource-name={LEASE}")],
    )?;

    // Upstream's --authorization-always-allow-paths default covers /healthz and /readyz.
    wait_ok(bed, port, "/healthz").await?;
    wait_ok(bed, port, "/readyz").await?;

    // No credentials: upstream's delegating authenticator treats the caller as system:anonymous
    // (group system:unauthenticated), which RBAC does not allow /metrics, so 403, not 401.
    let (status, body) = get_secure(port, "/metrics", None).await?;
    ensure!(status == 403, "/metrics without a token: {status} {body}");

    // A token the apiserver's TokenReview rejects is never downgraded to anonymous.
    let (status, body) = get_secure(port, "/metrics", Some("not-a-real-token")).await?;
    ensure!(
        status == 401,
        "/metrics with a garbage token: {status} {body}"
    );

    // Authenticated, but no RBAC grant for /metrics.
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await?;
    let nobody = testing::service_account_token(&client, &ns, "nobody").await?;
    ensure!(!nobody.is_empty(), "the TokenRequest returned no token");
    let (status, body) = get_secure(port, "/metrics", Some(&nobody)).await?;
    ensure!(
        status == 403,
        "/metrics as a service account without a grant: {status} {body}"
    );

    // Authorized. RBAC reaches the apiserver's authorizer through its informer, and a denial may
    // sit in the component's authorization cache for a while, so poll.
    let reader = testing::metrics_reader_token(&client, &ns).await?;
    let body = eventually(
        "/metrics to answer 200 to the metrics reader and show this process leading",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match get_secure(port, "/metrics", Some(&reader)).await {
                Ok((200, body)) if master_status(&body, LEASE) == Some(true) => Some(body),
                _ => None,
            }
        },
    )
    .await
    .with_context(|| format!("{PROC} log:\n{}", tail(&bed.log(PROC), 30)))?;
    ensure!(
        body.contains(&format!(
            "leader_election_master_status{{name=\"{LEASE}\"}} 1"
        )),
        "{body}"
    );
    ensure!(
        body.lines().any(|l| l.starts_with("# TYPE ")),
        "no `# TYPE` lines in:\n{body}"
    );
    ensure!(
        bed.is_running(PROC),
        "{PROC} exited; log:\n{}",
        tail(&bed.log(PROC), 30)
    );
    Ok(())
}

/// Runs `ferrite <args>` and returns (exit code, stdout, stderr); a usage error must be quick.
async fn run_ferrite(args: &[&str]) -> Result<(Option<i32>, String, String)> {
    let binary = ferrite_binary();
    let child = tokio::process::Command::new(&binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "running {} (run `cargo build --bins` first)",
                binary.display()
            )
        })?;
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .with_context(|| format!("ferrite {args:?} still runs after 10s"))??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn an_unknown_controller_is_a_usage_error_with_one_line_on_stderr() -> Result<()> {
    let (code, stdout, stderr) =
        run_ferrite(&["controller-manager", "--controllers=nosuch"]).await?;
    ensure!(code == Some(2), "exit code {code:?}, stderr: {stderr}");
    ensure!(
        stderr.lines().count() == 1 && stderr.ends_with('\n'),
        "want exactly one stderr line, got {stderr:?}"
    );
    ensure!(
        stderr.contains("nosuch"),
        "the error does not name the controller: {stderr:?}"
    );
    ensure!(stdout.is_empty(), "unexpected stdout: {stdout:?}");
    Ok(())
}

#[tokio::test]
async fn an_unknown_flag_is_a_usage_error_with_one_line_on_stderr() -> Result<()> {
    let (code, stdout, stderr) = run_ferrite(&["controller-manager", "--bogus-flag"]).await?;
    ensure!(code == Some(2), "exit code {code:?}, stderr: {stderr}");
    ensure!(
        stderr.lines().count() == 1 && stderr.ends_with('\n'),
        "want exactly one stderr line, got {stderr:?}"
    );
    ensure!(
        stderr.contains("--bogus-flag"),
        "the error does not name the flag: {stderr:?}"
    );
    ensure!(stdout.is_empty(), "unexpected stdout: {stdout:?}");
    Ok(())
}
