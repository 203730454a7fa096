//! The server's signing keys: ES256 key pairs kept in the data directory, the newest signs,
//! every kept key verifies, and the public halves are published as a JWK Set.
//!
//! Rotation without downtime: `rotate` adds a new key (which signs from then on) and keeps
//! the previous one, so tokens it signed stay valid until they expire; running servers
//! reload the file when they meet a key id they do not know.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The one algorithm Sijill signs and accepts its own tokens with.
pub const SIGNING_ALGORITHM: Algorithm = Algorithm::ES256;

/// How many keys a rotation keeps (the new one and the one before it).
const KEPT_KEYS: usize = 2;

/// Least time between two reloads caused by unknown key ids (tokens with made-up `kid`s must
/// not turn every request into a file read).
const RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// One key as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created: String,
    /// The private key, PKCS#8 DER, base64.
    pkcs8: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// One usable key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: Jwk,
}

/// The keys of a data directory.
pub struct KeyRing {
    path: PathBuf,
    /// Newest first.
    keys: parking_lot::RwLock<Vec<SigningKey>>,
    /// When an unknown key id last caused a reload.
    last_reload: parking_lot::Mutex<Option<std::time::Instant>>,
}

fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join("signing-keys.json")
}

fn new_stored_key() -> Result<StoredKey, AuthError> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let der = secret
        .to_pkcs8_der()
        .map_err(|e| AuthError::Keys(format!("cannot encode a new key: {e}")))?;
    Ok(StoredKey {
        kid: uuid::Uuid::new_v4().simple().to_string(),
        created: crate::now_rfc3339(),
        pkcs8: STANDARD.encode(der.as_bytes()),
    })
}

fn usable(stored: &StoredKey) -> Result<SigningKey, AuthError> {
    let der = STANDARD
        .decode(&stored.pkcs8)
        .map_err(|e| AuthError::Keys(format!("key {} is not base64: {e}", stored.kid)))?;
    let secret = <p256::SecretKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(&der)
        .map_err(|e| AuthError::Keys(format!("key {} is not a P-256 key: {e}", stored.kid)))?;
    let encoding = EncodingKey::from_ec_der(&der);
    let mut public = Jwk::from_encoding_key(&encoding, SIGNING_ALGORITHM)
        .map_err(|e| AuthError::Keys(format!("key {}: {e}", stored.kid)))?;
    public.common.key_id = Some(stored.kid.clone());
    public.common.public_key_use = Some(PublicKeyUse::Signature);
    public.common.key_algorithm = Some(KeyAlgorithm::ES256);
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    let decoding = DecodingKey::from_ec_der(point.as_bytes());
    Ok(SigningKey {
        kid: stored.kid.clone(),
        encoding,
        decoding,
        public,
    })
}

fn read_file(path: &Path) -> Result<KeyFile, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::Keys(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| AuthError::Keys(format!("{}: {e}", path.display())))
}

fn write_file(path: &Path, file: &KeyFile) -> Result<(), AuthError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| AuthError::Keys(format!("{}: {e}", dir.display())))?;
    let text = serde_json::to_string_pretty(file).map_err(|e| AuthError::Keys(e.to_string()))?;
    // Write beside, then rename: a reader never sees half a file.
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .map_err(|e| AuthError::Keys(format!("{}: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| AuthError::Keys(format!("{}: {e}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| AuthError::Keys(format!("{}: {e}", path.display())))
}

impl KeyRing {
    /// The keys of `data_dir`, created on first use.
    pub fn open(data_dir: &Path) -> Result<KeyRing, AuthError> {
        let path = key_file(data_dir);
        if !path.exists() {
            let first = KeyFile {
                keys: vec![new_stored_key()?],
            };
            // Two processes may race to create the first key: the loser reads the winner's.
            if let Err(e) = write_file(&path, &first) {
                if !path.exists() {
                    return Err(e);
                }
            }
        }
        let ring = KeyRing {
            path,
            keys: parking_lot::RwLock::new(Vec::new()),
            last_reload: parking_lot::Mutex::new(None),
        };
        ring.reload()?;
        Ok(ring)
    }

    /// Reads the key file again (after a rotation by another process).
    pub fn reload(&self) -> Result<(), AuthError> {
        let file = read_file(&self.path)?;
        let keys = file.keys.iter().map(usable).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(AuthError::Keys(format!("{} holds no key", self.path.display())));
        }
        *self.keys.write() = keys;
        Ok(())
    }

    /// Adds a new signing key and keeps the previous one for verification. Returns the new
    /// key id.
    pub fn rotate(&self) -> Result<String, AuthError> {
        let mut file = read_file(&self.path)?;
        let fresh = new_stored_key()?;
        let kid = fresh.kid.clone();
        file.keys.insert(0, fresh);
        file.keys.truncate(KEPT_KEYS);
        write_file(&self.path, &file)?;
        self.reload()?;
        Ok(kid)
    }

    /// The id of the key that signs.
    pub fn current_kid(&self) -> String {
        self.keys.read()[0].kid.clone()
    }

    /// The public keys as a JWK Set (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.read().iter().map(|k| k.public.clone()).collect(),
        }
    }

    /// Signs `claims` with the newest key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let keys = self.keys.read();
        let key = &keys[0];
        let mut header = Header::new(SIGNING_ALGORITHM);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| AuthError::Keys(e.to_string()))
    }

    /// Checks a token signed by one of these keys (ES256 only, known key id, `iss`, `aud`,
    /// `exp` and `iat` present and valid) and returns its claims.
    pub fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<T, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::BadToken("not a JWT".into()))?;
        if header.alg != SIGNING_ALGORITHM {
            return Err(AuthError::BadToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::BadToken("the token names no key (kid)".into()))?;
        if !self.keys.read().iter().any(|k| k.kid == kid) {
            // Perhaps another process rotated: look again, at most every few seconds.
            let mut last = self.last_reload.lock();
            if last.is_none_or(|t| t.elapsed() >= RELOAD_INTERVAL) {
                *last = Some(std::time::Instant::now());
                let _ = self.reload();
            }
        }
        let keys = self.keys.read();
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| AuthError::BadToken("the token's key is not one of this server's".into()))?;
        let mut validation = Validation::new(SIGNING_ALGORITHM);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<T>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| AuthError::BadToken(crate::describe_jwt_error(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Claims {
        iss: String,
        aud: String,
        sub: String,
        exp: i64,
        iat: i64,
    }

    fn claims(exp_in: i64) -> Claims {
        let now = crate::now_unix();
        Claims {
            iss: "https://sijill.test/auth".into(),
            aud: "https://sijill.test/fhir".into(),
            sub: "someone".into(),
            exp: now + exp_in,
            iat: now,
        }
    }

    #[test]
    fn signs_verifies_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let old = ring.sign(&claims(60)).unwrap();
        let back: Claims = ring
            .verify(&old, "https://sijill.test/auth", "https://sijill.test/fhir")
            .unwrap();
        assert_eq!(back.sub, "someone");
        // Wrong audience and issuer are refused.
        assert!(ring
            .verify::<Claims>(&old, "https://sijill.test/auth", "https://other/fhir")
            .is_err());
        assert!(ring
            .verify::<Claims>(&old, "https://evil/auth", "https://sijill.test/fhir")
            .is_err());
        // Expired is refused.
        let expired = ring.sign(&claims(-120)).unwrap();
        assert!(ring
            .verify::<Claims>(&expired, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_err());
        // After a rotation (seen by another process), old tokens still verify and new ones
        // use the new key.
        let other = KeyRing::open(dir.path()).unwrap();
        let new_kid = other.rotate().unwrap();
        assert_ne!(new_kid, ring.current_kid());
        let new = other.sign(&claims(60)).unwrap();
        assert!(ring
            .verify::<Claims>(&new, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_ok());
        assert!(other
            .verify::<Claims>(&old, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_ok());
        assert_eq!(other.jwks().keys.len(), 2);
        // A third rotation retires the first key.
        other.rotate().unwrap();
        assert!(other
            .verify::<Claims>(&old, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_err());
    }

    #[test]
    fn tampered_and_unsigned_tokens_are_refused() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let token = ring.sign(&claims(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "someone-else".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert!(ring
            .verify::<Claims>(&forged, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_err());
        let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, ring.current_kid()));
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert!(ring
            .verify::<Claims>(&unsigned, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_err());
        // HMAC signed with the public key as secret (algorithm confusion).
        let public = serde_json::to_vec(&ring.jwks()).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ring.current_kid());
        let confused = jsonwebtoken::encode(&header, &claims(60), &EncodingKey::from_secret(&public)).unwrap();
        assert!(ring
            .verify::<Claims>(&confused, "https://sijill.test/auth", "https://sijill.test/fhir")
            .is_err());
    }
}
