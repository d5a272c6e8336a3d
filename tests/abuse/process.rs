//! The service under test as a real process, and what the suite reads of it from outside:
//! its memory and CPU time (from `/proc`), its log, its health.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use agilepm_platform::wire::auth::Role;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::task::v1::EstimateTaskHoursRemainingRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::{Engine, TestDb, TestSystem};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The tenant the scene belongs to.
pub const TENANT: &str = "acme";

/// A team member of `tenant`, as a signed token the process verifies.
pub fn member(tenant: &str) -> String {
    agilepm_testkit::person_token("member", tenant, &[Role::TeamMember])
}

/// The task service in a process of its own, on its own database, calling an in-process
/// backlog-item service.
pub struct TaskProcess {
    child: Child,
    /// Where it serves.
    pub address: SocketAddr,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

/// How to start the process.
#[derive(Default)]
pub struct Launch<'a> {
    /// Settings (flags as environment variables) on top of the suite's.
    pub env: Vec<(&'a str, String)>,
    /// The open-file limit to start it with (`ulimit -n`).
    pub max_open_files: Option<u32>,
}

impl TaskProcess {
    /// Starts the task service on `database_url`, its backlog-item peer at `backlog_item`,
    /// and waits until it answers health checks.
    pub async fn start(
        database_url: &str,
        backlog_item: SocketAddr,
        launch: Launch<'_>,
    ) -> TaskProcess {
        // A port chosen by the kernel and given back: the process binds it again at once.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let log_dir = tempfile::tempdir().expect("a log directory");
        let log = log_dir.path().join("task.log");
        let binary = env!("CARGO_BIN_EXE_task-under-test");
        let mut command = match launch.max_open_files {
            Some(limit) => {
                let mut command = Command::new("sh");
                command.args(["-c", &format!("ulimit -n {limit} && exec \"$0\""), binary]);
                command
            }
            None => Command::new(binary),
        };
        command
            .env("AGILEPM_LISTEN", address.to_string())
            .env("AGILEPM_DATABASE_URL", database_url)
            .env(
                "AGILEPM_BACKLOG_ITEM_ENDPOINT",
                format!("http://{backlog_item}"),
            )
            .env("AGILEPM_DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env("AGILEPM_AUTH_SECRET", agilepm_testkit::test_secret());
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start the task process");
        let process = TaskProcess {
            child,
            address,
            log,
            _log_dir: log_dir,
        };
        process.wait_serving(Duration::from_secs(60)).await;
        process
    }

    /// A channel of its own (a connection of its own) presenting `token`.
    pub fn channel(&self, token: &str) -> PeerChannel {
        agilepm_testkit::channel(self.address, token)
    }

    /// Its health (readiness) as one check answers it within a second, or `None`.
    pub async fn health(&self) -> Option<ServingStatus> {
        self.health_of("").await
    }

    /// Its liveness as one check answers it within a second, or `None`.
    pub async fn liveness(&self) -> Option<ServingStatus> {
        self.health_of(agilepm_platform::runtime::server::LIVENESS)
            .await
    }

    async fn health_of(&self, service: &str) -> Option<ServingStatus> {
        let channel = self.channel(&member(TENANT));
        let mut client = HealthClient::new(channel);
        let check = client.check(HealthCheckRequest {
            service: service.to_owned(),
        });
        match tokio::time::timeout(Duration::from_secs(1), check).await {
            Ok(Ok(response)) => ServingStatus::try_from(response.into_inner().status).ok(),
            _ => None,
        }
    }

    /// Waits until health says `SERVING`.
    pub async fn wait_serving(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.health().await != Some(ServingStatus::Serving) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the task process did not serve within {within:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the process runs")
    }

    /// Asks it to stop, as Kubernetes and systemd do: SIGTERM.
    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "SIGTERM was not delivered");
    }

    /// Waits until it has exited, and says how.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("wait for the task process")
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// CPU time used so far (user and system).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A task process with tasks to estimate: the backlog-item service in-process, an item of
/// [`TENANT`], and `tasks` tasks of it defined through the process.
pub struct Scene {
    /// The process under test.
    pub task: TaskProcess,
    /// Task ids.
    pub tasks: Vec<String>,
    _database: TestDb,
    backlog: TestSystem,
}

impl Scene {
    /// Starts the scene on `engine`, the task process's database at the URL `database_url`
    /// maps the fresh database's URL to (a proxy, say).
    pub async fn start(engine: Engine, tasks: usize, launch: Launch<'_>) -> Scene {
        Scene::start_via(engine, tasks, launch, |url| url.to_owned()).await
    }

    /// [`Scene::start`], reaching the database through `route` applied to its URL.
    pub async fn start_via(
        engine: Engine,
        tasks: usize,
        launch: Launch<'_>,
        route: impl FnOnce(&str) -> String,
    ) -> Scene {
        let backlog = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
        let item = backlog.planned_item(TENANT).await;
        let database = TestDb::create(engine).await;
        let task = TaskProcess::start(
            &route(database.url()),
            backlog.address(ServiceName::BacklogItem),
            launch,
        )
        .await;
        let mut client = TaskServiceClient::new(task.channel(&member(TENANT)));
        let mut ids = Vec::new();
        for _ in 0..tasks {
            let defined = client
                .define_task(agilepm_proto::task::v1::DefineTaskRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    backlog_item_id: item.id.clone(),
                    name: "Task".into(),
                    hours_remaining: 100,
                    ..Default::default()
                })
                .await
                .expect("define a task")
                .into_inner()
                .task
                .expect("a task");
            ids.push(defined.id);
        }
        Scene {
            task,
            tasks: ids,
            _database: database,
            backlog,
        }
    }

    /// A client estimating as a team member, on a connection of its own.
    pub fn estimator(&self) -> TaskServiceClient<PeerChannel> {
        TaskServiceClient::new(self.task.channel(&member(TENANT)))
    }

    /// Runs `sql` on the task process's database from outside it (to plant a value no
    /// version of the service writes); returns the rows it changed.
    pub async fn run_sql(&self, sql: &str) -> u64 {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(self._database.url())
            .await
            .expect("open the task database");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .expect("run the statement");
        done.rows_affected()
    }

    /// Starts a task process again on the scene's database, once the last one exited.
    pub async fn restart_task(&mut self) {
        self.task = TaskProcess::start(
            self._database.url(),
            self.backlog.address(ServiceName::BacklogItem),
            Launch::default(),
        )
        .await;
    }

    /// Stops everything.
    pub async fn stop(self) {
        self.task.stop().await;
        self.backlog.stop().await;
    }
}

/// An estimate of `task` (hours 1 to 99, never 0: the task stays in progress).
pub fn estimate(task: &str, n: u64) -> EstimateTaskHoursRemainingRequest {
    EstimateTaskHoursRemainingRequest {
        view: 0,
        id: task.to_owned(),
        hours_remaining: (n % 99 + 1) as i32,
        date: String::new(),
        expected_version: None,
    }
}
