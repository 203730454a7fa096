//! The national eID provider: discovery at start, the login redirect (authorization code +
//! PKCE + nonce), and the callback that exchanges the code and checks the ID token.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use sijill_auth::oidc::{verify_id_token, ProviderMetadata};

use super::smart::{finish_login, html_escape, page, with_query, PendingLogin};
use crate::http::AppState;

/// How Sijill is registered at the eID provider.
#[derive(Debug, Clone)]
pub struct EidSettings {
    /// The provider's issuer URL.
    pub issuer: String,
    /// Sijill's client id there.
    pub client_id: String,
    /// Sijill's client secret there (client_secret_basic).
    pub client_secret: String,
    /// The claim that carries the national identifier.
    pub national_id_claim: String,
    /// Sijill's callback URL (`{origin}/auth/callback`).
    pub redirect_uri: String,
    /// Extra root certificates (PEM) to trust for the provider, besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A discovered eID provider.
pub struct EidProvider {
    settings: EidSettings,
    metadata: ProviderMetadata,
    keys: parking_lot::RwLock<JwkSet>,
    http: reqwest::Client,
}

/// The client that talks to the provider: HTTPS with the system's roots (and the extra
/// ones configured), no redirects, a timeout.
fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

async fn fetch_keys(http: &reqwest::Client, uri: &str) -> Result<JwkSet, String> {
    http.get(uri)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("cannot fetch the provider's keys: {e}"))?
        .json::<JwkSet>()
        .await
        .map_err(|e| format!("the provider's key set is not valid: {e}"))
}

impl EidProvider {
    /// Reads the provider's discovery document and keys. Its issuer must be exactly the
    /// configured one.
    pub async fn discover(settings: EidSettings) -> Result<EidProvider, String> {
        let http = http_client(settings.ca_file.as_deref())?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let metadata: ProviderMetadata = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("cannot read {url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url} is not a discovery document: {e}"))?;
        if metadata.issuer != settings.issuer {
            return Err(format!(
                "the provider calls itself '{}', not the configured issuer '{}'",
                metadata.issuer, settings.issuer
            ));
        }
        let keys = fetch_keys(&http, &metadata.jwks_uri).await?;
        Ok(EidProvider {
            settings,
            metadata,
            keys: parking_lot::RwLock::new(keys),
            http,
        })
    }

    /// Where to send the browser to sign in for a pending app login.
    pub fn login_url(&self, state: &str, pending: &PendingLogin) -> String {
        with_query(
            &self.metadata.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", &self.settings.client_id),
                ("redirect_uri", &self.settings.redirect_uri),
                ("scope", "openid"),
                ("state", state),
                ("nonce", &pending.nonce),
                ("code_challenge", &sijill_auth::pkce::challenge(&pending.eid_verifier)),
                ("code_challenge_method", "S256"),
            ],
        )
    }

    /// Exchanges the code and checks the ID token; returns (subject, national id).
    async fn complete(&self, code: &str, pending: &PendingLogin) -> Result<(String, String), String> {
        let response = self
            .http
            .post(&self.metadata.token_endpoint)
            .basic_auth(&self.settings.client_id, Some(&self.settings.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.settings.redirect_uri.as_str()),
                ("code_verifier", pending.eid_verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("the eID provider cannot be reached: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("the eID provider refused the code ({})", response.status()));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("the eID token answer is not JSON: {e}"))?;
        let id_token = body["id_token"]
            .as_str()
            .ok_or("the eID provider returned no ID token")?;
        let check = |keys: &JwkSet| {
            verify_id_token(
                id_token,
                keys,
                &self.settings.issuer,
                &self.settings.client_id,
                &pending.nonce,
                &self.settings.national_id_claim,
            )
        };
        let first = check(&self.keys.read());
        let identity = match first {
            Ok(i) => i,
            Err(_) => {
                // The provider may have rotated its keys: fetch them once more.
                let fresh = fetch_keys(&self.http, &self.metadata.jwks_uri).await?;
                let again = check(&fresh);
                *self.keys.write() = fresh;
                again.map_err(|e| e.to_string())?
            }
        };
        Ok((format!("eid:{}", identity.subject), identity.national_id))
    }
}

/// The query the eID provider sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback`: the end of the login at the eID provider.
pub async fn callback(State(state): State<Arc<AppState>>, Query(q): Query<CallbackQuery>) -> Response {
    let identity = &*state.identity;
    let Some(eid) = identity.eid.as_ref() else {
        return page(
            StatusCode::NOT_FOUND,
            "Not available",
            "No national eID provider is configured.",
            true,
        );
    };
    let Some(pending) = q.state.as_deref().and_then(|s| identity.sessions.take_login(s)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in is unknown, was already used, or took too long. Start again from the application.",
            false,
        );
    };
    if let Some(error) = q.error {
        tracing::info!(error = %error, "the eID provider ended the login with an error");
        return page(
            StatusCode::UNAUTHORIZED,
            "Sign-in refused",
            "The national eID did not confirm your identity.",
            false,
        );
    }
    match eid.complete(q.code.as_deref().unwrap_or(""), &pending).await {
        Ok((subject, national_id)) => finish_login(&state, pending, &subject, &national_id).await,
        Err(why) => {
            tracing::warn!(reason = %why, "eID login failed");
            page(
                StatusCode::UNAUTHORIZED,
                "Sign-in refused",
                &format!("The national eID login could not be checked: {}", html_escape(&why)),
                false,
            )
        }
    }
}
