//! Leader election on a `coordination.k8s.io/v1` Lease with client-go's semantics, so that Ferrite
//! and a stock kube-controller-manager / kube-scheduler configured with the same Lease name take
//! turns correctly.
//!
//! Mirrors `staging/src/k8s.io/client-go/tools/leaderelection/` (`leaderelection.go`,
//! `resourcelock/leaselock.go`, `healthzadaptor.go`, `metrics.go`) and the flags of
//! `staging/src/k8s.io/component-base/config/options/leaderelectionconfig.go`:
//!
//! * a candidate judges expiry by the *local* time at which it last saw the record change, never by
//!   the record's `renewTime` against its own clock (clock-skew tolerant, see `doc.go` upstream);
//! * writes are optimistic: create when absent, otherwise replace with the `resourceVersion` that
//!   was read, so of two racing candidates exactly one wins;
//! * the leader renews every retry period and gives up when a renewal has not succeeded within the
//!   renew deadline; it then stops its work and [`run`] returns [`LeaderElectionError::LeaseLost`],
//!   so the process exits non-zero like kube-scheduler's `OnStoppedLeading`;
//! * on a clean shutdown the work is stopped first and the lease released (`ReleaseOnCancel`).
//!
//! The decision itself ([`observe`], [`decide`], [`release_record`]) is pure and unit-tested with
//! injected times; [`run`] is the shell that performs the API calls.
//!
//! ```no_run
//! # use ferrite_runtime::{leader_election, metrics::SharedRegistry};
//! # async fn example(
//! #     client: kube::Client,
//! #     registry: SharedRegistry,
//! #     shutdown: tokio_util::sync::CancellationToken,
//! # ) -> Result<(), leader_election::LeaderElectionError> {
//! use leader_election::{HealthzAdaptor, LeaderElectionMetrics, LeaderElectionOptions};
//! // Normally `#[command(flatten)]` in the component's clap arguments.
//! let options = LeaderElectionOptions::default();
//! let config = options.into_config("ferrite-scheduler")?;
//! // Served as `/healthz/leaderElection`.
//! let health: HealthzAdaptor = config.healthz.clone();
//! let metrics = LeaderElectionMetrics::register_shared(&registry);
//! leader_election::run(client, config, metrics, shutdown, |token| async move {
//!     // The component's work, until `token` is cancelled.
//!     token.cancelled().await;
//! })
//! .await?;
//! # let _ = health.health_check();
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::flags::{parse_duration_flag, parse_go_bool};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::metrics::SharedRegistry;

/// client-go `leaderelection.JitterFactor`: the acquire loop waits `retry × [1, 1 + 1.2)`, and the
/// renew deadline must exceed `retry × 1.2`.
pub const JITTER_FACTOR: f64 = 1.2;
/// Upstream default of `--leader-elect-lease-duration` (component-base `RecommendedDefaults`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Upstream default of `--leader-elect-renew-deadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Upstream default of `--leader-elect-retry-period`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Upstream default of `--leader-elect-resource-namespace`.
pub const DEFAULT_RESOURCE_NAMESPACE: &str = "kube-system";
/// The only `--leader-elect-resource-lock` Ferrite supports (upstream's default since 1.20; the
/// endpoints/configmaps locks were removed from client-go).
pub const RESOURCE_LOCK_LEASES: &str = "leases";
/// kube-controller-manager and kube-scheduler build their `/healthz` adaptor with
/// `leaderelection.NewLeaderHealthzAdaptor(time.Second * 20)`.
pub const DEFAULT_HEALTHZ_TIMEOUT: Duration = Duration::from_secs(20);

const MASTER_STATUS_HELP: &str = "Gauge of if the reporting system is master of the relevant lease, \
     0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. \
     Please make sure to group by name.";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    #[error(transparent)]
    InvalidOptions(#[from] OptionsError),
    /// The lease could not be renewed within the renew deadline (or another candidate holds it):
    /// the work has been stopped and the process must exit non-zero. Same words as upstream's
    /// `klog.ErrorS(nil, "leaderelection lost")`.
    #[error("leaderelection lost")]
    LeaseLost,
    /// The work passed to [`run`] panicked; the lease was released.
    #[error("the work run while leading panicked: {0}")]
    LeadPanicked(String),
}

/// Invalid leader election flags; the checks of component-base
/// `ValidateLeaderElectionConfiguration` plus client-go `NewLeaderElector`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("--{flag} must be greater than zero, got {value:?}")]
    NotPositive { flag: &'static str, value: Duration },
    #[error(
        "--leader-elect-lease-duration ({lease_duration:?}) must be greater than \
         --leader-elect-renew-deadline ({renew_deadline:?})"
    )]
    LeaseDurationNotAboveRenewDeadline {
        lease_duration: Duration,
        renew_deadline: Duration,
    },
    #[error(
        "--leader-elect-renew-deadline ({renew_deadline:?}) must be greater than \
         --leader-elect-retry-period ({retry_period:?}) × jitter factor {JITTER_FACTOR}"
    )]
    RenewDeadlineNotAboveJitteredRetryPeriod {
        renew_deadline: Duration,
        retry_period: Duration,
    },
    #[error(
        "--leader-elect-resource-lock={0:?} is not supported: Ferrite only supports \"leases\" \
         (coordination.k8s.io/v1 Lease)"
    )]
    UnsupportedResourceLock(String),
    #[error("--{flag} must not be empty")]
    Empty { flag: &'static str },
    #[error("the leader election identity must not be empty")]
    EmptyIdentity,
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// The upstream `--leader-elect*` flags (component-base `BindLeaderElectionFlags`), to
/// `#[command(flatten)]` into a component's arguments.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionOptions {
    /// Start a leader election client and gain leadership before executing the main loop. Enable
    /// this when running replicated components for high availability.
    // pflag bool semantics: `--leader-elect` alone means true, a value needs `=`
    // (`--leader-elect=false`), and strconv.ParseBool spellings are accepted.
    #[arg(
        long = "leader-elect",
        value_name = "BOOL",
        default_value = "true",
        default_missing_value = "true",
        num_args = 0..=1,
        require_equals = true,
        action = ArgAction::Set,
        value_parser = parse_go_bool,
    )]
    pub leader_elect: bool,

    /// The duration that non-leader candidates will wait after observing a leadership renewal
    /// until attempting to acquire leadership of a led but unrenewed leader slot. This is
    /// effectively the maximum duration that a leader can be stopped before it is replaced by
    /// another candidate. This is only applicable if leader election is enabled.
    #[arg(
        long = "leader-elect-lease-duration",
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_duration_flag,
    )]
    pub lease_duration: Duration,

    /// The interval between attempts by the acting master to renew a leadership slot before it
    /// stops leading. This must be less than the lease duration. This is only applicable if leader
    /// election is enabled.
    #[arg(
        long = "leader-elect-renew-deadline",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration_flag,
    )]
    pub renew_deadline: Duration,

    /// The duration the clients should wait between attempting acquisition and renewal of a
    /// leadership. This is only applicable if leader election is enabled.
    #[arg(
        long = "leader-elect-retry-period",
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_duration_flag,
    )]
    pub retry_period: Duration,

    /// The type of resource object that is used for locking during leader election. Only
    /// 'leases' is supported.
    #[arg(long = "leader-elect-resource-lock", value_name = "TYPE", default_value = RESOURCE_LOCK_LEASES)]
    pub resource_lock: String,

    /// The name of resource object that is used for locking during leader election. Defaults to
    /// the component's own Lease (ferrite-controller-manager / ferrite-scheduler); set it to
    /// kube-controller-manager / kube-scheduler to take turns with a stock component.
    #[arg(long = "leader-elect-resource-name", value_name = "NAME")]
    pub resource_name: Option<String>,

    /// The namespace of resource object that is used for locking during leader election.
    #[arg(
        long = "leader-elect-resource-namespace",
        value_name = "NAMESPACE",
        default_value = DEFAULT_RESOURCE_NAMESPACE
    )]
    pub resource_namespace: String,
}

impl Default for LeaderElectionOptions {
    fn default() -> Self {
        Self {
            leader_elect: true,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            resource_lock: RESOURCE_LOCK_LEASES.to_owned(),
            resource_name: None,
            resource_namespace: DEFAULT_RESOURCE_NAMESPACE.to_owned(),
        }
    }
}

impl LeaderElectionOptions {
    /// Validates the flags and builds the runtime configuration, with the component's default
    /// Lease name (`ferrite-controller-manager` / `ferrite-scheduler`) when the flag is unset, and
    /// the default identity (`<hostname>_<uuid>`, as kube-scheduler and kube-controller-manager
    /// build theirs). Like upstream, nothing is checked when `--leader-elect=false`.
    pub fn into_config(
        self,
        default_resource_name: &str,
    ) -> Result<LeaderElectionConfig, LeaderElectionError> {
        if self.leader_elect && self.resource_lock != RESOURCE_LOCK_LEASES {
            return Err(OptionsError::UnsupportedResourceLock(self.resource_lock).into());
        }
        let config = LeaderElectionConfig {
            leader_elect: self.leader_elect,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
            namespace: self.resource_namespace,
            name: self
                .resource_name
                .unwrap_or_else(|| default_resource_name.to_owned()),
            identity: default_identity(),
            healthz: HealthzAdaptor::default(),
        };
        config.validate()?;
        Ok(config)
    }
}

/// What [`run`] needs. Built by [`LeaderElectionOptions::into_config`], or by hand in tests.
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// `--leader-elect`: when false, [`run`] runs the work directly without any Lease.
    pub leader_elect: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease; also the `name` label of `leader_election_master_status`.
    pub name: String,
    /// This candidate's `holderIdentity`; must be unique among candidates.
    pub identity: String,
    /// The `/healthz` check tied to this election (client-go `WatchDog`).
    pub healthz: HealthzAdaptor,
}

impl LeaderElectionConfig {
    /// Upstream defaults for the Lease `namespace/name`, with the default identity.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            leader_elect: true,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            namespace: namespace.into(),
            name: name.into(),
            identity: default_identity(),
            healthz: HealthzAdaptor::default(),
        }
    }

    /// Sets the identity (tests run several candidates in one process).
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// component-base `ValidateLeaderElectionConfiguration` followed by client-go
    /// `NewLeaderElector`'s checks (renew deadline above `retry × JitterFactor`, non-empty
    /// identity). The first violation is returned.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !self.leader_elect {
            return Ok(());
        }
        for (flag, value) in [
            ("leader-elect-lease-duration", self.lease_duration),
            ("leader-elect-renew-deadline", self.renew_deadline),
            ("leader-elect-retry-period", self.retry_period),
        ] {
            if value.is_zero() {
                return Err(OptionsError::NotPositive { flag, value });
            }
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(OptionsError::LeaseDurationNotAboveRenewDeadline {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
            });
        }
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR) {
            return Err(OptionsError::RenewDeadlineNotAboveJitteredRetryPeriod {
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        if self.namespace.is_empty() {
            return Err(OptionsError::Empty {
                flag: "leader-elect-resource-namespace",
            });
        }
        if self.name.is_empty() {
            return Err(OptionsError::Empty {
                flag: "leader-elect-resource-name",
            });
        }
        if self.identity.is_empty() {
            return Err(OptionsError::EmptyIdentity);
        }
        Ok(())
    }

    /// `namespace/name`, as client-go's `LeaseLock.Describe` (used in the log lines).
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `<hostname>_<uuid v4>`: the identity kube-scheduler and kube-controller-manager use
/// (`id := hostname + "_" + string(uuid.NewUUID())`), unique per process start.
pub fn default_identity() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{host}_{}", uuid::Uuid::new_v4())
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseNameLabel {
    name: String,
}

/// `leader_election_master_status{name="<lease>"}`: 1 while leading, 0 otherwise (client-go
/// `metrics.go` via component-base's prometheus provider, same name and help).
#[derive(Clone, Debug, Default)]
pub struct LeaderElectionMetrics {
    master_status: Family<LeaseNameLabel, Gauge>,
}

impl LeaderElectionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "leader_election_master_status",
            MASTER_STATUS_HELP,
            metrics.master_status.clone(),
        );
        metrics
    }

    /// [`Self::register`] on the process-wide registry.
    pub fn register_shared(registry: &SharedRegistry) -> Self {
        registry.with(Self::register)
    }

    /// The current value for the Lease `name` (0 when never set).
    pub fn master_status(&self, name: &str) -> i64 {
        self.master_status
            .get_or_create(&LeaseNameLabel {
                name: name.to_owned(),
            })
            .get()
    }

    fn set(&self, name: &str, leading: bool) {
        self.master_status
            .get_or_create(&LeaseNameLabel {
                name: name.to_owned(),
            })
            .set(i64::from(leading));
    }
}

// ---------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------

/// client-go `HealthzAdaptor`: the `/healthz` check named `leaderElection`. It fails when this
/// process believes it leads but has not renewed for longer than lease duration + timeout — a
/// leader that should have stopped but is stuck (kubernetes#70819); the kubelet then restarts it.
/// Healthy before the election starts, while standing by, and after a release.
#[derive(Clone, Debug)]
pub struct HealthzAdaptor {
    timeout: Duration,
    state: Arc<Mutex<Option<HealthState>>>,
}

#[derive(Clone, Debug)]
struct HealthState {
    lease: String,
    lease_duration: Duration,
    leading: bool,
    observed_at: Instant,
}

impl Default for HealthzAdaptor {
    fn default() -> Self {
        Self::new(DEFAULT_HEALTHZ_TIMEOUT)
    }
}

impl HealthzAdaptor {
    /// The check's name on `/healthz` (`/healthz/leaderElection`).
    pub const NAME: &'static str = "leaderElection";

    /// `timeout` is how long past the lease duration a leader without renewal stays healthy.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            state: Arc::new(Mutex::new(None)),
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    pub fn health_check(&self) -> Result<(), String> {
        self.check_at(Instant::now())
    }

    /// client-go `LeaderElector.Check(maxTolerableExpiredLease)`.
    fn check_at(&self, now: Instant) -> Result<(), String> {
        let state = self.lock().clone();
        match state {
            Some(state)
                if state.leading
                    && now.saturating_duration_since(state.observed_at)
                        > state.lease_duration + self.timeout =>
            {
                Err(format!(
                    "failed election to renew leadership on lease {}",
                    state.lease
                ))
            }
            _ => Ok(()),
        }
    }

    fn record(&self, state: HealthState) {
        *self.lock() = Some(state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HealthState>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// Functional core
// ---------------------------------------------------------------------------------------------

/// client-go `LeaderElectionRecord` as `LeaseLock` maps it onto a `LeaseSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Empty when nobody holds the lease (after a release): anyone may acquire it at once.
    pub holder_identity: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub lease_transitions: i32,
}

impl LeaseRecord {
    /// `LeaseSpecToLeaderElectionRecord`: absent fields read as zero values.
    pub fn from_spec(spec: &LeaseSpec) -> Self {
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            lease_transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// `LeaderElectionRecordToLeaseSpec`: writes the whole spec, so fields this record does not
    /// carry (`strategy`, `preferredHolder`) are cleared, exactly as client-go's update does.
    pub fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.lease_transitions),
            ..LeaseSpec::default()
        }
    }
}

/// A record together with the local time at which it was last seen to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub record: LeaseRecord,
    pub observed_at: Instant,
}

impl Observation {
    /// client-go `isLeaseValid`: the holder's own `leaseDurationSeconds`, counted from our
    /// observation, not from its `renewTime`.
    pub fn is_lease_valid(&self, now: Instant) -> bool {
        self.valid_until().is_none_or(|until| now < until)
    }

    /// `None` when the expiry is beyond what `Instant` can represent.
    fn valid_until(&self) -> Option<Instant> {
        let seconds = u64::try_from(self.record.lease_duration_seconds).unwrap_or(0);
        self.observed_at.checked_add(Duration::from_secs(seconds))
    }
}

/// What the candidate should do after reading the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it ourselves.
    Create(LeaseRecord),
    /// Someone else held it (or nobody, or it expired by our observation): take it over.
    Acquire(LeaseRecord),
    /// We hold it: renew.
    Renew(LeaseRecord),
    /// Another holder's lease is valid by our observation for `remaining` more.
    Wait { holder: String, remaining: Duration },
}

/// Folds a freshly read record into the previous observation. client-go restarts the clock only
/// when the record changed (`observedRawRecord` comparison): a holder that stopped renewing keeps
/// its first observation time and so expires after its lease duration.
pub fn observe(previous: Option<Observation>, fetched: LeaseRecord, now: Instant) -> Observation {
    match previous {
        Some(previous) if previous.record == fetched => previous,
        _ => Observation {
            record: fetched,
            observed_at: now,
        },
    }
}

/// client-go `tryAcquireOrRenew` after its read: `observed` is `None` when the Lease does not
/// exist; `now` is the monotonic clock that judges expiry; `wall` only goes into the record.
pub fn decide(
    observed: Option<&Observation>,
    now: Instant,
    wall: Timestamp,
    me: &str,
    lease_duration: Duration,
) -> Decision {
    let Some(observed) = observed else {
        return Decision::Create(fresh_record(me, wall, lease_duration, 0));
    };
    let record = &observed.record;
    if record.holder_identity == me {
        return Decision::Renew(renew_record(record, me, wall, lease_duration));
    }
    if !record.holder_identity.is_empty() && observed.is_lease_valid(now) {
        let remaining = observed
            .valid_until()
            .map_or(Duration::MAX, |until| until.saturating_duration_since(now));
        return Decision::Wait {
            holder: record.holder_identity.clone(),
            remaining,
        };
    }
    Decision::Acquire(fresh_record(
        me,
        wall,
        lease_duration,
        record.lease_transitions.saturating_add(1),
    ))
}

/// The record client-go writes when releasing on cancel: no holder, a 1 s lease, both times now,
/// the transitions count kept.
pub fn release_record(observed: &LeaseRecord, wall: Timestamp) -> LeaseRecord {
    LeaseRecord {
        holder_identity: String::new(),
        lease_duration_seconds: 1,
        acquire_time: Some(wall),
        renew_time: Some(wall),
        lease_transitions: observed.lease_transitions,
    }
}

/// A new term: acquire and renew time are both now.
fn fresh_record(
    me: &str,
    wall: Timestamp,
    lease_duration: Duration,
    transitions: i32,
) -> LeaseRecord {
    LeaseRecord {
        holder_identity: me.to_owned(),
        lease_duration_seconds: lease_seconds(lease_duration),
        acquire_time: Some(wall),
        renew_time: Some(wall),
        lease_transitions: transitions,
    }
}

/// The same term renewed: acquire time and transitions carried over.
fn renew_record(
    current: &LeaseRecord,
    me: &str,
    wall: Timestamp,
    lease_duration: Duration,
) -> LeaseRecord {
    LeaseRecord {
        acquire_time: current.acquire_time,
        lease_transitions: current.lease_transitions,
        ..fresh_record(me, wall, lease_duration, 0)
    }
}

/// `int(LeaseDuration / time.Second)`: whole seconds, truncated.
fn lease_seconds(lease_duration: Duration) -> i32 {
    i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX)
}

/// `wait.Jitter(period, maxFactor)` with `random` in [0, 1).
fn jittered(period: Duration, max_factor: f64, random: f64) -> Duration {
    period + period.mul_f64(random * max_factor)
}

/// Now, truncated to the microseconds a `MicroTime` keeps, so the record we remember equals the
/// one the apiserver stores.
fn wall_now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}

// ---------------------------------------------------------------------------------------------
// Imperative shell
// ---------------------------------------------------------------------------------------------

/// Runs `lead` while this process holds the Lease described by `config`.
///
/// Waits as a standby until the lease is acquired, then calls `lead` with a token that is
/// cancelled when leadership ends. Returns:
/// * `Ok(())` when `shutdown` is cancelled: before acquiring, at once; while leading, after the
///   work has stopped and the lease has been released (client-go `ReleaseOnCancel`);
/// * `Ok(())` when `lead` returns by itself, after releasing the lease (so a standby takes over
///   without waiting a lease duration);
/// * `Err(LeaseLost)` when renewing failed for the renew deadline, after cancelling the work and
///   waiting (bounded) for it to stop; the process should exit non-zero.
///
/// With `--leader-elect=false` `lead` runs at once with a child of `shutdown`, and no Lease is
/// touched.
pub async fn run<F, Fut>(
    client: kube::Client,
    config: LeaderElectionConfig,
    metrics: LeaderElectionMetrics,
    shutdown: CancellationToken,
    lead: F,
) -> Result<(), LeaderElectionError>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !config.leader_elect {
        let work = tokio::spawn(lead(shutdown.child_token()));
        return work_result(work.await);
    }
    config.validate()?;

    let mut elector = Elector::new(client, config, metrics);
    // NewLeaderElector reports "not leading" from the start.
    elector.set_leading_metric(false);
    if !elector.acquire(&shutdown).await {
        return Ok(());
    }

    let work_token = shutdown.child_token();
    let mut work = tokio::spawn(lead(work_token.clone()));
    let ending = elector.renew(&shutdown, &mut work).await;
    elector.set_leading_metric(false);
    let desc = elector.config.describe();
    match ending {
        Ending::Shutdown => {
            info!("shutting down: stopping the work before releasing lease {desc}");
            work_token.cancel();
            let joined = work.await;
            elector.release().await;
            work_result(joined)
        }
        Ending::WorkEnded(joined) => {
            info!("the work ended by itself: releasing lease {desc}");
            // Whatever it left running must stop too.
            work_token.cancel();
            elector.release().await;
            work_result(joined)
        }
        Ending::Lost => {
            error!("leaderelection lost: stopping the work (lease {desc})");
            work_token.cancel();
            // Our last renewal was at least retry period + renew deadline ago, and a standby
            // takes over once lease duration has passed since it saw that renewal: past that
            // margin, waiting for a stuck work only prolongs two leaders acting at once, so it
            // is aborted (the process is about to exit anyway).
            let config = &elector.config;
            let grace = config
                .lease_duration
                .saturating_sub(config.renew_deadline)
                .saturating_sub(config.retry_period);
            if timeout(grace, &mut work).await.is_err() {
                warn!(
                    "the work did not stop within {grace:?} after losing lease {desc}; aborting it"
                );
                work.abort();
            }
            Err(LeaderElectionError::LeaseLost)
        }
    }
}

fn work_result(joined: Result<(), JoinError>) -> Result<(), LeaderElectionError> {
    match joined {
        Ok(()) => Ok(()),
        Err(e) if e.is_panic() => Err(LeaderElectionError::LeadPanicked(e.to_string())),
        // Cancelled: only we abort it, and only on the lease-lost path.
        Err(_) => Ok(()),
    }
}

enum Ending {
    Shutdown,
    Lost,
    WorkEnded(Result<(), JoinError>),
}

enum Attempt {
    /// We hold the lease (created, acquired or renewed).
    Held,
    /// Another candidate holds a lease that is valid by our observation.
    HeldByOther(String),
    /// The API call failed or lost a race; retry.
    Failed,
}

/// client-go `LeaderElector` with a `LeaseLock`.
struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    metrics: LeaderElectionMetrics,
    observed: Option<Observation>,
    /// The Lease as last read or written: its `resourceVersion` is the write precondition.
    lease: Option<Lease>,
    reported_leader: String,
}

impl Elector {
    fn new(
        client: kube::Client,
        config: LeaderElectionConfig,
        metrics: LeaderElectionMetrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            metrics,
            observed: None,
            lease: None,
            reported_leader: String::new(),
        }
    }

    fn me(&self) -> &str {
        &self.config.identity
    }

    fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.record.holder_identity == self.config.identity)
    }

    fn set_leading_metric(&self, leading: bool) {
        self.metrics.set(&self.config.name, leading);
    }

    /// client-go `acquire`: `wait.JitterUntil(tryAcquireOrRenew, retry, 1.2, sliding)`. Each
    /// attempt is bounded by the renew deadline, the timeout kube-scheduler and
    /// kube-controller-manager give their leader election client. False when shut down first.
    async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        let desc = self.config.describe();
        info!("attempting to acquire leader lease {desc}...");
        loop {
            let attempt = timeout(self.config.renew_deadline, self.try_acquire_or_renew());
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                result = attempt => result,
            };
            self.maybe_report_transition();
            match result {
                Ok(Attempt::Held) => {
                    self.set_leading_metric(true);
                    info!("successfully acquired lease {desc}");
                    return true;
                }
                Ok(Attempt::HeldByOther(_) | Attempt::Failed) => {
                    debug!("failed to acquire lease {desc}");
                }
                Err(_) => warn!(
                    "acquiring lease {desc} timed out after {:?}",
                    self.config.renew_deadline
                ),
            }
            let wait = jittered(self.config.retry_period, JITTER_FACTOR, rand::random());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = sleep(wait) => {}
            }
        }
    }

    /// client-go `renew`: every retry period, retry renewing (every retry period) until it
    /// succeeds or the renew deadline passes. client-go renews once right after acquiring; that
    /// write carries nothing new, so this starts with the wait.
    async fn renew(&mut self, shutdown: &CancellationToken, work: &mut JoinHandle<()>) -> Ending {
        let desc = self.config.describe();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ending::Shutdown,
                joined = &mut *work => return Ending::WorkEnded(joined),
                () = sleep(self.config.retry_period) => {}
            }
            let deadline = Instant::now() + self.config.renew_deadline;
            loop {
                // The whole attempt (fast-path write, or read + write) must finish before the
                // deadline, like client-go's timeoutCtx around PollImmediateUntil.
                let attempt = timeout_at(deadline, self.try_acquire_or_renew());
                let result = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ending::Shutdown,
                    joined = &mut *work => return Ending::WorkEnded(joined),
                    result = attempt => result,
                };
                self.maybe_report_transition();
                match result {
                    Ok(Attempt::Held) => {
                        debug!("successfully renewed lease {desc}");
                        break;
                    }
                    Ok(Attempt::HeldByOther(holder)) => {
                        // client-go keeps retrying until the deadline here, but a valid lease
                        // held by someone else cannot become ours before the deadline passes
                        // (renew deadline < lease duration): stop acting now rather than later.
                        error!("lease {desc} is now held by {holder}");
                        return Ending::Lost;
                    }
                    Ok(Attempt::Failed) => {}
                    Err(_) => warn!("renewing lease {desc} timed out"),
                }
                let now = Instant::now();
                if now >= deadline {
                    error!(
                        "failed to renew lease {desc}: not renewed within {:?}",
                        self.config.renew_deadline
                    );
                    return Ending::Lost;
                }
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ending::Shutdown,
                    joined = &mut *work => return Ending::WorkEnded(joined),
                    () = sleep_until((now + self.config.retry_period).min(deadline)) => {}
                }
            }
        }
    }

    /// client-go `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let desc = self.config.describe();
        let lease_duration = self.config.lease_duration;

        // 1. Fast path: the leader writes over the object it last wrote, without reading first.
        if let (Some(observed), Some(lease)) = (&self.observed, &self.lease)
            && observed.record.holder_identity == self.config.identity
            && observed.is_lease_valid(Instant::now())
        {
            let record = renew_record(&observed.record, self.me(), wall_now(), lease_duration);
            match self.replace(lease, &record).await {
                Ok(written) => {
                    self.set_observed(record, written);
                    return Attempt::Held;
                }
                Err(e) => warn!(
                    "failed to update lease {desc} optimistically, falling back to slow path: {e}"
                ),
            }
        }

        // 2. Read, or create when absent.
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(current) => current,
            Err(e) => {
                error!("error retrieving resource lock {desc}: {e}");
                return Attempt::Failed;
            }
        };
        let now = Instant::now();
        let wall = wall_now();
        let Some(current) = current else {
            let record = fresh_record(self.me(), wall, lease_duration, 0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(record.to_spec()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.set_observed(record, created);
                    Attempt::Held
                }
                Err(e) => {
                    // AlreadyExists: another candidate created it first.
                    error!("error initially creating leader election record {desc}: {e}");
                    Attempt::Failed
                }
            };
        };

        // 3. Judge the record by when we saw it change.
        let fetched = LeaseRecord::from_spec(&current.spec.clone().unwrap_or_default());
        self.observed = Some(observe(self.observed.take(), fetched, now));
        self.publish_health();
        let decision = decide(self.observed.as_ref(), now, wall, self.me(), lease_duration);
        let record = match decision {
            Decision::Wait { holder, remaining } => {
                debug!(
                    "lock {desc} is held by {holder} and has not yet expired ({remaining:?} left)"
                );
                self.lease = Some(current);
                return Attempt::HeldByOther(holder);
            }
            Decision::Create(record) | Decision::Acquire(record) | Decision::Renew(record) => {
                record
            }
        };

        // 4. Write with the resourceVersion just read: a conflict means another candidate won.
        let result = self.replace(&current, &record).await;
        self.lease = Some(current);
        match result {
            Ok(written) => {
                self.set_observed(record, written);
                Attempt::Held
            }
            Err(e) => {
                error!("failed to update lock {desc}: {e}");
                Attempt::Failed
            }
        }
    }

    /// PUT `record` as the spec of `base`, with `base`'s `resourceVersion` as precondition.
    async fn replace(&self, base: &Lease, record: &LeaseRecord) -> Result<Lease, kube::Error> {
        let lease = Lease {
            metadata: base.metadata.clone(),
            spec: Some(record.to_spec()),
        };
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
    }

    /// client-go `setObservedRecord` after our own successful write.
    fn set_observed(&mut self, record: LeaseRecord, written: Lease) {
        self.observed = Some(Observation {
            record,
            observed_at: Instant::now(),
        });
        self.lease = Some(written);
        self.publish_health();
    }

    fn publish_health(&self) {
        if let Some(observed) = &self.observed {
            self.config.healthz.record(HealthState {
                lease: self.config.name.clone(),
                lease_duration: self.config.lease_duration,
                leading: observed.record.holder_identity == self.config.identity,
                observed_at: observed.observed_at,
            });
        }
    }

    /// client-go `maybeReportTransition` (its `OnNewLeader` callback, as a log line).
    fn maybe_report_transition(&mut self) {
        let Some(observed) = &self.observed else {
            return;
        };
        if observed.record.holder_identity == self.reported_leader {
            return;
        }
        self.reported_leader = observed.record.holder_identity.clone();
        if self.reported_leader.is_empty() {
            info!("lease {} has no holder", self.config.describe());
        } else {
            info!("new leader elected: {}", self.reported_leader);
        }
    }

    /// client-go `release`, bounded by the renew deadline.
    async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        let desc = self.config.describe();
        match timeout(self.config.renew_deadline, self.try_release()).await {
            Ok(Ok(())) => info!("released lease {desc}"),
            Ok(Err(e)) => error!("failed to release lock {desc}: {e}"),
            Err(_) => error!(
                "failed to release lock {desc}: timed out after {:?}",
                self.config.renew_deadline
            ),
        }
    }

    async fn try_release(&mut self) -> Result<(), kube::Error> {
        let Some(observed) = &self.observed else {
            return Ok(());
        };
        let record = release_record(&observed.record, wall_now());
        if let Some(lease) = &self.lease {
            match self.replace(lease, &record).await {
                Ok(written) => {
                    self.set_observed(record, written);
                    return Ok(());
                }
                // A renewal abandoned at shutdown may have landed after all: re-read below.
                Err(kube::Error::Api(status)) if status.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|spec| spec.holder_identity.as_deref())
            .unwrap_or_default();
        if holder != self.config.identity {
            // Someone else holds it now; it is not ours to release.
            return Ok(());
        }
        let written = self.replace(&current, &record).await?;
        self.set_observed(record, written);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const ME: &str = "me_1";
    const OTHER: &str = "other_2";

    fn wall(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid timestamp")
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn held_by(holder: &str, renewed_at: Timestamp, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder_identity: holder.to_owned(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(-100)),
            renew_time: Some(renewed_at),
            lease_transitions: transitions,
        }
    }

    fn seen(record: LeaseRecord, at: Instant) -> Observation {
        Observation {
            record,
            observed_at: at,
        }
    }

    // --- decide ---------------------------------------------------------------------------

    #[test]
    fn a_missing_lease_is_created_with_us_as_holder_and_zero_transitions() {
        let now = Instant::now();
        let decision = decide(None, now, wall(0), ME, secs(15));
        assert_eq!(
            decision,
            Decision::Create(LeaseRecord {
                holder_identity: ME.to_owned(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(0)),
                renew_time: Some(wall(0)),
                lease_transitions: 0,
            })
        );
    }

    #[test]
    fn a_free_lease_whose_holder_expired_is_acquired() {
        let t0 = Instant::now();
        let observed = seen(held_by(OTHER, wall(0), 3), t0);
        let decision = decide(Some(&observed), t0 + secs(15), wall(15), ME, secs(15));
        assert_eq!(
            decision,
            Decision::Acquire(LeaseRecord {
                holder_identity: ME.to_owned(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(15)),
                renew_time: Some(wall(15)),
                lease_transitions: 4,
            })
        );
    }

    #[test]
    fn a_lease_held_by_another_is_respected_until_the_observed_duration_elapses() {
        let t0 = Instant::now();
        let observed = seen(held_by(OTHER, wall(0), 0), t0);
        for elapsed in [0, 1, 10, 14] {
            assert_eq!(
                decide(Some(&observed), t0 + secs(elapsed), wall(0), ME, secs(15)),
                Decision::Wait {
                    holder: OTHER.to_owned(),
                    remaining: secs(15 - elapsed),
                },
                "after {elapsed}s"
            );
        }
        let just_before = t0 + secs(15) - Duration::from_nanos(1);
        assert!(matches!(
            decide(Some(&observed), just_before, wall(0), ME, secs(15)),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(Some(&observed), t0 + secs(15), wall(0), ME, secs(15)),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn an_old_renew_time_in_the_record_does_not_shorten_the_wait() {
        // The holder's clock may be behind ours, or it renewed long ago by its own clock: only
        // our observation counts, so a fresh candidate waits a whole lease duration.
        let t0 = Instant::now();
        let ancient = Timestamp::from_second(946_684_800).expect("valid timestamp"); // year 2000
        let observed = seen(held_by(OTHER, ancient, 0), t0);
        assert!(matches!(
            decide(Some(&observed), t0 + secs(14), wall(0), ME, secs(15)),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_renew_time_in_the_future_does_not_lengthen_the_wait() {
        let t0 = Instant::now();
        let observed = seen(held_by(OTHER, wall(3600), 0), t0);
        assert!(matches!(
            decide(Some(&observed), t0 + secs(15), wall(0), ME, secs(15)),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn the_holders_lease_duration_counts_not_ours() {
        let t0 = Instant::now();
        let mut record = held_by(OTHER, wall(0), 0);
        record.lease_duration_seconds = 60;
        let observed = seen(record, t0);
        assert!(matches!(
            decide(Some(&observed), t0 + secs(59), wall(0), ME, secs(15)),
            Decision::Wait { .. }
        ));
        assert!(matches!(
            decide(Some(&observed), t0 + secs(60), wall(0), ME, secs(15)),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn a_record_without_lease_duration_is_expired_at_once() {
        let t0 = Instant::now();
        let mut record = held_by(OTHER, wall(0), 0);
        record.lease_duration_seconds = 0;
        assert!(matches!(
            decide(Some(&seen(record, t0)), t0, wall(0), ME, secs(15)),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let observed = seen(held_by(ME, wall(0), 7), t0);
        assert_eq!(
            decide(Some(&observed), t0 + secs(2), wall(2), ME, secs(15)),
            Decision::Renew(LeaseRecord {
                holder_identity: ME.to_owned(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(-100)),
                renew_time: Some(wall(2)),
                lease_transitions: 7,
            })
        );
    }

    #[test]
    fn our_own_lease_is_renewed_even_after_its_observed_duration_elapsed() {
        let t0 = Instant::now();
        let observed = seen(held_by(ME, wall(0), 1), t0);
        assert!(matches!(
            decide(Some(&observed), t0 + secs(60), wall(60), ME, secs(15)),
            Decision::Renew(_)
        ));
    }

    #[test]
    fn an_empty_holder_identity_is_acquirable_at_once() {
        let t0 = Instant::now();
        let released = release_record(&held_by(OTHER, wall(0), 5), wall(1));
        let decision = decide(Some(&seen(released, t0)), t0, wall(1), ME, secs(15));
        assert_eq!(
            decision,
            Decision::Acquire(LeaseRecord {
                holder_identity: ME.to_owned(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(1)),
                renew_time: Some(wall(1)),
                lease_transitions: 6,
            })
        );
    }

    #[test]
    fn lease_transitions_increment_only_when_the_holder_changes() {
        let t0 = Instant::now();
        let transitions = |decision: Decision| match decision {
            Decision::Create(r) | Decision::Acquire(r) | Decision::Renew(r) => r.lease_transitions,
            Decision::Wait { .. } => panic!("unexpected wait"),
        };
        let ours = seen(held_by(ME, wall(0), 2), t0);
        assert_eq!(
            transitions(decide(Some(&ours), t0, wall(1), ME, secs(15))),
            2
        );
        let theirs = seen(held_by(OTHER, wall(0), 2), t0);
        assert_eq!(
            transitions(decide(Some(&theirs), t0 + secs(15), wall(1), ME, secs(15))),
            3
        );
        assert_eq!(transitions(decide(None, t0, wall(1), ME, secs(15))), 0);
    }

    #[test]
    fn lease_duration_seconds_truncate_like_go() {
        let t0 = Instant::now();
        let record = |d: Duration| match decide(None, t0, wall(0), ME, d) {
            Decision::Create(r) => r.lease_duration_seconds,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(record(Duration::from_millis(15_999)), 15);
        assert_eq!(record(Duration::from_millis(500)), 0);
        assert_eq!(record(secs(90)), 90);
    }

    // --- observe --------------------------------------------------------------------------

    #[test]
    fn an_unchanged_record_keeps_its_first_observation_time() {
        let t0 = Instant::now();
        let first = observe(None, held_by(OTHER, wall(0), 0), t0);
        let again = observe(
            Some(first.clone()),
            held_by(OTHER, wall(0), 0),
            t0 + secs(10),
        );
        assert_eq!(again.observed_at, t0);
        assert!(matches!(
            decide(Some(&again), t0 + secs(15), wall(15), ME, secs(15)),
            Decision::Acquire(_)
        ));
    }

    #[test]
    fn a_changed_record_restarts_the_observed_duration() {
        let t0 = Instant::now();
        let first = observe(None, held_by(OTHER, wall(0), 0), t0);
        let renewed = observe(Some(first), held_by(OTHER, wall(2), 0), t0 + secs(10));
        assert_eq!(renewed.observed_at, t0 + secs(10));
        assert!(matches!(
            decide(Some(&renewed), t0 + secs(24), wall(24), ME, secs(15)),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn the_first_read_starts_the_observed_duration_whatever_the_record_says() {
        let t0 = Instant::now();
        let first = observe(None, held_by(OTHER, wall(-3600), 0), t0);
        assert_eq!(first.observed_at, t0);
    }

    // --- release and the Lease shape --------------------------------------------------------

    #[test]
    fn the_release_record_clears_the_holder_and_keeps_transitions() {
        let released = release_record(&held_by(ME, wall(0), 4), wall(9));
        assert_eq!(
            released,
            LeaseRecord {
                holder_identity: String::new(),
                lease_duration_seconds: 1,
                acquire_time: Some(wall(9)),
                renew_time: Some(wall(9)),
                lease_transitions: 4,
            }
        );
        let spec = serde_json::to_value(released.to_spec()).expect("serializable");
        assert_eq!(spec["holderIdentity"], "");
        assert_eq!(spec["leaseDurationSeconds"], 1);
    }

    #[test]
    fn records_are_written_as_lease_lock_writes_them() {
        let acquired = Timestamp::from_microsecond(1_700_000_000_123_456).expect("valid");
        let record = LeaseRecord {
            holder_identity: ME.to_owned(),
            lease_duration_seconds: 15,
            acquire_time: Some(acquired),
            renew_time: Some(wall(5)),
            lease_transitions: 2,
        };
        let spec = serde_json::to_value(record.to_spec()).expect("serializable");
        assert_eq!(
            spec,
            serde_json::json!({
                "holderIdentity": ME,
                "leaseDurationSeconds": 15,
                "acquireTime": "2023-11-14T22:13:20.123456Z",
                "renewTime": "2023-11-14T22:13:25.000000Z",
                "leaseTransitions": 2,
            })
        );
    }

    #[test]
    fn writing_a_record_clears_strategy_and_preferred_holder_like_client_go() {
        let spec = LeaseSpec {
            holder_identity: Some(OTHER.to_owned()),
            preferred_holder: Some("someone".to_owned()),
            strategy: Some("OldestEmulationVersion".to_owned()),
            ..LeaseSpec::default()
        };
        let written = LeaseRecord::from_spec(&spec).to_spec();
        assert_eq!(written.preferred_holder, None);
        assert_eq!(written.strategy, None);
    }

    #[test]
    fn an_empty_spec_reads_as_zero_values() {
        assert_eq!(
            LeaseRecord::from_spec(&LeaseSpec::default()),
            LeaseRecord::default()
        );
    }

    // --- health -----------------------------------------------------------------------------

    fn health_with(leading: bool, observed_at: Instant) -> HealthzAdaptor {
        let adaptor = HealthzAdaptor::default();
        adaptor.record(HealthState {
            lease: "ferrite-scheduler".to_owned(),
            lease_duration: secs(15),
            leading,
            observed_at,
        });
        adaptor
    }

    #[test]
    fn health_is_ok_before_the_election_starts() {
        let adaptor = HealthzAdaptor::default();
        assert_eq!(adaptor.name(), "leaderElection");
        assert_eq!(adaptor.check_at(Instant::now() + secs(3600)), Ok(()));
    }

    #[test]
    fn health_is_ok_while_standing_by_however_long() {
        let t0 = Instant::now();
        assert_eq!(health_with(false, t0).check_at(t0 + secs(3600)), Ok(()));
    }

    #[test]
    fn health_is_ok_for_a_leader_until_lease_duration_plus_timeout_without_renewal() {
        let t0 = Instant::now();
        assert_eq!(health_with(true, t0).check_at(t0 + secs(35)), Ok(()));
    }

    #[test]
    fn health_fails_for_a_leader_that_has_not_renewed_beyond_lease_duration_plus_timeout() {
        let t0 = Instant::now();
        assert_eq!(
            health_with(true, t0).check_at(t0 + secs(35) + Duration::from_millis(1)),
            Err("failed election to renew leadership on lease ferrite-scheduler".to_owned())
        );
    }

    // --- timing -----------------------------------------------------------------------------

    #[test]
    fn acquire_retries_wait_between_one_and_two_point_two_retry_periods() {
        assert_eq!(jittered(secs(2), JITTER_FACTOR, 0.0), secs(2));
        assert_eq!(
            jittered(secs(2), JITTER_FACTOR, 0.5),
            Duration::from_millis(3200)
        );
        assert!(jittered(secs(2), JITTER_FACTOR, 0.999_999) < Duration::from_millis(4400));
    }

    #[test]
    fn wall_time_is_kept_to_the_microseconds_a_micro_time_stores() {
        assert_eq!(wall_now().subsec_nanosecond() % 1_000, 0);
    }

    // --- metrics ----------------------------------------------------------------------------

    #[test]
    fn master_status_is_exported_with_the_upstream_name_and_lease_label() {
        let mut registry = Registry::default();
        let metrics = LeaderElectionMetrics::register(&mut registry);
        metrics.set("ferrite-scheduler", true);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("leader_election_master_status{name=\"ferrite-scheduler\"} 1"),
            "{text}"
        );
        metrics.set("ferrite-scheduler", false);
        assert_eq!(metrics.master_status("ferrite-scheduler"), 0);
    }

    #[test]
    fn master_status_can_be_registered_on_the_shared_registry() {
        let shared = SharedRegistry::default();
        let metrics = LeaderElectionMetrics::register_shared(&shared);
        metrics.set("ferrite-controller-manager", false);
        assert!(
            shared
                .encode()
                .contains("leader_election_master_status{name=\"ferrite-controller-manager\"} 0")
        );
    }

    // --- options ----------------------------------------------------------------------------

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        leader_election: LeaderElectionOptions,
    }

    fn parse(args: &[&str]) -> Result<LeaderElectionOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("ferrite").chain(args.iter().copied()))
            .map(|cli| cli.leader_election)
    }

    fn options(args: &[&str]) -> LeaderElectionOptions {
        parse(args).expect("flags parse")
    }

    fn config_error(args: &[&str]) -> OptionsError {
        match options(args).into_config("ferrite-scheduler") {
            Err(LeaderElectionError::InvalidOptions(e)) => e,
            other => panic!("expected an options error, got {other:?}"),
        }
    }

    #[test]
    fn flag_defaults_match_upstream() {
        assert_eq!(options(&[]), LeaderElectionOptions::default());
        let config = options(&[])
            .into_config("ferrite-scheduler")
            .expect("defaults are valid");
        assert!(config.leader_elect);
        assert_eq!(config.lease_duration, secs(15));
        assert_eq!(config.renew_deadline, secs(10));
        assert_eq!(config.retry_period, secs(2));
        assert_eq!(config.namespace, "kube-system");
        assert_eq!(config.name, "ferrite-scheduler");
        assert_eq!(config.describe(), "kube-system/ferrite-scheduler");
    }

    #[test]
    fn leader_elect_false_is_accepted_with_an_equals_sign() {
        assert!(!options(&["--leader-elect=false"]).leader_elect);
        assert!(options(&["--leader-elect=true"]).leader_elect);
        assert!(!options(&["--leader-elect=0"]).leader_elect);
        assert!(options(&["--leader-elect"]).leader_elect);
        assert!(parse(&["--leader-elect=maybe"]).is_err());
    }

    #[test]
    fn durations_accept_go_syntax() {
        let parsed = options(&[
            "--leader-elect-lease-duration=1m30s",
            "--leader-elect-renew-deadline",
            "1m",
            "--leader-elect-retry-period=500ms",
        ]);
        assert_eq!(parsed.lease_duration, secs(90));
        assert_eq!(parsed.renew_deadline, secs(60));
        assert_eq!(parsed.retry_period, Duration::from_millis(500));
        assert!(parsed.into_config("x").is_ok());
    }

    #[test]
    fn a_malformed_or_negative_duration_flag_is_refused() {
        assert!(parse(&["--leader-elect-lease-duration=15"]).is_err());
        assert!(parse(&["--leader-elect-lease-duration=1d"]).is_err());
        assert!(parse(&["--leader-elect-lease-duration=-15s"]).is_err());
    }

    #[test]
    fn the_component_supplies_the_default_lease_name_and_the_flag_overrides_it() {
        let config = options(&[])
            .into_config("ferrite-controller-manager")
            .expect("valid");
        assert_eq!(config.name, "ferrite-controller-manager");
        let config = options(&["--leader-elect-resource-name=kube-controller-manager"])
            .into_config("ferrite-controller-manager")
            .expect("valid");
        assert_eq!(config.name, "kube-controller-manager");
    }

    #[test]
    fn the_default_identity_is_hostname_underscore_uuid() {
        let identity = default_identity();
        let (host, id) = identity.rsplit_once('_').expect("has an underscore");
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{identity}");
        assert_ne!(default_identity(), identity);
    }

    #[test]
    fn renew_deadline_must_be_below_lease_duration() {
        assert_eq!(
            config_error(&["--leader-elect-renew-deadline=15s"]),
            OptionsError::LeaseDurationNotAboveRenewDeadline {
                lease_duration: secs(15),
                renew_deadline: secs(15),
            }
        );
    }

    #[test]
    fn renew_deadline_must_exceed_retry_period_times_jitter() {
        // 10s is not above 9s × 1.2 = 10.8s, although it is above 9s.
        let error = config_error(&["--leader-elect-retry-period=9s"]);
        assert_eq!(
            error,
            OptionsError::RenewDeadlineNotAboveJitteredRetryPeriod {
                renew_deadline: secs(10),
                retry_period: secs(9),
            }
        );
        assert!(error.to_string().contains("jitter factor 1.2"), "{error}");
        assert!(
            options(&["--leader-elect-retry-period=8s"])
                .into_config("x")
                .is_ok()
        );
    }

    #[test]
    fn zero_durations_are_refused() {
        assert_eq!(
            config_error(&["--leader-elect-retry-period=0"]),
            OptionsError::NotPositive {
                flag: "leader-elect-retry-period",
                value: Duration::ZERO,
            }
        );
        assert!(matches!(
            config_error(&["--leader-elect-lease-duration=0s"]),
            OptionsError::NotPositive {
                flag: "leader-elect-lease-duration",
                ..
            }
        ));
    }

    #[test]
    fn a_resource_lock_other_than_leases_is_a_clear_error() {
        let error = config_error(&["--leader-elect-resource-lock=endpoints"]);
        assert_eq!(
            error,
            OptionsError::UnsupportedResourceLock("endpoints".to_owned())
        );
        assert!(
            error.to_string().contains("only supports \"leases\""),
            "{error}"
        );
    }

    #[test]
    fn empty_names_are_refused() {
        assert_eq!(
            config_error(&["--leader-elect-resource-namespace="]),
            OptionsError::Empty {
                flag: "leader-elect-resource-namespace"
            }
        );
        assert_eq!(
            config_error(&["--leader-elect-resource-name="]),
            OptionsError::Empty {
                flag: "leader-elect-resource-name"
            }
        );
        let config = LeaderElectionConfig::new("kube-system", "x").with_identity("");
        assert_eq!(config.validate(), Err(OptionsError::EmptyIdentity));
    }

    #[test]
    fn nothing_is_validated_when_leader_election_is_disabled() {
        let config = options(&[
            "--leader-elect=false",
            "--leader-elect-resource-lock=configmaps",
            "--leader-elect-renew-deadline=1h",
        ])
        .into_config("x")
        .expect("disabled election is not validated");
        assert!(!config.leader_elect);
    }

    // --- the shell, without an apiserver ---------------------------------------------------

    /// A client whose every request fails, counting them: these tests only cover the paths
    /// that must not depend on the apiserver (the e2e test bed covers the real ones).
    fn unreachable_client() -> (kube::Client, Arc<std::sync::atomic::AtomicUsize>) {
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let service = tower::service_fn(move |_request: http::Request<kube::client::Body>| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Err::<http::Response<kube::client::Body>, _>(std::io::Error::other(
                    "no apiserver in unit tests",
                ))
            }
        });
        (kube::Client::new(service, "default"), requests)
    }

    #[tokio::test]
    async fn with_leader_election_disabled_the_work_runs_without_any_lease() {
        let (client, requests) = unreachable_client();
        let mut config = LeaderElectionConfig::new("kube-system", "ferrite-scheduler");
        config.leader_elect = false;
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let result = run(
            client,
            config,
            LeaderElectionMetrics::default(),
            CancellationToken::new(),
            move |_token: CancellationToken| async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_panicking_work_is_reported_as_an_error() {
        let (client, _) = unreachable_client();
        let mut config = LeaderElectionConfig::new("kube-system", "ferrite-scheduler");
        config.leader_elect = false;
        let result = run(
            client,
            config,
            LeaderElectionMetrics::default(),
            CancellationToken::new(),
            |_token: CancellationToken| async { panic!("work failed") },
        )
        .await;
        assert!(
            matches!(result, Err(LeaderElectionError::LeadPanicked(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn invalid_timings_are_refused_before_any_api_call() {
        let (client, requests) = unreachable_client();
        let mut config = LeaderElectionConfig::new("kube-system", "ferrite-scheduler");
        config.renew_deadline = secs(20);
        let result = run(
            client,
            config,
            LeaderElectionMetrics::default(),
            CancellationToken::new(),
            |_token: CancellationToken| async {},
        )
        .await;
        assert!(
            matches!(
                result,
                Err(LeaderElectionError::InvalidOptions(
                    OptionsError::LeaseDurationNotAboveRenewDeadline { .. }
                ))
            ),
            "{result:?}"
        );
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_keeps_retrying_and_shuts_down_cleanly_without_leading() {
        let (client, requests) = unreachable_client();
        let config =
            LeaderElectionConfig::new("kube-system", "ferrite-scheduler").with_identity(ME);
        let health = config.healthz.clone();
        let metrics = LeaderElectionMetrics::default();
        let shutdown = CancellationToken::new();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            sleep(secs(60)).await;
            stopper.cancel();
        });
        let result = run(
            client,
            config,
            metrics.clone(),
            shutdown,
            |_token: CancellationToken| async { panic!("must not lead") },
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        // One read per attempt, every 2 s to 4.4 s over 60 s.
        let attempts = requests.load(std::sync::atomic::Ordering::SeqCst);
        assert!((14..=31).contains(&attempts), "{attempts} attempts");
        assert_eq!(metrics.master_status("ferrite-scheduler"), 0);
        assert_eq!(health.health_check(), Ok(()));
    }

    // --- Go durations -----------------------------------------------------------------------
}
