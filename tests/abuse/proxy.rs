//! A TCP proxy that can freeze: while frozen it accepts and reads but forwards nothing,
//! which is what a database stopped with SIGSTOP looks like from its clients (the kernel
//! still completes connections; nothing ever answers). The machine's PostgreSQL stays
//! untouched.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to one upstream address.
pub struct FreezingProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    frozen: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    /// Proxies to `upstream`, not frozen.
    pub async fn start(upstream: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().unwrap();
        let (frozen, watching) = watch::channel(false);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, watching.clone()));
            }
        });
        FreezingProxy {
            address,
            frozen,
            accepting,
        }
    }

    /// Stops forwarding (bytes are read and held).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, held bytes first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// `url` (a PostgreSQL URL naming `upstream` as its host and port) through the proxy.
    pub fn route(&self, url: &str, upstream: SocketAddr) -> String {
        assert!(
            url.contains(&upstream.to_string()),
            "{url} names {upstream}"
        );
        url.replacen(&upstream.to_string(), &self.address.to_string(), 1)
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, mut frozen: watch::Receiver<bool>) {
    if frozen.wait_for(|frozen| !frozen).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pipe(client_read, server_write, frozen.clone()),
        pipe(server_read, client_write, frozen)
    );
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
