//! The administrator's API for registered clients (`/auth/clients`): list, register,
//! revoke, and replace a system's keys. Only a platform administrator's token may call it;
//! every change goes to the operator log with the administrator's identity.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use sijill_auth::clients::Registration;
use sijill_auth::{Principal, Role};

use super::smart::oauth_error;
use super::Identity;
use crate::http::AppState;

/// The routes of the clients API.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/clients", get(list).post(register))
        .route("/auth/clients/{client_id}", axum::routing::delete(revoke))
        .route("/auth/clients/{client_id}/jwks", put(replace_keys))
}

/// The identity layer and the calling administrator, or the error response.
fn administrator(state: &AppState, headers: &HeaderMap) -> Result<(Arc<Identity>, Principal), Box<Response>> {
    let identity = state.identity.clone();
    let principal = identity.authenticate(headers).map_err(|e| {
        let why = e.issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default();
        Box::new(oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", &why))
    })?;
    if principal.role != Role::Admin {
        return Err(Box::new(oauth_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "only a platform administrator manages clients",
        )));
    }
    Ok((identity, principal))
}

fn refused(e: sijill_auth::AuthError) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", &e.to_string())
}

fn log(identity: &Identity, by: &Principal, event: &str, client_id: &str) {
    let entry = json!({"event": event, "client_id": client_id, "by": by.subject, "via": by.client_id});
    if let Err(e) = sijill_auth::clients::log_operator_event(&identity.data_dir, entry) {
        tracing::error!(error = %e, "the operator log cannot be written");
    }
}

/// `GET /auth/clients`.
async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (identity, _) = match administrator(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match identity.clients.list() {
        Ok(clients) => Json(json!({ "clients": clients })).into_response(),
        Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    }
}

/// `POST /auth/clients` with a [`Registration`] as JSON: 201 and the client.
async fn register(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (identity, admin) = match administrator(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not a client registration: {e}"),
            )
        }
    };
    match registration.register(&identity.clients) {
        Ok(client) => {
            log(&identity, &admin, "client-add", &client.client_id);
            (StatusCode::CREATED, Json(client)).into_response()
        }
        Err(e) => refused(e),
    }
}

/// `DELETE /auth/clients/{id}`: the client gets no new tokens.
async fn revoke(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(client_id): Path<String>) -> Response {
    let (identity, admin) = match administrator(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match identity.clients.revoke(&client_id) {
        Ok(()) => {
            log(&identity, &admin, "client-revoke", &client_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(sijill_auth::AuthError::UnknownClient(_)) => {
            oauth_error(StatusCode::NOT_FOUND, "invalid_client", "no such client")
        }
        Err(e) => refused(e),
    }
}

/// `PUT /auth/clients/{id}/jwks` with a JWK Set: a system's key rotation.
async fn replace_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Response {
    let (identity, admin) = match administrator(&state, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let keys = match serde_json::from_slice(&body) {
        Ok(k) => k,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_client_metadata",
                &format!("the body is not a JWK Set: {e}"),
            )
        }
    };
    match identity.clients.set_keys(&client_id, keys) {
        Ok(()) => {
            log(&identity, &admin, "client-keys", &client_id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refused(e),
    }
}
