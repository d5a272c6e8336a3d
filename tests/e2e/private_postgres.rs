//! A PostgreSQL cluster of the test's own, on a port and data directory of its own, so a
//! test may restart it without touching the machine's server. Built with the machine's
//! PostgreSQL binaries (Debian's `/usr/lib/postgresql/<version>/bin`); PostgreSQL refuses
//! to run as root, so as root the cluster runs as the `postgres` user.

use std::path::PathBuf;
use std::process::Command;

use crate::processes::free_address;

/// A private cluster; stopped (immediately) when dropped.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    /// A running cluster with a superuser `root` (trust authentication, loopback only), or
    /// `None` with a note where the machine has no PostgreSQL binaries, unless
    /// `AGILEPM_REQUIRE_POSTGRES` is set (as CI sets it).
    pub fn start_or_skip(test: &str) -> Option<PrivatePostgres> {
        let Some(bin) = binaries() else {
            assert!(
                std::env::var_os("AGILEPM_REQUIRE_POSTGRES").is_none(),
                "AGILEPM_REQUIRE_POSTGRES is set but no PostgreSQL binaries are installed"
            );
            eprintln!("SKIPPED {test}: no PostgreSQL server binaries (Debian: postgresql)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if running_as_root() {
            // The postgres user must own the directory it writes in.
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        run(as_postgres(&bin.join("initdb"))
            .args([
                "-U",
                "root",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        let cluster = PrivatePostgres {
            bin,
            data,
            port: free_address().port(),
            _dir: dir,
        };
        cluster.pg_ctl(&["start"]);
        Some(cluster)
    }

    /// `postgres://root@127.0.0.1:PORT/DATABASE`, over loopback without TLS.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://root@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Creates `database` (a plain identifier the test chooses).
    pub async fn create_database(&self, database: &'static str) {
        assert!(
            database
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
        use sqlx::Connection as _;
        let mut admin = sqlx::postgres::PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
    }

    /// A fast restart, as an operator's `systemctl restart` does: every backend is
    /// terminated ("terminating connection due to administrator command"), and the call
    /// returns once the server accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.data.display()
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .args(args)
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.data.join("server.log")));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

/// The newest installed server's binaries.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

fn as_postgres(program: &std::path::Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
