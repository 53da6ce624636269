//! core/v1 Event recording with client-go `tools/record` semantics.
//!
//! kube-controller-manager's controllers report through client-go's `record` package
//! (`staging/src/k8s.io/client-go/tools/record/event.go`): an emitter builds a core/v1 `Event`,
//! hands it to a broadcaster without blocking, and one background sender passes it through the
//! `EventCorrelator` (`tools/record/events_cache.go`) before creating it, or patching the
//! existing one, on the apiserver. Ferrite mirrors that pipeline so `kubectl describe` and
//! `kubectl get events` read the same as with the stock controller manager.
//!
//! * [`EventRecorder`] is the emitter (cheap to clone, never blocks, never fails the caller).
//! * [`EventCorrelator`] is the pure core: aggregation, de-duplication and the spam filter,
//!   driven by an injected [`Clock`] so it is tested without an apiserver.
//! * A sender task owns the correlator and writes through the apiserver, retrying like
//!   client-go's `recordToSink`.
//!
//! Where this differs from upstream on purpose, the code says so next to the difference.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::Status;
use lru::LruCache;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events queued between emitters and the sender before new ones are dropped
/// (`maxQueuedEvents` in `tools/record/event.go`).
pub const MAX_QUEUED_EVENTS: usize = 1000;

/// Write attempts per event before giving up (`maxTriesPerEvent` in `tools/record/event.go`).
pub const MAX_TRIES_PER_EVENT: u32 = 12;

/// Pause between write attempts (`defaultSleepDuration` in `tools/record/event.go`).
pub const DEFAULT_SLEEP_DURATION: Duration = Duration::from_secs(10);

/// Size of each of the correlator's LRU caches (`maxLruCacheEntries` in `events_cache.go`).
pub const MAX_LRU_CACHE_ENTRIES: usize = 4096;

/// Distinct messages for one source/object/type/reason within [`DEFAULT_AGGREGATE_INTERVAL`]
/// after which events are combined (`defaultAggregateMaxEvents` in `events_cache.go`).
pub const DEFAULT_AGGREGATE_MAX_EVENTS: usize = 10;

/// Quiet period after which a similar event starts a new aggregation window
/// (`defaultAggregateIntervalInSeconds` in `events_cache.go`).
pub const DEFAULT_AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);

/// Events one source may send about one object in a burst (`defaultSpamBurst`).
pub const DEFAULT_SPAM_BURST: u32 = 25;

/// One token comes back per this interval (`defaultSpamQPS = 1/300` in `events_cache.go`).
/// Kept as an interval rather than a float rate so that exactly five minutes refills exactly
/// one token; upstream's `float32(1/300)` rounds very slightly above that.
pub const DEFAULT_SPAM_REFILL_INTERVAL: Duration = Duration::from_secs(300);

/// Prefix of an aggregated event's message (`EventAggregatorByReasonMessageFunc`).
pub const AGGREGATED_MESSAGE_PREFIX: &str = "(combined from similar events): ";

/// Namespace for events about cluster-scoped objects (`makeEvent` uses
/// `metav1.NamespaceDefault`).
const DEFAULT_EVENT_NAMESPACE: &str = "default";

/// Upper bound on one create/patch call, so a hung connection cannot stall the sender forever;
/// a timed-out write is retried like a transport error.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a full queue is reported; upstream logs every dropped event, which floods the log
/// exactly when the process is already overloaded.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Event types accepted by the apiserver (`util.ValidateEventType`: `Normal` or `Warning`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Source of "now" for the correlator (upstream injects `clock.PassiveClock`).
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Errors from writing an event to the apiserver. They never reach emitters; the sender logs
/// them and decides whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("event write timed out after {0:?}")]
    Timeout(Duration),
    #[error("event has no name to patch")]
    Unnamed,
}

impl EventError {
    fn status(&self) -> Option<&Status> {
        match self {
            EventError::Kube(kube::Error::Api(status)) => Some(status),
            _ => None,
        }
    }

    /// `util.IsKeyNotFoundError`: the server answered 404.
    fn is_not_found(&self) -> bool {
        self.status()
            .is_some_and(|s| s.code == 404 || s.is_not_found())
    }

    /// `recordEvent` retries transport failures but abandons events the server rejected
    /// (`*errors.StatusError`) or that cannot even be put into a request
    /// (`RequestConstructionError`): sending them again would fail the same way.
    fn is_retriable(&self) -> bool {
        match self {
            EventError::Kube(kube::Error::Api(_) | kube::Error::BuildRequest(_)) => false,
            EventError::Unnamed => false,
            EventError::Kube(_) | EventError::Timeout(_) => true,
        }
    }

    /// Rejections upstream logs only at V(5): the event already exists, or its namespace is
    /// being deleted (`v1.NamespaceTerminatingCause`).
    fn is_expected_rejection(&self) -> bool {
        self.status().is_some_and(|s| {
            s.is_already_exists()
                || s.details
                    .as_ref()
                    .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
        })
    }
}

/// Builds the reference client-go's `ref.GetReference` puts in `involvedObject`: apiVersion,
/// kind, name, namespace, uid and resourceVersion of the object.
pub fn object_reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        resource_version: obj.meta().resource_version.clone(),
        ..obj.object_ref(&())
    }
}

/// `util.GenerateEventName`: `<object name>.<unix nanos in hex>`, or a random UUID when that is
/// not a valid DNS subdomain (e.g. RBAC names with `:`; kubernetes/kubernetes#127594).
pub fn generate_event_name(object_name: &str, now: Timestamp) -> String {
    // Go formats the signed int64 with %x; times before 1970 do not occur for events.
    let nanos = u128::try_from(now.as_nanosecond()).unwrap_or(0);
    let name = format!("{object_name}.{nanos:x}");
    if is_dns_subdomain(&name) {
        name
    } else {
        uuid::Uuid::new_v4().to_string()
    }
}

/// `validation.IsDNS1123Subdomain`: at most 253 characters; dot-separated labels of lowercase
/// alphanumerics and `-` that start and end alphanumeric.
fn is_dns_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Go's `omitempty`: an empty string is not sent at all.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// `recorderImpl.makeEvent` plus what `generateEvent` fills in: a fresh count-1 event in the
/// involved object's namespace, with `reportingComponent`/`reportingInstance` copied from the
/// source like client-go does.
pub fn make_event(
    source: &EventSource,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Event {
    let namespace = regarding
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_EVENT_NAMESPACE);
    Event {
        metadata: ObjectMeta {
            name: Some(generate_event_name(opt(&regarding.name), now)),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: regarding.clone(),
        reason: non_empty(reason),
        message: (!message.is_empty()).then_some(message),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        type_: Some(type_.as_str().to_owned()),
        source: Some(source.clone()),
        // These two have no `omitempty` upstream, so a component without a host (every
        // kube-controller-manager controller) sends `reportingInstance: ""`.
        reporting_component: Some(opt(&source.component).to_owned()),
        reporting_instance: Some(opt(&source.host).to_owned()),
        ..Event::default()
    }
}

// Cache keys. Upstream concatenates the fields with no separator; a separator keeps two
// different field splits from colliding, and changes nothing else.
const KEY_SEP: &str = "\u{1f}";

fn source_parts(event: &Event) -> [&str; 2] {
    match &event.source {
        Some(s) => [opt(&s.component), opt(&s.host)],
        None => ["", ""],
    }
}

/// `getEventKey`: source, involved object (with fieldPath), type, reason and message.
fn event_key(event: &Event) -> String {
    let o = &event.involved_object;
    let [component, host] = source_parts(event);
    [
        component,
        host,
        opt(&o.kind),
        opt(&o.namespace),
        opt(&o.name),
        opt(&o.field_path),
        opt(&o.uid),
        opt(&o.api_version),
        opt(&event.type_),
        opt(&event.reason),
        opt(&event.message),
    ]
    .join(KEY_SEP)
}

/// `getSpamKey`: source and involved object only, so every reason shares one budget.
fn spam_key(event: &Event) -> String {
    let o = &event.involved_object;
    let [component, host] = source_parts(event);
    [
        component,
        host,
        opt(&o.kind),
        opt(&o.namespace),
        opt(&o.name),
        opt(&o.uid),
        opt(&o.api_version),
    ]
    .join(KEY_SEP)
}

/// `EventAggregatorByReasonFunc`: events that differ only by message share the aggregate key;
/// the message is the local key.
fn aggregate_keys(event: &Event) -> (String, String) {
    let o = &event.involved_object;
    let [component, host] = source_parts(event);
    let key = [
        component,
        host,
        opt(&o.kind),
        opt(&o.namespace),
        opt(&o.name),
        opt(&o.uid),
        opt(&o.api_version),
        opt(&event.type_),
        opt(&event.reason),
        opt(&event.reporting_component),
        opt(&event.reporting_instance),
    ]
    .join(KEY_SEP);
    (key, opt(&event.message).to_owned())
}

/// Tunables of the correlator (`CorrelatorOptions` in `tools/record/event.go`); the defaults
/// are kube-controller-manager's.
#[derive(Clone, Debug)]
pub struct CorrelatorOptions {
    pub lru_cache_size: NonZeroUsize,
    pub burst: u32,
    pub refill_interval: Duration,
    pub max_events: usize,
    pub max_interval: Duration,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        Self {
            lru_cache_size: NonZeroUsize::new(MAX_LRU_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            burst: DEFAULT_SPAM_BURST,
            refill_interval: DEFAULT_SPAM_REFILL_INTERVAL,
            max_events: DEFAULT_AGGREGATE_MAX_EVENTS,
            max_interval: DEFAULT_AGGREGATE_INTERVAL,
        }
    }
}

/// What the sender must do with an event after correlation.
#[derive(Clone, Debug, PartialEq)]
pub enum Correlation {
    /// Create this event.
    Create(Event),
    /// The event repeats one already written: patch `count`, `lastTimestamp` and `message` of
    /// the existing Event (named in `metadata.name`); see [`DedupPatch`].
    Update(Event),
    /// The spam filter dropped the event.
    Skip,
}

/// The strategic merge patch client-go's `eventObserve` computes for a repeat: the two-way diff
/// against a copy with zero count, epoch lastTimestamp and empty message, which is exactly these
/// three fields.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DedupPatch {
    pub count: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_timestamp: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DedupPatch {
    pub fn of(event: &Event) -> Self {
        Self {
            count: event.count.unwrap_or(1),
            last_timestamp: event.last_timestamp.clone(),
            message: event.message.clone().filter(|m| !m.is_empty()),
        }
    }
}

/// `aggregateRecord`: distinct messages seen in the current window, and when the last one came.
struct AggregateRecord {
    local_keys: Vec<String>,
    last: Timestamp,
}

/// `EventAggregator`.
struct EventAggregator {
    cache: LruCache<String, AggregateRecord>,
    max_events: usize,
    max_interval: SignedDuration,
}

impl EventAggregator {
    /// `EventAggregate`: returns the event to write (the original, or a combined one once the
    /// window holds `max_events` distinct messages) and the de-duplication key to file it under.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let (aggregate_key, local_key) = aggregate_keys(&event);
        let max_interval = self.max_interval;
        let record = self
            .cache
            .get_or_insert_mut(aggregate_key.clone(), || AggregateRecord {
                local_keys: Vec::new(),
                last: now,
            });
        if now.duration_since(record.last) > max_interval {
            record.local_keys.clear();
        }
        if !record.local_keys.contains(&local_key) {
            record.local_keys.push(local_key);
        }
        record.last = now;

        if record.local_keys.len() < self.max_events {
            let key = event_key(&event);
            return (event, key);
        }
        // Keep the set from growing past the threshold (upstream `PopAny`); dropping the
        // oldest message makes the choice deterministic.
        record.local_keys.remove(0);

        let message = format!("{AGGREGATED_MESSAGE_PREFIX}{}", opt(&event.message));
        // Upstream copies only these fields into the combined event (not reportingComponent /
        // reportingInstance); Ferrite does the same so the stored object reads identically.
        // Upstream formats the name without the DNS-subdomain fallback; using the same
        // generator as `makeEvent` only changes names the apiserver would reject.
        let combined = Event {
            metadata: ObjectMeta {
                name: Some(generate_event_name(opt(&event.involved_object.name), now)),
                namespace: event.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            involved_object: event.involved_object,
            message: Some(message),
            type_: event.type_,
            reason: event.reason,
            source: event.source,
            ..Event::default()
        };
        (combined, aggregate_key)
    }
}

/// `eventLog`: what was last written under a de-duplication key.
struct EventLog {
    count: i32,
    first_timestamp: Option<Time>,
    name: Option<String>,
    resource_version: Option<String>,
}

impl EventLog {
    fn of(event: &Event) -> Self {
        Self {
            count: event.count.unwrap_or(0),
            first_timestamp: event.first_timestamp.clone(),
            name: event.metadata.name.clone(),
            resource_version: event.metadata.resource_version.clone(),
        }
    }
}

/// `eventLogger`: de-duplication of identical events into one Event with a growing count.
struct EventLogger {
    cache: LruCache<String, EventLog>,
}

impl EventLogger {
    /// `eventObserve`: a repeat takes over the name, resourceVersion and firstTimestamp of the
    /// first occurrence and bumps its count. Returns whether the event is such a repeat.
    fn observe(&mut self, mut event: Event, key: String) -> (Event, bool) {
        let repeat = match self.cache.get(&key) {
            Some(last) if last.count > 0 => {
                event.metadata.name.clone_from(&last.name);
                event
                    .metadata
                    .resource_version
                    .clone_from(&last.resource_version);
                event.first_timestamp.clone_from(&last.first_timestamp);
                event.count = Some(last.count.saturating_add(1));
                true
            }
            _ => false,
        };
        self.cache.put(key, EventLog::of(&event));
        (event, repeat)
    }

    /// `updateState`: remember what the server stored, keyed by the stored event's full key.
    fn update_state(&mut self, stored: &Event) {
        self.cache.put(event_key(stored), EventLog::of(stored));
    }
}

/// A token bucket like `flowcontrol.NewTokenBucketPassiveRateLimiterWithClock`
/// (golang.org/x/time/rate): starts full, refills continuously, never above the burst.
struct TokenBucket {
    tokens: f64,
    last: Timestamp,
}

/// `EventSourceObjectSpamFilter`.
struct SpamFilter {
    cache: LruCache<String, TokenBucket>,
    burst: f64,
    refill_interval: f64,
}

impl SpamFilter {
    /// `Filter`: true when the event must be dropped.
    fn filter(&mut self, event: &Event, now: Timestamp) -> bool {
        let burst = self.burst;
        let bucket = self
            .cache
            .get_or_insert_mut(spam_key(event), || TokenBucket {
                tokens: burst,
                last: now,
            });
        let elapsed = now.duration_since(bucket.last).as_secs_f64().max(0.0);
        let refill = if self.refill_interval > 0.0 {
            elapsed / self.refill_interval
        } else {
            burst
        };
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            false
        } else {
            true
        }
    }
}

/// client-go's `EventCorrelator`: aggregates similar events, de-duplicates identical ones and
/// rate-limits each source+object. Pure: no I/O, time comes from the injected [`Clock`].
pub struct EventCorrelator {
    clock: Arc<dyn Clock>,
    aggregator: EventAggregator,
    logger: EventLogger,
    spam: SpamFilter,
}

impl EventCorrelator {
    /// The correlator kube-controller-manager uses (`NewEventCorrelator`).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_options(clock, CorrelatorOptions::default())
    }

    pub fn with_options(clock: Arc<dyn Clock>, options: CorrelatorOptions) -> Self {
        let size = options.lru_cache_size;
        Self {
            clock,
            aggregator: EventAggregator {
                cache: LruCache::new(size),
                max_events: options.max_events,
                max_interval: SignedDuration::try_from(options.max_interval)
                    .unwrap_or(SignedDuration::MAX),
            },
            logger: EventLogger {
                cache: LruCache::new(size),
            },
            spam: SpamFilter {
                cache: LruCache::new(size),
                burst: f64::from(options.burst),
                refill_interval: options.refill_interval.as_secs_f64(),
            },
        }
    }

    /// `EventCorrelate`: aggregate, then de-duplicate, then spam-filter. As upstream, the
    /// caches record the event even when the spam filter then drops it, so a later repeat
    /// carries the full count.
    pub fn correlate(&mut self, event: Event) -> Correlation {
        let now = self.clock.now();
        let (event, key) = self.aggregator.aggregate(event, now);
        let (event, repeat) = self.logger.observe(event, key);
        if self.spam.filter(&event, now) {
            Correlation::Skip
        } else if repeat {
            Correlation::Update(event)
        } else {
            Correlation::Create(event)
        }
    }

    /// `UpdateState`: learn the name and resourceVersion the server returned.
    pub fn update_state(&mut self, stored: &Event) {
        self.logger.update_state(stored);
    }
}

/// Where the sender writes (`EventSink` in `tools/record/event.go`). A trait so the retry
/// logic is tested without an apiserver.
pub(crate) trait EventSink: Send + Sync + 'static {
    fn create(&self, event: &Event) -> impl Future<Output = Result<Event, EventError>> + Send;
    fn patch(&self, event: &Event) -> impl Future<Output = Result<Event, EventError>> + Send;
}

/// `EventSinkImpl`: writes into the event's own namespace.
struct KubeSink {
    client: kube::Client,
}

impl KubeSink {
    fn api(&self, event: &Event) -> Api<Event> {
        let namespace = event
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_EVENT_NAMESPACE);
        Api::namespaced(self.client.clone(), namespace)
    }
}

async fn within_timeout<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, EventError> {
    match tokio::time::timeout(WRITE_TIMEOUT, call).await {
        Ok(result) => result.map_err(EventError::from),
        Err(_) => Err(EventError::Timeout(WRITE_TIMEOUT)),
    }
}

impl EventSink for KubeSink {
    async fn create(&self, event: &Event) -> Result<Event, EventError> {
        within_timeout(self.api(event).create(&PostParams::default(), event)).await
    }

    async fn patch(&self, event: &Event) -> Result<Event, EventError> {
        let name = event.metadata.name.as_deref().ok_or(EventError::Unnamed)?;
        let patch = Patch::Strategic(DedupPatch::of(event));
        within_timeout(self.api(event).patch(name, &PatchParams::default(), &patch)).await
    }
}

/// Retry pacing of the sender.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SenderConfig {
    sleep: Duration,
    max_tries: u32,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            sleep: DEFAULT_SLEEP_DURATION,
            max_tries: MAX_TRIES_PER_EVENT,
        }
    }
}

/// The broadcaster's watcher loop plus `StartRecordingToSink`: one task per process, owning
/// the correlator, so no locks are needed.
async fn run_sender<S: EventSink>(
    mut rx: mpsc::Receiver<Event>,
    sink: S,
    mut correlator: EventCorrelator,
    config: SenderConfig,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = rx.recv() => match received {
                Some(event) => event,
                None => return,
            },
        };
        // kube-controller-manager also starts `StartStructuredLogging(3)` on every broadcaster.
        log_event(&event);
        record_to_sink(&sink, &mut correlator, event, config, &shutdown).await;
    }
}

fn log_event(event: &Event) {
    let o = &event.involved_object;
    tracing::debug!(
        object = %format_args!("{}/{}", opt(&o.namespace), opt(&o.name)),
        kind = opt(&o.kind),
        api_version = opt(&o.api_version),
        r#type = opt(&event.type_),
        reason = opt(&event.reason),
        message = opt(&event.message),
        "Event occurred"
    );
}

/// `recordToSink`: correlate, then write with up to `max_tries` attempts. Retries hold up only
/// this task, never an emitter; the first pause is randomized so that many clients do not
/// retry in lockstep after an apiserver outage.
async fn record_to_sink<S: EventSink>(
    sink: &S,
    correlator: &mut EventCorrelator,
    event: Event,
    config: SenderConfig,
    shutdown: &CancellationToken,
) {
    let (mut event, update) = match correlator.correlate(event) {
        Correlation::Skip => return,
        Correlation::Create(event) => (event, false),
        Correlation::Update(event) => (event, true),
    };
    let mut tries = 0;
    loop {
        if record_event(sink, correlator, &mut event, update).await {
            return;
        }
        tries += 1;
        if tries >= config.max_tries {
            tracing::error!(
                event = opt(&event.metadata.name),
                reason = opt(&event.reason),
                "Unable to write event (retry limit exceeded!)"
            );
            return;
        }
        let delay = if tries == 1 {
            config.sleep.mul_f64(rand::random::<f64>())
        } else {
            config.sleep
        };
        tokio::select! {
            () = shutdown.cancelled() => {
                tracing::error!(
                    event = opt(&event.metadata.name),
                    "Unable to write event (broadcaster is shut down)"
                );
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// `recordEvent`: true when the event was written or abandoned, false to retry. A repeat is
/// patched; if its Event is gone (TTL expiry or deletion) it is created afresh.
async fn record_event<S: EventSink>(
    sink: &S,
    correlator: &mut EventCorrelator,
    event: &mut Event,
    update: bool,
) -> bool {
    let mut result = None;
    if update {
        match sink.patch(event).await {
            Err(err) if err.is_not_found() => {}
            other => result = Some(other),
        }
    }
    let result = match result {
        Some(result) => result,
        None => {
            // A create must not carry the resourceVersion of an earlier occurrence.
            event.metadata.resource_version = None;
            sink.create(event).await
        }
    };
    match result {
        Ok(stored) => {
            correlator.update_state(&stored);
            true
        }
        Err(err) if err.is_retriable() => {
            tracing::warn!(
                event = opt(&event.metadata.name),
                error = %err,
                "Unable to write event (may retry after sleeping)"
            );
            false
        }
        Err(err) => {
            if err.is_expected_rejection() {
                tracing::debug!(
                    event = opt(&event.metadata.name),
                    error = %err,
                    "Server rejected event (will not retry!)"
                );
            } else {
                tracing::error!(
                    event = opt(&event.metadata.name),
                    error = %err,
                    "Server rejected event (will not retry!)"
                );
            }
            true
        }
    }
}

/// State shared by every clone of a recorder: the queue into the sender and the drop counter.
struct Shared {
    tx: mpsc::Sender<Event>,
    drops: Mutex<DropLog>,
}

struct DropLog {
    dropped: u64,
    last_logged: Option<Instant>,
}

impl Shared {
    fn new(tx: mpsc::Sender<Event>) -> Self {
        Self {
            tx,
            drops: Mutex::new(DropLog {
                dropped: 0,
                last_logged: None,
            }),
        }
    }

    fn note_drop(&self, why: &'static str) {
        let mut log = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        log.dropped += 1;
        let due = log
            .last_logged
            .is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL);
        if due {
            tracing::error!(
                dropped = log.dropped,
                "Unable to record event: {why}, dropped event"
            );
            log.dropped = 0;
            log.last_logged = Some(Instant::now());
        }
    }
}

/// Emits core/v1 Events for one controller, like a client-go `record.EventRecorder` created
/// with `EventSource{Component: "<controller>-controller"}`.
///
/// Cloning is cheap; [`EventRecorder::for_controller`] gives each controller its own
/// `source.component` while sharing the process-wide queue, correlator and sender task.
/// Emitting never blocks and never fails: when the queue is full the event is dropped and a
/// rate-limited error is logged.
#[derive(Clone)]
pub struct EventRecorder {
    shared: Arc<Shared>,
    source: Arc<EventSource>,
}

impl std::fmt::Debug for EventRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecorder")
            .field("component", &opt(&self.source.component))
            .field("host", &opt(&self.source.host))
            .finish()
    }
}

impl EventRecorder {
    /// Starts the process's event sender and returns a recorder reporting as `component`.
    /// The sender runs until every recorder is dropped. Call within a Tokio runtime; outside
    /// one, events are dropped (and logged) rather than panicking.
    pub fn new(client: kube::Client, component: &str) -> Self {
        Self::with_shutdown(client, component, CancellationToken::new())
    }

    /// Like [`EventRecorder::new`], but the sender also stops when `shutdown` is cancelled
    /// (upstream `record.WithContext`): queued and retrying events are then abandoned.
    pub fn with_shutdown(
        client: kube::Client,
        component: &str,
        shutdown: CancellationToken,
    ) -> Self {
        Self::spawn(
            KubeSink { client },
            component,
            EventCorrelator::new(Arc::new(SystemClock)),
            SenderConfig::default(),
            shutdown,
            MAX_QUEUED_EVENTS,
        )
    }

    pub(crate) fn spawn<S: EventSink>(
        sink: S,
        component: &str,
        correlator: EventCorrelator,
        config: SenderConfig,
        shutdown: CancellationToken,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(run_sender(rx, sink, correlator, config, shutdown));
            }
            Err(_) => tracing::error!(
                component,
                "No Tokio runtime: events from this recorder will be dropped"
            ),
        }
        Self::from_sender(tx, component)
    }

    /// A recorder whose events land, uncorrelated, in the returned receiver: for tests of
    /// code that emits events.
    pub fn capturing(component: &str) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
        (Self::from_sender(tx, component), rx)
    }

    fn from_sender(tx: mpsc::Sender<Event>, component: &str) -> Self {
        Self {
            shared: Arc::new(Shared::new(tx)),
            source: Arc::new(EventSource {
                component: non_empty(component),
                host: None,
            }),
        }
    }

    /// A recorder for another controller on the same queue and sender, e.g.
    /// `recorder.for_controller("replicaset-controller")`.
    pub fn for_controller(&self, component: &str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            source: Arc::new(EventSource {
                component: non_empty(component),
                host: self.source.host.clone(),
            }),
        }
    }

    /// Sets `source.host`, which client-go also copies into `reportingInstance`.
    /// kube-controller-manager leaves it empty; the kubelet, for example, sets its node name.
    pub fn with_host(&self, host: &str) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            source: Arc::new(EventSource {
                component: self.source.component.clone(),
                host: non_empty(host),
            }),
        }
    }

    /// The `source.component` this recorder reports.
    pub fn component(&self) -> &str {
        opt(&self.source.component)
    }

    /// Records an event about `regarding` (`Event` in client-go's `EventRecorder`).
    pub fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let event = make_event(
            &self.source,
            regarding,
            type_,
            reason,
            message.into(),
            Timestamp::now(),
        );
        // `ActionOrDrop`: never wait for room in the queue.
        match self.shared.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.note_drop("too many queued events")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.note_drop("event broadcaster is shut down")
            }
        }
    }

    /// Records a `Normal` event about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.event(&object_reference(obj), EventType::Normal, reason, message);
    }

    /// Records a `Warning` event about `obj`.
    pub fn warning<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.event(&object_reference(obj), EventType::Warning, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Node;
    use std::collections::VecDeque;

    struct FakeClock(Mutex<Timestamp>);

    impl FakeClock {
        fn new() -> Arc<Self> {
            Arc::new(Self(Mutex::new(
                Timestamp::from_second(1_700_000_000).expect("valid timestamp"),
            )))
        }

        fn advance(&self, by: Duration) {
            let mut now = self.0.lock().expect("clock lock");
            *now = now
                .checked_add(SignedDuration::try_from(by).expect("small duration"))
                .expect("in range");
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().expect("clock lock")
        }
    }

    fn pod_ref(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn source(component: &str) -> EventSource {
        EventSource {
            component: Some(component.into()),
            host: None,
        }
    }

    fn event_for(clock: &FakeClock, object: &str, message: &str) -> Event {
        make_event(
            &source("replicaset-controller"),
            &pod_ref(object),
            EventType::Warning,
            "FailedCreate",
            message.into(),
            clock.now(),
        )
    }

    fn correlator(clock: &Arc<FakeClock>) -> EventCorrelator {
        EventCorrelator::new(Arc::clone(clock) as Arc<dyn Clock>)
    }

    fn stored(mut event: Event, resource_version: &str) -> Event {
        event.metadata.resource_version = Some(resource_version.into());
        event
    }

    #[test]
    fn identical_events_are_deduplicated_into_one_with_count_3() {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);

        let Correlation::Create(first) = c.correlate(event_for(&clock, "web-1", "boom")) else {
            panic!("first occurrence must be created");
        };
        assert_eq!(first.count, Some(1));
        c.update_state(&stored(first.clone(), "100"));

        clock.advance(Duration::from_secs(5));
        let Correlation::Update(second) = c.correlate(event_for(&clock, "web-1", "boom")) else {
            panic!("repeat must patch");
        };
        assert_eq!(second.count, Some(2));
        assert_eq!(second.metadata.resource_version.as_deref(), Some("100"));

        clock.advance(Duration::from_secs(5));
        let Correlation::Update(third) = c.correlate(event_for(&clock, "web-1", "boom")) else {
            panic!("repeat must patch");
        };
        assert_eq!(third.count, Some(3));
        assert_eq!(third.metadata.name, first.metadata.name);
        assert_eq!(third.first_timestamp, first.first_timestamp);
        assert_eq!(third.last_timestamp, Some(Time(clock.now())));

        let patch = serde_json::to_value(DedupPatch::of(&third)).expect("serializable");
        let last = serde_json::to_value(Time(clock.now())).expect("serializable");
        assert_eq!(
            patch,
            serde_json::json!({ "count": 3, "lastTimestamp": last, "message": "boom" })
        );
    }

    #[test]
    fn eleven_similar_events_with_different_messages_in_ten_minutes_aggregate() {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);
        let mut results = Vec::new();
        for i in 0..11 {
            results.push(c.correlate(event_for(&clock, "web-1", &format!("attempt {i}"))));
            clock.advance(Duration::from_secs(59));
        }

        for (i, result) in results.iter().take(9).enumerate() {
            let Correlation::Create(event) = result else {
                panic!("event {i} should be created as is, got {result:?}");
            };
            assert_eq!(
                event.message.as_deref(),
                Some(format!("attempt {i}").as_str())
            );
        }
        let Correlation::Create(combined) = &results[9] else {
            panic!("the 10th distinct message starts an aggregate event");
        };
        assert_eq!(
            combined.message.as_deref(),
            Some("(combined from similar events): attempt 9")
        );
        assert_eq!(combined.count, Some(1));
        let Correlation::Update(again) = &results[10] else {
            panic!("the 11th is counted on the aggregate event");
        };
        assert_eq!(again.metadata.name, combined.metadata.name);
        assert_eq!(again.count, Some(2));
        assert_eq!(
            again.message.as_deref(),
            Some("(combined from similar events): attempt 10")
        );
    }

    #[test]
    fn similar_events_more_than_ten_minutes_apart_are_not_aggregated() {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);
        for i in 0..11 {
            let result = c.correlate(event_for(&clock, "web-1", &format!("attempt {i}")));
            assert!(
                matches!(&result, Correlation::Create(e) if e.message.as_deref() == Some(format!("attempt {i}").as_str())),
                "event {i}: {result:?}"
            );
            clock.advance(Duration::from_secs(601));
        }
    }

    #[test]
    fn spam_filter_drops_the_26th_event_for_one_object_and_lets_one_more_through_after_5_minutes() {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);
        for i in 0..25 {
            let result = c.correlate(event_for(&clock, "web-1", "boom"));
            assert_ne!(result, Correlation::Skip, "event {i} is within the burst");
        }
        assert_eq!(
            c.correlate(event_for(&clock, "web-1", "boom")),
            Correlation::Skip
        );

        clock.advance(Duration::from_secs(300));
        let Correlation::Update(refilled) = c.correlate(event_for(&clock, "web-1", "boom")) else {
            panic!("one token comes back after five minutes");
        };
        // The dropped 26th still counted, as upstream's caches see it before the filter.
        assert_eq!(refilled.count, Some(27));
        assert_eq!(
            c.correlate(event_for(&clock, "web-1", "boom")),
            Correlation::Skip
        );
    }

    #[test]
    fn different_objects_do_not_share_a_spam_bucket() {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);
        for _ in 0..25 {
            c.correlate(event_for(&clock, "web-1", "boom"));
        }
        assert_eq!(
            c.correlate(event_for(&clock, "web-1", "boom")),
            Correlation::Skip
        );
        assert!(matches!(
            c.correlate(event_for(&clock, "web-2", "boom")),
            Correlation::Create(_)
        ));
    }

    #[test]
    fn event_names_follow_name_dot_hex_unix_nanos() {
        let now = Timestamp::from_nanosecond(1_700_000_000_123_456_789).expect("valid");
        let event = make_event(
            &source("deployment-controller"),
            &pod_ref("web-1"),
            EventType::Normal,
            "Scheduled",
            "ok".into(),
            now,
        );
        assert_eq!(
            event.metadata.name.as_deref(),
            Some("web-1.17979cfe3d85cd15")
        );
        assert_eq!(
            event.metadata.name,
            Some(format!("web-1.{:x}", 1_700_000_000_123_456_789_i64))
        );
    }

    #[test]
    fn object_names_that_are_not_dns_subdomains_get_a_uuid_event_name() {
        let name = generate_event_name("system:controller:foo", Timestamp::now());
        assert!(uuid::Uuid::parse_str(&name).is_ok(), "{name}");
    }

    #[test]
    fn events_about_cluster_scoped_objects_go_to_the_default_namespace() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        };
        let event = make_event(
            &source("node-controller"),
            &object_reference(&node),
            EventType::Normal,
            "RegisteredNode",
            "registered".into(),
            Timestamp::now(),
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.involved_object.namespace, None);
    }

    #[test]
    fn normal_builds_the_reference_and_source_like_client_go() {
        let (recorder, mut rx) = EventRecorder::capturing("kube-controller-manager");
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some("d-uid".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        recorder.for_controller("deployment-controller").normal(
            &deployment,
            "ScalingReplicaSet",
            "Scaled up replica set web-abc from 0 to 3",
        );

        let event = rx.try_recv().expect("event queued");
        let o = &event.involved_object;
        assert_eq!(o.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(o.kind.as_deref(), Some("Deployment"));
        assert_eq!(o.name.as_deref(), Some("web"));
        assert_eq!(o.namespace.as_deref(), Some("shop"));
        assert_eq!(o.uid.as_deref(), Some("d-uid"));
        assert_eq!(o.resource_version.as_deref(), Some("42"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(event.type_.as_deref(), Some("Normal"));
        assert_eq!(event.count, Some(1));
        assert_eq!(event.first_timestamp, event.last_timestamp);
        assert_eq!(event.source, Some(source("deployment-controller")));
        assert_eq!(
            event.reporting_component.as_deref(),
            Some("deployment-controller")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some(""));
    }

    #[test]
    fn a_full_queue_drops_events_without_blocking_the_caller() {
        let (tx, mut rx) = mpsc::channel(2);
        let recorder = EventRecorder::from_sender(tx, "job-controller");
        for i in 0..5 {
            recorder.event(
                &pod_ref("p"),
                EventType::Normal,
                "Completed",
                format!("{i}"),
            );
        }
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Call {
        Create,
        Patch,
    }

    /// A scripted answer: success, or the error to build.
    type Reply = Result<(), fn() -> EventError>;

    #[derive(Clone, Default)]
    struct FakeSink {
        calls: Arc<Mutex<Vec<Call>>>,
        replies: Arc<Mutex<VecDeque<Reply>>>,
    }

    impl FakeSink {
        fn replying(replies: Vec<Reply>) -> Self {
            Self {
                calls: Arc::default(),
                replies: Arc::new(Mutex::new(replies.into())),
            }
        }

        fn answer(&self, call: Call, event: &Event) -> Result<Event, EventError> {
            self.calls.lock().expect("lock").push(call);
            match self.replies.lock().expect("lock").pop_front() {
                Some(Err(make)) => Err(make()),
                _ => Ok(stored(event.clone(), "1")),
            }
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().expect("lock").clone()
        }
    }

    impl EventSink for FakeSink {
        async fn create(&self, event: &Event) -> Result<Event, EventError> {
            assert_eq!(event.metadata.resource_version, None);
            self.answer(Call::Create, event)
        }

        async fn patch(&self, event: &Event) -> Result<Event, EventError> {
            self.answer(Call::Patch, event)
        }
    }

    fn not_found() -> EventError {
        kube::Error::Api(
            Status::failure("not found", "NotFound")
                .with_code(404)
                .boxed(),
        )
        .into()
    }

    fn invalid() -> EventError {
        kube::Error::Api(Status::failure("bad", "Invalid").with_code(422).boxed()).into()
    }

    fn connection_refused() -> EventError {
        kube::Error::ReadEvents(std::io::Error::other("connection refused")).into()
    }

    async fn send_all(sink: &FakeSink, events: Vec<Event>) {
        let clock = FakeClock::new();
        let mut c = correlator(&clock);
        let config = SenderConfig {
            sleep: Duration::ZERO,
            max_tries: MAX_TRIES_PER_EVENT,
        };
        let shutdown = CancellationToken::new();
        for event in events {
            record_to_sink(sink, &mut c, event, config, &shutdown).await;
        }
    }

    #[tokio::test]
    async fn a_dedup_patch_of_a_deleted_event_falls_back_to_create() {
        let clock = FakeClock::new();
        let sink = FakeSink::replying(vec![Ok(()), Err(not_found)]);
        let event = event_for(&clock, "web-1", "boom");
        send_all(&sink, vec![event.clone(), event]).await;
        assert_eq!(sink.calls(), vec![Call::Create, Call::Patch, Call::Create]);
    }

    #[tokio::test]
    async fn transport_errors_are_retried_until_the_write_succeeds() {
        let clock = FakeClock::new();
        let sink = FakeSink::replying(vec![Err(connection_refused), Err(connection_refused)]);
        send_all(&sink, vec![event_for(&clock, "web-1", "boom")]).await;
        assert_eq!(sink.calls(), vec![Call::Create; 3]);
    }

    #[tokio::test]
    async fn writes_give_up_after_twelve_tries() {
        let clock = FakeClock::new();
        let sink = FakeSink::replying(vec![Err(connection_refused); 20]);
        send_all(&sink, vec![event_for(&clock, "web-1", "boom")]).await;
        assert_eq!(sink.calls().len(), 12);
    }

    #[tokio::test]
    async fn rejected_events_are_not_retried() {
        let clock = FakeClock::new();
        let sink = FakeSink::replying(vec![Err(invalid)]);
        send_all(&sink, vec![event_for(&clock, "web-1", "boom")]).await;
        assert_eq!(sink.calls(), vec![Call::Create]);
    }

    #[tokio::test]
    async fn the_sender_task_writes_queued_events_and_stops_with_the_last_recorder() {
        let sink = FakeSink::default();
        let recorder = EventRecorder::spawn(
            sink.clone(),
            "cronjob-controller",
            EventCorrelator::new(Arc::new(SystemClock)),
            SenderConfig::default(),
            CancellationToken::new(),
            MAX_QUEUED_EVENTS,
        );
        recorder.event(&pod_ref("p"), EventType::Normal, "SuccessfulCreate", "one");
        recorder.event(&pod_ref("p"), EventType::Normal, "SuccessfulCreate", "one");
        drop(recorder);
        for _ in 0..100 {
            if sink.calls().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sink.calls(), vec![Call::Create, Call::Patch]);
    }
}
