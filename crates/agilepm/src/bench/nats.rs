//! A `nats-server -js` of the bench's own for `--feed nats`: a fresh store per run, so
//! each run's streams and consumers start empty, and its CPU is counted with the rest.

use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The bench's NATS server.
pub struct PrivateNats {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl PrivateNats {
    /// Starts it on `port` with a fresh store and waits until it accepts connections
    /// (it starts JetStream before it listens).
    pub async fn start(port: u16) -> anyhow::Result<PrivateNats> {
        let store = tempfile::tempdir()?;
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("--feed nats starts nats-server: install it (Debian: nats-server)")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not listen on {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(PrivateNats {
            child,
            port,
            _store: store,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// CPU seconds it used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        super::processes::cpu_seconds_of(self.child.id()?)
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
