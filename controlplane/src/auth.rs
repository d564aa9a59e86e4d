//! Users' sessions: argon2id password hashes, signed session tokens (JWT,
//! HS256, with a previous key accepted after rotation), and the rate
//! limit on failed logins.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{ApiError, ApiResult};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the platform: every tenant, every cluster.
    PlatformAdmin,
    /// Manages one tenant: its users, tables and keys.
    TenantAdmin,
    /// Manages one tenant's tables and keys.
    TenantMember,
}

impl Role {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::TenantMember => "tenant_member",
        }
    }

    /// From the database spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "platform_admin" => Some(Role::PlatformAdmin),
            "tenant_admin" => Some(Role::TenantAdmin),
            "tenant_member" => Some(Role::TenantMember),
            _ => None,
        }
    }
}

/// Hashes a password with argon2id (the crate's defaults: 19 MiB, 2
/// passes).
pub fn hash_password(password: &str) -> ApiResult<String> {
    let salt = SaltString::encode_b64(&crate::secrets::random_bytes::<16>())
        .map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(ApiError::internal)
}

/// Checks a password against a stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash to check unknown emails against, so that a login with an
/// unknown email costs what one with a wrong password does.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default())
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> ApiResult<()> {
    if !(8..=1024).contains(&password.chars().count()) {
        return Err(ApiError::invalid(
            "password",
            "a password must be 8 to 1,024 characters",
        ));
    }
    Ok(())
}

/// What a session token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// The session's id (random), by which signing out revokes it. Empty
    /// in tokens issued before sessions could be revoked.
    #[serde(default)]
    pub jti: String,
}

/// A valid session token's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The user it was issued to.
    pub user_id: i64,
    /// Its id.
    pub jti: String,
    /// When it expires (seconds since the epoch).
    pub exp: i64,
}

/// The session signing keys.
#[derive(Clone)]
pub struct Sessions {
    current: (String, Vec<u8>),
    previous: Option<(String, Vec<u8>)>,
    ttl_secs: u64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("kid", &self.current.0)
            .field("previous_kid", &self.previous.as_ref().map(|p| &p.0))
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

fn csrf_mac(key: &[u8], session: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"dyno-console-csrf\0");
    mac.update(session.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key's id: the first 8 bytes of its SHA-256, in hex.
fn kid(key: &[u8]) -> String {
    sha2::Sha256::digest(key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sessions {
    /// Signs with `current`; also accepts tokens of `previous`.
    pub fn new(current: Vec<u8>, previous: Option<Vec<u8>>, ttl_secs: u64) -> Sessions {
        Sessions {
            current: (kid(&current), current),
            previous: previous.map(|p| (kid(&p), p)),
            ttl_secs,
        }
    }

    /// A token for user `id`, and when it expires.
    pub fn issue(&self, user_id: i64) -> ApiResult<(String, chrono::DateTime<chrono::Utc>)> {
        let now = chrono::Utc::now();
        let exp = now + chrono::Duration::seconds(self.ttl_secs as i64);
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            jti: crate::secrets::random_hex::<16>(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.0.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&self.current.1))
                .map_err(ApiError::internal)?;
        Ok((token, exp))
    }

    /// The anti-forgery token of the console's forms for a session: an
    /// HMAC of the session token under the signing key (domain-separated),
    /// so every replica can check it and it dies with the session.
    pub fn csrf_token(&self, session: &str) -> String {
        csrf_mac(&self.current.1, session)
    }

    /// Whether `token` is the anti-forgery token of `session` (under the
    /// current or the previous key).
    pub fn check_csrf(&self, session: &str, token: &str) -> bool {
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|(_, key)| {
                dyno_core::apikey::constant_time_eq(
                    csrf_mac(key, session).as_bytes(),
                    token.as_bytes(),
                )
            })
    }

    /// The session a token carries, if it is valid and unexpired (whether
    /// it was signed out is the database's to say).
    pub fn verify(&self, token: &str) -> Option<SessionToken> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.alg != Algorithm::HS256 {
            return None;
        }
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|(k, _)| header.kid.as_deref() == Some(k.as_str()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.1), &validation)
                .ok()?;
        Some(SessionToken {
            user_id: data.claims.sub.parse().ok()?,
            jti: data.claims.jti,
            exp: data.claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn tokens_verify_under_current_and_previous_keys_only() {
        let old = Sessions::new(b"old-key-0123456789".to_vec(), None, 60);
        let (t_old, _) = old.issue(7).expect("issue");
        let rotated = Sessions::new(
            b"new-key-0123456789".to_vec(),
            Some(b"old-key-0123456789".to_vec()),
            60,
        );
        let user = |t: &str| rotated.verify(t).map(|s| s.user_id);
        assert_eq!(user(&t_old), Some(7), "previous key still accepted");
        let (t_new, _) = rotated.issue(8).expect("issue");
        assert_eq!(user(&t_new), Some(8));
        // Every session has its own id, by which it can be signed out.
        let (t_again, _) = rotated.issue(8).expect("issue");
        let (a, b) = (rotated.verify(&t_new), rotated.verify(&t_again));
        assert!(
            a.zip(b)
                .is_some_and(|(a, b)| a.jti.len() == 32 && a.jti != b.jti)
        );
        let stranger = Sessions::new(b"other-key-0123456789".to_vec(), None, 60);
        assert_eq!(stranger.verify(&t_new), None);
        let mut tampered = t_new.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert_eq!(rotated.verify(&tampered), None);
        assert_eq!(rotated.verify("not.a.jwt"), None);
    }

    #[test]
    fn csrf_tokens_bind_to_the_session_and_key() {
        let old = Sessions::new(b"old-key-0123456789".to_vec(), None, 60);
        let rotated = Sessions::new(
            b"new-key-0123456789".to_vec(),
            Some(b"old-key-0123456789".to_vec()),
            60,
        );
        let t = old.csrf_token("session-a");
        assert!(old.check_csrf("session-a", &t));
        assert!(!old.check_csrf("session-b", &t), "bound to its session");
        assert!(rotated.check_csrf("session-a", &t), "previous key accepted");
        assert!(!Sessions::new(b"x-key-0123456789".to_vec(), None, 60).check_csrf("session-a", &t));
        assert!(!old.check_csrf("session-a", ""));
    }
}
