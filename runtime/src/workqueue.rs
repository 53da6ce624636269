//! The controllers' work queue, with client-go semantics (`util/workqueue`): de-duplicated keys,
//! never the same key processed concurrently, FIFO order, delayed adds where the earliest deadline
//! wins, and rate-limited requeues (per-item exponential backoff combined with an overall token
//! bucket).
//!
//! A controller adds keys from its informer handlers and runs [`run_workers`] with its reconcile
//! function; everything else (`forget`, `done`, backoff on error) is handled there. The pieces are
//! public too, for controllers that need their own error policy (e.g. a bounded number of
//! retries, like upstream's `maxRetries`).
//!
//! Delayed keys are promoted into the queue lazily, whenever the queue is touched (by a getter
//! waiting for the earliest deadline, by `add`, `done`, `len` or a metrics scrape), instead of by a
//! background task like upstream's `waitingLoop`: an idle queue then costs no task and no timer,
//! and the queue can be built outside a tokio runtime.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{self, Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a work queue key must be. Usually a `String` (`namespace/name`) or a small struct.
pub trait QueueKey: Clone + Eq + Hash + Send + Sync + Debug + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + Debug + 'static> QueueKey for T {}

// ---------------------------------------------------------------------------------------------
// Rate limiters (client-go util/workqueue default_rate_limiters.go)
// ---------------------------------------------------------------------------------------------

/// Per-key exponential backoff: `base * 2^failures`, capped at `max`.
///
/// Mirrors client-go `ItemExponentialFailureRateLimiter`: every `when` counts one more failure for
/// the key, `forget` resets it.
#[derive(Debug, Clone)]
pub struct ItemExponentialBackoff<K> {
    base: Duration,
    max: Duration,
    failures: HashMap<K, u32>,
}

impl<K: QueueKey> ItemExponentialBackoff<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: HashMap::new(),
        }
    }

    pub fn when(&mut self, key: &K) -> Duration {
        let failures = self.failures.entry(key.clone()).or_insert(0);
        let exponent = *failures;
        *failures = failures.saturating_add(1);
        exponential_backoff(self.base, self.max, exponent)
    }

    pub fn num_requeues(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }
}

/// `base * 2^exponent`, or `max` when that is larger than `max` or not representable (upstream
/// also falls back to the maximum on overflow).
fn exponential_backoff(base: Duration, max: Duration, exponent: u32) -> Duration {
    2u32.checked_pow(exponent)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

/// An overall token bucket: `qps` tokens per second, at most `burst` banked.
///
/// Reservation style, like client-go's `BucketRateLimiter` over golang.org/x/time/rate
/// `Reserve().Delay()`: every `reserve` takes a token even when none is left (the bucket goes into
/// debt) and returns how long the caller must wait for it, so requeues are spread out at `qps`
/// instead of being refused.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A bucket that starts full. `qps` of infinity means "no limit"; a `qps` of zero (or less)
    /// hands out the burst and then never another token, as x/time/rate does.
    pub fn new(qps: f64, burst: u32) -> Self {
        Self {
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// Takes one token at `now` and returns how long to wait until it is valid. `Duration::MAX`
    /// means never (x/time/rate's `InfDuration`).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if self.qps.is_infinite() && self.qps > 0.0 {
            return Duration::ZERO;
        }
        // x/time/rate refuses a reservation larger than the burst outright.
        if self.burst < 1.0 {
            return Duration::MAX;
        }
        let refilled = match self.last {
            Some(last) if self.qps > 0.0 => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + elapsed * self.qps).min(self.burst)
            }
            Some(_) => self.tokens,
            None => self.burst,
        };
        if refilled < 1.0 && self.qps <= 0.0 {
            return Duration::MAX;
        }
        self.tokens = refilled - 1.0;
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // Rounded to whole nanoseconds so that a debt of one token at 10 qps is exactly 100 ms.
        let nanos = (-self.tokens / self.qps * 1e9).round();
        if nanos >= u64::MAX as f64 {
            Duration::MAX
        } else {
            Duration::from_nanos(nanos as u64)
        }
    }
}

/// How long a key waits before a rate-limited requeue. Mirrors client-go's `TypedRateLimiter`
/// implementations that Kubernetes controllers use.
#[derive(Debug, Clone)]
pub enum RateLimiter<K> {
    ItemExponential(ItemExponentialBackoff<K>),
    Bucket(TokenBucket),
    /// The longest wait of all; every limiter sees every call (client-go `MaxOfRateLimiter`).
    MaxOf(Vec<RateLimiter<K>>),
}

impl<K: QueueKey> RateLimiter<K> {
    /// client-go `DefaultControllerRateLimiter`: per-item 5 ms doubling up to 1000 s, and overall
    /// 10 qps with a burst of 100, whichever waits longer.
    pub fn default_controller() -> Self {
        Self::max_of(vec![
            Self::item_exponential(Duration::from_millis(5), Duration::from_secs(1000)),
            Self::bucket(10.0, 100),
        ])
    }

    pub fn item_exponential(base: Duration, max: Duration) -> Self {
        Self::ItemExponential(ItemExponentialBackoff::new(base, max))
    }

    pub fn bucket(qps: f64, burst: u32) -> Self {
        Self::Bucket(TokenBucket::new(qps, burst))
    }

    pub fn max_of(limiters: Vec<Self>) -> Self {
        Self::MaxOf(limiters)
    }

    /// Records one more requeue of `key` at `now` and returns how long it must wait.
    pub fn when(&mut self, key: &K, now: Instant) -> Duration {
        match self {
            Self::ItemExponential(backoff) => backoff.when(key),
            Self::Bucket(bucket) => bucket.reserve(now),
            Self::MaxOf(limiters) => limiters
                .iter_mut()
                .map(|limiter| limiter.when(key, now))
                .fold(Duration::ZERO, Duration::max),
        }
    }

    pub fn num_requeues(&self, key: &K) -> u32 {
        match self {
            Self::ItemExponential(backoff) => backoff.num_requeues(key),
            Self::Bucket(_) => 0,
            Self::MaxOf(limiters) => limiters
                .iter()
                .map(|limiter| limiter.num_requeues(key))
                .max()
                .unwrap_or(0),
        }
    }

    /// Stops tracking `key`: its next failure starts again from the base delay.
    pub fn forget(&mut self, key: &K) {
        match self {
            Self::ItemExponential(backoff) => backoff.forget(key),
            Self::Bucket(_) => {}
            Self::MaxOf(limiters) => limiters.iter_mut().for_each(|limiter| limiter.forget(key)),
        }
    }
}

impl<K: QueueKey> Default for RateLimiter<K> {
    fn default() -> Self {
        Self::default_controller()
    }
}

// ---------------------------------------------------------------------------------------------
// Queue state (client-go util/workqueue queue.go + delaying_queue.go), no I/O, no clock reads
// ---------------------------------------------------------------------------------------------

/// Everything behind the queue's mutex. Invariants (as in client-go `Typed`): every key in
/// `queue` is in `dirty` and not in `processing`; a key is in `queue` at most once.
struct State<K> {
    queue: VecDeque<K>,
    /// Keys that need processing, with when they were added (for the queue-duration metric).
    dirty: HashMap<K, Instant>,
    /// Keys handed out and not yet `done`, with when processing started.
    processing: HashMap<K, Instant>,
    /// Delayed keys by (deadline, insertion order); `waiting_index` keeps one entry per key.
    waiting: BTreeMap<(Instant, u64), K>,
    waiting_index: HashMap<K, (Instant, u64)>,
    next_seq: u64,
    limiter: RateLimiter<K>,
    shutting_down: bool,
    drain: bool,
}

/// Per-queue metric handles, children of the [`WorkQueueMetrics`] families.
#[derive(Debug, Clone)]
struct QueueMetrics {
    adds: Counter,
    retries: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
}

fn seconds_since(start: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(start).as_secs_f64()
}

impl<K: QueueKey> State<K> {
    fn new(limiter: RateLimiter<K>) -> Self {
        Self {
            queue: VecDeque::new(),
            dirty: HashMap::new(),
            processing: HashMap::new(),
            waiting: BTreeMap::new(),
            waiting_index: HashMap::new(),
            next_seq: 0,
            limiter,
            shutting_down: false,
            drain: false,
        }
    }

    /// client-go `Add`. Returns whether the key became ready (a getter should be woken).
    fn insert(&mut self, key: K, at: Instant, metrics: Option<&QueueMetrics>) -> bool {
        if self.shutting_down || self.dirty.contains_key(&key) {
            return false;
        }
        if let Some(m) = metrics {
            m.adds.inc();
        }
        // A key being processed stays out of `queue`: `finish` puts it back, so two workers never
        // hold the same key.
        let processing = self.processing.contains_key(&key);
        self.dirty.insert(key.clone(), at);
        if processing {
            return false;
        }
        self.queue.push_back(key);
        true
    }

    /// client-go delaying queue `AddAfter` for a positive delay: the earliest deadline wins.
    /// Returns whether this is now the earliest deadline of all (waiting getters must re-arm).
    fn schedule(&mut self, key: K, deadline: Instant) -> bool {
        if let Some(&(existing, seq)) = self.waiting_index.get(&key) {
            if existing <= deadline {
                return false;
            }
            self.waiting.remove(&(existing, seq));
        }
        let entry = (deadline, self.next_seq);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.waiting.insert(entry, key.clone());
        self.waiting_index.insert(key, entry);
        self.waiting.keys().next() == Some(&entry)
    }

    /// Moves every delayed key whose deadline has passed into the queue, as if added at its
    /// deadline. Returns how many became ready.
    fn promote_due(&mut self, now: Instant, metrics: Option<&QueueMetrics>) -> usize {
        let mut ready = 0;
        while let Some(entry) = self.waiting.first_entry() {
            let (deadline, _) = *entry.key();
            if deadline > now {
                break;
            }
            let key = entry.remove();
            self.waiting_index.remove(&key);
            if self.insert(key, deadline, metrics) {
                ready += 1;
            }
        }
        ready
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.waiting.keys().next().map(|&(deadline, _)| deadline)
    }

    /// client-go `Get` once an item is available.
    fn pop(&mut self, now: Instant, metrics: Option<&QueueMetrics>) -> Option<K> {
        let key = self.queue.pop_front()?;
        if let (Some(added), Some(m)) = (self.dirty.remove(&key), metrics) {
            m.queue_duration.observe(seconds_since(added, now));
        }
        self.processing.insert(key.clone(), now);
        Some(key)
    }

    /// client-go `Done`. Returns (the key was re-queued, nothing is processing any more).
    fn finish(&mut self, key: &K, now: Instant, metrics: Option<&QueueMetrics>) -> (bool, bool) {
        let Some(started) = self.processing.remove(key) else {
            // `done` without a matching `get`: requeueing here could put a key in `queue` twice.
            return (false, self.processing.is_empty());
        };
        if let Some(m) = metrics {
            m.work_duration.observe(seconds_since(started, now));
        }
        let requeued = self.dirty.contains_key(key);
        if requeued {
            self.queue.push_back(key.clone());
        }
        (requeued, self.processing.is_empty())
    }

    fn sample(&self, now: Instant) -> Sample {
        let ages = self
            .processing
            .values()
            .map(|&started| seconds_since(started, now));
        let (unfinished, longest) = ages.fold((0.0, 0.0), |(sum, max): (f64, f64), age| {
            (sum + age, max.max(age))
        });
        Sample {
            // Upstream's depth gauge goes up on every accepted add and down on every get, i.e. it
            // counts the dirty keys (including those waiting for a worker to finish them).
            depth: i64::try_from(self.dirty.len()).unwrap_or(i64::MAX),
            unfinished_seconds: unfinished,
            longest_seconds: longest,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------------------

struct Inner<K> {
    name: String,
    state: Mutex<State<K>>,
    /// Wakes getters: one per key made ready, all on shutdown.
    ready: Notify,
    /// Wakes `shut_down_with_drain` when the last in-flight key is done.
    idle: Notify,
    metrics: OnceLock<QueueMetrics>,
}

impl<K: QueueKey> Inner<K> {
    /// A panic elsewhere while holding the lock cannot leave the state half-updated in a way that
    /// matters more than stopping every controller, so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self, ready: usize) {
        for _ in 0..ready {
            self.ready.notify_one();
        }
    }
}

/// A client-go style rate-limiting, delaying work queue. Cheap to clone; clones share the queue.
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<K: QueueKey> WorkQueue<K> {
    /// `name` labels the queue's metrics (upstream uses the controller name, e.g. `deployment`).
    pub fn new(name: &str, limiter: RateLimiter<K>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                state: Mutex::new(State::new(limiter)),
                ready: Notify::new(),
                idle: Notify::new(),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Reports this queue's metrics under its name. Only the first call has an effect, and a queue
    /// with an empty name reports nothing (as upstream).
    pub fn with_metrics(self, metrics: &WorkQueueMetrics) -> Self {
        if self.inner.name.is_empty() {
            return self;
        }
        let handles = metrics.handles(&self.inner.name);
        if self.inner.metrics.set(handles).is_ok() {
            let weak = Arc::downgrade(&self.inner);
            let probe: Weak<dyn QueueProbe> = weak;
            metrics.probes.push(probe);
        }
        self
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Marks `key` as needing processing. A key already waiting is not added twice; a key being
    /// processed is handed out again after its `done`. Ignored once shut down.
    pub fn add(&self, key: K) {
        let now = Instant::now();
        let ready = {
            let mut state = self.inner.lock();
            let metrics = self.inner.metrics.get();
            let due = state.promote_due(now, metrics);
            due + usize::from(state.insert(key, now, metrics))
        };
        self.inner.wake(ready);
    }

    /// Adds `key` once `delay` has passed. If the key is already waiting, the earlier deadline wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        let now = Instant::now();
        let ready = {
            let mut state = self.inner.lock();
            self.add_after_locked(&mut state, key, delay, now)
        };
        self.inner.wake(ready);
    }

    /// Adds `key` after the rate limiter's delay for it (client-go `AddRateLimited`).
    pub fn add_rate_limited(&self, key: K) {
        let now = Instant::now();
        let ready = {
            let mut state = self.inner.lock();
            if state.shutting_down {
                return;
            }
            let delay = state.limiter.when(&key, now);
            self.add_after_locked(&mut state, key, delay, now)
        };
        self.inner.wake(ready);
    }

    /// Returns how many getters to wake.
    fn add_after_locked(
        &self,
        state: &mut State<K>,
        key: K,
        delay: Duration,
        now: Instant,
    ) -> usize {
        if state.shutting_down {
            return 0;
        }
        let metrics = self.inner.metrics.get();
        // Upstream counts every AddAfter as a retry, including zero delays.
        if let Some(m) = metrics {
            m.retries.inc();
        }
        let mut ready = state.promote_due(now, metrics);
        if delay.is_zero() {
            ready += usize::from(state.insert(key, now, metrics));
        } else if let Some(deadline) = now.checked_add(delay) {
            if state.schedule(key, deadline) {
                // A getter may be sleeping until a later deadline; one re-arms its timer.
                ready += 1;
            }
        } else {
            // An unrepresentable deadline is "never", like x/time/rate's InfDuration.
            tracing::debug!(queue = %self.inner.name, ?key, "delay never ends; key not queued");
        }
        ready
    }

    /// Stops backing off `key`: its next failure starts from the base delay again. Call it after a
    /// successful sync (or when giving up on the key).
    pub fn forget(&self, key: &K) {
        self.inner.lock().limiter.forget(key);
    }

    /// How many rate-limited requeues `key` has had since it was last forgotten.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.inner.lock().limiter.num_requeues(key)
    }

    /// Waits for the next key to process. `None` once the queue is shut down and no ready keys
    /// remain. The caller must call [`done`](Self::done) with the key when finished.
    ///
    /// Cancel-safe: a key is only taken from the queue by the poll that returns it.
    pub async fn get(&self) -> Option<K> {
        loop {
            // Registered before looking at the state, so an add or shutdown between the check
            // and the await still wakes us.
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let now = Instant::now();
            let (popped, ready, next_deadline) = {
                let mut state = self.inner.lock();
                let metrics = self.inner.metrics.get();
                let ready = state.promote_due(now, metrics);
                let popped = state.pop(now, metrics);
                if popped.is_none() && state.shutting_down {
                    return None;
                }
                (popped, ready, state.next_deadline())
            };
            // Other getters may take the other keys that became ready just now.
            self.inner
                .wake(ready.saturating_sub(usize::from(popped.is_some())));
            if popped.is_some() {
                return popped;
            }
            match next_deadline {
                Some(deadline) => {
                    tokio::select! {
                        () = notified.as_mut() => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                None => notified.as_mut().await,
            }
        }
    }

    /// Marks `key` as finished. If it was added again meanwhile, it is queued again now.
    pub fn done(&self, key: &K) {
        let now = Instant::now();
        let (ready, idle, drain) = {
            let mut state = self.inner.lock();
            let metrics = self.inner.metrics.get();
            let due = state.promote_due(now, metrics);
            let (requeued, idle) = state.finish(key, now, metrics);
            (due + usize::from(requeued), idle, state.drain)
        };
        self.inner.wake(ready);
        if idle && drain {
            self.inner.idle.notify_waiters();
        }
    }

    /// Number of keys ready to be handed out (not counting delayed or in-flight keys).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let (len, ready) = {
            let mut state = self.inner.lock();
            let ready = state.promote_due(now, self.inner.metrics.get());
            (state.queue.len(), ready)
        };
        self.inner.wake(ready);
        len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.lock().shutting_down
    }

    /// Ignores new keys from now on and wakes every getter. Keys already queued are still handed
    /// out; delayed keys are dropped (upstream stops its waiting loop likewise).
    pub fn shut_down(&self) {
        {
            let mut state = self.inner.lock();
            state.shutting_down = true;
            state.drain = false;
            state.waiting.clear();
            state.waiting_index.clear();
        }
        self.inner.ready.notify_waiters();
        // Releases a pending `shut_down_with_drain`, as upstream's ShutDown does.
        self.inner.idle.notify_waiters();
    }

    /// Like [`shut_down`](Self::shut_down), then waits until every key handed out has been
    /// `done` (client-go `ShutDownWithDrain`). A later `shut_down` stops the wait.
    pub async fn shut_down_with_drain(&self) {
        {
            let mut state = self.inner.lock();
            state.shutting_down = true;
            state.drain = true;
            state.waiting.clear();
            state.waiting_index.clear();
        }
        self.inner.ready.notify_waiters();
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.inner.lock();
                if state.processing.is_empty() || !state.drain {
                    return;
                }
            }
            notified.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// Runs `workers` (at least one) concurrent workers over `queue` until `shutdown` is cancelled (or the queue is
/// shut down and empty), then shuts the queue down and returns.
///
/// Each worker: get a key, reconcile it, `forget` on success, log and `add_rate_limited` on error,
/// and always `done` — the loop every upstream controller writes (`processNextWorkItem`).
///
/// On cancellation, workers stop taking keys but finish the reconcile in progress. Unlike upstream
/// (whose workers drain the queue with an already cancelled context), queued keys are not
/// processed: our reconcilers do not see the token, and after losing leadership we must not write.
/// A panicking reconcile is re-raised here after shutting the queue down, as upstream's
/// `HandleCrash` crashes kube-controller-manager.
pub async fn run_workers<K, F, Fut, E>(
    queue: WorkQueue<K>,
    workers: usize,
    shutdown: CancellationToken,
    reconcile: F,
) where
    K: QueueKey,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + 'static,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        tasks.spawn(worker(
            queue.clone(),
            shutdown.clone(),
            Arc::clone(&reconcile),
        ));
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined
            && error.is_panic()
        {
            queue.shut_down();
            std::panic::resume_unwind(error.into_panic());
        }
    }
    queue.shut_down();
}

async fn worker<K, F, Fut, E>(queue: WorkQueue<K>, shutdown: CancellationToken, reconcile: Arc<F>)
where
    K: QueueKey,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + 'static,
{
    loop {
        let key = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            key = queue.get() => match key {
                Some(key) => key,
                None => return,
            },
        };
        match reconcile(key.clone()).await {
            Ok(()) => queue.forget(&key),
            Err(error) => {
                tracing::error!(
                    queue = %queue.name(),
                    ?key,
                    requeues = queue.num_requeues(&key),
                    %error,
                    "error syncing; requeuing with backoff"
                );
                queue.add_rate_limited(key.clone());
            }
        }
        queue.done(&key);
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics (client-go util/workqueue metrics.go, component-base metrics/prometheus/workqueue)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    name: String,
}

/// What a scrape reads from one queue.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    depth: i64,
    unfinished_seconds: f64,
    longest_seconds: f64,
}

/// A type-erased view of a queue for the scrape-time gauges.
trait QueueProbe: Send + Sync {
    fn name(&self) -> &str;
    fn sample(&self, now: Instant) -> Sample;
}

impl<K: QueueKey> QueueProbe for Inner<K> {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample(&self, now: Instant) -> Sample {
        let (sample, ready) = {
            let mut state = self.lock();
            let ready = state.promote_due(now, self.metrics.get());
            (state.sample(now), ready)
        };
        self.wake(ready);
        sample
    }
}

/// The queues a [`WorkQueueMetrics`] reports on; weak, so a dropped queue disappears.
#[derive(Default)]
struct Probes(Mutex<Vec<Weak<dyn QueueProbe>>>);

impl Probes {
    fn push(&self, probe: Weak<dyn QueueProbe>) {
        let mut probes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        probes.retain(|p| p.strong_count() > 0);
        probes.push(probe);
    }

    fn live(&self) -> Vec<Arc<dyn QueueProbe>> {
        let mut probes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        probes.retain(|p| p.strong_count() > 0);
        probes.iter().filter_map(Weak::upgrade).collect()
    }
}

impl Debug for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probes").finish_non_exhaustive()
    }
}

const DEPTH_HELP: &str = "Current depth of workqueue.";
const UNFINISHED_HELP: &str = "How many seconds of work has done that is in progress and hasn't \
    been observed by work_duration. Large values indicate stuck threads. One can deduce the \
    number of stuck threads by observing the rate at which this increases.";
const LONGEST_HELP: &str =
    "How many seconds has the longest running processor for workqueue been running.";

/// Encodes the gauges that are derived from the queues' current state at scrape time.
///
/// Upstream refreshes unfinished-work and longest-running every 500 ms from a goroutine per queue;
/// computing them (and depth, which upstream keeps as an up/down gauge equal to the number of
/// dirty keys) when scraped is exact, keeps idle queues free of timers, and cannot drift.
#[derive(Debug)]
struct ScrapeTimeGauges(Arc<Probes>);

impl Collector for ScrapeTimeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let now = Instant::now();
        // Queues sharing a name share one series, as upstream's metric vectors do.
        let mut by_name: BTreeMap<String, Sample> = BTreeMap::new();
        for probe in self.0.live() {
            let sample = probe.sample(now);
            let total = by_name.entry(probe.name().to_owned()).or_default();
            total.depth = total.depth.saturating_add(sample.depth);
            total.unfinished_seconds += sample.unfinished_seconds;
            total.longest_seconds = total.longest_seconds.max(sample.longest_seconds);
        }
        encode_gauge(&mut encoder, "workqueue_depth", DEPTH_HELP, &by_name, |s| {
            s.depth
        })?;
        encode_gauge(
            &mut encoder,
            "workqueue_unfinished_work_seconds",
            UNFINISHED_HELP,
            &by_name,
            |s| s.unfinished_seconds,
        )?;
        encode_gauge(
            &mut encoder,
            "workqueue_longest_running_processor_seconds",
            LONGEST_HELP,
            &by_name,
            |s| s.longest_seconds,
        )?;
        Ok(())
    }
}

/// One gauge family with a series per queue name.
fn encode_gauge<N: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    metric: &str,
    help: &str,
    by_name: &BTreeMap<String, Sample>,
    value: impl Fn(&Sample) -> N,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
    for (name, sample) in by_name {
        let labels = QueueLabels { name: name.clone() };
        ConstGauge::new(value(sample)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn duration_histogram() -> Histogram {
    // Upstream: ExponentialBuckets(10e-9, 10, 10), i.e. 1e-8 s .. 10 s.
    Histogram::new(exponential_buckets(1e-8, 10.0, 10))
}

/// The `workqueue_*` metric families, with upstream's names and `name` label. Register once per
/// registry and pass the same value to every queue's [`WorkQueue::with_metrics`].
#[derive(Debug, Clone)]
pub struct WorkQueueMetrics {
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram, fn() -> Histogram>,
    work_duration: Family<QueueLabels, Histogram, fn() -> Histogram>,
    probes: Arc<Probes>,
}

impl WorkQueueMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(duration_histogram),
            work_duration: Family::new_with_constructor(duration_histogram),
            probes: Arc::default(),
        };
        // prometheus-client appends `_total` to counters and a full stop to help texts.
        registry.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            metrics.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            metrics.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            metrics.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            metrics.work_duration.clone(),
        );
        registry.register_collector(Box::new(ScrapeTimeGauges(Arc::clone(&metrics.probes))));
        metrics
    }

    fn handles(&self, name: &str) -> QueueMetrics {
        let labels = QueueLabels {
            name: name.to_owned(),
        };
        QueueMetrics {
            adds: self.adds.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            queue_duration: self.queue_duration.get_or_create(&labels).clone(),
            work_duration: self.work_duration.get_or_create(&labels).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn queue() -> WorkQueue<String> {
        WorkQueue::new("test", RateLimiter::default_controller())
    }

    fn key(s: &str) -> String {
        s.to_owned()
    }

    /// `get` that must not block (time is paused, so a real wait would auto-advance).
    async fn get_now(q: &WorkQueue<String>) -> Option<String> {
        tokio::time::timeout(Duration::ZERO, q.get())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_twice_before_it_is_taken_is_handed_out_once() {
        let q = queue();
        q.add(key("a"));
        q.add(key("a"));
        assert_eq!(q.len(), 1);
        assert_eq!(get_now(&q).await, Some(key("a")));
        assert_eq!(get_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_handed_out_in_fifo_order() {
        let q = queue();
        for k in ["c", "a", "b", "a"] {
            q.add(key(k));
        }
        let mut got = Vec::new();
        while let Some(k) = get_now(&q).await {
            got.push(k);
        }
        assert_eq!(got, ["c", "a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_added_while_processing_is_handed_out_again_only_after_done() {
        let q = queue();
        q.add(key("a"));
        let a = get_now(&q).await;
        assert_eq!(a, Some(key("a")));
        q.add(key("a"));
        q.add(key("a"));
        assert_eq!(q.len(), 0, "a key in flight must not be queued");
        assert_eq!(get_now(&q).await, None);
        q.done(&key("a"));
        assert_eq!(get_now(&q).await, Some(key("a")));
        q.done(&key("a"));
        assert_eq!(get_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn done_wakes_a_getter_waiting_for_a_key_re_added_during_processing() {
        let q = queue();
        q.add(key("a"));
        let first = get_now(&q).await;
        q.add(key("a"));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        q.done(&key("a"));
        assert_eq!(first, Some(key("a")));
        assert_eq!(waiter.await.ok().flatten(), Some(key("a")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_workers_never_process_the_same_key_concurrently() {
        let q: WorkQueue<u32> = WorkQueue::new("concurrency", RateLimiter::default_controller());
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let processed = Arc::new(AtomicUsize::new(0));
        let token = CancellationToken::new();
        let run = tokio::spawn(run_workers(q.clone(), 8, token.clone(), {
            let (in_flight, overlaps, processed) =
                (in_flight.clone(), overlaps.clone(), processed.clone());
            move |k: u32| {
                let (in_flight, overlaps, processed) =
                    (in_flight.clone(), overlaps.clone(), processed.clone());
                async move {
                    if !in_flight.lock().map(|mut s| s.insert(k)).unwrap_or(false) {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(50)).await;
                    if let Ok(mut s) = in_flight.lock() {
                        s.remove(&k);
                    }
                    processed.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            }
        }));
        for round in 0..200u32 {
            for k in 0..5 {
                q.add(k);
            }
            if round % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while !q.is_empty() || !q.inner.lock().processing.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        token.cancel();
        assert!(run.await.is_ok());
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        assert!(processed.load(Ordering::SeqCst) >= 5);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_hands_out_keys_in_deadline_order() {
        let q = queue();
        q.add_after(key("late"), Duration::from_secs(3));
        q.add_after(key("early"), Duration::from_secs(1));
        q.add_after(key("middle"), Duration::from_secs(2));
        assert_eq!(q.len(), 0);
        let start = Instant::now();
        let mut got = Vec::new();
        for _ in 0..3 {
            let k = q.get().await.unwrap_or_default();
            got.push((k.clone(), start.elapsed()));
            q.done(&k);
        }
        assert_eq!(
            got,
            [
                (key("early"), Duration::from_secs(1)),
                (key("middle"), Duration::from_secs(2)),
                (key("late"), Duration::from_secs(3)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_deadline_for_the_same_key() {
        let q = queue();
        let start = Instant::now();
        q.add_after(key("a"), Duration::from_secs(10));
        q.add_after(key("a"), Duration::from_secs(2));
        q.add_after(key("a"), Duration::from_secs(5));
        assert_eq!(q.get().await, Some(key("a")));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        q.done(&key("a"));
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            get_now(&q).await,
            None,
            "the later deadlines were merged away"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_getter_sleeping_until_a_later_deadline_wakes_for_an_earlier_one() {
        let q = queue();
        q.add_after(key("late"), Duration::from_secs(60));
        let start = Instant::now();
        let getter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add_after(key("soon"), Duration::from_secs(1));
        assert_eq!(getter.await.ok().flatten(), Some(key("soon")));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_with_zero_delay_adds_immediately() {
        let q = queue();
        q.add_after(key("a"), Duration::ZERO);
        assert_eq!(get_now(&q).await, Some(key("a")));
    }

    #[test]
    fn per_item_backoff_doubles_from_5ms_and_caps_at_1000s() {
        let mut limiter: RateLimiter<String> =
            RateLimiter::item_exponential(Duration::from_millis(5), Duration::from_secs(1000));
        let now = Instant::now();
        let delays: Vec<Duration> = (0..22).map(|_| limiter.when(&key("a"), now)).collect();
        assert_eq!(delays[0], Duration::from_millis(5));
        assert_eq!(delays[1], Duration::from_millis(10));
        assert_eq!(delays[2], Duration::from_millis(20));
        assert_eq!(delays[3], Duration::from_millis(40));
        // 5 ms * 2^17 = 655.36 s, 2^18 would be 1310.72 s.
        assert_eq!(delays[17], Duration::from_millis(655_360));
        assert_eq!(delays[18], Duration::from_secs(1000));
        assert_eq!(delays[21], Duration::from_secs(1000));
        assert_eq!(limiter.num_requeues(&key("a")), 22);
        assert_eq!(limiter.when(&key("b"), now), Duration::from_millis(5));
        for _ in 0..100 {
            limiter.when(&key("a"), now);
        }
        assert_eq!(limiter.when(&key("a"), now), Duration::from_secs(1000));
    }

    #[test]
    fn forget_resets_the_per_item_backoff() {
        let mut limiter: RateLimiter<String> = RateLimiter::default_controller();
        let now = Instant::now();
        limiter.when(&key("a"), now);
        limiter.when(&key("a"), now);
        assert_eq!(limiter.num_requeues(&key("a")), 2);
        limiter.forget(&key("a"));
        assert_eq!(limiter.num_requeues(&key("a")), 0);
        assert_eq!(limiter.when(&key("a"), now), Duration::from_millis(5));
    }

    #[test]
    fn token_bucket_allows_a_burst_of_100_then_10_per_second() {
        let mut bucket = TokenBucket::new(10.0, 100);
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(
                bucket.reserve(t0),
                Duration::ZERO,
                "token {i} is in the burst"
            );
        }
        // Then one token every 100 ms: each reservation waits 100 ms longer than the previous.
        for i in 1..=20u32 {
            assert_eq!(bucket.reserve(t0), Duration::from_millis(100) * i);
        }
        // Two seconds later the 20 owed tokens have been paid back.
        assert_eq!(
            bucket.reserve(t0 + Duration::from_secs(2)),
            Duration::from_millis(100)
        );
        // After a long idle period the bucket is full again, but never more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..100 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(later), Duration::from_millis(100));
    }

    #[test]
    fn default_controller_limiter_waits_for_the_longer_of_backoff_and_bucket() {
        let mut limiter: RateLimiter<u32> = RateLimiter::default_controller();
        let now = Instant::now();
        // 100 distinct keys use up the burst at 5 ms each.
        for k in 0..100 {
            assert_eq!(limiter.when(&k, now), Duration::from_millis(5));
        }
        // Then the bucket dominates a fresh key's 5 ms.
        assert_eq!(limiter.when(&1000, now), Duration::from_millis(100));
        assert_eq!(limiter.num_requeues(&1000), 1);
    }

    #[test]
    fn a_bucket_with_no_rate_hands_out_its_burst_then_never() {
        let mut bucket = TokenBucket::new(0.0, 1);
        let now = Instant::now();
        assert_eq!(bucket.reserve(now), Duration::ZERO);
        assert_eq!(bucket.reserve(now), Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn add_rate_limited_waits_for_the_backoff_and_counts_requeues() {
        let q = queue();
        let start = Instant::now();
        q.add_rate_limited(key("a"));
        assert_eq!(get_now(&q).await, None);
        assert_eq!(q.get().await, Some(key("a")));
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        q.add_rate_limited(key("a"));
        q.done(&key("a"));
        assert_eq!(q.get().await, Some(key("a")));
        assert_eq!(start.elapsed(), Duration::from_millis(15));
        assert_eq!(q.num_requeues(&key("a")), 2);
        q.forget(&key("a"));
        assert_eq!(q.num_requeues(&key("a")), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_wakes_every_waiting_getter() {
        let q = queue();
        let getters: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.get().await })
            })
            .collect();
        tokio::task::yield_now().await;
        q.shut_down();
        for getter in getters {
            assert_eq!(getter.await.ok().flatten(), None);
        }
        assert!(q.is_shutting_down());
    }

    #[tokio::test(start_paused = true)]
    async fn after_shut_down_queued_keys_are_still_handed_out_and_new_ones_ignored() {
        let q = queue();
        q.add(key("a"));
        q.add_after(key("delayed"), Duration::from_secs(1));
        q.shut_down();
        q.add(key("b"));
        q.add_rate_limited(key("c"));
        assert_eq!(q.get().await, Some(key("a")));
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_with_drain_waits_for_keys_in_flight() {
        let q = queue();
        q.add(key("a"));
        let a = get_now(&q).await;
        let drain = tokio::spawn({
            let q = q.clone();
            async move { q.shut_down_with_drain().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished());
        q.done(&key("a"));
        assert!(drain.await.is_ok());
        assert_eq!(a, Some(key("a")));
    }

    #[tokio::test(start_paused = true)]
    async fn run_workers_forgets_successes_and_requeues_failures_with_backoff() {
        let q = queue();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let token = CancellationToken::new();
        let start = Instant::now();
        let run = tokio::spawn(run_workers(q.clone(), 2, token.clone(), {
            let attempts = attempts.clone();
            move |k: String| {
                let attempts = attempts.clone();
                async move {
                    let n = attempts
                        .lock()
                        .map(|mut a| {
                            a.push((k.clone(), start.elapsed()));
                            a.iter().filter(|(x, _)| *x == k).count()
                        })
                        .unwrap_or(0);
                    if k == "flaky" && n < 3 {
                        Err(format!("attempt {n} failed"))
                    } else {
                        Ok(())
                    }
                }
            }
        }));
        q.add(key("flaky"));
        q.add(key("fine"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(q.num_requeues(&key("flaky")), 0, "forgotten after success");
        token.cancel();
        assert!(run.await.is_ok());
        assert!(q.is_shutting_down());
        let flaky: Vec<Duration> = attempts
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| k == "flaky")
                    .map(|(_, t)| *t)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            flaky,
            [
                Duration::ZERO,
                Duration::from_millis(5),
                Duration::from_millis(15)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn run_workers_returns_when_the_token_is_cancelled_even_with_keys_queued() {
        let q = queue();
        let token = CancellationToken::new();
        token.cancel();
        q.add(key("a"));
        run_workers(q.clone(), 3, token, |_k: String| async {
            Err::<(), String>("must not run".to_owned())
        })
        .await;
        assert_eq!(q.num_requeues(&key("a")), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_text_uses_the_upstream_names_and_name_label() {
        let mut registry = Registry::default();
        let metrics = WorkQueueMetrics::register(&mut registry);
        let q = queue().with_metrics(&metrics);
        q.add(key("a"));
        q.add(key("b"));
        let a = get_now(&q).await.unwrap_or_default();
        tokio::time::advance(Duration::from_secs(3)).await;
        q.add_after(key("c"), Duration::from_secs(60));

        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        for line in [
            "workqueue_depth{name=\"test\"} 1",
            "workqueue_adds_total{name=\"test\"} 2",
            "workqueue_retries_total{name=\"test\"} 1",
            "workqueue_unfinished_work_seconds{name=\"test\"} 3",
            "workqueue_longest_running_processor_seconds{name=\"test\"} 3",
            "workqueue_queue_duration_seconds_count{name=\"test\"} 1",
            "workqueue_work_duration_seconds_count{name=\"test\"} 0",
            "workqueue_queue_duration_seconds_bucket{le=\"1e-8\",name=\"test\"} 1",
            "workqueue_queue_duration_seconds_bucket{le=\"10.0\",name=\"test\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");

        q.done(&a);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        assert!(
            text.contains("workqueue_work_duration_seconds_count{name=\"test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("workqueue_longest_running_processor_seconds{name=\"test\"} 0"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_queue_disappears_from_the_metrics() {
        let mut registry = Registry::default();
        let metrics = WorkQueueMetrics::register(&mut registry);
        let q = WorkQueue::<String>::new("gone", RateLimiter::default()).with_metrics(&metrics);
        q.add(key("a"));
        drop(q);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        assert!(!text.contains("workqueue_depth{name=\"gone\"}"), "{text}");
    }
}
