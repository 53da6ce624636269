//! The per-zone rate-limited queue of nodes waiting for their NoExecute taint (upstream
//! `RateLimitedTimedQueue` in pkg/controller/nodelifecycle/scheduler/rate_limited_queue.go).
//!
//! A node is queued once (until explicitly removed: processing it keeps it in the "seen" set, so
//! it is not queued again while it stays unhealthy), processed in order of when it is due, and
//! only as fast as the zone's token bucket allows (burst 1). The rate changes with the zone's
//! state; a rate of zero stops the queue.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

/// `EvictionRateLimiterBurst`.
pub const EVICTION_RATE_LIMITER_BURST: f64 = 1.0;

/// flowcontrol's token bucket (`TryAccept` is x/time/rate's `Allow`), or the never-accepting
/// limiter a rate of zero swaps in.
#[derive(Clone, Debug)]
pub enum Limiter {
    Bucket {
        qps: f32,
        tokens: f64,
        last: Option<Instant>,
    },
    Never,
}

impl Limiter {
    /// A full bucket (`flowcontrol.NewTokenBucketRateLimiter(qps, 1)`).
    pub fn bucket(qps: f32) -> Self {
        Limiter::Bucket {
            qps,
            tokens: EVICTION_RATE_LIMITER_BURST,
            last: None,
        }
    }

    pub fn qps(&self) -> f32 {
        match self {
            Limiter::Bucket { qps, .. } => *qps,
            Limiter::Never => 0.0,
        }
    }

    /// Takes a token if one is there at `now`.
    pub fn try_accept(&mut self, now: Instant) -> bool {
        match self {
            Limiter::Never => false,
            Limiter::Bucket { qps, tokens, last } => {
                if let Some(prev) = *last {
                    let elapsed = now.saturating_duration_since(prev).as_secs_f64();
                    let rate = f64::from(qps.max(0.0));
                    *tokens = (*tokens + elapsed * rate).min(EVICTION_RATE_LIMITER_BURST);
                }
                *last = Some(last.map_or(now, |prev| prev.max(now)));
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
        }
    }
}

/// A queued node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedValue {
    pub value: String,
    /// The node's UID when queued.
    pub uid: String,
    pub added_at: Instant,
    pub process_at: Instant,
}

/// What processing a queued node came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: leave the queue (the node stays "seen" until removed).
    Done,
    /// Try again no sooner than after this wait.
    Retry(Duration),
}

#[derive(Debug)]
pub struct RateLimitedTimedQueue {
    /// Ordered by `process_at`, then by insertion (a stable sort on a small list).
    queue: Vec<TimedValue>,
    set: HashSet<String>,
    limiter: Limiter,
}

impl RateLimitedTimedQueue {
    pub fn new(qps: f32) -> Self {
        RateLimitedTimedQueue {
            queue: Vec::new(),
            set: HashSet::new(),
            limiter: Limiter::bucket(qps),
        }
    }

    /// Queues `value` unless it was queued before and not removed since. True when queued.
    pub fn add(&mut self, value: &str, uid: &str, now: Instant) -> bool {
        if self.set.contains(value) {
            return false;
        }
        self.set.insert(value.to_owned());
        self.push(TimedValue {
            value: value.to_owned(),
            uid: uid.to_owned(),
            added_at: now,
            process_at: now,
        });
        true
    }

    fn push(&mut self, v: TimedValue) {
        let at = self.queue.partition_point(|q| q.process_at <= v.process_at);
        self.queue.insert(at, v);
    }

    /// Forgets `value`: out of the queue, and free to be queued again. False when it was not
    /// known.
    pub fn remove(&mut self, value: &str) -> bool {
        if !self.set.remove(value) {
            return false;
        }
        self.queue.retain(|q| q.value != value);
        true
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn contains(&self, value: &str) -> bool {
        self.set.contains(value)
    }

    /// The next node to process at `now`, if the rate allows and it is due (upstream `Try`: a
    /// token is spent even when the head turns out not to be due yet). The node stays queued
    /// until [`finish`](Self::finish).
    pub fn next_due(&mut self, now: Instant) -> Option<TimedValue> {
        let head = self.queue.first()?.clone();
        if !self.limiter.try_accept(now) {
            return None;
        }
        (now >= head.process_at).then_some(head)
    }

    /// Records how processing `value` went at `now`.
    pub fn finish(&mut self, value: &TimedValue, outcome: Outcome, now: Instant) {
        let Some(pos) = self.queue.iter().position(|q| q.value == value.value) else {
            // Removed meanwhile (the node recovered or went away).
            return;
        };
        let mut v = self.queue.remove(pos);
        match outcome {
            Outcome::Done => {}
            Outcome::Retry(wait) => {
                // Upstream adds one nanosecond to the wait.
                v.process_at = now + wait + Duration::from_nanos(1);
                self.push(v);
            }
        }
    }

    pub fn qps(&self) -> f32 {
        self.limiter.qps()
    }

    /// `SwapLimiter`: a new rate, keeping "no token left" across the swap so a burst of 1 is not
    /// handed out twice. A rate of zero or less stops the queue.
    pub fn swap_limiter(&mut self, qps: f32, now: Instant) {
        if self.limiter.qps() == qps {
            return;
        }
        self.limiter = if qps <= 0.0 {
            Limiter::Never
        } else {
            let mut fresh = Limiter::bucket(qps);
            if !self.limiter.try_accept(now) {
                fresh.try_accept(now);
            }
            fresh
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_node_is_queued_once_until_removed() {
        let now = Instant::now();
        let mut q = RateLimitedTimedQueue::new(10.0);
        assert!(q.add("a", "u1", now));
        assert!(!q.add("a", "u1", now));
        assert!(q.remove("a"));
        assert!(!q.remove("a"));
        assert!(q.add("a", "u2", now));
    }

    #[test]
    fn processed_nodes_stay_seen_and_are_not_queued_again() {
        let now = Instant::now();
        let mut q = RateLimitedTimedQueue::new(10.0);
        q.add("a", "u", now);
        let v = q.next_due(now).expect("due");
        q.finish(&v, Outcome::Done, now);
        assert!(q.is_empty());
        assert!(q.contains("a"));
        assert!(!q.add("a", "u", now + secs(1.0)));
    }

    #[test]
    fn the_rate_limits_how_fast_nodes_are_processed() {
        let t0 = Instant::now();
        // 0.1 qps: one node now (the burst), the next after 10 s.
        let mut q = RateLimitedTimedQueue::new(0.1);
        for n in ["a", "b", "c"] {
            q.add(n, n, t0);
        }
        let first = q.next_due(t0).expect("burst");
        assert_eq!(first.value, "a");
        q.finish(&first, Outcome::Done, t0);
        assert!(q.next_due(t0 + secs(5.0)).is_none());
        assert!(q.next_due(t0 + secs(9.9)).is_none());
        let second = q.next_due(t0 + secs(10.0)).expect("refilled");
        assert_eq!(second.value, "b");
    }

    #[test]
    fn a_retry_waits_and_lets_later_nodes_go_first() {
        let t0 = Instant::now();
        let mut q = RateLimitedTimedQueue::new(1000.0);
        q.add("a", "a", t0);
        q.add("b", "b", t0);
        let a = q.next_due(t0).expect("a");
        q.finish(&a, Outcome::Retry(Duration::from_millis(50)), t0);
        let t1 = t0 + secs(0.01);
        let b = q.next_due(t1).expect("b");
        assert_eq!(b.value, "b");
        q.finish(&b, Outcome::Done, t1);
        assert!(q.next_due(t0 + secs(0.02)).is_none(), "a is not due yet");
        assert_eq!(
            q.next_due(t0 + secs(0.06)).map(|v| v.value),
            Some("a".into())
        );
    }

    #[test]
    fn a_zero_rate_stops_the_queue_and_a_new_rate_restarts_it_without_a_second_burst() {
        let t0 = Instant::now();
        let mut q = RateLimitedTimedQueue::new(0.1);
        q.add("a", "a", t0);
        q.add("b", "b", t0);
        let a = q.next_due(t0).expect("burst");
        q.finish(&a, Outcome::Done, t0);
        q.swap_limiter(0.0, t0);
        assert_eq!(q.qps(), 0.0);
        assert!(q.next_due(t0 + secs(100.0)).is_none());
        q.swap_limiter(1.0, t0 + secs(100.0));
        // The stopped limiter had no token, so the new one starts drained.
        assert!(q.next_due(t0 + secs(100.5)).is_none());
        assert!(q.next_due(t0 + secs(101.1)).is_some());
    }

    #[test]
    fn swapping_to_the_same_rate_keeps_the_bucket() {
        let t0 = Instant::now();
        let mut q = RateLimitedTimedQueue::new(0.1);
        q.add("a", "a", t0);
        q.swap_limiter(0.1, t0);
        assert!(q.next_due(t0).is_some(), "the burst token is still there");
    }

    #[test]
    fn finishing_a_node_removed_meanwhile_is_harmless() {
        let t0 = Instant::now();
        let mut q = RateLimitedTimedQueue::new(10.0);
        q.add("a", "a", t0);
        let a = q.next_due(t0).expect("a");
        q.remove("a");
        q.finish(&a, Outcome::Retry(Duration::from_secs(1)), t0);
        assert!(q.is_empty());
        assert!(!q.contains("a"));
    }
}
