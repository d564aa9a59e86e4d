//! A local certificate authority for development and tests: `dyno dev
//! --tls` makes one in `DIR/tls/` and issues each process a certificate
//! for `localhost` and `127.0.0.1`, usable as server and as client (the
//! same certificate serves a node's ports and authenticates it to its
//! peers).
//!
//! Files: `ca.pem` (the CA certificate, to give to clients), `ca-key.pem`
//! (its key, mode 600, kept so that nodes added later get certificates
//! from the same CA), and `<name>.pem` / `<name>-key.pem` per process.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{TlsError, TlsFiles};

/// The CA certificate's file name.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

/// A CA whose key is on disk.
#[derive(Debug)]
pub struct DevCa {
    dir: PathBuf,
    name: String,
    key: KeyPair,
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    // Written beside and renamed, so that a process reloading it never
    // reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The CA's parameters; the same every time, so that an issuer can be
/// rebuilt from the key alone (the issuer's name and key identifier are
/// all a signature needs).
fn ca_params(common_name: &str) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Dyno development");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(10 * 365);
    Ok(params)
}

const CA_NAME: &str = "Dyno development CA";

impl DevCa {
    /// Makes a new CA in `dir` (created if needed), replacing any there.
    pub fn create(dir: &Path) -> Result<DevCa, TlsError> {
        DevCa::create_named(dir, CA_NAME)
    }

    /// Makes a new CA named `common_name` (tests make a second, foreign
    /// one with another name).
    pub fn create_named(dir: &Path, common_name: &str) -> Result<DevCa, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = ca_params(common_name)?
            .self_signed(&key)
            .map_err(generate)?;
        write(&dir.join(CA_KEY_FILE), &key.serialize_pem(), true)?;
        write(&dir.join(CA_FILE), &cert.pem(), false)?;
        Ok(DevCa {
            dir: dir.to_owned(),
            name: common_name.to_owned(),
            key,
        })
    }

    /// The CA made earlier in `dir`.
    pub fn open(dir: &Path) -> Result<DevCa, TlsError> {
        let path = dir.join(CA_KEY_FILE);
        let pem = std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem {
            path,
            what: e.to_string(),
        })?;
        Ok(DevCa {
            dir: dir.to_owned(),
            name: CA_NAME.to_owned(),
            key,
        })
    }

    /// The CA certificate's path.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// Issues `name` a certificate for `localhost`, `127.0.0.1` and `::1`
    /// (and `extra_names`), valid for a year as server and client, and
    /// writes it (replacing an earlier one: a running process picks it up).
    pub fn issue(&self, name: &str, extra_names: &[String]) -> Result<TlsFiles, TlsError> {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Dyno development");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().map_err(generate)?;
        let issuer = Issuer::new(ca_params(&self.name)?, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
            ca: self.ca_file(),
        };
        // Key first: a reload between the two writes sees a new key with
        // the old certificate, fails the match check, and keeps the old
        // pair until the certificate lands.
        write(&files.key, &key.serialize_pem(), true)?;
        write(&files.cert, &cert.pem(), false)?;
        Ok(files)
    }
}
