//! The server end to end over TLS on an ephemeral port, with fake reviewers instead of an
//! apiserver (the real TokenReview/SubjectAccessReview path is covered on the test bed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::auth::tests::{FakeAccess, FakeTokens};
use super::options::test_options;
use super::*;

struct Running {
    addr: SocketAddr,
    roots: Vec<CertificateDer<'static>>,
    health: Health,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServingError>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops after shutdown")
            .expect("server task does not panic");
        assert!(result.is_ok());
    }
}

async fn start_with(opts: ServingOptions, access: FakeAccess) -> Running {
    let registry = SharedRegistry::default();
    let counter: Counter = Counter::default();
    counter.inc();
    registry.with(|r| r.register("ferrite_test_requests", "Test counter", counter));
    let health = Health::new();
    let server = SecureServer::bind_to(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        &opts,
        Delegation::new(Arc::new(FakeTokens::default()), Arc::new(access)),
        registry,
        health.clone(),
    )
    .await
    .expect("binds an ephemeral port");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    // Trust the generated CA (last in the chain), as a client pinning it would.
    let roots = server
        .serving_certificates()
        .last()
        .cloned()
        .into_iter()
        .collect();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Running {
        addr,
        roots,
        health,
        shutdown,
        task,
    }
}

async fn start(allowed: &[&str]) -> Running {
    start_with(
        test_options(),
        FakeAccess {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            ..FakeAccess::default()
        },
    )
    .await
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_config(
    roots: &[CertificateDer<'static>],
    client_cert: Option<ClientCert>,
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store);
    match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// A minimal HTTP/1.1 GET over TLS (hyper's client is not among the crate's features).
async fn request(
    server: &Running,
    server_name: &str,
    path: &str,
    extra_headers: &[(&str, &str)],
    client_cert: Option<ClientCert>,
) -> std::io::Result<Reply> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&server.roots, client_cert)));
    let tcp = TcpStream::connect(server.addr).await?;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n");
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    // TLS 1.3 reports a rejected client certificate only on the first read.
    tls.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

async fn get(server: &Running, path: &str) -> Reply {
    request(server, "localhost", path, &[], None).await.unwrap()
}

async fn get_with_token(server: &Running, path: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    request(server, "localhost", path, &[("Authorization", &auth)], None)
        .await
        .unwrap()
}

#[tokio::test]
async fn self_signed_certificate_is_served_over_tls_for_localhost_and_loopback() {
    let server = start(&[]).await;
    for name in ["localhost", "127.0.0.1"] {
        let reply = request(&server, name, "/healthz", &[], None).await.unwrap();
        assert_eq!(reply.status, 200, "verified as {name}");
    }
    server.stop().await;
}

#[tokio::test]
async fn healthz_and_livez_are_public_and_ok() {
    let server = start(&[]).await;
    for path in ["/healthz", "/livez"] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body, "ok");
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(reply.header("cache-control"), Some("no-cache, private"));
    }
    server.stop().await;
}

#[tokio::test]
async fn readyz_is_500_until_ready_then_200() {
    let server = start(&[]).await;
    let reply = get(&server, "/readyz").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .contains("[-]informer-sync failed: reason withheld")
    );

    server.health.set_ready(true);
    let reply = get(&server, "/readyz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok");
    server.stop().await;
}

#[tokio::test]
async fn failing_check_makes_healthz_500_naming_the_check() {
    let server = start(&["alice"]).await;
    server.health.add_check(
        "leaderElection",
        Arc::new(|| {
            Err("failed election to renew leadership on lease kube-controller-manager".into())
        }),
    );
    let reply = get(&server, "/healthz").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .contains("[-]leaderElection failed: reason withheld\n"),
        "{}",
        reply.body
    );

    // The detail lives on the check's own endpoint, which is not always-allowed.
    assert_eq!(get(&server, "/healthz/leaderElection").await.status, 403);
    let detail = get_with_token(&server, "/healthz/leaderElection", "good").await;
    assert_eq!(detail.status, 500);
    assert!(detail.body.contains("failed election to renew leadership"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_without_credentials_is_forbidden_for_system_anonymous() {
    // Upstream's delegating authenticator is anonymous-enabled: no credentials means
    // system:anonymous, whom the apiserver's RBAC does not allow to get /metrics.
    let server = start(&["alice"]).await;
    let reply = get(&server, "/metrics").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_with_a_token_the_apiserver_rejects_is_401() {
    let server = start(&["alice"]).await;
    let reply = get_with_token(&server, "/metrics", "forged").await;
    assert_eq!(reply.status, 401);
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(status["reason"], "Unauthorized");
    assert_eq!(status["code"], 401);
    server.stop().await;
}

#[tokio::test]
async fn metrics_for_an_authenticated_but_unauthorized_user_is_403() {
    let server = start(&[]).await;
    let reply = get_with_token(&server, "/metrics", "good").await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("User \\\"alice\\\" cannot get path"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_for_an_authorized_token_is_openmetrics_text() {
    let server = start(&["alice"]).await;
    let reply = get_with_token(&server, "/metrics", "good").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(METRICS_CONTENT_TYPE));
    assert!(
        reply.body.contains("ferrite_test_requests_total 1"),
        "{}",
        reply.body
    );
    assert!(reply.body.ends_with("# EOF\n"));
    server.stop().await;
}

#[tokio::test]
async fn authorizer_failure_is_500() {
    let server = start_with(
        test_options(),
        FakeAccess {
            fail: true,
            ..FakeAccess::default()
        },
    )
    .await;
    let reply = get_with_token(&server, "/metrics", "good").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .starts_with("Internal Server Error: \"/metrics\"")
    );
    server.stop().await;
}

#[tokio::test]
async fn unknown_path_is_404_for_an_authorized_caller_and_403_for_anonymous() {
    let server = start(&["alice"]).await;
    assert_eq!(get_with_token(&server, "/nope", "good").await.status, 404);
    assert_eq!(get(&server, "/nope").await.status, 403);
    server.stop().await;
}

#[tokio::test]
async fn emptied_always_allow_paths_make_healthz_need_authorization() {
    let opts = ServingOptions {
        authorization_always_allow_paths: vec![],
        ..test_options()
    };
    let server = start_with(
        opts,
        FakeAccess {
            allowed: vec!["alice".into()],
            ..FakeAccess::default()
        },
    )
    .await;
    assert_eq!(get(&server, "/healthz").await.status, 403);
    assert_eq!(
        get_with_token(&server, "/healthz", "good").await.status,
        200
    );
    server.stop().await;
}

/// A client CA as PEM, and the issuer to sign client certificates with.
fn ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "test-client-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn client_cert(issuer: &Issuer<'static, KeyPair>, cn: &str, orgs: &[&str]) -> ClientCert {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *o);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

#[tokio::test]
async fn client_certificate_from_the_client_ca_authenticates_as_its_common_name() {
    let (ca_pem, issuer) = ca();
    let dir = std::env::temp_dir().join(format!("ferrite-serving-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("client-ca.crt");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let opts = ServingOptions {
        client_ca_file: Some(ca_file),
        ..test_options()
    };
    let server = start_with(
        opts,
        FakeAccess {
            allowed: vec!["bob".into()],
            ..FakeAccess::default()
        },
    )
    .await;

    let bob = client_cert(&issuer, "bob", &["ops"]);
    let reply = request(&server, "localhost", "/metrics", &[], Some(bob))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    // An admin certificate (system:masters) needs no access review at all.
    let admin = client_cert(&issuer, "kubernetes-admin", &[MASTERS_GROUP]);
    let reply = request(&server, "localhost", "/metrics", &[], Some(admin))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    // A certificate from another CA does not get through the handshake.
    let (_, other_issuer) = ca();
    let mallory = client_cert(&other_issuer, "bob", &[]);
    let refused = request(&server, "localhost", "/metrics", &[], Some(mallory)).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|r| r.status == 0),
        "a foreign client certificate is refused"
    );

    // Clients without a certificate still connect (anonymous or bearer token).
    assert_eq!(get(&server, "/healthz").await.status, 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn offline_client() -> kube::Client {
    // Never contacted: the tests below stop before any API call.
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn secure_port_zero_disables_serving() {
    let opts = ServingOptions {
        secure_port: Some(0),
        ..test_options()
    };
    let bound = SecureServer::bind(
        &opts,
        CONTROLLER_MANAGER_SECURE_PORT,
        offline_client(),
        SharedRegistry::default(),
        Health::new(),
    )
    .await
    .unwrap();
    assert!(bound.is_none());

    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let served = serve(
        &opts,
        CONTROLLER_MANAGER_SECURE_PORT,
        offline_client(),
        SharedRegistry::default(),
        Health::new(),
        shutdown,
    )
    .await;
    assert!(served.is_ok(), "waits for shutdown, then returns Ok");
}

#[tokio::test]
async fn bind_failure_is_reported_at_startup() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let result = SecureServer::bind_to(
        addr,
        &test_options(),
        Delegation::new(
            Arc::new(FakeTokens::default()),
            Arc::new(FakeAccess::default()),
        ),
        SharedRegistry::default(),
        Health::new(),
    )
    .await;
    match result {
        Err(err @ ServingError::Bind { .. }) => {
            assert!(err.to_string().contains(&addr.to_string()), "{err}");
        }
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(_) => panic!("expected a bind error"),
    }
}

#[tokio::test]
async fn invalid_always_allow_path_is_rejected_before_binding() {
    let opts = ServingOptions {
        authorization_always_allow_paths: vec!["/he*lthz".into()],
        secure_port: Some(1),
        ..test_options()
    };
    let result = SecureServer::bind(
        &opts,
        CONTROLLER_MANAGER_SECURE_PORT,
        offline_client(),
        SharedRegistry::default(),
        Health::new(),
    )
    .await;
    assert!(matches!(
        result,
        Err(ServingError::InvalidAlwaysAllowPath { .. })
    ));
}
