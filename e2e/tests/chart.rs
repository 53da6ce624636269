//! The Helm chart `charts/ferrite`: it lints clean, renders what a self-hosted control plane needs
//! (two Deployments of two replicas, their PodDisruptionBudgets, ServiceAccounts and bindings),
//! ships the configuration CRDs (`crds/`, the same as the repository's), rejects unknown values,
//! is accepted by a stock apiserver, and its RBAC gives the two components what they need and
//! nothing broader than upstream grants kubeadm's components, plus reading their own
//! configuration resource and writing its status. The last test runs `ferrite` with the rendered
//! arguments as the chart's ServiceAccounts, probes it as the kubelet would, and watches both
//! components do their work and report on their configuration objects.
//!
//! helm comes from `e2e/stock/build.sh helm` (pinned in e2e/stock/versions.env; cached after the
//! first build), kubectl from the stock Kubernetes build the bed uses.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use ferrite_e2e::testing::{self, eventually};
use ferrite_e2e::{Bed, Component, stock};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::Deserialize as _;
use serde_json::{Value, json};

const RELEASE: &str = "ferrite";
const NAMESPACE: &str = "kube-system";
const CONTROLLER_MANAGER_SA: &str = "ferrite-controller-manager";
const SCHEDULER_SA: &str = "ferrite-scheduler";

async fn bed() -> &'static Bed {
    // Only the apiserver is needed: the chart is applied (or dry-run), never run.
    testing::shared_bed(|mut o| {
        o.nodes = 0;
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

fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("ferrite")
}

/// The pinned helm, built (or found cached) by e2e/stock/build.sh once per test binary. A helm
/// that cannot be built fails the test with build.sh's output: nothing is skipped.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = repo_root().join("e2e").join("stock").join("build.sh");
        let out = Command::new(&script)
            .arg("helm")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "`e2e/stock/build.sh helm` failed ({}), so the chart cannot be tested:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = stock::binary("helm");
        assert!(
            bin.is_file(),
            "e2e/stock/build.sh helm succeeded but {} is missing",
            bin.display()
        );
        bin
    })
}

fn kubectl() -> PathBuf {
    let bin = stock::binary("kubectl");
    assert!(
        bin.is_file(),
        "{} is missing: run e2e/stock/build.sh kubernetes first",
        bin.display()
    );
    bin
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("no stdin pipe")?;
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `helm template` of the chart in kube-system with `extra` arguments.
fn template(extra: &[&str]) -> Result<Output> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    run(helm(), &args, None)
}

/// The default rendering, as text.
fn rendered() -> Result<String> {
    let out = template(&[])?;
    ensure!(out.ok, "helm template failed:\n{}", out.stderr);
    Ok(out.stdout)
}

/// Every non-empty document of a multi-document YAML stream.
fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} rendered"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// (roleRef kind, roleRef name, binding namespace) of every binding whose subject is the
/// ServiceAccount `sa` in kube-system.
fn grants_of(docs: &[Value], sa: &str) -> Vec<(String, String, String)> {
    let mut grants: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| {
            d["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE
                })
            })
        })
        .map(|d| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                text(&d["roleRef"]["kind"]),
                text(&d["roleRef"]["name"]),
                text(&d["metadata"]["namespace"]),
            )
        })
        .collect();
    grants.sort();
    grants
}

#[test]
fn the_chart_lints_clean_in_strict_mode() -> Result<()> {
    let chart = chart_dir();
    let out = run(
        helm(),
        &["lint", "--strict", &chart.to_string_lossy()],
        None,
    )?;
    ensure!(
        out.ok && out.stdout.contains("0 chart(s) failed"),
        "helm lint --strict failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    Ok(())
}

#[test]
fn default_values_render_two_highly_available_deployments_with_budgets_accounts_and_bindings()
-> Result<()> {
    let docs = documents(&rendered()?)?;

    let deployments = of_kind(&docs, "Deployment");
    ensure!(deployments.len() == 2, "{} Deployments", deployments.len());
    for (name, subcommand, port) in [
        (CONTROLLER_MANAGER_SA, "controller-manager", 10257),
        (SCHEDULER_SA, "scheduler", 10259),
    ] {
        let d = named(&docs, "Deployment", name)?;
        ensure!(d["metadata"]["namespace"] == NAMESPACE, "{name}: {d}");
        ensure!(d["spec"]["replicas"] == 2, "{name} replicas: {d}");
        let pod = &d["spec"]["template"]["spec"];
        ensure!(pod["serviceAccountName"] == name, "{name}: {pod}");
        ensure!(
            pod["priorityClassName"] == "system-cluster-critical",
            "{name}: {pod}"
        );
        ensure!(pod["hostNetwork"] == true, "{name}: {pod}");
        let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        ensure!(
            anti["topologyKey"] == "kubernetes.io/hostname"
                && anti["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"],
            "{name} anti-affinity: {pod}"
        );
        let tolerated: Vec<&str> = pod["tolerations"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["key"].as_str()).collect())
            .unwrap_or_default();
        for key in [
            "node-role.kubernetes.io/control-plane",
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            ensure!(tolerated.contains(&key), "{name} does not tolerate {key}");
        }
        let sc = &pod["securityContext"];
        ensure!(
            sc["runAsNonRoot"] == true
                && sc["runAsUser"] == 65532
                && sc["seccompProfile"]["type"] == "RuntimeDefault",
            "{name} pod securityContext: {sc}"
        );

        let containers = pod["containers"].as_array().context("no containers")?;
        ensure!(containers.len() == 1, "{name}: {containers:?}");
        let c = &containers[0];
        ensure!(
            c["image"] == "ferrite:0.1.0",
            "{name} image: {}",
            c["image"]
        );
        ensure!(c["imagePullPolicy"] == "IfNotPresent", "{name}: {c}");
        let args = strings(&c["args"]);
        ensure!(args.first() == Some(&subcommand), "{name} args: {args:?}");
        ensure!(args.contains(&"--leader-elect=true"), "{name}: {args:?}");
        let port_flag = format!("--secure-port={port}");
        ensure!(args.contains(&port_flag.as_str()), "{name}: {args:?}");
        ensure!(
            !args.iter().any(|a| a.starts_with("--kubeconfig")),
            "{name} must use the in-cluster config: {args:?}"
        );
        ensure!(c["ports"][0]["containerPort"] == port, "{name}: {c}");
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            ensure!(
                get["scheme"] == "HTTPS" && get["path"] == path && get["port"] == "https",
                "{name} {probe}: {get}"
            );
        }
        let csc = &c["securityContext"];
        ensure!(
            csc["allowPrivilegeEscalation"] == false
                && csc["readOnlyRootFilesystem"] == true
                && strings(&csc["capabilities"]["drop"]) == ["ALL"],
            "{name} container securityContext: {csc}"
        );
        ensure!(
            c["resources"]["requests"]["cpu"].is_string()
                && c["resources"]["requests"]["memory"].is_string(),
            "{name} resources: {}",
            c["resources"]
        );

        let pdb = named(&docs, "PodDisruptionBudget", name)?;
        ensure!(
            pdb["spec"]["minAvailable"] == 1 && pdb["spec"]["selector"] == d["spec"]["selector"],
            "{name} PDB: {pdb}"
        );
        named(&docs, "ServiceAccount", name)?;
    }

    let cm = named(&docs, "Deployment", CONTROLLER_MANAGER_SA)?;
    let cm_args = strings(&cm["spec"]["template"]["spec"]["containers"][0]["args"]);
    for flag in [
        "--use-service-account-credentials=true",
        "--cluster-name=kubernetes",
        "--controllers=*",
    ] {
        ensure!(
            cm_args.contains(&flag),
            "controller-manager args: {cm_args:?}"
        );
    }
    ensure!(
        !cm_args.iter().any(|a| a.starts_with("--root-ca-file")
            || a.starts_with("--service-account-private-key-file")),
        "controller-manager args: {cm_args:?}"
    );

    let cluster = |role: &str| ("ClusterRole".to_string(), role.to_string(), String::new());
    let system = |role: &str| ("Role".to_string(), role.to_string(), NAMESPACE.to_string());
    let mut want = vec![
        cluster("ferrite-controller-manager:configuration"),
        cluster("system:auth-delegator"),
        cluster("system:kube-controller-manager"),
        system("extension-apiserver-authentication-reader"),
        system("system::leader-locking-kube-controller-manager"),
    ];
    want.sort();
    ensure!(
        grants_of(&docs, CONTROLLER_MANAGER_SA) == want,
        "controller-manager grants: {:?}",
        grants_of(&docs, CONTROLLER_MANAGER_SA)
    );
    let mut want = vec![
        cluster("ferrite-scheduler:configuration"),
        cluster("system:auth-delegator"),
        cluster("system:kube-scheduler"),
        cluster("system:volume-scheduler"),
        system("extension-apiserver-authentication-reader"),
        system("system::leader-locking-kube-scheduler"),
    ];
    want.sort();
    ensure!(
        grants_of(&docs, SCHEDULER_SA) == want,
        "scheduler grants: {:?}",
        grants_of(&docs, SCHEDULER_SA)
    );
    // The only roles the chart defines: each component reads its own configuration resource
    // and writes that resource's status.
    ensure!(of_kind(&docs, "Role").is_empty(), "the chart defines Roles");
    ensure!(
        of_kind(&docs, "ClusterRole").len() == 2,
        "ClusterRoles: {:?}",
        of_kind(&docs, "ClusterRole")
    );
    for (sa, resource) in [
        (CONTROLLER_MANAGER_SA, "controllerconfigurations"),
        (SCHEDULER_SA, "schedulerprofiles"),
    ] {
        let role = named(&docs, "ClusterRole", &format!("{sa}:configuration"))?;
        ensure!(
            role["rules"]
                == json!([
                    {"apiGroups": ["config.ferrite.dev"], "resources": [resource],
                     "verbs": ["get", "list", "watch"]},
                    {"apiGroups": ["config.ferrite.dev"], "resources": [format!("{resource}/status")],
                     "verbs": ["update"]},
                ]),
            "{sa} configuration role: {}",
            role["rules"]
        );
    }
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    ensure!(
        docs.len() == 2 * 3 + 4 + 5 + 2 * 2,
        "rendered kinds: {kinds:?}"
    );
    ensure!(
        !kinds.contains(&"CustomResourceDefinition"),
        "CRDs rendered as templates: {kinds:?}"
    );
    Ok(())
}

#[test]
fn values_set_the_optional_flags_and_a_root_ca_from_a_config_map() -> Result<()> {
    let out = template(&[
        "--set",
        "controllerManager.rootCA.configMap=cluster-ca",
        "--set",
        "controllerManager.controllers={*,-bootstrap-signer}",
        "--set",
        "controllerManager.leaderElection.resourceName=kube-controller-manager",
        "--set",
        "clusterName=prod",
        "--set",
        "image.tag=dev",
        "--set",
        "scheduler.enabled=false",
    ])?;
    ensure!(out.ok, "helm template failed:\n{}", out.stderr);
    let docs = documents(&out.stdout)?;
    ensure!(
        of_kind(&docs, "Deployment").len() == 1,
        "scheduler still rendered"
    );
    let pod = &named(&docs, "Deployment", CONTROLLER_MANAGER_SA)?["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    ensure!(c["image"] == "ferrite:dev", "{}", c["image"]);
    let args = strings(&c["args"]);
    for flag in [
        "--root-ca-file=/etc/ferrite/root-ca/ca.crt",
        "--controllers=*,-bootstrap-signer",
        "--leader-elect-resource-name=kube-controller-manager",
        "--cluster-name=prod",
    ] {
        ensure!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    ensure!(
        pod["volumes"][0]["configMap"]["name"] == "cluster-ca"
            && c["volumeMounts"][0]["mountPath"] == "/etc/ferrite/root-ca",
        "root CA volume: {pod}"
    );
    Ok(())
}

/// A cluster without kube-proxy (the self-hosted local node) points the pods at the apiserver
/// itself; by default the kubelet's in-cluster address is left alone.
#[test]
fn the_apiserver_address_replaces_the_in_cluster_service_only_when_set() -> Result<()> {
    let env_of = |docs: &[Value], sa: &str| -> Result<Value> {
        Ok(
            named(docs, "Deployment", sa)?["spec"]["template"]["spec"]["containers"][0]["env"]
                .clone(),
        )
    };
    let default = documents(&rendered()?)?;
    for sa in [CONTROLLER_MANAGER_SA, SCHEDULER_SA] {
        ensure!(env_of(&default, sa)?.is_null(), "{sa} has env by default");
    }
    let out = template(&[
        "--set",
        "apiServer.host=192.0.2.10",
        "--set",
        "apiServer.port=6443",
        "--set",
        "hostNetwork=false",
    ])?;
    ensure!(out.ok, "helm template failed:\n{}", out.stderr);
    let docs = documents(&out.stdout)?;
    for sa in [CONTROLLER_MANAGER_SA, SCHEDULER_SA] {
        ensure!(
            env_of(&docs, sa)?
                == json!([
                    {"name": "KUBERNETES_SERVICE_HOST", "value": "192.0.2.10"},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
                ]),
            "{sa}: {}",
            env_of(&docs, sa)?
        );
        let pod = &named(&docs, "Deployment", sa)?["spec"]["template"]["spec"];
        ensure!(pod["hostNetwork"] == false, "{sa}: {}", pod["hostNetwork"]);
    }
    let out = template(&["--set", "apiServer.port=0"])?;
    ensure!(!out.ok, "port 0 was accepted");
    Ok(())
}

/// The CRDs in the chart's `crds/` directory, which `helm install` applies before the templates
/// (`helm template` shows them with `--include-crds`).
fn chart_crds() -> Result<Vec<Value>> {
    let out = template(&["--include-crds"])?;
    ensure!(
        out.ok,
        "helm template --include-crds failed:\n{}",
        out.stderr
    );
    Ok(documents(&out.stdout)?
        .into_iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect())
}

#[test]
fn the_chart_ships_the_repositorys_configuration_crds() -> Result<()> {
    let shipped = chart_crds()?;
    let mut names: Vec<&str> = shipped
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    names.sort();
    ensure!(
        names
            == [
                "controllerconfigurations.config.ferrite.dev",
                "schedulerprofiles.config.ferrite.dev"
            ],
        "shipped CRDs: {names:?}"
    );
    let dir = repo_root().join("crds");
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for doc in documents(&std::fs::read_to_string(&path)?)? {
            ensure!(
                shipped.contains(&doc),
                "{} differs from the chart's copy",
                path.display()
            );
            compared += 1;
        }
    }
    ensure!(compared == shipped.len(), "crds/ holds {compared} CRDs");
    Ok(())
}

#[test]
fn an_unknown_value_key_is_rejected() -> Result<()> {
    for key in [
        "bogus=1",
        "scheduler.bogus=1",
        "controllerManager.rootCA.bogus=1",
        "apiServer.bogus=1",
    ] {
        let out = template(&["--set", key])?;
        ensure!(!out.ok, "--set {key} was accepted");
        ensure!(
            out.stderr
                .contains("additional properties 'bogus' not allowed"),
            "--set {key} failed for another reason:\n{}",
            out.stderr
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_stock_apiserver_accepts_the_rendered_manifests() -> Result<()> {
    let bed = bed().await;
    let kubeconfig = bed.kubeconfig();
    let rendered = template(&["--include-crds"])?;
    ensure!(rendered.ok, "helm template failed:\n{}", rendered.stderr);
    let out = run(
        &kubectl(),
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&rendered.stdout),
    )?;
    ensure!(
        out.ok,
        "kubectl apply --dry-run=server failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    // Another test of this binary may have created the CRDs for real already.
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/controllerconfigurations.config.ferrite.dev",
        "customresourcedefinition.apiextensions.k8s.io/schedulerprofiles.config.ferrite.dev",
        "clusterrole.rbac.authorization.k8s.io/ferrite-controller-manager:configuration",
        "clusterrole.rbac.authorization.k8s.io/ferrite-scheduler:configuration",
        "deployment.apps/ferrite-controller-manager",
        "deployment.apps/ferrite-scheduler",
        "poddisruptionbudget.policy/ferrite-controller-manager",
        "poddisruptionbudget.policy/ferrite-scheduler",
    ] {
        ensure!(
            ["created", "configured", "unchanged"].iter().any(|verb| out
                .stdout
                .contains(&format!("{object} {verb} (server dry run)"))),
            "{object} not accepted:\n{}",
            out.stdout
        );
    }
    Ok(())
}

/// Whether the ServiceAccount `sa` of kube-system may do `verb` on `resource` per the apiserver.
async fn may(reviews: &Api<SubjectAccessReview>, sa: &str, attributes: Value) -> Result<bool> {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{NAMESPACE}:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{NAMESPACE}"),
                       "system:authenticated"],
            "resourceAttributes": attributes,
        }
    }))?;
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Really applies the chart's ServiceAccounts and bindings to the shared bed, once per test
/// binary (the Deployments themselves would need the image and a kubelet).
async fn apply_accounts_and_bindings(bed: &Bed) -> Result<()> {
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    APPLIED
        .get_or_try_init(|| async {
            let docs = documents(&rendered()?)?;
            let rbac: Vec<String> = docs
                .iter()
                .filter(|d| {
                    [
                        "ServiceAccount",
                        "ClusterRole",
                        "ClusterRoleBinding",
                        "RoleBinding",
                    ]
                    .contains(&d["kind"].as_str().unwrap_or_default())
                })
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
            ensure!(
                rbac.len() == 2 + 2 + 11,
                "{} accounts, roles and bindings",
                rbac.len()
            );
            let kubeconfig = bed.kubeconfig();
            let out = run(
                &kubectl(),
                &[
                    "--kubeconfig",
                    &kubeconfig.to_string_lossy(),
                    "apply",
                    "-f",
                    "-",
                ],
                Some(&rbac.join("\n---\n")),
            )?;
            ensure!(
                out.ok,
                "kubectl apply failed:\n{}{}",
                out.stdout,
                out.stderr
            );
            Ok(())
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_chart_accounts_may_do_their_work_and_nothing_broader() -> Result<()> {
    let bed = bed().await;
    apply_accounts_and_bindings(bed).await?;

    let client = bed.client().await?;
    let reviews = Api::<SubjectAccessReview>::all(client);
    let allowed = [
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "create", "group": "authentication.k8s.io", "resource": "tokenreviews"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "create", "group": "authorization.k8s.io", "resource": "subjectaccessreviews"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": NAMESPACE, "verb": "get", "group": "coordination.k8s.io",
                   "resource": "leases", "name": "ferrite-controller-manager"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": NAMESPACE, "verb": "update", "group": "coordination.k8s.io",
                   "resource": "leases", "name": "ferrite-controller-manager"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": NAMESPACE, "verb": "create", "resource": "serviceaccounts",
                   "subresource": "token", "name": "replicaset-controller"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": NAMESPACE, "verb": "get", "resource": "configmaps",
                   "name": "extension-apiserver-authentication"}),
        ),
        (
            SCHEDULER_SA,
            json!({"namespace": "default", "verb": "create", "resource": "pods",
                   "subresource": "binding"}),
        ),
        (
            SCHEDULER_SA,
            json!({"namespace": NAMESPACE, "verb": "update", "group": "coordination.k8s.io",
                   "resource": "leases", "name": "ferrite-scheduler"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "list", "group": "storage.k8s.io", "resource": "csinodes"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "create", "group": "authentication.k8s.io", "resource": "tokenreviews"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "watch", "group": "config.ferrite.dev", "resource": "controllerconfigurations"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "update", "group": "config.ferrite.dev", "resource": "controllerconfigurations",
                   "subresource": "status", "name": "default"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "list", "group": "config.ferrite.dev", "resource": "schedulerprofiles"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "update", "group": "config.ferrite.dev", "resource": "schedulerprofiles",
                   "subresource": "status", "name": "default-scheduler"}),
        ),
    ];
    // RBAC reaches the authorizer through its informers: poll until the bindings take effect.
    for (sa, attributes) in &allowed {
        let verdict = eventually(
            &format!("{sa} to be allowed {attributes}"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || async {
                may(&reviews, sa, attributes.clone())
                    .await
                    .ok()?
                    .then_some(())
            },
        )
        .await;
        ensure!(verdict.is_ok(), "{verdict:?}");
    }
    let denied = [
        (
            SCHEDULER_SA,
            json!({"namespace": "default", "verb": "delete", "resource": "secrets"}),
        ),
        (
            SCHEDULER_SA,
            json!({"namespace": "default", "verb": "create", "resource": "pods"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": "default", "verb": "delete", "resource": "pods"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"namespace": "default", "verb": "create", "group": "apps", "resource": "deployments"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "clusterrolebindings"}),
        ),
        // Configuration: read and status only, each component its own kind.
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "update", "group": "config.ferrite.dev", "resource": "controllerconfigurations",
                   "name": "default"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "patch", "group": "config.ferrite.dev", "resource": "controllerconfigurations",
                   "subresource": "status", "name": "default"}),
        ),
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "create", "group": "config.ferrite.dev", "resource": "controllerconfigurations"}),
        ),
        // (system:kube-controller-manager may list and watch every resource, for the garbage
        // collector and quota, so reading the scheduler's kind is upstream's grant, not ours.)
        (
            CONTROLLER_MANAGER_SA,
            json!({"verb": "update", "group": "config.ferrite.dev", "resource": "schedulerprofiles",
                   "subresource": "status", "name": "default-scheduler"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "delete", "group": "config.ferrite.dev", "resource": "schedulerprofiles",
                   "name": "default-scheduler"}),
        ),
        (
            SCHEDULER_SA,
            json!({"verb": "get", "group": "config.ferrite.dev", "resource": "controllerconfigurations"}),
        ),
    ];
    for (sa, attributes) in &denied {
        if may(&reviews, sa, attributes.clone()).await? {
            bail!("{sa} may {attributes}: broader than upstream grants");
        }
    }
    Ok(())
}

/// A kubeconfig that authenticates as the ServiceAccount `sa` of kube-system with a bound token,
/// as the pod's in-cluster configuration would (same server CA, same token kind).
async fn account_kubeconfig(bed: &Bed, client: &kube::Client, sa: &str) -> Result<PathBuf> {
    let token = testing::service_account_token(client, NAMESPACE, sa).await?;
    ensure!(!token.is_empty(), "no token for {sa}");
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "chart",
        "clusters": [{"name": "bed", "cluster": {
            "server": bed.apiserver_url(),
            "certificate-authority": bed.dir.join("pki").join("ca.crt"),
        }}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": "bed", "user": sa}}],
    });
    let path = bed.dir.join(format!("chart-{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&config)?)?;
    Ok(path)
}

/// Starts `ferrite` with exactly the arguments the chart renders for `deployment`, as that
/// Deployment's ServiceAccount; only where it listens (loopback, a free port) and the
/// in-cluster configuration (a kubeconfig with the account's token) differ. Returns the port.
async fn start_as_the_chart_would(
    bed: &Bed,
    client: &kube::Client,
    docs: &[Value],
    deployment: &str,
) -> Result<u16> {
    let pod = &named(docs, "Deployment", deployment)?["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().context("no account")?;
    let kubeconfig = account_kubeconfig(bed, client, sa).await?;
    let port = ferrite_e2e::process::free_port()?;
    let args: Vec<String> = strings(&pod["containers"][0]["args"])
        .into_iter()
        .map(|a| {
            if a.starts_with("--secure-port=") {
                format!("--secure-port={port}")
            } else {
                a.to_string()
            }
        })
        .chain([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1".to_string(),
        ])
        .collect();
    let mut cmd = Command::new(stock::ferrite_binary());
    cmd.args(&args);
    bed.spawn_named(deployment, cmd)?;
    Ok(port)
}

/// The probes the chart gives the kubelet: anonymous HTTPS GETs of /healthz and /readyz.
async fn probes_pass(bed: &Bed, name: &str, port: u16) -> Result<()> {
    let ready = eventually(
        &format!("{name} to answer its liveness and readiness probes"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let healthz = testing::get_secure(port, "/healthz", None).await.ok()?;
            let readyz = testing::get_secure(port, "/readyz", None).await.ok()?;
            (healthz.0 == 200 && readyz.0 == 200).then_some(())
        },
    )
    .await;
    ensure!(ready.is_ok(), "{ready:?}\n{}", bed.log_tail(name));
    Ok(())
}

async fn lease_holder(client: &kube::Client, lease: &str) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    Api::<Lease>::namespaced(client.clone(), NAMESPACE)
        .get_opt(lease)
        .await
        .ok()??
        .spec?
        .holder_identity
}

const CRD_NAMES: [&str; 2] = [
    "controllerconfigurations.config.ferrite.dev",
    "schedulerprofiles.config.ferrite.dev",
];

/// Really creates the chart's CRDs (`charts/ferrite/crds`) on the shared bed, once per test
/// binary, as `helm install` would before the templates, with the function `ferrite bootstrap`
/// uses for them (helm would not upgrade them).
async fn apply_chart_crds(bed: &Bed) -> Result<()> {
    static APPLIED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    APPLIED
        .get_or_try_init(|| async {
            let client = bed.client().await?;
            ferrite_bootstrap::pivot::apply_chart_crds(&client, &chart_dir()).await?;
            testing::crds_established(&client, &CRD_NAMES).await
        })
        .await
        .map(|_| ())
}

/// Waits until `object` (a configuration object) reports `Valid=True` for its generation.
async fn reported_valid<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource
        + kube::core::object::HasStatus<Status = ferrite_runtime::live_config::ConfigStatus>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    eventually(
        &format!("{name} to report Valid=True"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let o = api.get(name).await.ok()?;
            let status = o.status()?;
            let valid = status.condition("Valid")?;
            (valid.status == "True" && status.observed_generation == o.meta().generation)
                .then_some(())
        },
    )
    .await
}

#[tokio::test]
async fn ferrite_runs_with_the_chart_arguments_and_accounts() -> Result<()> {
    use ferrite_controllers::configuration::{
        ControllerConfiguration, ControllerConfigurationSpec,
    };
    use ferrite_scheduler::profiles::{SchedulerProfile, SchedulerProfileSpec};
    use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, ServiceAccount};
    let bed = bed().await;
    apply_chart_crds(bed).await?;
    apply_accounts_and_bindings(bed).await?;
    let client = bed.client().await?;
    let docs = documents(&rendered()?)?;

    let cm = CONTROLLER_MANAGER_SA;
    let scheduler = SCHEDULER_SA;
    let cm_port = start_as_the_chart_would(bed, &client, &docs, cm).await?;
    let scheduler_port = start_as_the_chart_would(bed, &client, &docs, scheduler).await?;
    probes_pass(bed, cm, cm_port).await?;
    probes_pass(bed, scheduler, scheduler_port).await?;
    for lease in [cm, scheduler] {
        let held = eventually(
            &format!("the Lease {lease} to be held"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || lease_holder(&client, lease),
        )
        .await;
        ensure!(held.is_ok(), "{held:?}\n{}", bed.log_tail(lease));
    }

    // Each component reads its configuration objects and reports on them through the status
    // subresource, with no more than the chart's configuration role.
    let configurations: Api<ControllerConfiguration> = Api::all(client.clone());
    let profiles: Api<SchedulerProfile> = Api::all(client.clone());
    let pp = PostParams::default();
    configurations
        .create(
            &pp,
            &ControllerConfiguration::new("default", ControllerConfigurationSpec::default()),
        )
        .await?;
    profiles
        .create(
            &pp,
            &SchedulerProfile::new("default-scheduler", SchedulerProfileSpec::default()),
        )
        .await?;
    let reported = reported_valid(&configurations, "default").await;
    ensure!(reported.is_ok(), "{reported:?}\n{}", bed.log_tail(cm));
    let reported = reported_valid(&profiles, "default-scheduler").await;
    ensure!(
        reported.is_ok(),
        "{reported:?}\n{}",
        bed.log_tail(scheduler)
    );

    // The controllers act under their own accounts, which the chart's account creates
    // (--use-service-account-credentials): a new namespace gets its default ServiceAccount and
    // root CA ConfigMap.
    let ns = testing::namespace(&client, "chart").await?;
    let published = eventually(
        "the new namespace's default ServiceAccount and kube-root-ca.crt",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            Api::<ServiceAccount>::namespaced(client.clone(), &ns)
                .get_opt("default")
                .await
                .ok()??;
            Api::<ConfigMap>::namespaced(client.clone(), &ns)
                .get_opt("kube-root-ca.crt")
                .await
                .ok()??;
            Some(())
        },
    )
    .await;
    ensure!(published.is_ok(), "{published:?}\n{}", bed.log_tail(cm));

    // The scheduler binds a pod as the chart's scheduler account.
    let node: Node = ferrite_e2e::bed::kwok_node("chart-node");
    let nodes = Api::<Node>::all(client.clone());
    match nodes.create(&PostParams::default(), &node).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        other => {
            other?;
        }
    }
    // The apiserver taints a new node not-ready (TaintNodesByCondition admission); removing the
    // taint once kwok reports Ready is node-lifecycle's job, which this bed does not run.
    nodes
        .patch(
            "chart-node",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bound"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }))?;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.create(&PostParams::default(), &pod).await?;
    let bound = eventually(
        "the pod to be bound to chart-node",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = pods.get("bound").await.ok()?;
            (p.spec?.node_name.as_deref() == Some("chart-node")).then_some(())
        },
    )
    .await;
    if bound.is_err() {
        let pod = pods
            .get("bound")
            .await
            .ok()
            .map(|p| serde_json::to_string(&p.status));
        let node = nodes
            .get("chart-node")
            .await
            .ok()
            .map(|n| serde_json::to_string(&(n.spec, n.status.map(|s| s.conditions))));
        bail!(
            "{bound:?}\npod: {pod:?}\nnode: {node:?}\n{}",
            bed.log_tail(scheduler)
        );
    }

    // Nothing the components tried was refused.
    for name in [cm, scheduler] {
        let log = std::fs::read_to_string(bed.log(name)).unwrap_or_default();
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
            .take(5)
            .collect();
        ensure!(
            refused.is_empty(),
            "{name} was refused:\n{}",
            refused.join("\n")
        );
    }
    for name in [cm, scheduler] {
        bed.stop_process(name, Duration::from_secs(10));
    }
    let _ = nodes.delete("chart-node", &Default::default()).await;
    let _ = configurations.delete("default", &Default::default()).await;
    let _ = profiles
        .delete("default-scheduler", &Default::default())
        .await;
    Ok(())
}
