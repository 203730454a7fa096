//! Audit of refused sign-ins and token requests: middleware on `/auth/token`,
//! `/auth/dev-login` and `/auth/callback` that writes an AuditEvent (DICOM "User
//! Authentication / Login", minor failure) for every refusal — a 4xx answer, or a redirect
//! back to the app carrying an OAuth `error` — with the address, the endpoint, the client
//! and grant type the form named, and the reason; never the credentials.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::http::AppState;

/// Largest form body read (token and sign-in forms are far smaller).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The OAuth `error` (and its description) a redirect carries, if any.
fn error_in_redirect(response: &Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    let query = location.split_once('?')?.1;
    let pairs: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let error = pairs.get("error")?;
    Some(pairs.get("error_description").cloned().unwrap_or_else(|| error.clone()))
}

/// The middleware (see the module documentation).
pub async fn audit_refusals(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let endpoint = format!("{} {}", request.method(), request.uri().path());
    let (parts, body) = request.into_parts();
    let (response, sent) = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Err(_) => (
            crate::identity::smart::oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large",
            ),
            Default::default(),
        ),
        Ok(bytes) => (
            next.run(Request::from_parts(parts, Body::from(bytes.clone()))).await,
            bytes,
        ),
    };
    let (response, reason) = if let Some(reason) = error_in_redirect(&response) {
        (response, reason)
    } else if response.status().is_client_error() {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.unwrap_or_default();
        let reason = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error_description"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("refused with HTTP {}", parts.status.as_u16()));
        (Response::from_parts(parts, Body::from(bytes)), reason)
    } else {
        return response;
    };
    // Read only now: an accepted request pays nothing for its audit.
    let form: HashMap<String, String> = form_urlencoded::parse(&sent).into_owned().collect();
    let request = match form.get("grant_type") {
        Some(grant) => format!("{endpoint} (grant_type {grant})"),
        None => endpoint,
    };
    crate::audit::record_authentication_failure(
        state.engine.audit.clone(),
        remote,
        &request,
        form.get("client_id").map(String::as_str),
        &reason,
    )
    .await;
    response
}
