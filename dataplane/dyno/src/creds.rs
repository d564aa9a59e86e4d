//! Where the command-line tools find their credentials, in order:
//!
//! * `--token-file PATH` (a file holding an API key token or the admin
//!   credential);
//! * for data requests `$DYNO_TOKEN`, then `$DYNO_ADMIN_TOKEN`; for admin
//!   requests `$DYNO_ADMIN_TOKEN`;
//! * the dev cluster's files: for data requests its demo key
//!   (`.dyno/dev/secrets/demo-token`), else, and for admin requests, its
//!   admin credential (`.dyno/dev/secrets/admin-token`).
//!
//! Tokens are never taken as command-line values, where `ps` shows them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// The dev cluster's admin credential file under `dir`.
pub fn dev_admin_token_file(dir: &Path) -> PathBuf {
    dir.join("secrets").join("admin-token")
}

/// Reads a token file.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    Ok(t.trim().to_owned())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The token to send: see the module's documentation.
pub fn token(file: Option<&Path>, admin: bool) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        return read_token(f).map(Some);
    }
    let from_env = if admin {
        env("DYNO_ADMIN_TOKEN")
    } else {
        env("DYNO_TOKEN").or_else(|| env("DYNO_ADMIN_TOKEN"))
    };
    if from_env.is_some() {
        return Ok(from_env);
    }
    // The dev cluster: its demo key for data, its admin credential for
    // administration.
    let dev = Path::new(".dyno/dev/secrets");
    let files = if admin {
        vec![dev.join("admin-token")]
    } else {
        vec![dev.join("demo-token"), dev.join("admin-token")]
    };
    match files.iter().find(|f| f.exists()) {
        Some(f) => read_token(f).map(Some),
        None => Ok(None),
    }
}

/// The CA certificate to trust for `https://` URLs: `flag`
/// (`--ca-file`), else `$DYNO_CA_FILE`, else the dev cluster's
/// (`.dyno/dev/tls/ca.pem`) when it has one.
pub fn ca_file(flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_owned)
        .or_else(|| env("DYNO_CA_FILE").map(PathBuf::from))
        .or_else(|| {
            let dev = Path::new(".dyno/dev/tls").join(dyno_tls::dev::CA_FILE);
            dev.exists().then_some(dev)
        })
}

/// An HTTP client that sends `token` as a bearer token with every request,
/// and trusts the CA certificate in `ca` (only) for `https://` URLs.
pub fn client(
    token: Option<&str>,
    timeout: Duration,
    ca: Option<&Path>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .context("the token has characters a header cannot carry")?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut builder = dyno_tls::http_client_builder();
    if let Some(ca) = ca {
        builder = builder.tls_backend_preconfigured(dyno_tls::client_trusting(ca)?);
    }
    Ok(builder.default_headers(headers).timeout(timeout).build()?)
}

/// `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
