//! The operator's own metrics, served on `/metrics`: passes by result,
//! their durations, and actions taken by kind.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    actions: Family<ActionLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("dyno_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let actions = Family::<ActionLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciliation passes, by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconciliation pass",
            duration.clone(),
        );
        registry.register("actions", "Actions taken, by kind", actions.clone());
        Metrics {
            registry: Mutex::new(registry),
            reconciles,
            duration,
            actions,
        }
    }
}

impl Metrics {
    /// Records a pass.
    pub fn pass(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Records an action (by its Event reason).
    pub fn action(&self, action: &'static str) {
        self.actions.get_or_create(&ActionLabel { action }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
