//! The process-wide Prometheus registry. Components register their metrics (with upstream names)
//! at any time, also after `/metrics` started serving, so the registry is shared behind a mutex.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<Mutex<Registry>>, Arc<Mutex<Once>>);

/// Metrics registered with [`SharedRegistry::once`], by key.
type Once = HashMap<&'static str, Box<dyn Any + Send>>;

impl SharedRegistry {
    /// Runs `f` with the registry locked, e.g. `registry.with(|r| WorkQueueMetrics::register(r))`.
    pub fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Registers the metrics `f` makes the first time `key` is asked for, and hands out clones of
    /// them afterwards: a controller that is stopped and started again (a configuration change)
    /// keeps counting into the same series instead of registering a duplicate.
    pub fn once<T: Clone + Send + 'static>(
        &self,
        key: &'static str,
        f: impl FnOnce(&mut Registry) -> T,
    ) -> T {
        let mut once = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = once.get(key).and_then(|m| m.downcast_ref::<T>()) {
            return existing.clone();
        }
        let made = self.with(f);
        once.insert(key, Box::new(made.clone()));
        made
    }

    /// The Prometheus text exposition (OpenMetrics text format, as prometheus-client writes it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.with(|r| prometheus_client::encoding::text::encode(&mut out, r))
            .map(|_| out)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn metrics_registered_once_are_shared_and_exposed_once() {
        let registry = SharedRegistry::default();
        let register = |r: &mut Registry| {
            let c = Counter::<u64>::default();
            r.register("restarts", "Restarts.", c.clone());
            c
        };
        let first = registry.once("x", register);
        let second = registry.once("x", register);
        first.inc();
        second.inc();
        let text = registry.encode();
        assert_eq!(text.matches("# TYPE restarts counter").count(), 1, "{text}");
        assert!(text.contains("restarts_total 2"), "{text}");
    }
}
