//! NATS as an operator runs it for strangers: TLS only, and one user per service with the
//! permissions `agilepm nats-authorization` prints (the block `deploy/nats/` ships). The
//! task service relays over it and a coordinator replica consumes over it, each with its
//! own credentials; another service's credentials cannot publish on the task stream.

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use agilepm::nats_authorization::{authorization, password_variable};
use agilepm_platform::events::jetstream::stream_name;
use agilepm_platform::wire::config::{NatsConfig, ServiceName};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_testkit::{Engine, TestDb, TestSystem};
use async_nats::jetstream::context::GetStreamErrorKind;
use tokio::process::{Child, Command};

use crate::coordinator::{Sprinting, burn_down};
use crate::crash::spawn_coordinator_with;
use crate::jetstream::{assert_done_exactly_once, nats_server_installed};
use crate::processes::{free_address, spawn_task, wait_serving};
use crate::tls::server_certificate;

/// A TLS-only `nats-server -js` whose only users are the services'.
struct SecuredNats {
    _child: Child,
    port: u16,
    ca: std::path::PathBuf,
    passwords: Vec<(ServiceName, String)>,
    _dir: tempfile::TempDir,
}

impl SecuredNats {
    async fn start() -> SecuredNats {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = server_certificate(dir.path(), "nats");
        let port = free_address().port();
        let passwords: Vec<(ServiceName, String)> = ServiceName::ALL
            .into_iter()
            // nats-server parses an expanded variable as a value: a password that looks
            // like a number or a date would not parse, so they start with a letter (as
            // make-secrets.sh makes them).
            .map(|service| (service, format!("p{}", uuid::Uuid::new_v4().simple())))
            .collect();
        std::fs::write(dir.path().join("authorization.conf"), authorization()).unwrap();
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: {:?} }}\n\
                 tls {{ cert_file: {:?}, key_file: {:?}, timeout: 5 }}\n\
                 include \"authorization.conf\"\n",
                dir.path().join("store"),
                cert,
                key
            ),
        )
        .unwrap();
        let mut command = Command::new("nats-server");
        command
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        // The passwords reach the server as the environment its configuration names.
        for (service, password) in &passwords {
            command.env(password_variable(*service), password);
        }
        let nats = SecuredNats {
            _child: command.spawn().expect("start nats-server"),
            port,
            ca,
            passwords,
            _dir: dir,
        };
        nats.wait_ready().await;
        nats
    }

    fn password(&self, service: ServiceName) -> String {
        self.passwords
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, password)| password.clone())
            .unwrap()
    }

    /// `service`'s settings, as its deployment gives them (`tls://`, a CA, a user).
    fn config(&self, service: ServiceName) -> NatsConfig {
        NatsConfig {
            url: Some(format!("tls://127.0.0.1:{}", self.port)),
            credentials: Some(agilepm_platform::wire::config::NatsCredentials {
                user: service.as_str().to_owned(),
                password: self.password(service).into(),
            }),
            ca_file: Some(self.ca.clone()),
            ack_wait: crate::jetstream::ACK_WAIT,
            ..NatsConfig::default()
        }
    }

    /// The same, as a service process's environment.
    fn env(&self, service: ServiceName) -> Vec<(&'static str, String)> {
        vec![
            ("AGILEPM_NATS_URL", format!("tls://127.0.0.1:{}", self.port)),
            ("AGILEPM_NATS_USER", service.as_str().to_owned()),
            ("AGILEPM_NATS_PASSWORD", self.password(service)),
            ("AGILEPM_NATS_CA_FILE", self.ca.display().to_string()),
        ]
    }

    /// A JetStream client connected as `service`, through the platform's own connect.
    async fn as_service(&self, service: ServiceName) -> async_nats::jetstream::Context {
        agilepm_platform::events::jetstream::connect(&self.config(service), service)
            .await
            .unwrap()
    }

    /// How many messages the task stream holds, read as the task service may read it.
    async fn task_stream_messages(&self) -> u64 {
        let context = self.as_service(ServiceName::Task).await;
        let mut stream = context
            .get_stream(stream_name(ServiceName::Task))
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let context = self.as_service(ServiceName::Task).await;
        loop {
            // The task user may look up its own stream: "not found" means JetStream serves.
            match context.get_stream(stream_name(ServiceName::Task)).await {
                Err(error) if matches!(error.kind(), GetStreamErrorKind::JetStream(_)) => return,
                Ok(_) => return,
                Err(error) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the secured nats-server did not serve JetStream within 20 s: {error}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The first line the server sends a client, its INFO, before any TLS: it must demand TLS.
fn server_demands_tls(port: u16) -> bool {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut info = String::new();
    BufReader::new(stream).read_line(&mut info).unwrap();
    info.starts_with("INFO ") && info.contains("\"tls_required\":true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_secured_nats_each_service_publishes_only_its_own_stream() {
    agilepm_testkit::init();
    if !nats_server_installed("a secured NATS") {
        return;
    }
    let nats = SecuredNats::start().await;
    assert!(server_demands_tls(nats.port), "the server is TLS only");

    // Without a user, or with a wrong password, the server refuses the connection.
    let anonymous = async_nats::ConnectOptions::new()
        .add_root_certificates(nats.ca.clone())
        .require_tls(true)
        .connect(format!("tls://127.0.0.1:{}", nats.port))
        .await;
    assert!(
        anonymous.is_err(),
        "a client without credentials is refused"
    );
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "task".to_owned(),
        "not the password".to_owned(),
    )
    .add_root_certificates(nats.ca.clone())
    .connect(format!("tls://127.0.0.1:{}", nats.port))
    .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    // The task service relays as `task`; backlog-item and planning need no NATS here.
    let task_address = free_address();
    let system = TestSystem::start_with_nats(
        Engine::Sqlite,
        &[ServiceName::BacklogItem, ServiceName::Planning],
        &[(ServiceName::Task, format!("http://{task_address}"))],
        NatsConfig::default(),
    )
    .await;
    let task_db = TestDb::migrated(
        Engine::Sqlite,
        agilepm::system::migrations(ServiceName::Task),
    )
    .await;
    let _task = spawn_task(
        task_address,
        task_db.url(),
        system.address(ServiceName::BacklogItem),
        &nats.env(ServiceName::Task),
    );
    wait_serving(task_address, "the task service").await;
    let mut s = Sprinting::prepare(system, StatusTransitionMode::Automatic).await;
    s.task_service = Some(task_address);

    // A coordinator replica consumes the task stream as `coordinator`.
    let coordinator_db = TestDb::create(Engine::Sqlite).await;
    let coordinator_address = free_address();
    let mut env = nats.env(ServiceName::Coordinator);
    env.extend([
        ("AGILEPM_LISTEN", coordinator_address.to_string()),
        ("AGILEPM_FEED", "nats".to_owned()),
        (
            "AGILEPM_NATS_ACK_WAIT_MS",
            crate::jetstream::ACK_WAIT.as_millis().to_string(),
        ),
    ]);
    let _coordinator = spawn_coordinator_with(
        s.system.address(ServiceName::BacklogItem),
        task_address,
        coordinator_db.url(),
        &env,
        None,
    );
    wait_serving(coordinator_address, "the coordinator").await;

    let (item, tasks) = s.committed_item(3, 2).await;
    assert_eq!(burn_down(&s, &item, &tasks, 2, true).await, 6);
    assert_done_exactly_once(&s, &[item]).await;
    let held = nats.task_stream_messages().await;
    assert!(
        held >= 6 + 3,
        "the task stream holds the definitions and estimates: {held}"
    );

    // Another service's credentials cannot publish on the task stream's subjects: not the
    // backlog-item service's (a relaying service), not the coordinator's (its consumer).
    let forge = |foreign: ServiceName| {
        let nats = &nats;
        async move {
            let context = nats.as_service(foreign).await;
            let published = async {
                context
                    .publish("agilepm.task.acme.forged", "forged".into())
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
            };
            let refused = tokio::time::timeout(Duration::from_secs(10), published)
                .await
                .expect("a refused publish fails within the request timeout");
            assert!(
                refused.is_err(),
                "{foreign}'s credentials published on agilepm.task: {refused:?}"
            );
        }
    };
    // Side by side: each waits out the publish acknowledgement that never comes.
    tokio::join!(
        forge(ServiceName::BacklogItem),
        forge(ServiceName::Coordinator)
    );
    assert_eq!(
        nats.task_stream_messages().await,
        held,
        "nothing forged reached the task stream"
    );
    s.system.stop().await;
}

/// What compose mounts and what the Kubernetes ConfigMap embeds are both the block the
/// code generates: a permission the code needs cannot be missing from a deployment.
#[test]
fn the_shipped_authorization_is_the_generated_one() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    };
    assert_eq!(
        read(&deploy.join("nats/authorization.conf")),
        authorization(),
        "deploy/nats/authorization.conf is stale: regenerate it with `agilepm nats-authorization`"
    );
    // The ConfigMap's `authorization.conf: |` block, indented four spaces.
    let manifest = read(&deploy.join("k8s/nats.yaml"));
    let embedded: String = manifest
        .lines()
        .skip_while(|line| *line != "  authorization.conf: |")
        .skip(1)
        .take_while(|line| line.starts_with("    ") || line.is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert_eq!(
        embedded,
        authorization(),
        "deploy/k8s/nats.yaml embeds a stale authorization.conf: paste `agilepm nats-authorization`"
    );
}
