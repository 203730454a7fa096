//! The FHIR REST API of Sijill.
//!
//! [`engine::Engine`] runs FHIR interactions independent of HTTP (the import command and
//! Bundle entries use it directly); [`http`] puts it behind axum. Each interaction has its
//! own module under [`interactions`].

pub mod access;
pub mod body;
pub mod bundle_writer;
pub mod context;
pub mod edge;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod interactions;
pub mod metrics;
pub mod rate_limit;
pub mod snapshots;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use engine::{Engine, Limits};
pub use http::AppState;

/// Serves the API on `listener` until `shutdown` completes; requests in flight finish
/// before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    identity: Arc<identity::Identity>,
    edge: edge::EdgeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let origins = edge::parse_origins(&edge.cors_origins).map_err(std::io::Error::other)?;
    let state = Arc::new(AppState {
        engine,
        metrics: metrics::Metrics::default(),
        identity: Some(identity),
        rate_limits: rate_limit::RateLimits::new(edge.rate),
    });
    let app = edge::harden(http::router(state), &edge, origins);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
