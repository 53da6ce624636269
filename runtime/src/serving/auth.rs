//! Delegated authentication and authorization, as upstream's `DelegatingAuthenticationOptions` /
//! `DelegatingAuthorizationOptions` build them for kube-controller-manager and kube-scheduler
//! (staging/src/k8s.io/apiserver/pkg/server/options/{authentication,authorization}.go,
//! staging/src/k8s.io/apiserver/pkg/authentication/authenticatorfactory/delegating.go,
//! staging/src/k8s.io/apiserver/pkg/authorization/authorizerfactory/delegating.go).
//!
//! Authentication, in upstream's union order: a verified client certificate, then a bearer token
//! reviewed by the apiserver (TokenReview), else the request is anonymous (`system:anonymous`,
//! upstream's delegating authenticator has `Anonymous: true`). A token the apiserver rejects, or
//! a review that fails, is a 401 — a bad token is never downgraded to anonymous.
//!
//! Authorization, in upstream's union order: the `system:masters` group, then the always-allow
//! paths, then a SubjectAccessReview. A review error is a 500, a denial a 403.
//!
//! The apiserver calls sit behind [`TokenReviewer`] and [`AccessReviewer`] so the decision logic
//! is testable without a cluster; [`Gate`] adds upstream's caches in front of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use rand::Rng;

use super::ServingError;
use super::cache::{DEFAULT_CAPACITY, ExpiringCache};
use super::options::{AlwaysAllowPaths, ServingOptions};

pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Upstream's default `AlwaysAllowGroups`: the apiserver grants this group everything anyway.
pub const MASTERS_GROUP: &str = "system:masters";

/// Upstream `ClientTimeout` of both delegating option sets: the whole review, retries included.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Upstream `DefaultAuthWebhookRetryBackoff`: 500ms × 1.5ⁿ, 20 % jitter, 5 attempts.
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_FACTOR: f64 = 1.5;
const RETRY_JITTER: f64 = 0.2;
const RETRY_ATTEMPTS: u32 = 5;

/// Where the apiserver publishes the client CA for delegated authentication
/// (`authenticationConfigMapNamespace` / `authenticationConfigMapName` upstream).
const AUTHENTICATION_CONFIGMAP_NAMESPACE: &str = "kube-system";
const AUTHENTICATION_CONFIGMAP_NAME: &str = "extension-apiserver-authentication";
const CLIENT_CA_KEY: &str = "client-ca-file";

/// An authenticated (or anonymous) caller, as the apiserver's `user.Info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            username: ANONYMOUS_USER.to_string(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
            ..Self::default()
        }
    }

    /// Upstream's `AuthenticatedGroupAdder`: every user a credential proved gets
    /// `system:authenticated`, once.
    fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_string());
        }
        self
    }
}

/// The apiserver's answer to a TokenReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenReviewOutcome {
    Authenticated(UserInfo),
    /// The token is not valid; `error` is the apiserver's `status.error`, if any.
    Rejected {
        error: String,
    },
}

/// A non-resource request as the authorizer sees it: the URL path and the lower-cased HTTP method
/// (upstream `RequestInfoFactory` for non-resource requests).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NonResourceRequest {
    pub path: String,
    pub verb: String,
}

/// The apiserver's answer to a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDecision {
    pub allowed: bool,
    pub reason: String,
}

impl AccessDecision {
    pub fn allow(reason: impl Into<String>) -> Self {
        Self {
            allowed: true,
            reason: reason.into(),
        }
    }

    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allowed: false,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("review timed out after {0:?}")]
    Timeout(Duration),
    #[error("review request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("the apiserver answered the review without a status")]
    NoStatus,
}

/// Asks the apiserver who a bearer token belongs to (TokenReview authentication.k8s.io/v1).
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewOutcome, ReviewError>>;
}

/// Asks the apiserver whether a user may make a non-resource request
/// (SubjectAccessReview authorization.k8s.io/v1 with `nonResourceAttributes`).
pub trait AccessReviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        request: &'a NonResourceRequest,
    ) -> BoxFuture<'a, Result<AccessDecision, ReviewError>>;
}

/// [`TokenReviewer`] over the apiserver.
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
    timeout: Duration,
}

impl KubeTokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
            timeout: REVIEW_TIMEOUT,
        }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewOutcome, ReviewError>> {
        Box::pin(async move {
            let request = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_string(),
                    // Empty: the apiserver's own audiences, as upstream's delegating authenticator
                    // for the controller manager and scheduler (no APIAudiences configured).
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let params = PostParams::default();
            let response =
                with_retries(self.timeout, || self.api.create(&params, &request)).await?;
            let status = response.status.ok_or(ReviewError::NoStatus)?;
            if status.authenticated != Some(true) {
                return Ok(TokenReviewOutcome::Rejected {
                    error: status.error.unwrap_or_default(),
                });
            }
            let user = status.user.unwrap_or_default();
            Ok(TokenReviewOutcome::Authenticated(UserInfo {
                username: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }))
        })
    }
}

/// [`AccessReviewer`] over the apiserver.
pub struct KubeAccessReviewer {
    api: Api<SubjectAccessReview>,
    timeout: Duration,
}

impl KubeAccessReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
            timeout: REVIEW_TIMEOUT,
        }
    }
}

impl AccessReviewer for KubeAccessReviewer {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        request: &'a NonResourceRequest,
    ) -> BoxFuture<'a, Result<AccessDecision, ReviewError>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.username.clone()),
                    uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                    groups: Some(user.groups.clone()),
                    extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                    non_resource_attributes: Some(NonResourceAttributes {
                        path: Some(request.path.clone()),
                        verb: Some(request.verb.clone()),
                    }),
                    resource_attributes: None,
                },
                ..SubjectAccessReview::default()
            };
            let params = PostParams::default();
            let response = with_retries(self.timeout, || self.api.create(&params, &review)).await?;
            let status = response.status.ok_or(ReviewError::NoStatus)?;
            if let Some(error) = status.evaluation_error.filter(|e| !e.is_empty()) {
                tracing::debug!(%error, "SubjectAccessReview evaluation error");
            }
            Ok(AccessDecision {
                allowed: status.allowed,
                reason: status.reason.unwrap_or_default(),
            })
        })
    }
}

/// Runs `call` under an overall `timeout`, retrying what upstream's webhook
/// `DefaultShouldRetry` retries: connection failures, 429 and 5xx.
async fn with_retries<T, F, Fut>(timeout: Duration, mut call: F) -> Result<T, ReviewError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let attempts = async {
        let mut delay = RETRY_INITIAL;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < RETRY_ATTEMPTS && is_retryable(&e) => {
                    tracing::debug!(error = %e, attempt, "retrying delegated review");
                    let jitter = rand::rng().random_range(0.0..=RETRY_JITTER);
                    tokio::time::sleep(delay.mul_f64(1.0 + jitter)).await;
                    delay = delay.mul_f64(RETRY_FACTOR);
                    attempt += 1;
                }
                Err(e) => return Err(ReviewError::Api(e)),
            }
        }
    };
    tokio::time::timeout(timeout, attempts)
        .await
        .unwrap_or(Err(ReviewError::Timeout(timeout)))
}

fn is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The reviewers (and client CA) the server delegates to. Built from the component's client by
/// [`Delegation::from_options`]; tests build it from fakes with [`Delegation::new`].
pub struct Delegation {
    pub(crate) tokens: Arc<dyn TokenReviewer>,
    pub(crate) access: Arc<dyn AccessReviewer>,
    /// The client CA found in the cluster when `--client-ca-file` is not given.
    pub(crate) cluster_client_ca: Option<Vec<u8>>,
}

impl Delegation {
    pub fn new(tokens: Arc<dyn TokenReviewer>, access: Arc<dyn AccessReviewer>) -> Self {
        Self {
            tokens,
            access,
            cluster_client_ca: None,
        }
    }

    /// Reviews through `--authentication-kubeconfig` / `--authorization-kubeconfig` when given,
    /// else through `client` (the component's own). Without `--client-ca-file` and unless
    /// `--authentication-skip-lookup`, reads the client CA the apiserver publishes in
    /// `kube-system/extension-apiserver-authentication`, as upstream; a failed lookup is fatal
    /// unless `--authentication-tolerate-lookup-failure` (upstream's request-header lookup of
    /// the same ConfigMap behaves so), while a missing ConfigMap just disables client
    /// certificates.
    pub async fn from_options(
        opts: &ServingOptions,
        client: kube::Client,
    ) -> Result<Self, ServingError> {
        let authn_client = match &opts.authentication_kubeconfig {
            Some(path) => client_from_kubeconfig(path).await?,
            None => client.clone(),
        };
        let authz_client = match &opts.authorization_kubeconfig {
            Some(path) => client_from_kubeconfig(path).await?,
            None => client,
        };
        let cluster_client_ca = if opts.client_ca_file.is_none() && !opts.authentication_skip_lookup
        {
            match lookup_client_ca(authn_client.clone()).await {
                Ok(ca) => ca,
                Err(error) if opts.authentication_tolerate_lookup_failure => {
                    tracing::warn!(%error, "error looking up in-cluster authentication configuration; continuing without client certificate authentication");
                    None
                }
                Err(error) => return Err(ServingError::ClientCaLookup(error)),
            }
        } else {
            None
        };
        Ok(Self {
            tokens: Arc::new(KubeTokenReviewer::new(authn_client)),
            access: Arc::new(KubeAccessReviewer::new(authz_client)),
            cluster_client_ca,
        })
    }
}

async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, ServingError> {
    let wrap = |source| ServingError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(wrap)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(wrap)?;
    kube::Client::try_from(config).map_err(ServingError::Client)
}

async fn lookup_client_ca(client: kube::Client) -> Result<Option<Vec<u8>>, ReviewError> {
    let api: Api<ConfigMap> = Api::namespaced(client, AUTHENTICATION_CONFIGMAP_NAMESPACE);
    let configmap = with_retries(REVIEW_TIMEOUT, || {
        api.get_opt(AUTHENTICATION_CONFIGMAP_NAME)
    })
    .await?;
    let ca = configmap
        .and_then(|cm| cm.data)
        .and_then(|mut data| data.remove(CLIENT_CA_KEY))
        .filter(|ca| !ca.trim().is_empty());
    if ca.is_none() {
        tracing::warn!(
            "no {CLIENT_CA_KEY} in configmap/{AUTHENTICATION_CONFIGMAP_NAME} in {AUTHENTICATION_CONFIGMAP_NAMESPACE}, so client certificate authentication won't work"
        );
    }
    Ok(ca.map(String::into_bytes))
}

/// Why a request is refused before reaching its handler.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// 401: a credential was presented and not accepted.
    Unauthenticated,
    /// 403: the user may not make this request.
    Forbidden { user: UserInfo, reason: String },
    /// 500: the authorizer could not decide (upstream `responsewriters.InternalError`).
    AuthorizerError(ReviewError),
}

/// Cache TTLs, upstream defaults 10 s each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheTtls {
    pub(crate) token: Duration,
    pub(crate) allowed: Duration,
    pub(crate) denied: Duration,
}

/// Authentication and authorization with upstream's caches in front of the reviewers.
pub(crate) struct Gate {
    tokens: Arc<dyn TokenReviewer>,
    access: Arc<dyn AccessReviewer>,
    always_allow_paths: AlwaysAllowPaths,
    always_allow_groups: Vec<String>,
    ttls: CacheTtls,
    // Errors are never cached, so a blip at the apiserver is not remembered (upstream
    // `cacheErrs: false`; the webhook authorizer caches only answers too).
    token_cache: Mutex<ExpiringCache<String, TokenReviewOutcome>>,
    access_cache: Mutex<ExpiringCache<(UserInfo, NonResourceRequest), AccessDecision>>,
}

impl Gate {
    pub(crate) fn new(
        delegation: &Delegation,
        always_allow_paths: AlwaysAllowPaths,
        ttls: CacheTtls,
    ) -> Self {
        Self {
            tokens: Arc::clone(&delegation.tokens),
            access: Arc::clone(&delegation.access),
            always_allow_paths,
            always_allow_groups: vec![MASTERS_GROUP.to_string()],
            ttls,
            token_cache: Mutex::new(ExpiringCache::new(DEFAULT_CAPACITY)),
            access_cache: Mutex::new(ExpiringCache::new(DEFAULT_CAPACITY)),
        }
    }

    /// Who is calling. `client_cert_user` is the user of a client certificate the TLS layer
    /// already verified against the client CA.
    pub(crate) async fn authenticate(
        &self,
        client_cert_user: Option<&UserInfo>,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<UserInfo, Refusal> {
        if let Some(user) = client_cert_user {
            return Ok(user.clone().with_authenticated_group());
        }
        let Some(token) = bearer_token(authorization) else {
            return Ok(UserInfo::anonymous());
        };
        match self.review_token(token).await {
            Ok(TokenReviewOutcome::Authenticated(user)) => Ok(user.with_authenticated_group()),
            Ok(TokenReviewOutcome::Rejected { error }) => {
                tracing::debug!(%error, "bearer token rejected by TokenReview");
                Err(Refusal::Unauthenticated)
            }
            Err(error) => {
                tracing::warn!(%error, "unable to authenticate the request");
                Err(Refusal::Unauthenticated)
            }
        }
    }

    async fn review_token(&self, token: &str) -> Result<TokenReviewOutcome, ReviewError> {
        if let Some(hit) = lock(&self.token_cache).get(&token.to_string(), Instant::now()) {
            return Ok(hit);
        }
        let outcome = self.tokens.review(token).await?;
        lock(&self.token_cache).insert(
            token.to_string(),
            outcome.clone(),
            self.ttls.token,
            Instant::now(),
        );
        Ok(outcome)
    }

    /// May `user` make `request`.
    pub(crate) async fn authorize(
        &self,
        user: &UserInfo,
        request: &NonResourceRequest,
    ) -> Result<(), Refusal> {
        if user
            .groups
            .iter()
            .any(|g| self.always_allow_groups.contains(g))
        {
            return Ok(());
        }
        if self.always_allow_paths.allows(&request.path) {
            return Ok(());
        }
        let decision = self
            .review_access(user, request)
            .await
            .map_err(Refusal::AuthorizerError)?;
        if decision.allowed {
            Ok(())
        } else {
            Err(Refusal::Forbidden {
                user: user.clone(),
                reason: decision.reason,
            })
        }
    }

    async fn review_access(
        &self,
        user: &UserInfo,
        request: &NonResourceRequest,
    ) -> Result<AccessDecision, ReviewError> {
        let key = (user.clone(), request.clone());
        if let Some(hit) = lock(&self.access_cache).get(&key, Instant::now()) {
            return Ok(hit);
        }
        let decision = self.access.review(user, request).await?;
        let ttl = if decision.allowed {
            self.ttls.allowed
        } else {
            self.ttls.denied
        };
        lock(&self.access_cache).insert(key, decision.clone(), ttl, Instant::now());
        Ok(decision)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The token of an `Authorization: Bearer <token>` header, parsed as upstream's
/// `bearertoken.Authenticator`: scheme case-insensitive, an empty token counts as none.
pub(crate) fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Knows one token (`good`, user `alice`) and answers `Rejected` for every other.
    #[derive(Default)]
    pub(crate) struct FakeTokens {
        pub(crate) calls: AtomicUsize,
    }

    impl TokenReviewer for FakeTokens {
        fn review<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<TokenReviewOutcome, ReviewError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(match token {
                    "good" => TokenReviewOutcome::Authenticated(UserInfo {
                        username: "alice".into(),
                        uid: "uid-1".into(),
                        groups: vec!["readers".into()],
                        ..UserInfo::default()
                    }),
                    "timeout" => return Err(ReviewError::Timeout(REVIEW_TIMEOUT)),
                    _ => TokenReviewOutcome::Rejected {
                        error: "invalid bearer token".into(),
                    },
                })
            })
        }
    }

    /// Allows exactly the users in `allowed` (by name), everyone else is denied.
    #[derive(Default)]
    pub(crate) struct FakeAccess {
        pub(crate) allowed: Vec<String>,
        pub(crate) fail: bool,
        pub(crate) calls: AtomicUsize,
        pub(crate) seen: Mutex<Vec<(UserInfo, NonResourceRequest)>>,
    }

    impl AccessReviewer for FakeAccess {
        fn review<'a>(
            &'a self,
            user: &'a UserInfo,
            request: &'a NonResourceRequest,
        ) -> BoxFuture<'a, Result<AccessDecision, ReviewError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            lock(&self.seen).push((user.clone(), request.clone()));
            Box::pin(async move {
                if self.fail {
                    return Err(ReviewError::NoStatus);
                }
                Ok(if self.allowed.contains(&user.username) {
                    AccessDecision::allow("RBAC: allowed")
                } else {
                    AccessDecision::deny("")
                })
            })
        }
    }

    const TTLS: CacheTtls = CacheTtls {
        token: Duration::from_secs(10),
        allowed: Duration::from_secs(10),
        denied: Duration::from_secs(10),
    };

    fn gate(tokens: Arc<FakeTokens>, access: Arc<FakeAccess>) -> Gate {
        Gate::new(
            &Delegation::new(tokens, access),
            AlwaysAllowPaths::parse(&["/healthz", "/readyz", "/livez"]).unwrap(),
            TTLS,
        )
    }

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    fn metrics() -> NonResourceRequest {
        NonResourceRequest {
            path: "/metrics".into(),
            verb: "get".into(),
        }
    }

    #[test]
    fn bearer_token_parsing_follows_upstream() {
        assert_eq!(bearer_token(Some(&header("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&header("bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(Some(&header("Bearer"))), None);
        assert_eq!(bearer_token(Some(&header("Basic Zm9vOmJhcg=="))), None);
        assert_eq!(bearer_token(None), None);
    }

    #[tokio::test]
    async fn no_credentials_authenticate_as_system_anonymous() {
        let gate = gate(Default::default(), Default::default());
        let user = gate.authenticate(None, None).await.unwrap();
        assert_eq!(user, UserInfo::anonymous());
    }

    #[tokio::test]
    async fn accepted_token_yields_its_user_plus_system_authenticated() {
        let gate = gate(Default::default(), Default::default());
        let user = gate
            .authenticate(None, Some(&header("Bearer good")))
            .await
            .unwrap();
        assert_eq!(user.username, "alice");
        assert_eq!(user.uid, "uid-1");
        assert_eq!(user.groups, ["readers", AUTHENTICATED_GROUP]);
    }

    #[tokio::test]
    async fn rejected_or_unreviewable_token_is_unauthenticated_not_anonymous() {
        let gate = gate(Default::default(), Default::default());
        for token in ["Bearer bad", "Bearer timeout"] {
            assert!(matches!(
                gate.authenticate(None, Some(&header(token))).await,
                Err(Refusal::Unauthenticated)
            ));
        }
    }

    #[tokio::test]
    async fn client_certificate_user_wins_over_a_token() {
        let tokens = Arc::new(FakeTokens::default());
        let gate = gate(Arc::clone(&tokens), Default::default());
        let cert_user = UserInfo {
            username: "bob".into(),
            groups: vec!["ops".into()],
            ..UserInfo::default()
        };
        let user = gate
            .authenticate(Some(&cert_user), Some(&header("Bearer bad")))
            .await
            .unwrap();
        assert_eq!(user.username, "bob");
        assert_eq!(user.groups, ["ops", AUTHENTICATED_GROUP]);
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn token_reviews_are_cached_for_success_and_failure() {
        let tokens = Arc::new(FakeTokens::default());
        let gate = gate(Arc::clone(&tokens), Default::default());
        for _ in 0..3 {
            gate.authenticate(None, Some(&header("Bearer good")))
                .await
                .unwrap();
            let _ = gate.authenticate(None, Some(&header("Bearer bad"))).await;
        }
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn token_review_errors_are_not_cached() {
        let tokens = Arc::new(FakeTokens::default());
        let gate = gate(Arc::clone(&tokens), Default::default());
        for _ in 0..2 {
            let _ = gate
                .authenticate(None, Some(&header("Bearer timeout")))
                .await;
        }
        assert_eq!(tokens.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn always_allow_paths_and_system_masters_skip_the_access_review() {
        let access = Arc::new(FakeAccess::default());
        let gate = gate(Default::default(), Arc::clone(&access));
        let healthz = NonResourceRequest {
            path: "/healthz".into(),
            verb: "get".into(),
        };
        gate.authorize(&UserInfo::anonymous(), &healthz)
            .await
            .unwrap();
        let admin = UserInfo {
            username: "kubernetes-admin".into(),
            groups: vec![MASTERS_GROUP.into()],
            ..UserInfo::default()
        };
        gate.authorize(&admin, &metrics()).await.unwrap();
        assert_eq!(access.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn access_review_carries_the_user_and_the_non_resource_attributes() {
        let access = Arc::new(FakeAccess {
            allowed: vec!["alice".into()],
            ..FakeAccess::default()
        });
        let gate = gate(Default::default(), Arc::clone(&access));
        let alice = gate
            .authenticate(None, Some(&header("Bearer good")))
            .await
            .unwrap();
        gate.authorize(&alice, &metrics()).await.unwrap();
        let seen = lock(&access.seen).clone();
        assert_eq!(seen, vec![(alice, metrics())]);
    }

    #[tokio::test]
    async fn denied_access_is_forbidden_and_both_answers_are_cached() {
        let access = Arc::new(FakeAccess {
            allowed: vec!["alice".into()],
            ..FakeAccess::default()
        });
        let gate = gate(Default::default(), Arc::clone(&access));
        let alice = UserInfo {
            username: "alice".into(),
            ..UserInfo::default()
        };
        for _ in 0..3 {
            assert!(matches!(
                gate.authorize(&UserInfo::anonymous(), &metrics()).await,
                Err(Refusal::Forbidden { .. })
            ));
            gate.authorize(&alice, &metrics()).await.unwrap();
        }
        assert_eq!(access.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn access_review_error_is_an_authorizer_error_and_not_cached() {
        let access = Arc::new(FakeAccess {
            fail: true,
            ..FakeAccess::default()
        });
        let gate = gate(Default::default(), Arc::clone(&access));
        for _ in 0..2 {
            assert!(matches!(
                gate.authorize(&UserInfo::anonymous(), &metrics()).await,
                Err(Refusal::AuthorizerError(_))
            ));
        }
        assert_eq!(access.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_give_up_at_the_overall_timeout() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = with_retries(Duration::from_secs(1), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(kube::Error::Api(
                    kube::core::Status::failure("busy", "TooManyRequests")
                        .with_code(429)
                        .boxed(),
                ))
            }
        })
        .await;
        assert!(matches!(result, Err(ReviewError::Timeout(_))));
        assert!(calls.load(Ordering::SeqCst) >= 2, "429 is retried");
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = with_retries(Duration::from_secs(10), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(kube::Error::Api(
                    kube::core::Status::failure("no", "Forbidden")
                        .with_code(403)
                        .boxed(),
                ))
            }
        })
        .await;
        assert!(matches!(result, Err(ReviewError::Api(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
