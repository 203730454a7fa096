//! Request hardening at the edge, for every route: security headers, CORS for the browser
//! apps an operator allows (none by default), and the per-address rate limit on the
//! authorization endpoints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::http::AppState;
use crate::rate_limit::{retry_after_seconds, RateSettings};

/// How the server meets the network, checked and loaded once at start.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Rate limits.
    pub rate: RateSettings,
    /// Origins whose browser apps may call the API and the token endpoint; empty: none
    /// (browsers then refuse cross-origin calls).
    pub cors_origins: Vec<HeaderValue>,
    /// The TLS configuration: served over TLS (with Strict-Transport-Security).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl EdgeSettings {
    /// Checks the origins (`https://portal.example`) and loads the certificate, if any; the
    /// error names the bad origin or file.
    pub fn new(
        rate: RateSettings,
        cors_origins: &[String],
        tls: Option<&crate::tls::TlsFiles>,
    ) -> Result<EdgeSettings, String> {
        Ok(EdgeSettings {
            rate,
            cors_origins: parse_origins(cors_origins)?,
            tls: tls.map(crate::tls::server_config).transpose()?,
        })
    }
}

/// Checks `origins`: each must be an origin (scheme, host and optional port; no path).
fn parse_origins(origins: &[String]) -> Result<Vec<HeaderValue>, String> {
    origins
        .iter()
        .map(|o| {
            let url = reqwest::Url::parse(o).map_err(|e| format!("CORS origin '{o}': {e}"))?;
            let origin = url.origin().ascii_serialization();
            if !matches!(url.scheme(), "http" | "https") || origin != o.trim_end_matches('/') {
                return Err(format!(
                    "CORS origin '{o}' must be scheme://host[:port] only, e.g. https://portal.example"
                ));
            }
            HeaderValue::from_str(&origin).map_err(|e| e.to_string())
        })
        .collect()
}

/// The headers a browser app may send and read.
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    "if-none-exist",
    "if-modified-since",
    "prefer",
];
const EXPOSED_HEADERS: [&str; 6] = [
    "location",
    "content-location",
    "etag",
    "last-modified",
    "x-request-id",
    "retry-after",
];

/// Wraps the whole router with security headers and, when origins are allowed, CORS.
pub fn harden(router: Router, settings: &EdgeSettings) -> Router {
    let fixed = [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    let mut router = router;
    for (name, value) in fixed {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    if settings.tls.is_some() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    if !settings.cors_origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(settings.cors_origins.clone()))
                .allow_methods([
                    Method::GET,
                    Method::HEAD,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
                .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
                .max_age(std::time::Duration::from_secs(600)),
        );
    }
    router
}

/// Middleware for `/auth/*`: one budget per network address.
pub async fn limit_by_address(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    match state.rate_limits.check_address(address) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let mut r = crate::identity::smart::oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many requests from this address; try again later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_bare_origins() {
        assert!(parse_origins(&["https://portal.example".into()]).is_ok());
        assert!(parse_origins(&["http://127.0.0.1:3000".into()]).is_ok());
        assert!(parse_origins(&["https://portal.example/app".into()]).is_err());
        assert!(parse_origins(&["portal.example".into()]).is_err());
        assert!(parse_origins(&["ftp://portal.example".into()]).is_err());
        assert!(parse_origins(&["*".into()]).is_err());
    }
}
