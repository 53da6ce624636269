//! Timed deletions (upstream `TimedWorkerQueue` in pkg/controller/tainteviction/timed_workers.go):
//! one pending piece of work per key, run once its timer fires unless cancelled first.
//!
//! A timer runs for `fire_at - created_at` from the moment the work is added, as upstream's. Work
//! due at once starts immediately and is no longer cancellable; its key stays taken until it has
//! finished, so it is not started twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The work: given the key and when it was due.
pub type WorkFn = Arc<dyn Fn(String, Instant) -> BoxFuture<'static, ()> + Send + Sync>;

/// A pending timer.
#[derive(Clone, Debug)]
pub struct Timer {
    pub created_at: Instant,
    pub fire_at: Instant,
    cancel: CancellationToken,
}

struct Entry {
    id: u64,
    /// None: started at once, running.
    timer: Option<Timer>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    next_id: u64,
}

#[derive(Clone)]
pub struct TimedWorkerQueue {
    state: Arc<Mutex<State>>,
    work: WorkFn,
    shutdown: CancellationToken,
}

impl TimedWorkerQueue {
    /// Work stops being started once `shutdown` is cancelled.
    pub fn new(work: WorkFn, shutdown: CancellationToken) -> Self {
        TimedWorkerQueue {
            state: Arc::default(),
            work,
            shutdown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `AddWork`: schedules `key` unless work for it is already pending or running.
    pub fn add_work(&self, key: &str, created_at: Instant, fire_at: Instant) {
        let mut state = self.lock();
        if state.entries.contains_key(key) {
            tracing::debug!(item = key, "trying to add already existing work, skipping");
            return;
        }
        state.next_id += 1;
        let id = state.next_id;
        let delay = fire_at.saturating_duration_since(created_at);
        let cancel = self.shutdown.child_token();
        let timer = (!delay.is_zero()).then(|| Timer {
            created_at,
            fire_at,
            cancel: cancel.clone(),
        });
        state.entries.insert(key.to_owned(), Entry { id, timer });
        drop(state);
        let this = self.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            if cancel.is_cancelled() {
                return;
            }
            (this.work)(key.clone(), fire_at).await;
            let mut state = this.lock();
            // Only this work's own entry: a newer one may have taken the key meanwhile.
            if state.entries.get(&key).is_some_and(|e| e.id == id) {
                state.entries.remove(&key);
            }
        });
    }

    /// `CancelWork`: forgets `key`'s work, stopping its timer. True only when a timer was
    /// stopped (work already running is not interrupted).
    pub fn cancel_work(&self, key: &str) -> bool {
        let removed = self.lock().entries.remove(key);
        match removed.and_then(|e| e.timer) {
            Some(timer) => {
                timer.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// `GetWorkerUnsafe`: the pending timer for `key`, if any.
    pub fn timer(&self, key: &str) -> Option<Timer> {
        self.lock().entries.get(key).and_then(|e| e.timer.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recording() -> (WorkFn, Arc<Mutex<Vec<String>>>) {
        let done = Arc::new(Mutex::new(Vec::new()));
        let d = done.clone();
        let work: WorkFn = Arc::new(move |key, _| {
            let d = d.clone();
            Box::pin(async move {
                d.lock().expect("lock").push(key);
            })
        });
        (work, done)
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_when_its_timer_fires_and_the_key_is_then_free() {
        let (work, done) = recording();
        let q = TimedWorkerQueue::new(work, CancellationToken::new());
        let now = Instant::now();
        q.add_work("ns/a", now, now + Duration::from_secs(5));
        assert!(q.timer("ns/a").is_some());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(done.lock().expect("lock").is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(*done.lock().expect("lock"), vec!["ns/a".to_owned()]);
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_work_never_runs() {
        let (work, done) = recording();
        let q = TimedWorkerQueue::new(work, CancellationToken::new());
        let now = Instant::now();
        q.add_work("ns/a", now, now + Duration::from_secs(5));
        assert!(q.cancel_work("ns/a"));
        assert!(!q.cancel_work("ns/a"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(done.lock().expect("lock").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn work_due_now_runs_at_once_and_cannot_be_cancelled_or_added_twice() {
        let (work, done) = recording();
        let q = TimedWorkerQueue::new(work, CancellationToken::new());
        let now = Instant::now();
        q.add_work("ns/a", now, now);
        assert!(q.timer("ns/a").is_none());
        q.add_work("ns/a", now, now);
        assert!(!q.cancel_work("ns/a"));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(done.lock().expect("lock").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_pending_timers() {
        let (work, done) = recording();
        let shutdown = CancellationToken::new();
        let q = TimedWorkerQueue::new(work, shutdown.clone());
        let now = Instant::now();
        q.add_work("ns/a", now, now + Duration::from_secs(1));
        shutdown.cancel();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(done.lock().expect("lock").is_empty());
    }
}
