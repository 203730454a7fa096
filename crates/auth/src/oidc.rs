//! The national eID provider, seen as an OpenID Connect relying party: its discovery
//! document, and the full check of the ID tokens it returns.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::{AuthError, JwksRefusal};

/// The parts of the provider's discovery document Sijill uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    /// The issuer (must equal the configured issuer URL exactly).
    pub issuer: String,
    /// Where users are sent to log in.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: String,
    /// The provider's public keys.
    pub jwks_uri: String,
}

/// Asymmetric algorithms accepted on ID tokens. `none` and every HMAC algorithm are
/// refused: an HMAC "signed" with the provider's public key must never pass.
pub const ID_TOKEN_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The checked content of an ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject.
    pub subject: String,
    /// The person's national identifier (from the configured claim).
    pub national_id: String,
}

/// Checks an ID token fully: an allowed asymmetric algorithm, a signature by one of the
/// provider's keys, `iss`, `aud` (and `azp` when several audiences), `exp`, `iat` and the
/// `nonce` sent with the login. Returns the subject and the national identifier found in
/// `national_id_claim`.
pub fn verify_id_token(
    id_token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    national_id_claim: &str,
) -> Result<Identity, AuthError> {
    let bad = |m: String| AuthError::BadToken(m);
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|_| bad("the ID token is not a JWT with an accepted algorithm".into()))?;
    if !ID_TOKEN_ALGORITHMS.contains(&header.alg) {
        return Err(bad(format!("ID token algorithm {:?} is not accepted", header.alg)));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = 60;
    match crate::decode_with_jwks::<serde_json::Value>(id_token, &header, keys, &validation) {
        Ok(claims) => identity(&claims, client_id, nonce, national_id_claim),
        Err(JwksRefusal::NoKey) => Err(bad(
            "the ID token is signed by a key the provider does not publish".into()
        )),
        Err(JwksRefusal::Invalid(Some(e))) => Err(bad(crate::describe_jwt_error(&e))),
        Err(JwksRefusal::Invalid(None)) => Err(bad("the ID token's signature is not valid".into())),
    }
}

fn identity(
    claims: &serde_json::Value,
    client_id: &str,
    nonce: &str,
    national_id_claim: &str,
) -> Result<Identity, AuthError> {
    let bad = |m: &str| AuthError::BadToken(m.to_string());
    let sent = claims["nonce"]
        .as_str()
        .ok_or_else(|| bad("the ID token has no nonce"))?;
    if !crate::secrets_equal(sent, nonce) {
        return Err(bad("the ID token's nonce does not match this login"));
    }
    if let Some(audiences) = claims["aud"].as_array() {
        if audiences.len() > 1 && claims["azp"].as_str() != Some(client_id) {
            return Err(bad("the ID token has several audiences and names another party"));
        }
    }
    let subject = claims["sub"]
        .as_str()
        .ok_or_else(|| bad("the ID token has no subject"))?;
    let national_id = match &claims[national_id_claim] {
        serde_json::Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(AuthError::BadToken(format!(
                "the ID token carries no national identifier (claim '{national_id_claim}')"
            )))
        }
    };
    Ok(Identity {
        subject: subject.to_string(),
        national_id,
    })
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use p256::pkcs8::EncodePrivateKey;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://eid.example.test";
    const CLIENT: &str = "sijill";
    const NONCE: &str = "n-0S6_WzA2Mj";

    struct Provider {
        key: EncodingKey,
        keys: JwkSet,
    }

    fn provider(kid: &str) -> Provider {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let key = EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Provider {
            key,
            keys: JwkSet { keys: vec![jwk] },
        }
    }

    fn claims() -> serde_json::Value {
        let now = crate::now_unix();
        json!({"iss": ISSUER, "aud": CLIENT, "sub": "subject-1", "iat": now, "exp": now + 300,
               "nonce": NONCE, "national_id": "AB123456"})
    }

    fn sign(p: &Provider, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &p.key).unwrap()
    }

    fn check(p: &Provider, token: &str) -> Result<Identity, AuthError> {
        verify_id_token(token, &p.keys, ISSUER, CLIENT, NONCE, "national_id")
    }

    #[test]
    fn a_good_token_gives_the_national_identifier() {
        let p = provider("k1");
        let identity = check(&p, &sign(&p, "k1", &claims())).unwrap();
        assert_eq!(identity.national_id, "AB123456");
        assert_eq!(identity.subject, "subject-1");
    }

    #[test]
    fn every_failure_is_refused() {
        let p = provider("k1");
        let refused = |token: String, why: &str| {
            let e = check(&p, &token).expect_err(why);
            assert!(matches!(e, AuthError::BadToken(_)), "{why}: {e}");
        };
        let with = |key: &str, value: serde_json::Value| {
            let mut c = claims();
            c[key] = value;
            sign(&p, "k1", &c)
        };
        refused(with("iss", json!("https://evil.example.test")), "wrong issuer");
        refused(with("aud", json!("someone-else")), "wrong audience");
        refused(with("exp", json!(crate::now_unix() - 3600)), "expired");
        refused(with("nonce", json!("another-login")), "replayed nonce");
        let mut no_nonce = claims();
        no_nonce.as_object_mut().unwrap().remove("nonce");
        refused(sign(&p, "k1", &no_nonce), "no nonce");
        let mut no_id = claims();
        no_id.as_object_mut().unwrap().remove("national_id");
        refused(sign(&p, "k1", &no_id), "no national identifier");
        let mut several = claims();
        several["aud"] = json!([CLIENT, "other"]);
        refused(sign(&p, "k1", &several), "several audiences without azp");
        // Signed by a key the provider does not publish.
        let stranger = provider("k1");
        refused(sign(&stranger, "k1", &claims()), "bad signature");
        // Tampered payload.
        let good = sign(&p, "k1", &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut payload = claims();
        payload["national_id"] = json!("ZZ999999");
        refused(
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(payload.to_string()),
                parts[2]
            ),
            "tampered payload",
        );
        // alg: none.
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#);
        refused(format!("{none}.{}.", parts[1]), "alg none");
        // HMAC with the provider's public key as the secret.
        let public = serde_json::to_vec(&p.keys.keys[0]).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        refused(
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap(),
            "HMAC with the public key",
        );
    }
}
