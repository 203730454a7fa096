//! The FHIR REST API of Sijill.
//!
//! [`engine::Engine`] runs FHIR interactions independent of HTTP (the import command and
//! Bundle entries use it directly); [`http`] puts it behind axum. Each interaction has its
//! own module under [`interactions`].

pub mod access;
pub mod audit;
pub mod body;
pub mod bundle_writer;
pub mod consent;
pub mod context;
pub mod edge;
pub mod engine;
pub mod error;
pub mod guardian;
pub mod http;
pub mod identity;
pub mod interactions;
pub mod metrics;
pub mod outbox;
pub mod parameters;
pub mod portal;
pub mod rate_limit;
pub mod resource_json;
pub mod scheduling;
pub mod snapshots;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use engine::{Engine, Limits};
pub use http::AppState;

/// Serves the API on `listener` (over TLS when `edge.tls` has a configuration) until
/// `shutdown` completes; requests in flight finish before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    identity: Arc<identity::Identity>,
    edge: edge::EdgeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        engine,
        metrics: metrics::Metrics::default(),
        identity,
        rate_limits: rate_limit::RateLimits::new(edge.rate),
    });
    let app = edge::harden(http::router(state), &edge);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match edge.tls {
        None => axum::serve(listener, service).with_graceful_shutdown(shutdown).await,
        Some(config) => {
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(30)));
            });
            let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
            axum_server::from_tcp_rustls(listener.into_std()?, config)
                .handle(handle)
                .serve(service)
                .await
        }
    }
}
