//! Sijill as a SMART on FHIR authorization server.
//!
//! - `GET /fhir/.well-known/smart-configuration`, `GET /auth/jwks`
//! - `GET /auth/authorize`: authorization code + PKCE (S256) for registered apps; the user
//!   signs in at the national eID provider (or, with none configured, at the development
//!   identity provider on `/auth/dev-login`).
//! - `POST /auth/token`: `authorization_code`, `refresh_token` (rotated; reuse of a spent
//!   refresh token revokes its whole family) and `client_credentials` with a
//!   `private_key_jwt` client assertion (Backend Services).
//! - `POST /auth/revoke`, `POST /auth/introspect`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sijill_auth::clients::ClientKind;
use sijill_auth::{AccessClaims, Principal, Role, ScopeContext, Scopes};

use super::{Identity, ACCESS_TOKEN_SECONDS};
use crate::http::AppState;

/// How long a login may take at the identity provider.
const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);
/// How long an authorization code is valid.
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a refresh token is valid.
const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// An app's authorization request, waiting for the user to sign in.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    client_id: String,
    redirect_uri: String,
    scope: Scopes,
    app_state: String,
    code_challenge: String,
    /// Nonce of Sijill's own login at the eID provider.
    pub nonce: String,
    /// PKCE verifier of Sijill's own login at the eID provider.
    pub eid_verifier: String,
    started: Instant,
}

/// What a signed-in user was granted, before it becomes tokens.
#[derive(Debug, Clone)]
pub struct Grant {
    client_id: String,
    role: Role,
    subject: String,
    scope: Scopes,
    patient: Option<String>,
    fhir_user: Option<String>,
    organization: Option<String>,
}

#[derive(Debug, Clone)]
struct IssuedCode {
    grant: Grant,
    redirect_uri: String,
    code_challenge: String,
    issued: Instant,
}

#[derive(Debug, Clone)]
struct Refresh {
    grant: Grant,
    family: String,
    issued: Instant,
}

/// The short-lived state of the authorization server (in memory: a restart signs users
/// out, which is safe).
#[derive(Default)]
pub struct Sessions {
    logins: parking_lot::Mutex<HashMap<String, PendingLogin>>,
    codes: parking_lot::Mutex<HashMap<String, IssuedCode>>,
    refresh: parking_lot::Mutex<HashMap<String, Refresh>>,
    spent_refresh: parking_lot::Mutex<HashMap<String, String>>,
    revoked_tokens: parking_lot::Mutex<HashMap<String, i64>>,
    seen_assertions: parking_lot::Mutex<HashMap<String, i64>>,
}

impl Sessions {
    /// Whether an access token (by `jti`) was revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked_tokens.lock().contains_key(jti)
    }

    fn revoke_token(&self, jti: &str, exp: i64) {
        let mut revoked = self.revoked_tokens.lock();
        let now = sijill_auth::now_unix();
        revoked.retain(|_, e| *e > now);
        revoked.insert(jti.to_string(), exp);
    }

    /// Takes the pending login of a `state` (single use).
    pub fn take_login(&self, state: &str) -> Option<PendingLogin> {
        let mut logins = self.logins.lock();
        logins.retain(|_, l| l.started.elapsed() < LOGIN_TTL);
        logins.remove(state)
    }
}

/// The routes of the authorization server.
pub fn routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let signing_in = Router::new()
        .route("/auth/dev-login", post(dev_login))
        .route("/auth/callback", get(super::eid::callback))
        .route("/auth/token", post(token))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::refusals::audit_refusals,
        ));
    Router::new()
        .route("/fhir/.well-known/smart-configuration", get(smart_configuration))
        .route("/.well-known/smart-configuration", get(smart_configuration))
        .route("/auth/jwks", get(jwks))
        .route("/auth/authorize", get(authorize))
        .route("/auth/revoke", post(revoke))
        .route("/auth/introspect", post(introspect))
        .merge(signing_in)
}

/// Sends the browser back to an app's (already checked) redirect URI with an OAuth error.
fn redirect_error(redirect_uri: &str, app_state: &str, error: &str, description: &str) -> Response {
    Redirect::to(&with_query(
        redirect_uri,
        &[
            ("error", error),
            ("error_description", description),
            ("state", app_state),
        ],
    ))
    .into_response()
}

/// An OAuth 2.0 error response.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (status, Json(json!({"error": error, "error_description": description}))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static header"));
    r
}

async fn smart_configuration(State(state): State<Arc<AppState>>) -> Response {
    let id = &*state.identity;
    Json(json!({
        "issuer": id.issuer,
        "jwks_uri": format!("{}/jwks", id.issuer),
        "authorization_endpoint": format!("{}/authorize", id.issuer),
        "token_endpoint": format!("{}/token", id.issuer),
        "revocation_endpoint": format!("{}/revoke", id.issuer),
        "introspection_endpoint": format!("{}/introspect", id.issuer),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
        "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access", "patient/*.rs", "user/*.cruds", "system/*.cruds"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone", "client-public", "client-confidential-asymmetric", "sso-openid-connect",
            "context-standalone-patient", "permission-offline", "permission-patient", "permission-user", "permission-v2"
        ],
    }))
    .into_response()
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    Json(state.identity.keys.jwks()).into_response()
}

/// The query of `/auth/authorize`.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    aud: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `uri` with `pairs` added to its query.
pub fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let q = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{uri}{}{q}", if uri.contains('?') { "&" } else { "?" })
}

async fn authorize(State(state): State<Arc<AppState>>, Query(q): Query<AuthorizeQuery>) -> Response {
    let id = &*state.identity;
    // Until the client and its redirect URI are known good, errors are shown, not redirected.
    let client = match q.client_id.as_deref().map(|c| id.client(c)) {
        Some(Ok(Some(c))) => c,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "This application is not registered with Sijill.",
                id.development(),
            )
        }
    };
    let redirect_uri = q.redirect_uri.clone().unwrap_or_default();
    let ClientKind::App { redirect_uris } = &client.kind else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not an app",
            "This client is a system client; it cannot sign users in.",
            id.development(),
        );
    };
    if !redirect_uris.contains(&redirect_uri) {
        return page(
            StatusCode::BAD_REQUEST,
            "Wrong redirect address",
            "The redirect address is not registered for this application.",
            id.development(),
        );
    }
    let app_state = q.state.clone().unwrap_or_default();
    let fail = |error: &str, description: &str| redirect_error(&redirect_uri, &app_state, error, description);
    if q.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    let Some(challenge) = q.code_challenge.clone().filter(|c| c.len() >= 43) else {
        return fail(
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        );
    };
    if q.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if q.aud.as_deref().map(|a| a.trim_end_matches('/')) != Some(id.audience.as_str()) {
        return fail("invalid_request", "aud must be this server's FHIR base URL");
    }
    let asked = Scopes::parse(q.scope.as_deref().unwrap_or(""));
    let scope = asked.intersect(&Scopes::parse(&client.scope));
    if scope.resources.is_empty() {
        return fail(
            "invalid_scope",
            "none of the requested scopes is allowed for this application",
        );
    }
    let login_state = sijill_auth::random_token(24);
    let pending = PendingLogin {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope,
        app_state: app_state.clone(),
        code_challenge: challenge,
        nonce: sijill_auth::random_token(24),
        eid_verifier: sijill_auth::pkce::new_verifier(),
        started: Instant::now(),
    };
    let eid_redirect = id.eid.as_ref().map(|eid| eid.login_url(&login_state, &pending));
    id.sessions.logins.lock().insert(login_state.clone(), pending);
    match eid_redirect {
        Some(url) => Redirect::to(&url).into_response(),
        None => dev_login_page(&login_state, &client.name),
    }
}

/// The development identity provider's sign-in page.
fn dev_login_page(login_state: &str, app: &str) -> Response {
    let body = format!(
        r#"<p>The application <b>{app}</b> asks to access Sijill.</p>
<form method="post" action="/auth/dev-login">
<input type="hidden" name="login" value="{login_state}">
<label>National identifier (or <code>Practitioner/ID</code> for staff)
<input name="national_id" autofocus required></label>
<button type="submit">Sign in</button>
</form>"#,
        app = html_escape(app),
        login_state = html_escape(login_state)
    );
    page(StatusCode::OK, "Sign in", &body, true)
}

/// Text made safe to place in HTML (content and quoted attributes).
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small HTML page; on a development server every page says so.
pub fn page(status: StatusCode, title: &str, body: &str, development: bool) -> Response {
    let banner = if development {
        r#"<p style="background:#b00020;color:#fff;padding:.5em;font-weight:bold">DEVELOPMENT IDENTITY PROVIDER — not for real patients. No national eID is configured.</p>"#
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sijill — {t}</title></head><body>{banner}<h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    );
    // The edge adds the framing and content-security headers to every response.
    let mut r = (status, Html(html)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static header"));
    r
}

#[derive(Debug, Deserialize)]
struct DevLogin {
    login: String,
    national_id: String,
}

async fn dev_login(State(state): State<Arc<AppState>>, Form(form): Form<DevLogin>) -> Response {
    let id = &*state.identity;
    if !id.development() {
        return page(
            StatusCode::NOT_FOUND,
            "Not available",
            "This server signs users in through the national eID.",
            false,
        );
    }
    let Some(pending) = id.sessions.take_login(&form.login) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "Start again from the application.",
            true,
        );
    };
    let subject = format!("dev:{}", form.national_id.trim());
    finish_login(&state, pending, &subject, form.national_id.trim()).await
}

/// Maps the signed-in person to their role and record, issues a code and sends the
/// browser back to the app.
pub async fn finish_login(state: &Arc<AppState>, pending: PendingLogin, subject: &str, national_id: &str) -> Response {
    let fail =
        |error: &str, description: &str| redirect_error(&pending.redirect_uri, &pending.app_state, error, description);
    let wants_patient = pending
        .scope
        .resources
        .iter()
        .any(|s| s.context == ScopeContext::Patient);
    let engine_state = state.clone();
    let nid = national_id.to_string();
    let who = tokio::task::spawn_blocking(move || super::people::who_is(&engine_state, &nid, wants_patient)).await;
    let person = match who {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => return fail("access_denied", &why),
        Err(_) => return fail("server_error", "the sign-in could not be completed"),
    };
    let scope = pending.scope.intersect(&person.role.allowed_scopes());
    let grant = Grant {
        client_id: pending.client_id.clone(),
        role: person.role,
        subject: subject.to_string(),
        scope,
        patient: person.patient,
        fhir_user: Some(person.fhir_user),
        organization: person.organization,
    };
    let code = sijill_auth::random_token(32);
    let id = &*state.identity;
    {
        let mut codes = id.sessions.codes.lock();
        codes.retain(|_, c| c.issued.elapsed() < CODE_TTL);
        codes.insert(
            code.clone(),
            IssuedCode {
                grant,
                redirect_uri: pending.redirect_uri.clone(),
                code_challenge: pending.code_challenge.clone(),
                issued: Instant::now(),
            },
        );
    }
    Redirect::to(&with_query(
        &pending.redirect_uri,
        &[("code", &code), ("state", &pending.app_state)],
    ))
    .into_response()
}

/// The form of `/auth/token`.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

fn token_response(id: &Identity, grant: &Grant, refresh: Option<String>) -> Response {
    let claims = AccessClaims {
        patient: grant.patient.clone(),
        fhir_user: grant.fhir_user.clone(),
        organization: grant.organization.clone(),
        ..id.claims(grant.role, &grant.subject, &grant.client_id, &grant.scope)
    };
    let access = match id.keys.sign(&claims) {
        Ok(t) => t,
        Err(e) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    };
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_SECONDS,
        "scope": claims.scope,
    });
    if let Some(p) = &grant.patient {
        body["patient"] = p.clone().into();
    }
    if let Some(r) = refresh {
        body["refresh_token"] = r.into();
    }
    if grant.scope.has("openid") {
        let id_token = json!({
            "iss": id.issuer, "aud": grant.client_id, "sub": grant.subject,
            "iat": claims.iat, "exp": claims.exp, "fhirUser": grant.fhir_user.as_ref().map(|f| format!("{}/{f}", id.audience)),
        });
        if let Ok(t) = id.keys.sign(&id_token) {
            body["id_token"] = t.into();
        }
    }
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static header"));
    r
}

fn new_refresh(id: &Identity, grant: &Grant, family: Option<String>) -> Option<String> {
    if !grant.scope.has("offline_access") {
        return None;
    }
    let token = sijill_auth::random_token(32);
    let family = family.unwrap_or_else(|| sijill_auth::random_token(16));
    id.sessions.refresh.lock().insert(
        token.clone(),
        Refresh {
            grant: grant.clone(),
            family,
            issued: Instant::now(),
        },
    );
    Some(token)
}

/// The token endpoint (its refusals are audited by [`super::refusals`]).
async fn token(State(state): State<Arc<AppState>>, Form(form): Form<TokenForm>) -> Response {
    let id = &*state.identity;
    let bad = |error: &str, description: &str| oauth_error(StatusCode::BAD_REQUEST, error, description);
    match form.grant_type.as_deref() {
        Some("authorization_code") => {
            let code = form.code.unwrap_or_default();
            let Some(issued) = id.sessions.codes.lock().remove(&code) else {
                return bad("invalid_grant", "the code is unknown, used or expired");
            };
            if issued.issued.elapsed() > CODE_TTL {
                return bad("invalid_grant", "the code expired");
            }
            if form.client_id.as_deref() != Some(issued.grant.client_id.as_str())
                || form.redirect_uri.as_deref() != Some(issued.redirect_uri.as_str())
            {
                return bad(
                    "invalid_grant",
                    "client_id or redirect_uri differ from the authorization request",
                );
            }
            if !sijill_auth::pkce::verify(form.code_verifier.as_deref().unwrap_or(""), &issued.code_challenge) {
                return bad("invalid_grant", "the code_verifier does not match the code_challenge");
            }
            let refresh = new_refresh(id, &issued.grant, None);
            token_response(id, &issued.grant, refresh)
        }
        Some("refresh_token") => {
            let presented = form.refresh_token.unwrap_or_default();
            let found = id.sessions.refresh.lock().remove(&presented);
            let Some(old) = found else {
                // A spent refresh token used again: someone copied it. End the whole family.
                if let Some(family) = id.sessions.spent_refresh.lock().get(&presented).cloned() {
                    id.sessions.refresh.lock().retain(|_, r| r.family != family);
                }
                return bad("invalid_grant", "the refresh token is unknown, used or revoked");
            };
            if old.issued.elapsed() > REFRESH_TTL || form.client_id.as_deref() != Some(old.grant.client_id.as_str()) {
                return bad(
                    "invalid_grant",
                    "the refresh token expired or belongs to another client",
                );
            }
            if matches!(id.client(&old.grant.client_id), Ok(None)) {
                return bad("invalid_client", "the client was revoked");
            }
            id.sessions.spent_refresh.lock().insert(presented, old.family.clone());
            let mut grant = old.grant.clone();
            if let Some(narrower) = form.scope.as_deref() {
                grant.scope = Scopes::parse(narrower).intersect(&old.grant.scope);
            }
            let refresh = new_refresh(id, &grant, Some(old.family));
            token_response(id, &grant, refresh)
        }
        Some("client_credentials") => {
            if form.client_assertion_type.as_deref() != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client_credentials needs a private_key_jwt client assertion",
                );
            }
            let endpoint = format!("{}/token", id.issuer);
            let (client, jti, exp) = match sijill_auth::clients::verify_assertion(
                &id.clients,
                form.client_assertion.as_deref().unwrap_or(""),
                &endpoint,
            ) {
                Ok(v) => v,
                Err(e) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &e.to_string()),
            };
            {
                let mut seen = id.sessions.seen_assertions.lock();
                let now = sijill_auth::now_unix();
                seen.retain(|_, e| *e + 60 > now);
                if seen.insert(format!("{}|{jti}", client.client_id), exp).is_some() {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        "this client assertion was already used",
                    );
                }
            }
            let ClientKind::System { role, organization, .. } = &client.kind else {
                return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "not a system client");
            };
            let scope = Scopes::parse(form.scope.as_deref().unwrap_or("")).intersect(&Scopes::parse(&client.scope));
            if scope.resources.is_empty() {
                return bad(
                    "invalid_scope",
                    "none of the requested scopes is allowed for this client",
                );
            }
            let grant = Grant {
                client_id: client.client_id.clone(),
                role: *role,
                subject: client.client_id.clone(),
                scope,
                patient: None,
                fhir_user: None,
                organization: organization.clone(),
            };
            token_response(id, &grant, None)
        }
        _ => bad(
            "unsupported_grant_type",
            "grant_type must be authorization_code, refresh_token or client_credentials",
        ),
    }
}

#[derive(Debug, Deserialize)]
struct TokenOnly {
    token: Option<String>,
}

async fn revoke(State(state): State<Arc<AppState>>, Form(form): Form<TokenOnly>) -> Response {
    let id = &*state.identity;
    let token = form.token.unwrap_or_default();
    if let Some(r) = id.sessions.refresh.lock().remove(&token) {
        id.sessions.spent_refresh.lock().insert(token.clone(), r.family);
    }
    if let Ok(claims) = id
        .keys
        .verify::<sijill_auth::AccessClaims>(&token, &id.issuer, &id.audience)
    {
        id.sessions.revoke_token(&claims.jti, claims.exp);
    }
    // RFC 7009: the answer does not say whether the token was known.
    StatusCode::OK.into_response()
}

async fn introspect(State(state): State<Arc<AppState>>, headers: HeaderMap, Form(form): Form<TokenOnly>) -> Response {
    let id = &*state.identity;
    let caller: Result<Principal, _> = id.authenticate(&headers);
    match caller {
        Ok(p) if p.role == Role::Admin || p.context == ScopeContext::System => {}
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "introspection needs an administrator's or a system's token",
            )
        }
    }
    let token = form.token.unwrap_or_default();
    let answer: Value = match id
        .keys
        .verify::<sijill_auth::AccessClaims>(&token, &id.issuer, &id.audience)
    {
        Ok(c) if !id.sessions.is_revoked(&c.jti) => json!({
            "active": true, "scope": c.scope, "client_id": c.client_id, "sub": c.sub, "exp": c.exp, "iat": c.iat,
            "iss": c.iss, "aud": c.aud, "role": c.role, "patient": c.patient, "fhirUser": c.fhir_user, "token_type": "Bearer",
        }),
        _ => json!({"active": false}),
    };
    Json(answer).into_response()
}
