//! The process-wide Prometheus registry. Components register their metrics (with upstream names)
//! at any time, also after `/metrics` started serving, so the registry is shared behind a mutex.

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct SharedRegistry(Arc<Mutex<Registry>>);

impl SharedRegistry {
    /// Runs `f` with the registry locked, e.g. `registry.with(|r| WorkQueueMetrics::register(r))`.
    pub fn with<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// The Prometheus text exposition (OpenMetrics text format, as prometheus-client writes it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.with(|r| prometheus_client::encoding::text::encode(&mut out, r))
            .map(|_| out)
            .unwrap_or_default()
    }
}
