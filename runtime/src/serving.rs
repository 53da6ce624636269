//! The HTTPS endpoint kube-controller-manager and kube-scheduler serve on `--secure-port`:
//! `/healthz`, `/livez`, `/readyz` and `/metrics`, behind delegated authentication and
//! authorization (the apiserver decides who may read `/metrics`).
//!
//! Upstream wiring: cmd/kube-controller-manager/app/controllermanager.go and
//! cmd/kube-scheduler/app/server.go build `BuildHandlerChain(mux, authz, authn)`
//! (staging/src/k8s.io/controller-manager/app/serve.go); every request is authenticated, then
//! authorized, then routed, so an unknown path is a 404 only for a caller who may ask for it.
//!
//! ```ignore
//! let health = Health::new();
//! let server = SecureServer::bind(&opts.serving, CONTROLLER_MANAGER_SECURE_PORT, client,
//!     registry, health.clone()).await?;               // bind errors surface here
//! if let Some(server) = server { tokio::spawn(server.run(shutdown.clone())); }
//! // … later, once informer caches synced:
//! health.set_ready(true);
//! ```

mod auth;
mod cache;
mod health;
mod options;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::metrics::SharedRegistry;

pub use auth::{
    ANONYMOUS_USER, AUTHENTICATED_GROUP, AccessDecision, AccessReviewer, Delegation,
    KubeAccessReviewer, KubeTokenReviewer, MASTERS_GROUP, NonResourceRequest, REVIEW_TIMEOUT,
    ReviewError, TokenReviewOutcome, TokenReviewer, UNAUTHENTICATED_GROUP, UserInfo,
};
pub use health::{Endpoint, Health, HealthCheck, HealthResponse, READY_CHECK_NAME};
pub use options::{
    AlwaysAllowPaths, CONTROLLER_MANAGER_SECURE_PORT, SCHEDULER_SECURE_PORT, ServingOptions,
};

use auth::{CacheTtls, Gate, Refusal};

/// What prometheus-client writes: the OpenMetrics text format (ends with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A client that opens a connection must finish the TLS handshake in this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream's secure server sets `ReadHeaderTimeout: 32s`
/// (staging/src/k8s.io/apiserver/pkg/server/secure_serving.go).
const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// How long in-flight requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a serving certificate and key must be given together (--tls-cert-file with --tls-private-key-file; both files of a --cert-dir pair)"
    )]
    IncompleteCertKeyPair,
    #[error("unable to read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no PEM certificate found in {path}")]
    NoCertificates { path: PathBuf },
    #[error("no PEM private key found in {path}")]
    NoPrivateKey { path: PathBuf },
    #[error("unable to generate self signed cert: {0}")]
    CertGeneration(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("unable to use the client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    #[error("--authorization-always-allow-paths: only trailing * allowed in {path:?}")]
    InvalidAlwaysAllowPath { path: String },
    #[error("failed to load kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to build the delegated authentication/authorization client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "unable to load configmap based client CA file (set --authentication-tolerate-lookup-failure to continue without): {0}"
    )]
    ClientCaLookup(#[source] ReviewError),
}

/// Serves until `shutdown` is cancelled. With `--secure-port=0` nothing is served (upstream) and
/// this just waits for `shutdown`, so callers can join it like any other long-running task.
pub async fn serve(
    opts: &ServingOptions,
    default_port: u16,
    client: kube::Client,
    registry: SharedRegistry,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), ServingError> {
    match SecureServer::bind(opts, default_port, client, registry, health).await? {
        Some(server) => server.run(shutdown).await,
        None => {
            tracing::info!("--secure-port is 0: not serving HTTPS");
            shutdown.cancelled().await;
            Ok(())
        }
    }
}

/// A bound, not yet serving, HTTPS server. Binding and running are separate so a component
/// fails at startup on a bad address or certificate, and tests learn the port they got.
pub struct SecureServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    serving_certificates: Vec<CertificateDer<'static>>,
}

impl SecureServer {
    /// Binds `--bind-address`:`--secure-port` (or `default_port`) with reviews delegated through
    /// `client`. `Ok(None)` when the port is 0, which upstream reads as "don't serve".
    pub async fn bind(
        opts: &ServingOptions,
        default_port: u16,
        client: kube::Client,
        registry: SharedRegistry,
        health: Health,
    ) -> Result<Option<Self>, ServingError> {
        let port = opts.secure_port_or(default_port);
        if port == 0 {
            return Ok(None);
        }
        // Validate the local configuration before any call to the apiserver.
        AlwaysAllowPaths::parse(&opts.authorization_always_allow_paths)?;
        let delegation = Delegation::from_options(opts, client).await?;
        let addr = SocketAddr::new(opts.bind_address, port);
        Self::bind_to(addr, opts, delegation, registry, health)
            .await
            .map(Some)
    }

    /// Binds exactly `addr`, ignoring `--bind-address`/`--secure-port`; port 0 here asks the OS
    /// for an ephemeral port (see [`SecureServer::local_addr`]). For tests and embedders that
    /// bring their own [`Delegation`].
    pub async fn bind_to(
        addr: SocketAddr,
        opts: &ServingOptions,
        delegation: Delegation,
        registry: SharedRegistry,
        health: Health,
    ) -> Result<Self, ServingError> {
        let always_allow = AlwaysAllowPaths::parse(&opts.authorization_always_allow_paths)?;
        let client_ca = match (&opts.client_ca_file, &delegation.cluster_client_ca) {
            (Some(path), _) => Some(tls::read_certs(path)?),
            (None, Some(pem)) => Some(tls::parse_certs(
                pem,
                std::path::Path::new("configmap/kube-system/extension-apiserver-authentication"),
            )?),
            (None, None) => None,
        };
        if opts.requestheader_client_ca_file.is_some() {
            tracing::info!(
                "--requestheader-client-ca-file is accepted but front-proxy authentication is not implemented; such requests are judged by their own credentials"
            );
        }
        let cert = tls::serving_cert(opts)?;
        let serving_certificates = cert.chain.clone();
        let tls_config = tls::server_config(cert, client_ca)?;

        let ttls = CacheTtls {
            token: opts.authentication_token_webhook_cache_ttl,
            allowed: opts.authorization_webhook_cache_authorized_ttl,
            denied: opts.authorization_webhook_cache_unauthorized_ttl,
        };
        let state = AppState {
            gate: Arc::new(Gate::new(&delegation, always_allow, ttls)),
            registry,
            health,
        };

        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServingError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServingError::Bind { addr, source })?;
        tracing::info!(address = %local_addr, "serving securely");
        Ok(Self {
            listener,
            local_addr,
            acceptor: TlsAcceptor::from(tls_config),
            app: router(state),
            serving_certificates,
        })
    }

    /// The address actually bound (the ephemeral port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The serving certificate chain (leaf first; for a generated certificate, its CA last), so
    /// a test or a local client can trust it.
    pub fn serving_certificates(&self) -> &[CertificateDer<'static>] {
        &self.serving_certificates
    }

    /// Accepts connections until `shutdown`, then lets in-flight requests finish (bounded).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServingError> {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(
                            stream,
                            peer,
                            self.acceptor.clone(),
                            self.app.clone(),
                            shutdown.clone(),
                        ));
                    }
                    // Per-connection failures (EMFILE, ECONNABORTED) must not stop the server;
                    // back off briefly so a full fd table does not spin.
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self.listener);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::debug!("closing connections still open after the shutdown grace period");
        }
        Ok(())
    }
}

/// The user named by a verified client certificate, attached to each request of its connection.
#[derive(Clone)]
struct ClientCertUser(Option<Arc<UserInfo>>);

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: CancellationToken,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let cert_user = ClientCertUser(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(tls::user_from_client_cert)
            .map(Arc::new),
    );
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(cert_user.clone());
        let mut app = app.clone();
        async move { app.call(req.map(Body::new)).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

#[derive(Clone)]
struct AppState {
    gate: Arc<Gate>,
    registry: SharedRegistry,
    health: Health,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/healthz/{check}", get(healthz_check))
        .route("/livez", get(livez))
        .route("/livez/{check}", get(livez_check))
        .route("/readyz", get(readyz))
        .route("/readyz/{check}", get(readyz_check))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_authorize,
        ))
        .with_state(state)
}

/// Upstream's `WithAuthentication` then `WithAuthorization`, plus `WithCacheControl`.
async fn authenticate_and_authorize(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let cert_user = req
        .extensions()
        .get::<ClientCertUser>()
        .and_then(|c| c.0.clone());
    let request = NonResourceRequest {
        path: req.uri().path().to_string(),
        verb: req.method().as_str().to_ascii_lowercase(),
    };
    let decided = match state
        .gate
        .authenticate(
            cert_user.as_deref(),
            req.headers().get(header::AUTHORIZATION),
        )
        .await
    {
        Ok(user) => state.gate.authorize(&user, &request).await,
        Err(refusal) => Err(refusal),
    };
    let mut response = match decided {
        Ok(()) => {
            // Upstream drops the credential once used so handlers never see it.
            req.headers_mut().remove(header::AUTHORIZATION);
            next.run(req).await
        }
        Err(refusal) => refusal_response(refusal, &request),
    };
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache, private"));
    response
}

/// Upstream answers 401 and 403 with a `Status` object (`responsewriters.ErrorNegotiated`) and an
/// authorizer failure with plain text (`responsewriters.InternalError`).
fn refusal_response(refusal: Refusal, request: &NonResourceRequest) -> Response {
    match refusal {
        Refusal::Unauthenticated => {
            status_json(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
        }
        Refusal::Forbidden { user, reason } => {
            let mut message = format!(
                "forbidden: User {:?} cannot {} path {:?}",
                user.username, request.verb, request.path
            );
            if !reason.is_empty() {
                message = format!("{message}: {reason}");
            }
            status_json(StatusCode::FORBIDDEN, "Forbidden", &message)
        }
        Refusal::AuthorizerError(error) => {
            tracing::warn!(%error, path = %request.path, "authorization failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Internal Server Error: {:?}: {error}\n", request.path),
            )
        }
    }
}

fn status_json(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Like Go's `http.Error` / healthz writes: plain text, no sniffing.
fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn health_response(r: HealthResponse) -> Response {
    text(r.status, r.body)
}

async fn healthz(State(s): State<AppState>, uri: Uri) -> Response {
    health_response(s.health.report(Endpoint::Healthz, uri.query()))
}

async fn livez(State(s): State<AppState>, uri: Uri) -> Response {
    health_response(s.health.report(Endpoint::Livez, uri.query()))
}

async fn readyz(State(s): State<AppState>, uri: Uri) -> Response {
    health_response(s.health.report(Endpoint::Readyz, uri.query()))
}

fn check_response(s: &AppState, endpoint: Endpoint, check: &str) -> Response {
    match s.health.report_check(endpoint, check) {
        Some(r) => health_response(r),
        None => not_found_response(),
    }
}

async fn healthz_check(State(s): State<AppState>, Path(check): Path<String>) -> Response {
    check_response(&s, Endpoint::Healthz, &check)
}

async fn livez_check(State(s): State<AppState>, Path(check): Path<String>) -> Response {
    check_response(&s, Endpoint::Livez, &check)
}

async fn readyz_check(State(s): State<AppState>, Path(check): Path<String>) -> Response {
    check_response(&s, Endpoint::Readyz, &check)
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        s.registry.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    not_found_response()
}

/// Go's `http.NotFound`.
fn not_found_response() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found\n".to_string())
}

#[cfg(test)]
mod tests;
