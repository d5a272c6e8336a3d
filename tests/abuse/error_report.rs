//! Errors to Sentry, through the real SDK over real HTTP: a receiver here accepts
//! envelopes as Sentry's ingestion endpoint does and records them, and the task service
//! runs as a process of its own with `SENTRY_DSN` pointing at it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_proto::task::v1::GetTaskRequest;
use agilepm_testkit::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tonic::Code;

use crate::process::{Launch, Scene};

/// Envelopes received, as text.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<String>>>);

impl Received {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 endpoint answering every POST with 200 and recording its body; the DSN
/// that points the SDK at it.
async fn receiver() -> (Received, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dsn = format!("http://public@{}/1", listener.local_addr().unwrap());
    let received = Received::default();
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                // One request after another on the connection (the SDK keeps it alive).
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end().to_ascii_lowercase();
                        if header.is_empty() {
                            break;
                        }
                        if let Some(value) = header.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    record
                        .0
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if socket.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (received, dsn)
}

/// The error events among `envelopes` (each envelope is a header line, then item
/// headers each followed by their payload).
fn events(envelopes: &[String]) -> Vec<Value> {
    envelopes
        .iter()
        .flat_map(|envelope| {
            let lines: Vec<&str> = envelope.lines().collect();
            let mut events = Vec::new();
            for pair in lines.windows(2) {
                let header: Value = serde_json::from_str(pair[0]).unwrap_or(Value::Null);
                if header["type"] == "event" {
                    events.push(serde_json::from_str(pair[1]).unwrap_or(Value::Null));
                }
            }
            events
        })
        .collect()
}

/// A server fault (a stored status no version of the service wrote) is reported once,
/// tagged with the service, tenant, caller, RPC, trace and span; a client's NOT_FOUND is
/// not reported at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_reach_sentry_tagged_and_client_mistakes_do_not() {
    agilepm_testkit::init();
    let _serial = crate::SERIAL.lock().await;
    let (received, dsn) = receiver().await;
    let launch = Launch {
        env: vec![
            ("SENTRY_DSN", dsn),
            ("SENTRY_ENVIRONMENT", "test".into()),
            ("RUST_LOG", "info".into()),
            ("AGILEPM_LOG_FORMAT", "json".into()),
        ],
        ..Launch::default()
    };
    let scene = Scene::start(Engine::Sqlite, 1, launch).await;
    let mut client = scene.estimator();

    let missing = uuid::Uuid::now_v7().to_string();
    let not_found = client
        .get_task(GetTaskRequest {
            view: 0,
            id: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), Code::NotFound);

    let task = scene.tasks[0].clone();
    let corrupted = scene
        .run_sql(&format!("UPDATE tasks SET status = 99 WHERE id = '{task}'"))
        .await;
    assert_eq!(corrupted, 1);
    let fault = client
        .get_task(GetTaskRequest {
            id: task.clone(),
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(fault.code(), Code::Internal, "{fault:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reported = loop {
        let reported: Vec<Value> = events(&received.all())
            .into_iter()
            .filter(|event| event.to_string().contains("tasks.status holds 99"))
            .collect();
        if !reported.is_empty() {
            break reported;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reported; received {:?}; log:\n{}",
            received.all(),
            scene.task.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reported.len(), 1, "reported once: {reported:?}");
    let event = &reported[0];
    let tags = &event["tags"];
    // The protocol leaves out the default level, which is error.
    assert!(
        matches!(event["level"].as_str(), None | Some("error")),
        "{event}"
    );
    assert_eq!(tags["service"], "agilepm-task", "{event}");
    assert_eq!(tags["tenant"], "acme", "{event}");
    assert_eq!(tags["subject"], "member", "{event}");
    assert_eq!(
        tags["rpc"], "/agilepm.task.v1.TaskService/GetTask",
        "{event}"
    );
    let hex = |value: &Value, len: usize| {
        value
            .as_str()
            .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    assert!(
        hex(&tags["trace_id"], 32) && hex(&tags["span_id"], 16),
        "{event}"
    );
    assert_eq!(event["environment"], "test", "{event}");
    assert!(
        event["release"]
            .as_str()
            .is_some_and(|r| r.starts_with(env!("CARGO_PKG_VERSION"))),
        "{event}"
    );
    assert!(
        !received
            .all()
            .iter()
            .any(|envelope| envelope.contains(&missing)),
        "a client's NOT_FOUND was reported"
    );

    // The log says each once: the fault at error, the client's mistake at info.
    let log = scene.task.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let levels_of = |needle: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|line| line.to_string().contains(needle))
            .map(|line| line["level"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(levels_of("tasks.status holds 99"), ["ERROR"], "{log}");
    assert_eq!(levels_of(&missing), ["INFO"], "{log}");
    scene.stop().await;
}

/// A panic anywhere in a process set up as the services set themselves up reaches
/// Sentry, tagged with the service, before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_reaches_sentry() {
    agilepm_testkit::init();
    let _serial = crate::SERIAL.lock().await;
    let (received, dsn) = receiver().await;
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_task-under-test"))
        .env("SENTRY_DSN", dsn)
        .env("AGILEPM_TEST_PANIC", "a panic planted by the test")
        .env("RUST_LOG", "off")
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let reported: Vec<Value> = events(&received.all())
        .into_iter()
        .filter(|event| event.to_string().contains("a panic planted by the test"))
        .collect();
    assert_eq!(reported.len(), 1, "{:?}", received.all());
    assert_eq!(reported[0]["tags"]["service"], "agilepm-task");
    assert_eq!(reported[0]["level"], "fatal", "{}", reported[0]);
}
