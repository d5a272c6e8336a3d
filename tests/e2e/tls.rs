//! TLS where it matters, with certificates made here: mutual TLS between every service
//! and for clients, a certificate replaced without a restart, and PostgreSQL verified
//! with `sslmode=verify-full`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agilepm_platform::wire::auth::Credentials;
use agilepm_platform::wire::client::{PeerChannel, connect_lazy_tls};
use agilepm_platform::wire::config::{ServiceName, TlsConfig};
use agilepm_platform::wire::tls::{ClientTlsFiles, ServerTlsFiles};
use agilepm_proto::planning::v1::ListProductsRequest;
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};

use crate::given;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use uuid::Uuid;

engine_tests!(mutual_tls_between_services_and_for_clients);

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, good for serving and for presenting as a
    /// client; written as `<name>.crt` and `<name>.key` in `dir`.
    pub fn issue(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write_atomically(&cert_path, &cert.pem());
        write_atomically(&key_path, &key.serialize_pem());
        (cert_path, key_path)
    }

    /// The CA's own certificate, written as `<name>.crt` in `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        write_atomically(&path, &self.pem);
        path
    }
}

/// A CA made for one test and a server certificate it signed for `name` (127.0.0.1 and
/// localhost), written in `dir`: the CA's certificate (what a client is told to trust),
/// the certificate, its key.
pub fn server_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new(&format!("agilepm {name} test CA"));
    let (cert, key) = ca.issue(dir, name);
    (ca.write(dir, "ca"), cert, key)
}

/// A TLS front for a plaintext server at `backend`, as a tenant's load balancer is for
/// its webhook endpoint: TLS with `cert` and `key` on a free loopback port (returned),
/// each connection forwarded to `backend` as it is decrypted.
pub async fn tls_front(
    cert: &Path,
    key: &Path,
    backend: std::net::SocketAddr,
) -> std::net::SocketAddr {
    use rustls_pki_types::pem::PemObject as _;
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    address
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn client(address: std::net::SocketAddr, tls: &ClientTlsFiles) -> PeerChannel {
    connect_lazy_tls(
        &format!("https://{address}"),
        Some(Credentials::fixed("acme").unwrap()),
        Some(&tls.config().unwrap()),
    )
    .unwrap()
}

async fn list_products(channel: PeerChannel) -> Result<(), tonic::Status> {
    let mut products = ProductServiceClient::new(channel);
    let mut request = tonic::Request::new(ListProductsRequest::default());
    request.set_timeout(Duration::from_secs(5));
    products.list_products(request).await.map(|_| ())
}

async fn mutual_tls_between_services_and_for_clients(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("agilepm test CA");
    let ca_path = ca.write(dir.path(), "ca");
    let (server_cert, server_key) = ca.issue(dir.path(), "services");
    let (client_cert, client_key) = ca.issue(dir.path(), "client");
    let tls = TlsConfig {
        server: Some(ServerTlsFiles {
            cert: server_cert.clone(),
            key: server_key.clone(),
            client_ca: Some(ca_path.clone()),
        }),
        client: ClientTlsFiles {
            ca: Some(ca_path.clone()),
            cert: Some(server_cert.clone()),
            key: Some(server_key.clone()),
        },
    };
    let system = TestSystem::start_secured(
        engine,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
        &[],
        agilepm_testkit::test_auth().clone(),
        tls,
    )
    .await;
    let trusted = ClientTlsFiles {
        ca: Some(ca_path.clone()),
        cert: Some(client_cert.clone()),
        key: Some(client_key.clone()),
    };
    let planning = system.address(ServiceName::Planning);

    // Services call each other over mutual TLS: planning and task reach backlog-item.
    let product = given::product(client(planning, &trusted), "Over TLS").await;
    let backlog_items = client(system.address(ServiceName::BacklogItem), &trusted);
    let item = given::item(backlog_items, &product.id).await;
    given::task(
        client(system.address(ServiceName::Task), &trusted),
        &item.id,
        2,
    )
    .await;

    // Without a client certificate, with one from another CA, trusting another CA, or in
    // plaintext: no call gets through.
    let no_certificate = ClientTlsFiles {
        ca: Some(ca_path.clone()),
        ..Default::default()
    };
    assert!(
        list_products(client(planning, &no_certificate))
            .await
            .is_err()
    );
    let rogue = TestCa::new("rogue CA");
    let (rogue_cert, rogue_key) = rogue.issue(dir.path(), "rogue");
    let rogue_client = ClientTlsFiles {
        ca: Some(ca_path.clone()),
        cert: Some(rogue_cert),
        key: Some(rogue_key),
    };
    assert!(
        list_products(client(planning, &rogue_client))
            .await
            .is_err()
    );
    let rogue_ca_path = rogue.write(dir.path(), "rogue-ca");
    let trusts_rogue_only = ClientTlsFiles {
        ca: Some(rogue_ca_path.clone()),
        cert: Some(client_cert.clone()),
        key: Some(client_key.clone()),
    };
    assert!(
        list_products(client(planning, &trusts_rogue_only))
            .await
            .is_err()
    );
    let plaintext = agilepm_testkit::channel(planning, "acme");
    assert!(list_products(plaintext).await.is_err());
    list_products(client(planning, &trusted)).await.unwrap();

    // A new server certificate (here from another CA) is picked up without a restart:
    // clients trusting only that CA get in once it is served.
    let (renewed_cert, renewed_key) = rogue.issue(dir.path(), "renewed");
    std::fs::copy(&renewed_key, &server_key).unwrap();
    std::fs::copy(&renewed_cert, &server_cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while list_products(client(planning, &trusts_rogue_only))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    system.stop().await;
}

/// The machine's PostgreSQL serves TLS with its own certificate (Debian's, for
/// `localhost`): a service connects with `sslmode=verify-full` against it, and refuses to
/// when told to trust another CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_verify_the_server() {
    agilepm_testkit::init();
    let Some(admin) = agilepm_testkit::postgres_admin_url() else {
        return;
    };
    let server_cert = {
        use sqlx::Connection as _;
        let mut conn = sqlx::postgres::PgConnection::connect(&admin).await.unwrap();
        let path: String = sqlx::query_scalar("SELECT current_setting('ssl_cert_file')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        path
    };
    let db = TestDb::create(Engine::Postgres).await;
    let database = db
        .url()
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let verified = format!(
        "postgres://root@localhost:5432/{database}?sslmode=verify-full&sslrootcert={server_cert}"
    );
    let system =
        TestSystem::start_on_databases(&[(ServiceName::BacklogItem, verified.clone())]).await;
    let product_id = Uuid::now_v7().to_string();
    system.record_product("acme", &product_id).await;
    given::item(
        system.channel(ServiceName::BacklogItem, "acme"),
        &product_id,
    )
    .await;
    let encrypted: i64 = {
        use sqlx::Connection as _;
        let mut admin = sqlx::postgres::PgConnection::connect(&admin).await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE datname = $1 AND ssl",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    };
    assert!(encrypted >= 1, "the service's connections use TLS");
    system.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let other = TestCa::new("not the database's CA").write(dir.path(), "other");
    let refused = agilepm_platform::storage::db::Db::connect(
        &format!(
            "postgres://root@localhost:5432/{database}?sslmode=verify-full&sslrootcert={}",
            other.display()
        ),
        ServiceName::BacklogItem,
        1,
        agilepm_backlog_item::SPEC.migrations,
    )
    .await;
    assert!(refused.is_err(), "a server the CA did not sign is refused");
}
