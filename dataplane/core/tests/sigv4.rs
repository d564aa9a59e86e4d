//! SigV4: requests signed by the AWS SDK for Python (botocore; the vectors
//! are made by `tests/data/make_sigv4_vectors.py`) verify, and a changed
//! byte anywhere, a request outside the 15-minute window, or another
//! secret does not.

use dyno_core::sigv4::{self, Request, SigV4Error};
use serde_json::Value;

struct Vector {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: String,
    secret: String,
    access_key_id: String,
    region: String,
}

fn vectors() -> Vec<Vector> {
    let raw: Value = serde_json::from_str(include_str!("data/sigv4_vectors.json")).expect("json");
    raw.as_array()
        .expect("array")
        .iter()
        .map(|v| {
            let url = v["url"].as_str().expect("url");
            let after_host = url.splitn(4, '/').nth(3).unwrap_or("");
            let (path, query) = after_host.split_once('?').unwrap_or((after_host, ""));
            let mut headers: Vec<(String, String)> = v["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().expect("name").to_owned(),
                        h[1].as_str().expect("value").to_owned(),
                    )
                })
                .collect();
            headers.push(("Host".into(), v["host"].as_str().expect("host").to_owned()));
            Vector {
                method: v["method"].as_str().expect("method").to_owned(),
                path: format!("/{path}"),
                query: query.to_owned(),
                headers,
                body: v["body"].as_str().expect("body").to_owned(),
                secret: v["secret"].as_str().expect("secret").to_owned(),
                access_key_id: v["access_key_id"].as_str().expect("id").to_owned(),
                region: v["region"].as_str().expect("region").to_owned(),
            }
        })
        .collect()
}

impl Vector {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .expect("header")
    }

    fn now(&self) -> i64 {
        sigv4::parse_amz_date(self.header("x-amz-date")).expect("date")
    }

    /// Verifies the vector, with `edit` applied to its parts first.
    fn verify_with(
        &self,
        edit: impl FnOnce(&mut Vector),
        now_offset: i64,
        secret: Option<&str>,
    ) -> Result<(), SigV4Error> {
        let mut v = Vector {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            secret: self.secret.clone(),
            access_key_id: self.access_key_id.clone(),
            region: self.region.clone(),
        };
        let now = self.now() + now_offset;
        edit(&mut v);
        let auth = sigv4::parse_authorization(v.header("authorization"))?;
        let headers: Vec<(&str, &str)> = v
            .headers
            .iter()
            .map(|(k, x)| (k.as_str(), x.as_str()))
            .collect();
        let req = Request {
            method: &v.method,
            path: &v.path,
            query: &v.query,
            headers: &headers,
            body: v.body.as_bytes(),
        };
        sigv4::verify(&req, &auth, secret.unwrap_or(&v.secret), now)
    }
}

fn set_header(v: &mut Vector, name: &str, value: String) {
    for (k, x) in &mut v.headers {
        if k.eq_ignore_ascii_case(name) {
            *x = value.clone();
        }
    }
}

#[test]
fn sdk_signatures_verify() {
    let vs = vectors();
    assert!(vs.len() >= 4);
    for v in &vs {
        v.verify_with(|_| {}, 0, None)
            .unwrap_or_else(|e| panic!("{}: {e}", v.path));
        let auth = sigv4::parse_authorization(v.header("authorization")).expect("auth");
        assert_eq!(auth.access_key_id, v.access_key_id);
        assert_eq!(auth.region, v.region);
        assert_eq!(auth.service, "dynamodb");
    }
}

#[test]
fn a_changed_byte_anywhere_fails() {
    for v in &vectors() {
        let mismatch = |r: Result<(), SigV4Error>| r.is_err();
        // The body, byte by byte.
        for i in 0..v.body.len() {
            let r = v.verify_with(
                |x| {
                    let mut b = x.body.clone().into_bytes();
                    b[i] ^= 0x01;
                    x.body = String::from_utf8_lossy(&b).into_owned();
                },
                0,
                None,
            );
            assert!(mismatch(r), "body byte {i}");
        }
        // Each signed header's value.
        for name in ["content-type", "host", "x-amz-date", "x-amz-target"] {
            let r = v.verify_with(
                |x| set_header(x, name, format!("{}x", x.header(name))),
                0,
                None,
            );
            assert!(mismatch(r), "{name}");
        }
        // Method, path, query, signature, secret.
        assert!(mismatch(v.verify_with(
            |x| x.method = "PUT".into(),
            0,
            None
        )));
        assert!(mismatch(v.verify_with(|x| x.path = "/x".into(), 0, None)));
        assert!(mismatch(v.verify_with(
            |x| x.query.push_str("&extra=1"),
            0,
            None
        )));
        assert!(mismatch(v.verify_with(
            |x| {
                let a = x.header("authorization").to_owned();
                let last = a.chars().last().expect("char");
                let flipped = if last == '0' { '1' } else { '0' };
                set_header(
                    x,
                    "authorization",
                    format!("{}{flipped}", &a[..a.len() - 1]),
                );
            },
            0,
            None
        )));
        assert_eq!(
            v.verify_with(|_| {}, 0, Some("another-secret")),
            Err(SigV4Error::SignatureMismatch)
        );
        // Unsigned headers may change.
        assert!(
            v.verify_with(|x| set_header(x, "user-agent", "other".into()), 0, None)
                .is_ok()
        );
    }
}

#[test]
fn requests_outside_the_window_fail() {
    let v = &vectors()[0];
    assert!(v.verify_with(|_| {}, 14 * 60, None).is_ok());
    assert!(v.verify_with(|_| {}, -14 * 60, None).is_ok());
    assert_eq!(
        v.verify_with(|_| {}, 16 * 60, None),
        Err(SigV4Error::Skewed)
    );
    assert_eq!(
        v.verify_with(|_| {}, -16 * 60, None),
        Err(SigV4Error::Skewed)
    );
    // A missing date header fails before anything else.
    let r = v.verify_with(
        |x| {
            x.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("x-amz-date"))
        },
        0,
        None,
    );
    assert!(
        matches!(
            r,
            Err(SigV4Error::MissingHeader(_) | SigV4Error::SignedHeaderMissing(_))
        ),
        "{r:?}"
    );
}

#[test]
fn keys_derived_by_dyno_verify_like_any_secret() {
    // The secret of a Dyno key (derived from its id) signs like any AWS
    // secret: sign a canonical request ourselves with it and verify.
    let master = [9u8; 32];
    let id = dyno_core::apikey::key_id([4; 12]);
    let secret = dyno_core::apikey::derive_secret(&master, &id);
    let date = "20261201T120000Z";
    let headers = [
        ("host", "127.0.0.1:7000"),
        ("x-amz-date", date),
        ("content-type", "application/x-amz-json-1.0"),
    ];
    let req = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: b"{}",
    };
    let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let canonical = sigv4::canonical_request(&req, &signed).expect("canonical");
    use sha2::Digest;
    let hexs = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n20261201/us-east-1/dynamodb/aws4_request\n{}",
        hexs(&sha2::Sha256::digest(canonical.as_bytes()))
    );
    use hmac::Mac;
    let key = sigv4::signing_key(&secret, "20261201", "us-east-1", "dynamodb");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(to_sign.as_bytes());
    let signature = hexs(&mac.finalize().into_bytes());
    let auth = sigv4::parse_authorization(&format!(
        "AWS4-HMAC-SHA256 Credential={id}/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
    ))
    .expect("auth");
    let now = sigv4::parse_amz_date(date).expect("date");
    assert!(sigv4::verify(&req, &auth, &secret, now).is_ok());
    let other = dyno_core::apikey::derive_secret(&[8u8; 32], &id);
    assert_eq!(
        sigv4::verify(&req, &auth, &other, now),
        Err(SigV4Error::SignatureMismatch)
    );
}
