//! The API client every component uses: from `--kubeconfig` (or in-cluster), with client-go's
//! client-side rate limit (`--kube-api-qps` / `--kube-api-burst`, a token bucket that makes
//! requests wait rather than fail).

use std::future::Future;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::client::ClientBuilder;

#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct ClientOptions {
    /// Path to a kubeconfig file with authorization and master location information. Without it,
    /// the in-cluster service account configuration is used.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long)]
    pub master: Option<String>,
    /// QPS to use while talking with the kubernetes apiserver (component default when unset).
    #[arg(long = "kube-api-qps")]
    pub kube_api_qps: Option<f32>,
    /// Burst to use while talking with the kubernetes apiserver (component default when unset).
    #[arg(long = "kube-api-burst")]
    pub kube_api_burst: Option<u32>,
    /// Content type of requests sent to apiserver. Accepted for compatibility; Ferrite speaks JSON.
    #[arg(long = "kube-api-content-type")]
    pub kube_api_content_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no --kubeconfig given and no in-cluster configuration: {0}")]
    InCluster(kube::config::InClusterError),
    #[error("--master {0:?} is not a valid URL")]
    Master(String),
    #[error("building the client: {0}")]
    Build(#[from] kube::Error),
}

impl ClientOptions {
    /// Builds the client with `user_agent` and the given defaults for QPS/burst
    /// (controller manager 20/30, scheduler 50/100, as upstream).
    pub async fn build(
        &self,
        user_agent: &str,
        default_qps: f32,
        default_burst: u32,
    ) -> Result<kube::Client, ClientError> {
        let config = self.config(user_agent).await?;
        self.client_from(config, default_qps, default_burst)
    }

    /// The connection configuration (server, CA, credentials, user agent) these flags describe.
    pub async fn config(&self, user_agent: &str) -> Result<kube::Config, ClientError> {
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ClientError::Kubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
            }
            // Upstream (clientcmd.BuildConfigFromFlags) falls back to in-cluster config.
            None => kube::Config::incluster().map_err(ClientError::InCluster)?,
        };
        if let Some(master) = &self.master {
            config.cluster_url = master
                .parse()
                .map_err(|_| ClientError::Master(master.clone()))?;
        }
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_str(user_agent)
                .unwrap_or(http::HeaderValue::from_static("ferrite")),
        ));
        Ok(config)
    }

    /// The effective client-side limits: the flags, else the component's defaults.
    pub fn limits(&self, default_qps: f32, default_burst: u32) -> (f32, u32) {
        (
            self.kube_api_qps.unwrap_or(default_qps),
            self.kube_api_burst.unwrap_or(default_burst),
        )
    }

    /// A rate-limited client over `config`.
    pub fn client_from(
        &self,
        config: kube::Config,
        default_qps: f32,
        default_burst: u32,
    ) -> Result<kube::Client, ClientError> {
        let (qps, burst) = self.limits(default_qps, default_burst);
        rate_limited_client(config, qps, burst)
    }
}

/// A client over `config` whose requests wait for a token of a `qps`/`burst` bucket of its own.
pub fn rate_limited_client(
    config: kube::Config,
    qps: f32,
    burst: u32,
) -> Result<kube::Client, ClientError> {
    let builder = ClientBuilder::try_from(config)?;
    Ok(match RateLimitLayer::new(qps, burst) {
        Some(layer) => builder.with_layer(&layer).build(),
        None => builder.build(),
    })
}

/// client-go's `flowcontrol.NewTokenBucketRateLimiter(qps, burst)` as a tower layer: each request
/// waits for a token. A non-positive QPS disables limiting.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimitLayer {
    pub fn new(qps: f32, burst: u32) -> Option<Self> {
        if qps.is_nan() || qps <= 0.0 {
            return None;
        }
        let period = std::time::Duration::from_secs_f64(1.0 / f64::from(qps));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(RateLimitLayer {
            limiter: Arc::new(RateLimiter::direct(quota)),
        })
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.limiter.clone(),
            wait: None,
            permitted: false,
        }
    }
}

pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    permitted: bool,
}

impl<S, Req> tower::Service<Req> for RateLimited<S>
where
    S: tower::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            let wait = self.wait.get_or_insert_with(|| {
                let limiter = self.limiter.clone();
                Box::pin(async move { limiter.until_ready().await })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.wait = None;
                    self.permitted = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use tower::{Layer, Service, ServiceExt};

    #[derive(Clone)]
    struct Echo;
    impl Service<u32> for Echo {
        type Response = u32;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<u32, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(Ok(req))
        }
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_wait_for_tokens_at_the_qps_rate() {
        let layer = RateLimitLayer::new(20.0, 5).expect("limiter");
        let mut svc = layer.layer(Echo);
        let start = Instant::now();
        for i in 0..5 {
            svc.ready()
                .await
                .expect("ready")
                .call(i)
                .await
                .expect("call");
        }
        assert!(
            start.elapsed() < Duration::from_millis(40),
            "burst of 5 went through at once"
        );
        for i in 0..4 {
            svc.ready()
                .await
                .expect("ready")
                .call(i)
                .await
                .expect("call");
        }
        // 4 more tokens at 20 qps take about 200 ms.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(180), "took {took:?}");
    }

    #[test]
    fn non_positive_qps_disables_the_limiter() {
        assert!(RateLimitLayer::new(0.0, 10).is_none());
        assert!(RateLimitLayer::new(-1.0, 10).is_none());
    }
}
