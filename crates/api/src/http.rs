//! The HTTP face of the engine: `/fhir/...`, `/health`, `/metrics`.
//!
//! Each request becomes a [`FhirRequest`] with a [`RequestContext`], runs on a blocking
//! thread (the store is synchronous), and its [`FhirResponse`] becomes HTTP with ETag,
//! Last-Modified, Location and `Prefer: return=…` applied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::json;
use sijill_fhir::outcome::{operation_outcome, Issue};

use crate::body::parse_json;
use crate::context::RequestContext;
use crate::engine::{Conditions, Engine, FhirRequest, FhirResponse, Method, Payload, RequestBody, Route};
use crate::error::FhirError;
use crate::interactions::parse_query_string;
use crate::metrics::Metrics;

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// Shared state of the HTTP server.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Metrics.
    pub metrics: Metrics,
    /// Token checking and issuing.
    pub identity: Arc<crate::identity::Identity>,
    /// Rate limits per user, client and address.
    pub rate_limits: crate::rate_limit::RateLimits,
}

/// The router of the whole server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/fhir", any(fhir))
        .route("/fhir/", any(fhir))
        .route("/fhir/{*path}", any(fhir))
        .route("/health", get(health))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(health))
        .route("/metrics", get(metrics))
        .merge(crate::portal::routes())
        .merge(
            crate::identity::smart::routes(&state)
                .merge(crate::identity::admin::routes())
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::edge::limit_by_address,
                )),
        )
        .fallback(|| async { error_response(&FhirError::not_found("Nothing here: the FHIR API is at /fhir")) })
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let store = state.engine.store.clone();
    let ready = tokio::task::spawn_blocking(move || store.ping().is_ok())
        .await
        .unwrap_or(false);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({"live": true, "ready": ready}))).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn error_response(e: &FhirError) -> Response {
    let body = serde_json::to_vec(&operation_outcome(&e.issues)).unwrap_or_default();
    let mut response = (e.status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if e.status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        let text = e
            .issues
            .first()
            .map(|i| {
                // Header values must be visible ASCII.
                i.diagnostics
                    .chars()
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .map(|c| if c == '"' { '\'' } else { c })
                    .collect::<String>()
            })
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer realm=\"sijill\", error=\"invalid_token\", error_description=\"{text}\""
        )) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    if e.status == StatusCode::FORBIDDEN && e.issues.iter().any(|i| i.diagnostics.starts_with("insufficient_scope")) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sijill\", error=\"insufficient_scope\""),
        );
    }
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"));
    }
    response
}

/// The FHIR interaction name of a request, for metrics and logs.
fn interaction_name(method: Method, path: &str) -> &'static str {
    match (method, Route::parse(path)) {
        (_, Err(_)) => "unknown",
        (Method::Get, Ok(Route::Metadata)) => "capabilities",
        (Method::Post, Ok(Route::System)) => "transaction",
        (Method::Get, Ok(Route::Instance(..))) => "read",
        (Method::Get, Ok(Route::Version(..))) => "vread",
        (Method::Get, Ok(Route::Type(_))) | (Method::Post, Ok(Route::TypeSearch(_))) => "search-type",
        (Method::Get, Ok(Route::SystemHistory)) => "history-system",
        (Method::Get, Ok(Route::TypeHistory(_))) => "history-type",
        (Method::Get, Ok(Route::InstanceHistory(..))) => "history-instance",
        (Method::Post, Ok(Route::Type(_))) => "create",
        (Method::Put, _) => "update",
        (Method::Patch, _) => "patch",
        (Method::Delete, _) => "delete",
        _ => "unknown",
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// What the client asked for with `Prefer: return=…`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// The tokens of the `Prefer` header (`return=minimal`, `handling=lenient`, …).
fn prefer_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::HeaderName::from_static("prefer"))
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .map(|t| t.trim().to_string())
}

fn prefer_return(headers: &HeaderMap) -> Return {
    for part in prefer_tokens(headers) {
        match part.as_str() {
            "return=minimal" => return Return::Minimal,
            "return=OperationOutcome" => return Return::OperationOutcome,
            "return=representation" => return Return::Representation,
            _ => {}
        }
    }
    Return::Representation
}

/// Builds the engine request from the HTTP parts.
fn build_request(
    engine: &Engine,
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<FhirRequest, FhirError> {
    let method = Method::parse(method.as_str()).ok_or_else(|| {
        FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("HTTP method {method} is not supported"),
        )
    })?;
    let path = uri
        .path()
        .trim_start_matches("/fhir")
        .trim_start_matches('/')
        .to_string();
    let mut query = uri.query().map(parse_query_string).unwrap_or_default();
    if query.len() > 1000 {
        return Err(FhirError::bad_request("Too many query parameters"));
    }
    if let Some((_, f)) = query.iter().find(|(k, _)| k == "_format") {
        if f.contains("xml") {
            return Err(FhirError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                "Only JSON is supported (_format)",
            ));
        }
    }
    let content_type = header_text(headers, header::CONTENT_TYPE)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let media = content_type.split(';').next().unwrap_or("").trim().to_string();
    let body = if body.is_empty() || matches!(method, Method::Get | Method::Delete) {
        RequestBody::None
    } else if media == "application/x-www-form-urlencoded" && path.ends_with("_search") {
        query.extend(parse_query_string(
            std::str::from_utf8(body).map_err(|_| FhirError::bad_request("form body is not UTF-8"))?,
        ));
        RequestBody::None
    } else {
        let parsed = || parse_json(body, engine.limits.max_depth);
        match media.as_str() {
            "application/json-patch+json" => RequestBody::JsonPatch(
                serde_json::from_slice(body)
                    .map_err(|e| FhirError::bad_request(format!("The JSON Patch body is not valid JSON: {e}")))?,
            ),
            "application/fhir+json" | "application/json" | "" => RequestBody::Resource(parsed()?),
            other => {
                return Err(FhirError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "not-supported",
                    format!("Content-Type '{other}' is not supported; send application/fhir+json"),
                ))
            }
        }
    };
    Ok(FhirRequest {
        method,
        path,
        query,
        conditions: Conditions {
            if_match: header_text(headers, header::IF_MATCH),
            if_none_match: header_text(headers, header::IF_NONE_MATCH),
            if_modified_since: header_text(headers, header::IF_MODIFIED_SINCE),
            if_none_exist: header_text(headers, header::HeaderName::from_static("if-none-exist")),
        },
        body,
        lenient: prefer_tokens(headers).any(|t| t == "handling=lenient"),
    })
}

async fn fhir(State(state): State<Arc<AppState>>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let head = method == HttpMethod::HEAD;
    // Everything but reading the CapabilityStatement needs a valid token. (The
    // CapabilityStatement consults no guard, so it runs in the operator's context.)
    let open =
        matches!(method, HttpMethod::GET | HttpMethod::HEAD) && uri.path().trim_end_matches('/') == "/fhir/metadata";
    // Each user and client has a budget; failed logins spend their address's.
    let (authenticated, over_budget) = if open {
        (Ok(RequestContext::local_operator(remote)), None)
    } else {
        match state.identity.authenticate(&headers) {
            Ok(p) => {
                let over = state.rate_limits.check_principal(&p).err();
                (Ok(RequestContext::of(p, remote)), over)
            }
            Err(e) => (Err(e), state.rate_limits.check_address(remote).err()),
        }
    };
    if let Some(wait) = over_budget {
        let mut response = error_response(&FhirError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "Too many requests: slow down and try again after the time in Retry-After",
        ));
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::rate_limit::retry_after_seconds(wait)),
        );
        state
            .metrics
            .record_request("throttled", 429, started.elapsed().as_secs_f64());
        return response;
    }
    let (ctx, result, interaction) = match authenticated {
        // The body of a request without a valid token is not read; its context only
        // carries a request id. The refusal is audited.
        Err(e) => {
            crate::audit::record_authentication_failure(
                state.engine.audit.clone(),
                remote,
                &format!("{method} {}", uri.path()),
                None,
                e.issues
                    .first()
                    .map_or("no valid access token", |i| i.diagnostics.as_str()),
            )
            .await;
            (RequestContext::local_operator(remote), Err(e), "unauthenticated")
        }
        Ok(mut ctx) => {
            ctx.client_request_id = client_request_id(&headers);
            let limit = state.engine.limits.max_body_bytes;
            let result = match axum::body::to_bytes(body, limit).await {
                Err(_) => Err(FhirError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-costly",
                    format!("The request body is larger than {limit} bytes"),
                )),
                Ok(bytes) => build_request(&state.engine, &method, &uri, &headers, &bytes),
            };
            let interaction = result
                .as_ref()
                .map(|r| interaction_name(r.method, &r.path))
                .unwrap_or("unknown");
            (ctx, result, interaction)
        }
    };
    let prefer = prefer_return(&headers);
    let response = match result {
        Err(e) => error_response(&e),
        Ok(request) => {
            // Prefer: return applies to create, update and patch; a Bundle or search
            // response is never withheld.
            let is_write = matches!(interaction, "create" | "update" | "patch");
            let engine_state = state.clone();
            let ctx2 = ctx.clone();
            let engine_started = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || engine_state.engine.execute(&ctx2, request)).await;
            state
                .metrics
                .record_engine(interaction, engine_started.elapsed().as_secs_f64());
            match outcome {
                Ok(Ok(r)) => success_response(r, if is_write { prefer } else { Return::Representation }),
                Ok(Err(e)) => error_response(&e),
                Err(_) => error_response(&FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "The request failed unexpectedly; nothing was changed",
                )),
            }
        }
    };
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if head {
        *response.body_mut() = Body::empty();
    }
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.record_request(interaction, status, seconds);
    tracing::info!(request_id = %ctx.request_id, interaction, status, ms = seconds * 1000.0, "request");
    response
}

fn success_response(r: FhirResponse, prefer: Return) -> Response {
    let body: Vec<u8> = match (prefer, r.payload) {
        (Return::Minimal, _) | (_, Payload::None) => Vec::new(),
        (Return::OperationOutcome, _) => {
            let text = format!("{} {}", r.status.as_u16(), r.status.canonical_reason().unwrap_or(""));
            serde_json::to_vec(&operation_outcome(&[Issue::information(text)])).unwrap_or_default()
        }
        (Return::Representation, Payload::Stored(b)) => b.to_vec(),
        (Return::Representation, Payload::Bytes(b)) => b,
        (Return::Representation, Payload::Json(v)) => serde_json::to_vec(&v).unwrap_or_default(),
    };
    let has_body = !body.is_empty();
    let mut response = (r.status, body).into_response();
    let h = response.headers_mut();
    if has_body {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    }
    if let Some(v) = r
        .version
        .and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok())
    {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = r
        .last_modified
        .as_deref()
        .and_then(sijill_store::time_fmt::to_http_date)
        .and_then(|d| HeaderValue::from_str(&d).ok())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(v) = r.location.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        if r.status == StatusCode::CREATED || r.status == StatusCode::OK {
            h.insert(header::LOCATION, v.clone());
            h.insert(header::CONTENT_LOCATION, v);
        }
    }
    response
}

/// The client's `X-Request-Id`, when it is a plausible id (1 to 64 letters, digits, `-`,
/// `_`, `.`); anything else is ignored.
fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.to_str().ok()?;
    let plausible = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plausible.then(|| value.to_string())
}
