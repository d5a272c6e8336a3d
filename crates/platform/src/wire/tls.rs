//! TLS with rustls: a server's certificate (re-read when its files change or on SIGHUP),
//! optionally requiring client certificates from a CA (mutual TLS), and the client side
//! for calls to peers: a CA to verify them and a certificate to present.
//!
//! Plaintext stays the development default: TLS is on for a server when it is given a
//! certificate and key, and for a client when its peer's endpoint is `https://`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures::Stream;
use futures::StreamExt as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How often certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server's TLS material lives.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA (PEM) whose client certificates are required; `None` accepts any client.
    pub client_ca: Option<PathBuf>,
}

/// Where a client's TLS material lives.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// CA (PEM) that signed the servers' certificates.
    pub ca: Option<PathBuf>,
    /// Certificate (PEM) to present to servers that require one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Makes ring the process's rustls provider. Every TLS client and server in the process
/// uses it: ours, sqlx's, async-nats', tonic's, and reqwest's (webhooks, Sentry), which is
/// built without a provider of its own and would panic without this. One provider is
/// compiled in, so rustls never has to choose. Idempotent; called first by
/// `telemetry::init` and by every binary's `main`.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, and it can only be this one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn load_certified_key(files: &ServerTlsFiles) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read certificate {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate {} is not PEM", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read private key {}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).with_context(|| {
        format!(
            "{} does not match {}",
            files.key.display(),
            files.cert.display()
        )
    })
}

/// The server's current certificate, swapped in place when its files change.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A server's TLS: the acceptor for its connections, reloading its certificate.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// Loads `files` (a bad file stops the start) and keeps the certificate fresh until
    /// `shutdown`: re-read when the files change or the process gets SIGHUP. A reload that
    /// fails keeps the certificate in use and logs an error.
    pub fn load(files: &ServerTlsFiles, shutdown: &CancellationToken) -> anyhow::Result<ServerTls> {
        let resolver = Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(load_certified_key(files)?)),
        });
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut config = match &files.client_ca {
            Some(ca) => {
                let roots = Arc::new(root_store(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        }
        .with_cert_resolver(resolver.clone());
        // HTTP/2 for gRPC; HTTP/1.1 too, for gRPC-Web from clients that do not speak h2.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio::spawn(keep_fresh(files.clone(), resolver, shutdown.clone()));
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS side of connections as they are accepted (bounded by
    /// [`crate::wire::limits::accept_limited`]). Handshakes run concurrently, each bounded in
    /// time, so a slow or silent client holds up nobody.
    pub fn handshake<S, T>(
        &self,
        accepted: S,
    ) -> impl Stream<Item = std::io::Result<TlsStream<T>>> + use<S, T>
    where
        S: Stream<Item = std::io::Result<T>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            let mut accepted = std::pin::pin!(accepted);
            while let Some(stream) = accepted.next().await {
                let Ok(stream) = stream else { continue };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send(Ok(tls)).await;
                        }
                        // A client's failed handshake (wrong CA, no certificate, plaintext)
                        // is the client's mistake: logged, not an error of ours.
                        Ok(Err(error)) => tracing::info!(%error, "TLS handshake failed"),
                        Err(_) => tracing::info!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

async fn keep_fresh(
    files: ServerTlsFiles,
    resolver: Arc<ReloadingCert>,
    shutdown: CancellationToken,
) {
    let stamp = || (file_stamp(&files.cert), file_stamp(&files.key));
    let mut seen = stamp();
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup_received = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup_received = std::future::pending::<()>();
        let forced = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RELOAD_EVERY) => false,
            () = hangup_received => true,
        };
        let now = stamp();
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match load_certified_key(&files) {
            Ok(key) => {
                *resolver.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => tracing::error!(
                error = %format!("{error:#}"),
                "TLS certificate changed but cannot be used; the previous one stays in use"
            ),
        }
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn root_store(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read CA {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("CA {} is not PEM", ca.display()))?)
            .with_context(|| format!("CA {}", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", ca.display());
    Ok(roots)
}

impl ClientTlsFiles {
    /// Whether any client TLS material is configured.
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The tonic client configuration, if any client TLS material is configured.
    pub fn config_if_any(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        if self.is_empty() {
            Ok(None)
        } else {
            self.config().map(Some)
        }
    }

    /// The tonic client configuration these files describe (read now).
    pub fn config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("cannot read CA {}", ca.display()))?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = std::fs::read(cert).with_context(|| {
                    format!("cannot read client certificate {}", cert.display())
                })?;
                let key = std::fs::read(key)
                    .with_context(|| format!("cannot read client key {}", key.display()))?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => anyhow::bail!("a client certificate needs both its certificate and its key"),
        }
        Ok(config)
    }
}
