//! `/healthz`, `/livez` and `/readyz` with upstream's checks and output
//! (staging/src/k8s.io/apiserver/pkg/server/healthz/healthz.go).
//!
//! The aggregate endpoints are in the always-allow paths and therefore public, so like upstream
//! they print `[-]<name> failed: reason withheld` and log the error; the per-check endpoints
//! (`/healthz/<name>`) need authorization and print the error itself.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use http::StatusCode;

/// A named health check, e.g. the `leaderElection` adaptor
/// (client-go tools/leaderelection/healthzadaptor.go). `Err` carries the reason, which is logged
/// and shown only on the check's own, authorized endpoint.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Name of the readiness check driven by [`Health::set_ready`]; upstream's informer-sync check
/// (healthz.NewInformerSyncHealthz) carries the same name.
pub const READY_CHECK_NAME: &str = "informer-sync";

/// The three health endpoints upstream components serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Livez,
    Readyz,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }
}

/// Process health, shared by the server and whatever registers checks (leader election,
/// controllers) or flips readiness (informer caches synced).
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Run by every endpoint, in registration order.
    checks: RwLock<Vec<(String, HealthCheck)>>,
    /// Run by `/readyz` only.
    readyz_checks: RwLock<Vec<(String, HealthCheck)>>,
    ready: AtomicBool,
}

/// What an endpoint answers: status and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthResponse {
    pub status: StatusCode,
    pub body: String,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a check run by `/healthz`, `/livez` and `/readyz`. A check registered again
    /// under the same name replaces the earlier one.
    pub fn add_check(&self, name: impl Into<String>, check: HealthCheck) {
        insert(&self.inner.checks, name.into(), check);
    }

    /// Registers a check run only by `/readyz` (upstream separates readiness-only checks such as
    /// the scheduler's handler sync from liveness).
    pub fn add_readyz_check(&self, name: impl Into<String>, check: HealthCheck) {
        insert(&self.inner.readyz_checks, name.into(), check);
    }

    /// Marks the process ready (caches synced) or not; `/readyz` fails until this is `true`.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The checks an endpoint runs, in output order: upstream's always-passing `ping` first.
    fn checks_for(&self, endpoint: Endpoint) -> Vec<(String, HealthCheck)> {
        let mut all: Vec<(String, HealthCheck)> =
            vec![("ping".to_string(), Arc::new(|| Ok(())) as HealthCheck)];
        all.extend(read(&self.inner.checks).iter().cloned());
        if endpoint == Endpoint::Readyz {
            let inner = Arc::clone(&self.inner);
            all.push((
                READY_CHECK_NAME.to_string(),
                Arc::new(move || {
                    if inner.ready.load(Ordering::Acquire) {
                        Ok(())
                    } else {
                        Err("caches not synced yet".to_string())
                    }
                }),
            ));
            all.extend(read(&self.inner.readyz_checks).iter().cloned());
        }
        all
    }

    /// The aggregate endpoint (`/healthz`, `/livez`, `/readyz`). `query` is the raw URL query:
    /// `verbose` lists every check, `exclude=<name>` (repeatable) skips a check, as upstream's
    /// `handleRootHealth`.
    pub fn report(&self, endpoint: Endpoint, query: Option<&str>) -> HealthResponse {
        let name = endpoint.name();
        let (verbose, mut excluded) = parse_query(query);
        let mut lines = String::new();
        let mut failed = Vec::new();
        for (check_name, check) in self.checks_for(endpoint) {
            if let Some(pos) = excluded.iter().position(|e| *e == check_name) {
                excluded.swap_remove(pos);
                let _ = writeln!(lines, "[+]{check_name} excluded: ok");
                continue;
            }
            match check() {
                Ok(()) => {
                    let _ = writeln!(lines, "[+]{check_name} ok");
                }
                Err(reason) => {
                    // The aggregate endpoints are public: withhold the reason, log it instead.
                    let _ = writeln!(lines, "[-]{check_name} failed: reason withheld");
                    tracing::info!(endpoint = name, check = %check_name, %reason, "health check failed");
                    failed.push(check_name);
                }
            }
        }
        if !excluded.is_empty() {
            let quoted: Vec<String> = excluded.iter().map(|e| format!("{e:?}")).collect();
            let _ = writeln!(
                lines,
                "warn: some health checks cannot be excluded: no matches for {}",
                quoted.join(",")
            );
        }
        if !failed.is_empty() {
            // Upstream answers through http.Error, which appends a newline.
            return HealthResponse {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: format!("{lines}{name} check failed\n"),
            };
        }
        if !verbose {
            return HealthResponse {
                status: StatusCode::OK,
                body: "ok".to_string(),
            };
        }
        HealthResponse {
            status: StatusCode::OK,
            body: format!("{lines}{name} check passed\n"),
        }
    }

    /// One check's own endpoint (`/healthz/<check>`); `None` when the endpoint has no such check.
    /// Not in the always-allow paths, so it may show the failure reason (upstream
    /// `adaptCheckToHandler`).
    pub fn report_check(&self, endpoint: Endpoint, check_name: &str) -> Option<HealthResponse> {
        let (_, check) = self
            .checks_for(endpoint)
            .into_iter()
            .find(|(n, _)| n == check_name)?;
        Some(match check() {
            Ok(()) => HealthResponse {
                status: StatusCode::OK,
                body: "ok".to_string(),
            },
            Err(reason) => HealthResponse {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: format!("internal server error: {reason}\n"),
            },
        })
    }
}

fn insert(list: &RwLock<Vec<(String, HealthCheck)>>, name: String, check: HealthCheck) {
    let mut list = list.write().unwrap_or_else(|p| p.into_inner());
    match list.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = check,
        None => list.push((name, check)),
    }
}

fn read(
    list: &RwLock<Vec<(String, HealthCheck)>>,
) -> std::sync::RwLockReadGuard<'_, Vec<(String, HealthCheck)>> {
    list.read().unwrap_or_else(|p| p.into_inner())
}

/// `verbose` (any value) and repeated `exclude=<name>`. Check names are plain identifiers, so
/// no percent-decoding is attempted.
fn parse_query(query: Option<&str>) -> (bool, Vec<String>) {
    let mut verbose = false;
    let mut excluded = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "verbose" => verbose = true,
            "exclude" if !value.is_empty() && !excluded.iter().any(|e| e == value) => {
                excluded.push(value.to_string())
            }
            _ => {}
        }
    }
    (verbose, excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(reason: &'static str) -> HealthCheck {
        Arc::new(move || Err(reason.to_string()))
    }

    #[test]
    fn healthz_and_livez_are_ok_with_no_failing_checks() {
        let health = Health::new();
        for endpoint in [Endpoint::Healthz, Endpoint::Livez] {
            let r = health.report(endpoint, None);
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, "ok");
        }
    }

    #[test]
    fn readyz_fails_naming_informer_sync_until_set_ready() {
        let health = Health::new();
        let r = health.report(Endpoint::Readyz, None);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            r.body
                .contains("[-]informer-sync failed: reason withheld\n")
        );
        assert!(r.body.ends_with("readyz check failed\n"));
        assert_eq!(
            health.report(Endpoint::Healthz, None).status,
            StatusCode::OK,
            "readiness does not affect liveness"
        );

        health.set_ready(true);
        assert_eq!(health.report(Endpoint::Readyz, None).status, StatusCode::OK);
    }

    #[test]
    fn failing_check_makes_healthz_500_naming_the_check_and_withholding_the_reason() {
        let health = Health::new();
        health.add_check("leaderElection", failing("lease expired 20s ago"));
        let r = health.report(Endpoint::Healthz, None);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            r.body,
            "[+]ping ok\n[-]leaderElection failed: reason withheld\nhealthz check failed\n"
        );
        assert!(!r.body.contains("lease expired"));
        assert_eq!(
            health.report(Endpoint::Livez, None).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn per_check_endpoint_shows_the_reason() {
        let health = Health::new();
        health.add_check("leaderElection", failing("lease expired"));
        let r = health
            .report_check(Endpoint::Healthz, "leaderElection")
            .expect("check exists");
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.body, "internal server error: lease expired\n");
        assert_eq!(
            health
                .report_check(Endpoint::Healthz, "ping")
                .map(|r| r.body),
            Some("ok".to_string())
        );
        assert!(health.report_check(Endpoint::Healthz, "nope").is_none());
        assert!(
            health
                .report_check(Endpoint::Healthz, READY_CHECK_NAME)
                .is_none(),
            "the readiness check lives only under /readyz"
        );
    }

    #[test]
    fn verbose_lists_every_check() {
        let health = Health::new();
        health.add_check("leaderElection", Arc::new(|| Ok(())));
        let r = health.report(Endpoint::Healthz, Some("verbose"));
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.body,
            "[+]ping ok\n[+]leaderElection ok\nhealthz check passed\n"
        );
    }

    #[test]
    fn excluded_check_is_skipped_and_unknown_exclusions_are_warned_about() {
        let health = Health::new();
        health.add_check("leaderElection", failing("x"));
        let r = health.report(
            Endpoint::Healthz,
            Some("exclude=leaderElection&exclude=bogus&verbose=1"),
        );
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.contains("[+]leaderElection excluded: ok\n"));
        assert!(
            r.body.contains(
                "warn: some health checks cannot be excluded: no matches for \"bogus\"\n"
            )
        );
    }

    #[test]
    fn registering_a_check_twice_replaces_it() {
        let health = Health::new();
        health.add_check("leaderElection", failing("x"));
        health.add_check("leaderElection", Arc::new(|| Ok(())));
        assert_eq!(
            health.report(Endpoint::Healthz, None).status,
            StatusCode::OK
        );
    }

    #[test]
    fn readyz_only_checks_do_not_affect_healthz() {
        let health = Health::new();
        health.set_ready(true);
        health.add_readyz_check("sched-handler-sync", failing("not yet"));
        assert_eq!(
            health.report(Endpoint::Healthz, None).status,
            StatusCode::OK
        );
        let r = health.report(Endpoint::Readyz, None);
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(r.body.contains("[-]sched-handler-sync failed"));
    }
}
