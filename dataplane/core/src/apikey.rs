//! API key material, shared by the control plane (which mints keys) and the
//! data plane (which checks them).
//!
//! A key has a public **id** (`DK` and 18 characters of base32, 20 in all,
//! the shape of an AWS access key id) and a **secret** derived from the id
//! with the deployment's *key master*:
//!
//! ```text
//! secret = base64url(HMAC-SHA256(master, "dyno-api-key-v1:" || id))
//! token  = "dyno_" || id || "_" || secret      (sent as a bearer token)
//! ```
//!
//! So neither Postgres nor the nodes' catalogs hold a usable secret: the
//! catalog holds ids, tenants and scopes; the secret exists only in the
//! hands of whoever was given it at creation, and can be recomputed only
//! with the master (a file on the control plane and on each node). The
//! same pair is the key's AWS SigV4 credential (access key id = id, secret
//! access key = secret), which a verifier recomputes from the master.
//!
//! Pure: the caller supplies the random bytes of a new id.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a bearer token.
pub const TOKEN_PREFIX: &str = "dyno_";
/// The length of a key id.
pub const ID_LEN: usize = 20;
/// The shortest key master accepted, in bytes.
pub const MIN_MASTER_BYTES: usize = 32;

const ID_PREFIX: &str = "DK";
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const DOMAIN: &[u8] = b"dyno-api-key-v1:";

/// A key id from 12 random bytes (90 of their bits are used).
pub fn key_id(random: [u8; 12]) -> String {
    let mut bits = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[4..].copy_from_slice(&random);
        b
    });
    let mut out = String::with_capacity(ID_LEN);
    out.push_str(ID_PREFIX);
    for _ in 0..(ID_LEN - ID_PREFIX.len()) {
        out.push(BASE32[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

/// True for a well-formed key id.
pub fn is_key_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.starts_with(ID_PREFIX)
        && s.bytes().skip(ID_PREFIX.len()).all(|b| BASE32.contains(&b))
}

/// The secret of key `id` under `master`.
pub fn derive_secret(master: &[u8], id: &str) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(master) else {
        return String::new();
    };
    mac.update(DOMAIN);
    mac.update(id.as_bytes());
    base64url(&mac.finalize().into_bytes())
}

/// The bearer token of a key.
pub fn token(id: &str, secret: &str) -> String {
    format!("{TOKEN_PREFIX}{id}_{secret}")
}

/// Splits a bearer token into id and secret (`None` when it is not a key
/// token).
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let id = rest.get(..ID_LEN)?;
    let secret = rest.get(ID_LEN..)?.strip_prefix('_')?;
    (is_key_id(id) && !secret.is_empty()).then_some((id, secret))
}

/// Checks a presented secret against the master, in time independent of
/// where the two differ.
pub fn verify(master: &[u8], id: &str, presented: &str) -> bool {
    constant_time_eq(derive_secret(master, id).as_bytes(), presented.as_bytes())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_differ_with_their_randomness() {
        let a = key_id([0; 12]);
        let b = key_id([1; 12]);
        assert!(is_key_id(&a), "{a}");
        assert!(is_key_id(&b), "{b}");
        assert_ne!(a, b);
        assert_eq!(a.len(), ID_LEN);
        assert!(!is_key_id("DKshort"));
        assert!(!is_key_id("XX234567ABCDEFGHIJKL"));
        assert!(!is_key_id("DK234567abcdefghijkl"));
    }

    #[test]
    fn tokens_round_trip_and_verify_only_under_their_master() {
        let master = [7u8; 32];
        let id = key_id([9; 12]);
        let secret = derive_secret(&master, &id);
        assert_eq!(secret.len(), 43);
        let t = token(&id, &secret);
        let (pid, psecret) = parse_token(&t).expect("parses");
        assert_eq!((pid, psecret), (id.as_str(), secret.as_str()));
        assert!(verify(&master, pid, psecret));
        assert!(!verify(&[8u8; 32], pid, psecret), "another master");
        let other = key_id([10; 12]);
        assert!(!verify(&master, &other, psecret), "another id");
        let mut tampered = secret.clone().into_bytes();
        tampered[0] ^= 1;
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(!verify(&master, pid, &tampered));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        for t in [
            "",
            "dyno_",
            "Bearer dyno_x",
            "dyno_DKAAAAAAAAAAAAAAAAAA",
            "dyno_DKAAAAAAAAAAAAAAAAAA_",
            "dyno_DKAAAAAAAAAAAAAAAAAAxsecret",
            "dyno_dkaaaaaaaaaaaaaaaaaa_secret",
            "dyno_DKAAAAAAAAAAAAAAAAA\u{e9}_s",
        ] {
            assert!(parse_token(t).is_none(), "{t:?}");
        }
        assert!(parse_token("dyno_DKAAAAAAAAAAAAAAAAAA_s_e-c").is_some());
    }
}
