//! One trace per estimate, end to end: backlog-item, task and the coordinator each run as
//! a process of its own exporting spans over OTLP to a collector inside the test (the
//! OTLP trace service, built on `opentelemetry-proto`). One estimate completes an item;
//! its spans in the three services must be connected:
//!
//! * task: the request span of `EstimateTaskHoursRemaining` (trace A), and the
//!   `group_commit` span that wrote it, linked to that request span;
//! * coordinator: the `handle_events` span that handled the estimate's event, linked to
//!   the request span (the event carried its traceparent); it starts trace B;
//! * backlog-item: the `ReconcileBacklogItemStatuses` request span, in trace B (the
//!   coordinator's call carried it), and the item's status-change event carrying it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_platform::wire::auth::{Credentials, Role};
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItemStatus, BacklogItemStatusChanged, CommitBacklogItemRequest, GetBacklogItemRequest,
    ProductFacts, ScheduleBacklogItemRequest, SyncProductsRequest,
};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{DefineTaskRequest, EstimateTaskHoursRemainingRequest};
use agilepm_testkit::metrics::free_address;
use agilepm_testkit::{Engine, TestDb, engine_tests};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::process::{Child, Command};

engine_tests!(an_estimate_that_completes_an_item_is_one_connected_story);

/// Spans received, with the name of the service that exported each, and the version
/// each service's resource names.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    versions: Arc<Mutex<HashMap<String, String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| text(attribute.value.as_ref()?))
                .unwrap_or_default();
            if let Some(version) = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.version")
                .and_then(|attribute| text(attribute.value.as_ref()?))
            {
                self.versions
                    .lock()
                    .unwrap()
                    .insert(service.clone(), version);
            }
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let address = free_address();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(address);
        tokio::spawn(server);
        (collector, address)
    }

    /// Like [`Collector::start`], serving OTLP over TLS with `cert` and `key`.
    async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let address = free_address();
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        );
        let server = tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(address);
        tokio::spawn(server);
        (collector, address)
    }

    /// The first span `found` picks among those received, waiting up to 20 s for it.
    async fn wait_for(
        &self,
        what: &str,
        found: impl Fn(&[(String, Span)]) -> Option<Span>,
    ) -> Span {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(span) = found(&self.spans.lock().unwrap()) {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} among {:#?}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn summary(&self) -> Vec<String> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|(service, span)| {
                format!(
                    "{service} {} {:?} trace {} links {}",
                    span.name,
                    attribute(span, "method"),
                    hex(&span.trace_id),
                    span.links.len()
                )
            })
            .collect()
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| text(attribute.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request span of `method` exported by `service`.
fn request_span(spans: &[(String, Span)], service: &str, method: &str) -> Option<Span> {
    spans
        .iter()
        .find(|(s, span)| {
            s == service && attribute(span, "method").is_some_and(|m| m.ends_with(method))
        })
        .map(|(_, span)| span.clone())
}

/// A span of `service` named `name` with a link to `target`.
fn linked_span(spans: &[(String, Span)], service: &str, name: &str, target: &Span) -> Option<Span> {
    spans
        .iter()
        .find(|(s, span)| {
            s == service
                && span.name == name
                && span
                    .links
                    .iter()
                    .any(|l| l.trace_id == target.trace_id && l.span_id == target.span_id)
        })
        .map(|(_, span)| span.clone())
}

/// Starts `binary` with `env`, exporting to `collector`, and waits until it serves.
async fn start(binary: &str, env: &[(&str, String)], collector: SocketAddr) -> (Child, SocketAddr) {
    let address = free_address();
    let mut command = Command::new(binary);
    command
        .env("AGILEPM_LISTEN", address.to_string())
        .env("AGILEPM_AUTH_SECRET", agilepm_testkit::test_secret())
        .env("AGILEPM_DB_MAX_CONNECTIONS", "4")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        // Spans leave in batches every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "error")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("start the service process");
    let endpoint = format!("http://{address}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !agilepm::system::is_serving_at(&endpoint, None).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{binary} did not serve"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, address)
}

fn rid() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn an_estimate_that_completes_an_item_is_one_connected_story(engine: Engine) {
    let (collector, otlp) = Collector::start().await;
    let databases = [
        TestDb::create(engine).await,
        TestDb::create(engine).await,
        TestDb::create(engine).await,
    ];
    let (_backlog_item, backlog_item) = start(
        env!("CARGO_BIN_EXE_backlog-item-under-test"),
        &[("AGILEPM_DATABASE_URL", databases[0].url().to_owned())],
        otlp,
    )
    .await;
    let backlog_endpoint = format!("http://{backlog_item}");
    let (_task, task) = start(
        env!("CARGO_BIN_EXE_task-under-test"),
        &[
            ("AGILEPM_DATABASE_URL", databases[1].url().to_owned()),
            ("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_endpoint.clone()),
        ],
        otlp,
    )
    .await;
    let (_coordinator, _) = start(
        env!("CARGO_BIN_EXE_coordinator-under-test"),
        &[
            ("AGILEPM_DATABASE_URL", databases[2].url().to_owned()),
            ("AGILEPM_BACKLOG_ITEM_ENDPOINT", backlog_endpoint.clone()),
            ("AGILEPM_TASK_ENDPOINT", format!("http://{task}")),
        ],
        otlp,
    )
    .await;

    // An item committed to a sprint, as planning does it; one task of 2 hours.
    let tenant = "acme";
    let planning = agilepm_platform::wire::client::connect_lazy_acting_for(
        &backlog_endpoint,
        Credentials::fixed(&agilepm_testkit::service_token(ServiceName::Planning)).unwrap(),
        tenant,
    )
    .unwrap();
    let mut items = BacklogItemServiceClient::new(planning.clone());
    let product_id = rid();
    items
        .sync_products(SyncProductsRequest {
            products: vec![ProductFacts {
                product_id: product_id.clone(),
                status_transition_mode: 1,
                product_version: 1,
            }],
        })
        .await
        .unwrap();
    let item = agilepm_testkit::plan_item(planning, &product_id).await;
    items
        .schedule_backlog_item(ScheduleBacklogItemRequest {
            id: item.id.clone(),
            release_id: rid(),
            expected_version: None,
        })
        .await
        .unwrap();
    items
        .commit_backlog_item(CommitBacklogItemRequest {
            id: item.id.clone(),
            sprint_id: rid(),
            expected_version: None,
        })
        .await
        .unwrap();
    let member = agilepm_testkit::person_token("member", tenant, &[Role::TeamMember]);
    let mut tasks = TaskServiceClient::new(agilepm_testkit::channel(task, &member));
    let defined = tasks
        .define_task(DefineTaskRequest {
            request_id: rid(),
            backlog_item_id: item.id.clone(),
            name: "the last task".into(),
            hours_remaining: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    tasks
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            view: 0,
            id: defined.id.clone(),
            hours_remaining: 0,
            date: String::new(),
            expected_version: None,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = items
            .get_backlog_item(GetBacklogItemRequest {
                consistency_token: String::new(),
                id: item.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap();
        if now.status == BacklogItemStatus::Done as i32 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the item never went DONE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // task: the request, and the group commit that wrote it.
    let estimate = collector
        .wait_for("EstimateTaskHoursRemaining in agilepm-task", |spans| {
            request_span(spans, "agilepm-task", "/EstimateTaskHoursRemaining")
        })
        .await;
    // By OpenTelemetry's RPC conventions: named after the method, kind server, the rpc.*
    // attributes (the status once the call ended), and the service's version.
    assert_eq!(
        estimate.name,
        "agilepm.task.v1.TaskService/EstimateTaskHoursRemaining"
    );
    assert_eq!(
        estimate.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    assert_eq!(attribute(&estimate, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(&estimate, "rpc.service").as_deref(),
        Some("agilepm.task.v1.TaskService")
    );
    assert_eq!(
        attribute(&estimate, "rpc.method").as_deref(),
        Some("EstimateTaskHoursRemaining")
    );
    let status = estimate
        .attributes
        .iter()
        .find(|attribute| attribute.key == "rpc.grpc.status_code")
        .and_then(|attribute| match attribute.value.as_ref()?.value {
            Some(any_value::Value::IntValue(code)) => Some(code),
            _ => None,
        });
    assert_eq!(status, Some(0), "OK");
    assert_eq!(
        collector
            .versions
            .lock()
            .unwrap()
            .get("agilepm-task")
            .map(String::as_str),
        Some(agilepm_platform::wire::config::VERSION)
    );
    collector
        .wait_for("group_commit linked to the estimate", |spans| {
            linked_span(spans, "agilepm-task", "group_commit", &estimate)
        })
        .await;
    // coordinator: the batch that handled the estimate's event, linked to its request.
    let handled = collector
        .wait_for("handle_events linked to the estimate", |spans| {
            linked_span(spans, "agilepm-coordinator", "handle_events", &estimate)
        })
        .await;
    assert_ne!(handled.trace_id, estimate.trace_id, "a trace of its own");
    // backlog-item: the reconcile call, in the coordinator's trace.
    let reconciled = collector
        .wait_for(
            "ReconcileBacklogItemStatuses in the coordinator's trace",
            |spans| {
                spans
                    .iter()
                    .find(|(s, span)| {
                        s == "agilepm-backlog-item"
                            && span.trace_id == handled.trace_id
                            && attribute(span, "method")
                                .is_some_and(|m| m.ends_with("/ReconcileBacklogItemStatuses"))
                    })
                    .map(|(_, span)| span.clone())
            },
        )
        .await;
    assert!(
        !reconciled.parent_span_id.is_empty(),
        "a child of the coordinator's call"
    );

    // The status change the reconcile wrote carries that trace on the feed.
    let operator = agilepm_testkit::operator_token();
    let events =
        agilepm_testkit::feed_events(agilepm_testkit::channel(backlog_item, &operator), 1).await;
    let changes: HashMap<String, String> = events
        .iter()
        .filter(|e| e.event_type.ends_with("BacklogItemStatusChanged"))
        .filter_map(|e| {
            let change = BacklogItemStatusChanged::decode(&*e.payload.as_ref()?.value).ok()?;
            (change.new_status == BacklogItemStatus::Done as i32)
                .then(|| (change.backlog_item_id, e.trace_parent.clone()))
        })
        .collect();
    let trace_parent = &changes[&item.id];
    assert!(
        trace_parent.contains(&hex(&handled.trace_id)),
        "{trace_parent} is not in trace {}",
        hex(&handled.trace_id)
    );
}

/// The OTLP path over TLS (ring, the one provider): a collector serving `https://` with a
/// certificate of a CA made here, which the service verifies through
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`. Its spans arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_reach_a_collector_over_tls() {
    agilepm_testkit::init();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::server_certificate(dir.path(), "collector");
    let (collector, otlp) = Collector::start_tls(&cert, &key).await;
    let database = TestDb::create(Engine::Sqlite).await;
    let (_task, _) = start(
        env!("CARGO_BIN_EXE_task-under-test"),
        &[
            ("AGILEPM_DATABASE_URL", database.url().to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("https://{otlp}")),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.display().to_string()),
        ],
        otlp,
    )
    .await;
    // Waiting for it to serve made health checks: their request spans are exported.
    collector
        .wait_for("from agilepm-task over TLS", |spans| {
            spans
                .iter()
                .find(|(service, _)| service == "agilepm-task")
                .map(|(_, span)| span.clone())
        })
        .await;
}
