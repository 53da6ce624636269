//! `--use-service-account-credentials`: each controller talks to the apiserver as its own
//! service account (`kube-system/<name>`), so it has exactly the `system:controller:<name>`
//! permissions the apiserver ships. Mirrors upstream's SAControllerClientBuilder
//! (staging/src/k8s.io/controller-manager/pkg/clientbuilder): the service account is created when
//! missing, a token is requested through TokenRequest and renewed before it expires.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::client::ClientBuilder;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, RateLimitLayer};

/// Controllers' service accounts live here, as upstream's.
pub const NAMESPACE: &str = "kube-system";
/// Upstream requests one-hour tokens and renews them at 80 % of their life.
const TOKEN_SECONDS: i64 = 3600;
const API_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("ensuring service account {NAMESPACE}/{name}: {source}")]
    ServiceAccount { name: String, source: kube::Error },
    #[error("requesting a token for {NAMESPACE}/{name}: {reason}")]
    Token { name: String, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Hands out per-service-account clients.
pub struct ServiceAccountCredentials {
    root: kube::Client,
    base: kube::Config,
    qps: f32,
    burst: u32,
    shutdown: CancellationToken,
}

impl ServiceAccountCredentials {
    /// `root` creates the service accounts and tokens; `base` is the component's own connection
    /// (its credentials are dropped for the per-controller clients).
    pub fn new(
        root: kube::Client,
        mut base: kube::Config,
        qps: f32,
        burst: u32,
        shutdown: CancellationToken,
    ) -> Self {
        base.auth_info = Default::default();
        ServiceAccountCredentials {
            root,
            base,
            qps,
            burst,
            shutdown,
        }
    }

    /// A client authenticated as `kube-system/<name>`, with a client-side rate limit of its own.
    ///
    /// Like upstream's builder, which polls until the token is there, a failing apiserver is
    /// retried (1 s, doubling, for about 30 s) before giving up; cancellation stops the wait.
    pub async fn client_for(&self, name: &str) -> Result<kube::Client, CredentialsError> {
        self.client_for_with_qps(name, self.qps).await
    }

    /// [`Self::client_for`] with another QPS (upstream raises some controllers' `config.QPS`).
    pub async fn client_for_with_qps(
        &self,
        name: &str,
        qps: f32,
    ) -> Result<kube::Client, CredentialsError> {
        let mut wait = Duration::from_secs(1);
        let (token, lifetime) = loop {
            let attempt = async {
                self.ensure_service_account(name).await?;
                self.request_token(name).await
            };
            match attempt.await {
                Ok(t) => break t,
                Err(e) if wait <= Duration::from_secs(16) => {
                    tracing::warn!(error = %e, "retrying in {wait:?}");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(e),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        };
        let current = Arc::new(RwLock::new(token));
        self.spawn_renewal(name.to_string(), current.clone(), lifetime);
        let builder = ClientBuilder::try_from(self.base.clone()).map_err(ClientError::from)?;
        let bearer = BearerLayer { token: current };
        Ok(match RateLimitLayer::new(qps, self.burst) {
            Some(limit) => builder.with_layer(&bearer).with_layer(&limit).build(),
            None => builder.with_layer(&bearer).build(),
        })
    }

    async fn ensure_service_account(&self, name: &str) -> Result<(), CredentialsError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let err = |source| CredentialsError::ServiceAccount {
            name: name.to_string(),
            source,
        };
        let timeout = |_| CredentialsError::Token {
            name: name.to_string(),
            reason: "timed out".into(),
        };
        if tokio::time::timeout(API_TIMEOUT, api.get_opt(name))
            .await
            .map_err(timeout)?
            .map_err(err)?
            .is_some()
        {
            return Ok(());
        }
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.to_string());
        match tokio::time::timeout(API_TIMEOUT, api.create(&PostParams::default(), &sa))
            .await
            .map_err(timeout)?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn request_token(&self, name: &str) -> Result<(String, Duration), CredentialsError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let fail = |reason: String| CredentialsError::Token {
            name: name.to_string(),
            reason,
        };
        let req = TokenRequest {
            spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tr: TokenRequest = tokio::time::timeout(
            API_TIMEOUT,
            api.create_subresource("token", name, &PostParams::default(), &req),
        )
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let status = tr
            .status
            .ok_or_else(|| fail("no status in the TokenRequest response".into()))?;
        let token = status
            .token
            .ok_or_else(|| fail("no token in the TokenRequest response".into()))?;
        let lifetime = status
            .expiration_timestamp
            .and_then(|t| Duration::try_from(t.0.duration_since(jiff::Timestamp::now())).ok())
            .unwrap_or(Duration::from_secs(TOKEN_SECONDS as u64));
        Ok((token, lifetime))
    }

    fn spawn_renewal(&self, name: String, current: Arc<RwLock<String>>, mut lifetime: Duration) {
        let this = ServiceAccountCredentials {
            root: self.root.clone(),
            base: self.base.clone(),
            qps: self.qps,
            burst: self.burst,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(async move {
            loop {
                let wait = lifetime.mul_f64(0.8);
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                match this.request_token(&name).await {
                    Ok((token, l)) => {
                        if let Ok(mut t) = current.write() {
                            *t = token;
                        }
                        lifetime = l;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing a controller token failed; retrying in 10s");
                        lifetime = Duration::from_secs(12);
                    }
                }
            }
        });
    }
}

/// Sets `Authorization: Bearer <current token>` on every request.
#[derive(Clone)]
struct BearerLayer {
    token: Arc<RwLock<String>>,
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Bearer {
            inner,
            token: self.token.clone(),
        }
    }
}

struct Bearer<S> {
    inner: S,
    token: Arc<RwLock<String>>,
}

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let token = self.token.read().map(|t| t.clone()).unwrap_or_default();
        if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        self.inner.call(req)
    }
}
