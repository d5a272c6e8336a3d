//! gRPC-Web beside native gRPC on the same port (issue 37): a browser's call goes through
//! the same authentication, limits and deadlines, the event feed streams to it, and CORS
//! lets exactly the configured origins in. Spoken here by hand over HTTP/1.1 (frames of a
//! flag byte and a length, trailers as the last frame), as a browser's fetch sends it; the
//! board's real client is exercised in Chromium by `tests/interop/browser`.

use std::net::SocketAddr;
use std::time::Duration;

use agilepm_platform::events::feed::FeedOptions;
use agilepm_platform::wire::auth::{AuthConfig, Role, TokenSpec};
use agilepm_platform::wire::browser::{BrowserAccess, origin};
use agilepm_platform::wire::limits::ServerLimits;
use agilepm_proto::events::v1::{
    GetFeedHeadRequest, SubscribeRequest, SubscribeResponse, subscribe_response,
};
use agilepm_testkit::{Engine, FeedServer, TestDb};
use prost::Message as _;

const BOARD: &str = "http://board.example.test:8080";

/// A feed server on SQLite verifying tokens (production mode: a secret of its own) that
/// lets pages from [`BOARD`] call, with requests of at most 4 KiB; and a token it takes.
async fn serve() -> (SocketAddr, FeedServer, TestDb, String) {
    let auth = AuthConfig::with_random_secret();
    let person = TokenSpec::person("ada", "acme", &Role::TENANT_ROLES);
    let token = auth
        .signer()
        .and_then(|signer| signer.mint(&person, Duration::from_secs(600)))
        .unwrap();
    let db = TestDb::create(Engine::Sqlite).await;
    let server = FeedServer::start_configured(
        db.connect_platform().await,
        FeedOptions::default(),
        &auth,
        |server| {
            server
                .with_limits(ServerLimits {
                    max_request_bytes: 4096,
                    ..ServerLimits::default()
                })
                .with_browser(BrowserAccess {
                    allowed_origins: vec![origin(BOARD).unwrap()],
                })
        },
    )
    .await;
    (server.address, server, db, token)
}

/// One message as a gRPC-Web data frame.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed
}

/// What a gRPC-Web response carried: its data frames and its status.
#[derive(Debug)]
struct Answer {
    messages: Vec<Vec<u8>>,
    status: String,
    message: String,
}

/// Splits a gRPC-Web body into data frames and the trailers frame; a trailers-only
/// answer carries its status in the headers.
fn answer(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Answer {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut found = Answer {
        messages: Vec::new(),
        status: header("grpc-status"),
        message: header("grpc-message"),
    };
    let mut rest = body;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (payload, next) = rest[5..].split_at(length);
        if rest[0] & 0x80 == 0 {
            found.messages.push(payload.to_vec());
        } else {
            for line in String::from_utf8_lossy(payload).split("\r\n") {
                match line.split_once(':') {
                    Some(("grpc-status", value)) => found.status = value.trim().to_owned(),
                    Some(("grpc-message", value)) => found.message = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        rest = next;
    }
    found
}

async fn call(address: SocketAddr, method: &str, token: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!(
            "http://{address}/agilepm.events.v1.EventFeedService/{method}"
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", BOARD)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an HTTP answer");
    assert_eq!(
        response.status(),
        200,
        "gRPC-Web answers 200 and a grpc-status"
    );
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some(BOARD),
        "the allowed page may read the answer"
    );
    let headers = response.headers().clone();
    answer(&headers, &response.bytes().await.unwrap())
}

#[tokio::test]
async fn a_browser_calls_through_the_same_gates_as_a_native_client() {
    agilepm_testkit::init();
    let (address, _server, _db, token) = serve().await;

    // A unary call, as the page makes it.
    let head = call(
        address,
        "GetFeedHead",
        Some(&token),
        frame(&GetFeedHeadRequest {}),
    )
    .await;
    assert_eq!(head.status, "0", "{head:?}");
    assert_eq!(head.messages.len(), 1);

    // Authentication: no token is UNAUTHENTICATED, as natively.
    let anonymous = call(address, "GetFeedHead", None, frame(&GetFeedHeadRequest {})).await;
    assert_eq!(anonymous.status, "16", "{anonymous:?}");
    // Limits: a request over the server's size is refused before any handler.
    let huge = SubscribeRequest {
        aggregate_ids: vec!["x".repeat(1000); 8],
        ..Default::default()
    };
    let refused = call(address, "Subscribe", Some(&token), frame(&huge)).await;
    assert_eq!(refused.status, "11", "OUT_OF_RANGE: {refused:?}");
    // Validation: bad input names the field.
    let bad = SubscribeRequest {
        after_position: "garbage".into(),
        ..Default::default()
    };
    let invalid = call(address, "Subscribe", Some(&token), frame(&bad)).await;
    assert_eq!(invalid.status, "3", "{invalid:?}");
    assert!(invalid.message.contains("after_position"), "{invalid:?}");

    // The feed streams: heartbeats arrive as frames while the stream is open.
    let subscribe = SubscribeRequest {
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    let mut stream = reqwest::Client::new()
        .post(format!(
            "http://{address}/agilepm.events.v1.EventFeedService/Subscribe"
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .bearer_auth(&token)
        .body(frame(&subscribe))
        .send()
        .await
        .unwrap();
    let mut received = Vec::new();
    let started = tokio::time::Instant::now();
    while received.len() < 5 + 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("a heartbeat within 5 s")
            .unwrap()
            .expect("the stream stays open");
        received.extend_from_slice(&chunk);
    }
    let first = answer(&Default::default(), &received);
    let heartbeat = SubscribeResponse::decode(first.messages[0].as_slice()).unwrap();
    assert!(matches!(
        heartbeat.kind,
        Some(subscribe_response::Kind::Heartbeat(_))
    ));
    println!(
        "gRPC-Web: first heartbeat {:?} after subscribing",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_the_configured_origins_may_call_from_a_page() {
    agilepm_testkit::init();
    let (address, _server, _db, _) = serve().await;
    let preflight = |from: &'static str| {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("http://{address}/agilepm.events.v1.EventFeedService/GetFeedHead"),
            )
            .header("origin", from)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web",
            )
            .send()
    };
    let allowed = preflight(BOARD).await.unwrap();
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some(BOARD)
    );
    let allowed_headers = header(&allowed, "access-control-allow-headers").unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let elsewhere = preflight("http://evil.example.test").await.unwrap();
    assert_eq!(
        header(&elsewhere, "access-control-allow-origin"),
        None,
        "a page from elsewhere is not let in"
    );
}
