//! Authentication and authorization of client and admin requests.
//!
//! Checked locally against the catalog, never by calling the control plane:
//! a node keeps serving with the keys it last heard of when the control
//! plane or Postgres is down.
//!
//! * The **admin credential** (`--admin-token-file`) opens the admin API
//!   and acts as an all-access key of the tenant `default` on the items API.
//! * **API keys** are bearer tokens `dyno_<id>_<secret>` (see
//!   `dyno_core::apikey`): the id names a catalog entry (tenant, scopes,
//!   revoked); the secret is checked by deriving it from the id with the key
//!   master (`--key-master-file`). Unknown, malformed, revoked and
//!   suspended-tenant keys all get the same 401.
//! * **Scopes** are checked before a table is looked up, and the table is
//!   looked up in the key's own tenant only, so a 403 or a 404 says nothing
//!   about another tenant's tables.
//!
//! Depends on `catalog`, `error` and `config`.

use std::path::Path;
use std::sync::Arc;

use dyno_core::NodeId;
use dyno_core::{apikey, sigv4};

use crate::catalog::{Access, Catalog, DEFAULT_TENANT, KeyEntry};
use crate::config::{ConfigError, NodeConfig};
use crate::error::ServiceError;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials, on a node serving without authentication
    /// (`--insecure-no-auth`): acts in the tenant `default` with every right.
    Anonymous,
    /// Another node of the cluster, over the internal protocol.
    Peer(NodeId),
    /// The holder of the cluster's admin credential.
    Admin,
    /// An API key.
    Key(Arc<KeyEntry>),
}

impl Principal {
    /// The tenant the principal acts in by default.
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Key(k) => &k.tenant,
            _ => DEFAULT_TENANT,
        }
    }

    /// Whether the principal may act on `table` of its tenant with
    /// `access`: `Forbidden` if not. Depends on names only, never on
    /// whether the table exists.
    pub fn authorize(&self, table: &str, access: Access) -> Result<(), ServiceError> {
        match self {
            Principal::Anonymous | Principal::Admin | Principal::Peer(_) => Ok(()),
            Principal::Key(k) => {
                let allowed = k
                    .scopes
                    .iter()
                    .any(|s| (s.table == "*" || s.table == table) && s.access >= access);
                if allowed {
                    Ok(())
                } else {
                    let verb = match access {
                        Access::Read => "read",
                        Access::Write => "write to",
                        Access::Manage => "manage",
                    };
                    Err(ServiceError::forbidden(format!("{verb} table {table:?}")))
                }
            }
        }
    }

    /// True for the cluster's admin (or any caller of an open node).
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin | Principal::Anonymous)
    }
}

/// Why a SigV4-signed request was refused; the DynamoDB front-end answers
/// each as DynamoDB does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV4Failure {
    /// No `Authorization` header.
    Missing,
    /// The header is not a SigV4 one, or a header it needs is missing.
    Malformed(String),
    /// No such key (or revoked, or its tenant suspended).
    UnknownKey,
    /// The signature does not match.
    BadSignature(String),
    /// The request's time is more than 15 minutes off.
    Expired,
}

/// The credentials a node accepts.
#[derive(Clone)]
pub struct Credentials {
    /// `None`: serving without authentication.
    admin_token: Option<String>,
    key_master: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("required", &self.admin_token.is_some())
            .field("api_keys", &self.key_master.is_some())
            .finish()
    }
}

/// Reads a secret file: its content without surrounding whitespace.
pub fn read_secret_file(what: &str, path: &Path) -> Result<String, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::Invalid(format!("cannot read {what} file {}: {e}", path.display()))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the {what} file is readable by other users; chmod 600 it");
        }
    }
    Ok(raw.trim().to_owned())
}

impl Credentials {
    /// No authentication.
    pub fn open() -> Credentials {
        Credentials {
            admin_token: None,
            key_master: None,
        }
    }

    /// An admin token, and optionally a key master.
    pub fn new(admin_token: String, key_master: Option<Vec<u8>>) -> Credentials {
        Credentials {
            admin_token: Some(admin_token),
            key_master,
        }
    }

    /// The credentials a configuration names (reads the files).
    pub fn from_config(config: &NodeConfig) -> Result<Credentials, ConfigError> {
        let Some(path) = &config.admin_token_file else {
            return Ok(Credentials::open());
        };
        let token = read_secret_file("admin token", path)?;
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::Invalid(format!(
                "the admin token in {} must be at least 16 characters, without spaces",
                path.display()
            )));
        }
        let master = match &config.key_master_file {
            None => None,
            Some(p) => {
                let m = read_secret_file("key master", p)?.into_bytes();
                if m.len() < apikey::MIN_MASTER_BYTES {
                    return Err(ConfigError::Invalid(format!(
                        "the key master in {} must be at least {} bytes",
                        p.display(),
                        apikey::MIN_MASTER_BYTES
                    )));
                }
                Some(m)
            }
        };
        Ok(Credentials::new(token, master))
    }

    /// True when requests must carry credentials.
    pub fn required(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Who sent a request with this `Authorization` header value.
    pub fn authenticate(
        &self,
        catalog: &Catalog,
        authorization: Option<&str>,
    ) -> Result<Principal, ServiceError> {
        let Some(admin) = &self.admin_token else {
            return Ok(Principal::Anonymous);
        };
        let token = authorization
            .and_then(bearer)
            .ok_or_else(ServiceError::unauthorized)?;
        if let Some((id, secret)) = apikey::parse_token(token) {
            let master = self
                .key_master
                .as_deref()
                .ok_or_else(ServiceError::unauthorized)?;
            let key = catalog.key(id).ok_or_else(ServiceError::unauthorized)?;
            if key.revoked
                || catalog.tenant_suspended(&key.tenant)
                || !apikey::verify(master, id, secret)
            {
                return Err(ServiceError::unauthorized());
            }
            return Ok(Principal::Key(key));
        }
        if apikey::constant_time_eq(token.as_bytes(), admin.as_bytes()) {
            return Ok(Principal::Admin);
        }
        Err(ServiceError::unauthorized())
    }

    /// Who signed a request with AWS Signature V4 (the DynamoDB API), at
    /// `now` (seconds since the epoch). The access key id is an API key's
    /// id; its secret is derived, never stored.
    pub fn authenticate_sigv4(
        &self,
        catalog: &Catalog,
        req: &sigv4::Request<'_>,
        now: i64,
    ) -> Result<Principal, SigV4Failure> {
        if self.admin_token.is_none() {
            return Ok(Principal::Anonymous);
        }
        let header = req
            .header_values("authorization")
            .first()
            .copied()
            .ok_or(SigV4Failure::Missing)?;
        let auth = sigv4::parse_authorization(header)
            .map_err(|e| SigV4Failure::Malformed(e.to_string()))?;
        let master = self.key_master.as_deref().ok_or(SigV4Failure::UnknownKey)?;
        let key = catalog
            .key(&auth.access_key_id)
            .ok_or(SigV4Failure::UnknownKey)?;
        if key.revoked || catalog.tenant_suspended(&key.tenant) {
            return Err(SigV4Failure::UnknownKey);
        }
        let secret = apikey::derive_secret(master, &key.id);
        match sigv4::verify(req, &auth, &secret, now) {
            Ok(()) => Ok(Principal::Key(key)),
            Err(sigv4::SigV4Error::Skewed) => Err(SigV4Failure::Expired),
            Err(e @ (sigv4::SigV4Error::SignatureMismatch | sigv4::SigV4Error::HostNotSigned)) => {
                Err(SigV4Failure::BadSignature(e.to_string()))
            }
            Err(e) => Err(SigV4Failure::Malformed(e.to_string())),
        }
    }

    /// The bearer token of an API key (its secret derived here), for calls
    /// this node makes on the key's behalf (the DynamoDB API's table
    /// operations, forwarded to the control plane).
    pub fn token_for(&self, key_id: &str) -> Option<String> {
        let master = self.key_master.as_deref()?;
        Some(apikey::token(
            key_id,
            &apikey::derive_secret(master, key_id),
        ))
    }

    /// Checks the admin credential.
    pub fn authenticate_admin(&self, authorization: Option<&str>) -> Result<(), ServiceError> {
        let Some(admin) = &self.admin_token else {
            return Ok(());
        };
        match authorization.and_then(bearer) {
            Some(t) if apikey::constant_time_eq(t.as_bytes(), admin.as_bytes()) => Ok(()),
            _ => Err(ServiceError::new(
                crate::error::ErrorCode::Unauthorized,
                "the admin API needs the cluster's admin credential: Authorization: Bearer <token from --admin-token-file>",
            )),
        }
    }
}

/// The token of a `Bearer` authorization value (the scheme is
/// case-insensitive, as RFC 7235 says).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Record, Scope, TenantEntry};
    use crate::error::ErrorCode;

    const MASTER: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn catalog_with_key(revoked: bool, scopes: Vec<Scope>) -> (Catalog, String) {
        let catalog = Catalog::load(Arc::new(dyno_storage::MemoryStore::new())).expect("catalog");
        let id = apikey::key_id([3; 12]);
        catalog
            .merge_record(Record::Key(KeyEntry {
                id: id.clone(),
                tenant: "acme".into(),
                scopes,
                revoked,
                version: 1,
            }))
            .expect("merge");
        let token = apikey::token(&id, &apikey::derive_secret(MASTER, &id));
        (catalog, token)
    }

    fn creds() -> Credentials {
        Credentials::new("admin-token-0123456789".into(), Some(MASTER.to_vec()))
    }

    #[test]
    fn keys_admins_and_strangers_are_told_apart() {
        let (catalog, token) = catalog_with_key(false, vec![]);
        let c = creds();
        let p = c
            .authenticate(&catalog, Some(&format!("Bearer {token}")))
            .expect("key");
        assert_eq!(p.tenant(), "acme");
        assert_eq!(
            c.authenticate(&catalog, Some("bearer admin-token-0123456789"))
                .expect("admin"),
            Principal::Admin
        );
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Basic admin-token-0123456789"),
            Some("Bearer admin-token-012345678"),
            Some("Bearer dyno_DKAAAAAAAAAAAAAAAAAA_nope"),
        ] {
            let e = c.authenticate(&catalog, bad).expect_err("refused");
            assert_eq!(e.code, ErrorCode::Unauthorized, "{bad:?}");
        }
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push('x');
        assert!(
            c.authenticate(&catalog, Some(&format!("Bearer {tampered}")))
                .is_err()
        );
        // The admin credential does not open the items API as a key would
        // on a node without a key master, and keys need the master.
        let no_master = Credentials::new("admin-token-0123456789".into(), None);
        assert!(
            no_master
                .authenticate(&catalog, Some(&format!("Bearer {token}")))
                .is_err()
        );
    }

    #[test]
    fn revoked_keys_and_suspended_tenants_are_refused() {
        let (catalog, token) = catalog_with_key(true, vec![]);
        let header = format!("Bearer {token}");
        assert!(creds().authenticate(&catalog, Some(&header)).is_err());
        let (catalog, token) = catalog_with_key(false, vec![]);
        let header = format!("Bearer {token}");
        assert!(creds().authenticate(&catalog, Some(&header)).is_ok());
        catalog
            .merge_record(Record::Tenant(TenantEntry {
                name: "acme".into(),
                suspended: true,
                version: 2,
            }))
            .expect("merge");
        let e = creds()
            .authenticate(&catalog, Some(&header))
            .expect_err("suspended");
        assert_eq!(e.code, ErrorCode::Unauthorized);
    }

    #[test]
    fn scopes_grant_what_they_name_and_no_more() {
        let key = |scopes: Vec<Scope>| {
            Principal::Key(Arc::new(KeyEntry {
                id: "DKAAAAAAAAAAAAAAAAAA".into(),
                tenant: "acme".into(),
                scopes,
                revoked: false,
                version: 1,
            }))
        };
        let scope = |t: &str, a| Scope {
            table: t.into(),
            access: a,
        };
        let reader = key(vec![scope("orders", Access::Read)]);
        assert!(reader.authorize("orders", Access::Read).is_ok());
        assert_eq!(
            reader
                .authorize("orders", Access::Write)
                .expect_err("read only")
                .code,
            ErrorCode::Forbidden
        );
        assert!(reader.authorize("Orders", Access::Read).is_err());
        assert!(reader.authorize("orders.", Access::Read).is_err());
        let writer = key(vec![scope("*", Access::Write)]);
        assert!(writer.authorize("anything", Access::Read).is_ok());
        assert!(writer.authorize("anything", Access::Write).is_ok());
        assert!(writer.authorize("anything", Access::Manage).is_err());
        let manager = key(vec![scope("t", Access::Manage)]);
        assert!(manager.authorize("t", Access::Write).is_ok());
        assert!(key(vec![]).authorize("t", Access::Read).is_err());
    }
}
