//! The request context: who is acting, for whom and why. Every interaction receives one,
//! so that access control and audit can decide in one place.

use std::net::IpAddr;

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The command-line tools on the server machine (import, demo): no token, no limits.
    LocalOperator,
    /// Someone or something holding a verified access token.
    Principal(sijill_auth::Principal),
}

/// Why the data is used (a PurposeOfUse code, e.g. `TREAT`, `ETREAT`, `HOPERAT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose(pub String);

/// The context of one request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// A unique id for the request (also sent back as `X-Request-Id`).
    pub request_id: String,
    /// Who acts.
    pub actor: Actor,
    /// The patient on whose behalf, when known.
    pub on_behalf_of: Option<String>,
    /// Why.
    pub purpose: Purpose,
    /// The client's address, when the request came over the network.
    pub remote_addr: Option<IpAddr>,
    /// The id the client gave the request (`X-Request-Id`), which makes a booking
    /// idempotent.
    pub client_request_id: Option<String>,
}

impl RequestContext {
    /// The context of the local operator (command-line tools).
    pub fn local_operator(remote_addr: Option<IpAddr>) -> Self {
        RequestContext {
            request_id: uuid::Uuid::new_v4().to_string(),
            actor: Actor::LocalOperator,
            on_behalf_of: None,
            purpose: Purpose("HOPERAT".to_string()),
            remote_addr,
            client_request_id: None,
        }
    }
}

impl RequestContext {
    /// The context of a request made with a verified token.
    pub fn of(principal: sijill_auth::Principal, remote_addr: Option<IpAddr>) -> Self {
        RequestContext {
            request_id: uuid::Uuid::new_v4().to_string(),
            on_behalf_of: principal.patient.clone(),
            purpose: Purpose("TREAT".to_string()),
            actor: Actor::Principal(principal),
            remote_addr,
            client_request_id: None,
        }
    }
}
