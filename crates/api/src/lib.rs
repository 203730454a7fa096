//! The FHIR REST API of Sijill.
//!
//! [`engine::Engine`] runs FHIR interactions independent of HTTP (the import command and
//! Bundle entries use it directly); [`http`] puts it behind axum. Each interaction has its
//! own module under [`interactions`].

pub mod access;
pub mod body;
pub mod bundle_writer;
pub mod context;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod interactions;
pub mod metrics;
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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        engine,
        metrics: metrics::Metrics::default(),
        identity: Some(identity),
    });
    let app = http::router(state);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
