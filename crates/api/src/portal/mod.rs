//! The citizen portal at `/portal/`: one page where a citizen signs in with their national
//! eID (SMART App Launch, authorization code with PKCE, as the built-in public client
//! [`CLIENT_ID`]) and then sees, in plain words, who opened their record
//! (`Patient/{id}/$access-log`), the grants in force with a button to revoke each one, and
//! a button that makes a one-time access code to read aloud to a practitioner.
//!
//! The page is static: it talks to the FHIR API with the citizen's token like any other
//! app, so the portal has no access of its own. Its script and page are compiled into the
//! server.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sijill_auth::clients::{Client, ClientKind};

use crate::http::AppState;

/// The client id of the built-in portal.
pub const CLIENT_ID: &str = "sijill-portal";

/// What the portal may ask for: the citizen's own record, read-only, plus the consent
/// operations (which check the person, not a scope).
const SCOPE: &str = "openid fhirUser launch/patient patient/*.rs";

/// The portal's page and script.
const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("portal.js");

/// The portal's pages may run their own script and call this server, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; \
                      form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The built-in portal as a client of this server: its redirect address is the portal
/// page on the same origin as the FHIR base `audience`.
pub fn client(audience: &str) -> Client {
    Client {
        client_id: CLIENT_ID.to_string(),
        name: "Sijill citizen portal".to_string(),
        scope: SCOPE.to_string(),
        kind: ClientKind::App {
            redirect_uris: vec![format!("{}/portal/", origin_of(audience))],
        },
        created: String::new(),
        revoked: false,
    }
}

/// The origin of a FHIR base URL (`https://host/fhir` → `https://host`).
fn origin_of(audience: &str) -> &str {
    let base = audience.trim_end_matches('/');
    base.strip_suffix("/fhir").unwrap_or(base)
}

/// `/portal/` and its script.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(|| async { served(PAGE, "text/html; charset=utf-8") }))
        .route(
            "/portal/portal.js",
            get(|| async { served(SCRIPT, "text/javascript; charset=utf-8") }),
        )
}

fn served(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portal_redirects_to_its_own_page_on_the_server_origin() {
        let c = client("https://sante.example/fhir");
        let ClientKind::App { redirect_uris } = c.kind else {
            panic!("the portal is an app")
        };
        assert_eq!(redirect_uris, vec!["https://sante.example/portal/".to_string()]);
        assert!(!c.scope.contains("user/") && !c.scope.contains("system/"));
    }
}
