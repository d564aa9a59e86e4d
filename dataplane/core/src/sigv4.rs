//! AWS Signature Version 4, the verifying side, for the DynamoDB-compatible
//! API: the AWS SDKs sign each request with the key's secret; the node
//! recomputes the signature (the secret derived from the key id, see
//! `apikey`) and compares.
//!
//! Pure: the request's parts, the secret and the current time are inputs.
//! The steps follow AWS's documentation:
//!
//! 1. the canonical request: method, canonical URI (each path segment
//!    percent-encoded twice, as for every service but S3), canonical query
//!    string (pairs encoded and sorted), the signed headers (lowercase
//!    names, values trimmed with inner runs of spaces collapsed, sorted),
//!    the list of signed header names, and the SHA-256 of the body;
//! 2. the string to sign: the algorithm, the request time, the credential
//!    scope (`date/region/service/aws4_request`), and the SHA-256 of (1);
//! 3. the signing key: HMAC-SHA256 chained from `"AWS4" + secret` through
//!    the date, region, service and `aws4_request`;
//! 4. the signature: hex(HMAC-SHA256(key, (2))), compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm SigV4 defines for these requests.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's time may be from the verifier's clock (AWS: 15
/// minutes).
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The `Authorization` header is not a SigV4 one, or is malformed.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// A header the signature needs is missing.
    #[error("the request has no {0} header")]
    MissingHeader(&'static str),
    /// A header the signature names is not in the request.
    #[error("the signed header {0:?} is not in the request")]
    SignedHeaderMissing(String),
    /// `host` must be signed.
    #[error("the signature must cover the host header")]
    HostNotSigned,
    /// `X-Amz-Date` does not parse.
    #[error("X-Amz-Date is not a date like 20150830T123600Z")]
    BadDate,
    /// The credential's date is not the request's.
    #[error("the credential scope's date does not match X-Amz-Date")]
    ScopeDateMismatch,
    /// The request's time is too far from now.
    #[error("the request time is more than 15 minutes from the server's time")]
    Skewed,
    /// The signature does not match.
    #[error("the request signature does not match")]
    SignatureMismatch,
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
/// Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// The credential scope's date (`YYYYMMDD`).
    pub date: String,
    /// The region.
    pub region: String,
    /// The service (`dynamodb`).
    pub service: String,
    /// The signed header names, lowercase, as listed.
    pub signed_headers: Vec<String>,
    /// The signature, lowercase hex.
    pub signature: String,
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or(SigV4Error::Malformed(
            "the algorithm is not AWS4-HMAC-SHA256",
        ))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SigV4Error::Malformed("a component is not name=value"))?;
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => return Err(SigV4Error::Malformed("an unknown component")),
        }
    }
    let credential = credential.ok_or(SigV4Error::Malformed("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(SigV4Error::Malformed(
            "Credential is not id/date/region/service/aws4_request",
        ));
    };
    if id.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::Malformed(
            "Credential's id or date is malformed",
        ));
    }
    let signed_headers: Vec<String> = signed
        .ok_or(SigV4Error::Malformed("no SignedHeaders"))?
        .split(';')
        .map(str::to_owned)
        .collect();
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || h.bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
    }) {
        return Err(SigV4Error::Malformed("SignedHeaders is malformed"));
    }
    let signature = signature.ok_or(SigV4Error::Malformed("no Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SigV4Error::Malformed("Signature is not 64 hex digits"));
    }
    Ok(Authorization {
        access_key_id: (*id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// The parts of an HTTP request a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `POST`, `GET`, ….
    pub method: &'a str,
    /// The path as sent (percent-encoded), e.g. `/`.
    pub path: &'a str,
    /// The query string as sent, without `?` (empty when none).
    pub query: &'a str,
    /// Every header, names in any case (repeated names allowed).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The values of a header (case-insensitive name), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encodes as SigV4 wants: everything but `A-Z a-z 0-9 - _ . ~`.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (and, in queries, nothing else: `+` stays).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|c| hexval(*c)),
                bytes.get(i + 2).and_then(|c| hexval(*c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    // Non-S3 services encode the (already encoded) path once more.
    path.split('/')
        .map(|seg| uri_encode(&uri_encode(&percent_decode(seg))))
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of
/// spaces collapsed to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request (step 1).
pub fn canonical_request(
    req: &Request<'_>,
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    let mut names: Vec<&String> = signed_headers.iter().collect();
    names.sort();
    let mut headers = String::new();
    for name in &names {
        let values = req.header_values(name);
        if values.is_empty() {
            return Err(SigV4Error::SignedHeaderMissing((*name).clone()));
        }
        let joined: Vec<String> = values.iter().map(|v| canonical_value(v)).collect();
        headers.push_str(&format!("{name}:{}\n", joined.join(",")));
    }
    // The body's own hash, always: a client's `X-Amz-Content-Sha256` is
    // checked against it (in `verify`), never trusted in its place, so the
    // signature covers the body that arrived.
    let payload = sha256_hex(req.body);
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        headers,
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(";"),
        payload
    ))
}

/// Seconds since the Unix epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The signing key of a secret for a scope (step 3).
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `X-Amz-Date` of a time in seconds since the Unix epoch
/// (`YYYYMMDDTHHMMSSZ`); the inverse of [`parse_amz_date`].
pub fn format_amz_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Signs a request (the client's side, for benchmarks and tests): the
/// `Authorization` header value for `key_id`/`secret` over
/// `signed_headers`, which must include `host` and `x-amz-date`.
pub fn sign(
    req: &Request<'_>,
    signed_headers: &[String],
    key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<String, SigV4Error> {
    let amz_date = req
        .header_values("x-amz-date")
        .first()
        .copied()
        .ok_or(SigV4Error::MissingHeader("X-Amz-Date"))?;
    let date = amz_date.get(..8).ok_or(SigV4Error::BadDate)?;
    let canonical = canonical_request(req, signed_headers)?;
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(secret, date, region, service);
    let mut names: Vec<&str> = signed_headers.iter().map(String::as_str).collect();
    names.sort_unstable();
    Ok(format!(
        "{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={}, Signature={}",
        names.join(";"),
        hex(&hmac(&key, to_sign.as_bytes()))
    ))
}

/// Verifies a request signed with `secret` (the secret of the key the
/// `Authorization` header names), at `now` (seconds since the epoch).
pub fn verify(
    req: &Request<'_>,
    auth: &Authorization,
    secret: &str,
    now: i64,
) -> Result<(), SigV4Error> {
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::HostNotSigned);
    }
    let amz_date = req
        .header_values("x-amz-date")
        .first()
        .copied()
        .ok_or(SigV4Error::MissingHeader("X-Amz-Date"))?;
    let at = parse_amz_date(amz_date).ok_or(SigV4Error::BadDate)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::ScopeDateMismatch);
    }
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(SigV4Error::Skewed);
    }
    if let Some(claimed) = req.header_values("x-amz-content-sha256").first()
        && !claimed.eq_ignore_ascii_case(&sha256_hex(req.body))
    {
        // Covers UNSIGNED-PAYLOAD too: the body must be signed.
        return Err(SigV4Error::SignatureMismatch);
    }
    let canonical = canonical_request(req, &auth.signed_headers)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let key = signing_key(secret, &auth.date, &auth.region, &auth.service);
    let expected = hex(&hmac(&key, to_sign.as_bytes()));
    if crate::apikey::constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigV4Error::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sign_makes_verify_accepts() {
        let now = 1_764_633_600 + 12_345;
        let date = format_amz_date(now);
        assert_eq!(parse_amz_date(&date), Some(now));
        let headers = [
            ("host", "127.0.0.1:7000"),
            ("x-amz-date", date.as_str()),
            ("x-amz-target", "DynamoDB_20120810.GetItem"),
        ];
        let body = br#"{"TableName":"t"}"#;
        let mut req = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let names: Vec<String> = headers.iter().map(|(k, _)| (*k).to_owned()).collect();
        let auth = sign(&req, &names, "DKTEST", "s3cret", "dyno", "dynamodb").expect("signs");
        let parsed = parse_authorization(&auth).expect("parses");
        assert_eq!(verify(&req, &parsed, "s3cret", now), Ok(()));
        assert_eq!(
            verify(&req, &parsed, "other", now),
            Err(SigV4Error::SignatureMismatch)
        );
        req.body = br#"{"TableName":"u"}"#;
        assert_eq!(
            verify(&req, &parsed, "s3cret", now),
            Err(SigV4Error::SignatureMismatch)
        );
    }

    #[test]
    fn a_claimed_payload_hash_must_match_the_body() {
        let now = 1_764_633_600;
        let date = format_amz_date(now);
        let real = sha256_hex(b"{}");
        for (claimed, ok) in [
            (real.as_str(), true),
            ("UNSIGNED-PAYLOAD", false),
            (
                "0000000000000000000000000000000000000000000000000000000000000000",
                false,
            ),
        ] {
            let headers = [
                ("host", "h"),
                ("x-amz-date", date.as_str()),
                ("x-amz-content-sha256", claimed),
            ];
            let req = Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: b"{}",
            };
            let names: Vec<String> = headers.iter().map(|(k, _)| (*k).to_owned()).collect();
            let auth = sign(&req, &names, "DK", "s", "r", "dynamodb").expect("signs");
            let parsed = parse_authorization(&auth).expect("parses");
            assert_eq!(verify(&req, &parsed, "s", now).is_ok(), ok, "{claimed}");
        }
    }

    #[test]
    fn amz_dates_format_back() {
        for secs in [0, 951_782_400, 1_440_938_160, 4_102_444_799] {
            assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs), "{secs}");
        }
    }

    #[test]
    fn amz_dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("20000229T000000Z"), Some(951_782_400));
        for bad in [
            "",
            "20150830T1236Z",
            "20151330T123600Z",
            "2015083OT123600Z",
            "20150830 123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn authorization_headers_parse_or_fail_clearly() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .expect("parses");
        assert_eq!(a.access_key_id, "AKID");
        assert_eq!(a.region, "us-east-1");
        assert_eq!(a.signed_headers, vec!["host", "x-amz-date"]);
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/dynamodb, SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/dynamodb/aws4_request, SignedHeaders=Host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_parts_follow_the_rules() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri("/a b/c"), "/a%2520b/c");
        assert_eq!(canonical_query("z=2&a=b%20c&a=a"), "a=a&a=b%20c&z=2");
        assert_eq!(canonical_value("  a   b  c "), "a b c");
    }
}
