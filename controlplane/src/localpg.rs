//! A private Postgres server from the system's binaries, for `dyno dev`
//! and the tests: initialised in a directory of ours, listening only on a
//! Unix socket in that directory (no TCP port, so nothing races for
//! ports), run as the `postgres` user when we are root (Postgres refuses
//! to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A Postgres server in a directory.
#[derive(Debug)]
pub struct LocalPostgres {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The directory of the newest installed Postgres server binaries
/// (`DYNO_PG_BIN` overrides).
pub fn find_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("DYNO_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .context("no Postgres server found under /usr/lib/postgresql (apt-get install postgresql), or set DYNO_PG_BIN")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl LocalPostgres {
    /// A server in `dir` (created and initialised on first use).
    pub fn init(dir: &Path) -> anyhow::Result<LocalPostgres> {
        std::fs::create_dir_all(dir)?;
        let dir = std::fs::canonicalize(dir)?;
        let pg = LocalPostgres {
            bin: find_bin()?,
            as_postgres: running_as_root(),
            dir,
        };
        if pg.as_postgres {
            // The postgres user must be able to reach the directory: give
            // its parent (the dev or test directory, ours) the search (x)
            // bit, never the read bit; further up, say what to do.
            use std::os::unix::fs::PermissionsExt;
            if let Some(parent) = pg.dir.parent() {
                let mode = std::fs::metadata(parent)?.permissions().mode();
                if mode & 0o001 == 0 {
                    std::fs::set_permissions(
                        parent,
                        std::fs::Permissions::from_mode(mode | 0o011),
                    )?;
                }
                for up in parent.ancestors().skip(1) {
                    let mode = std::fs::metadata(up)?.permissions().mode();
                    if mode & 0o001 == 0 {
                        bail!(
                            "the postgres user cannot reach {}: {} is not searchable by others \
                             (chmod o+x it, use a directory elsewhere, or set DATABASE_URL)",
                            pg.dir.display(),
                            up.display()
                        );
                    }
                }
            }
            // The server's own user must own its directory.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .status()?
                .success();
            if !ok {
                bail!("cannot give {} to the postgres user", pg.dir.display());
            }
        }
        if !pg.data().join("PG_VERSION").exists() {
            let out = pg
                .command("initdb")
                .arg("-D")
                .arg(pg.data())
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .output()?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // Every path given is absolute; the postgres user may not be able
        // to enter our working directory.
        c.current_dir("/");
        c
    }

    /// The socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}",
            self.dir.display()
        )
    }

    /// Starts the server (waits until it accepts connections).
    pub fn start(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.dir.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-w", "-t", "60", "-l"])
            .arg(self.dir.join("postgres.log"))
            .arg("start")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}{}; see {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.dir.join("postgres.log").display()
            );
        }
        Ok(())
    }

    /// Stops the server: `fast` ends the sessions and writes out every
    /// committed transaction. (Not `immediate`: with `synchronous_commit =
    /// off` a crash-style stop can lose the last commits, which the
    /// Postgres-restart test caught losing an API key.)
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output()?;
        if !out.status.success() && self.is_running() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// True while the server runs.
    pub fn is_running(&self) -> bool {
        self.data().join("postmaster.pid").exists()
    }

    /// Creates database `db` if missing (waits up to 30 s for the server).
    pub async fn create_database(&self, db: &str) -> anyhow::Result<String> {
        use sqlx::Connection;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "waiting for Postgres");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            // Identifiers cannot be bound; `db` is ours, checked here.
            if !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                bail!("database names here are [A-Za-z0-9_]");
            }
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await?;
        }
        conn.close().await.ok();
        Ok(self.url(db))
    }
}
