//! Prometheus metrics: requests and latency by interaction and status, and the time spent
//! in the engine (validation and store) by interaction.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The FHIR interaction (`read`, `create`, `transaction`, …).
    pub interaction: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of engine timings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InteractionLabels {
    /// The FHIR interaction.
    pub interaction: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    engine: Family<InteractionLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let engine = Family::<InteractionLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "sijill_http_requests",
            "HTTP requests by FHIR interaction and status",
            requests.clone(),
        );
        registry.register(
            "sijill_http_request_seconds",
            "HTTP request latency by FHIR interaction and status",
            latency.clone(),
        );
        registry.register(
            "sijill_engine_seconds",
            "Time in the engine (validation and store) by FHIR interaction",
            engine.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            engine,
        }
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn record_request(&self, interaction: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            interaction: interaction.to_string(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Records time spent in the engine.
    pub fn record_engine(&self, interaction: &str, seconds: f64) {
        self.engine
            .get_or_create(&InteractionLabels {
                interaction: interaction.to_string(),
            })
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
