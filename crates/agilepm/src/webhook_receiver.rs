//! A webhook receiver on loopback, as a tenant would run one, for the benchmark and the
//! notifier's tests: a real HTTP server that verifies Standard Webhooks signatures
//! (written from the specification, not from the notifier's code) and can misbehave on
//! purpose: refuse the first attempts, refuse or answer too late at random, go down and
//! come back on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{RawQuery, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Refuse (500) the first this many attempts of each `webhook-id`.
    pub fail_first: u32,
    /// After those, refuse (500) at random with this probability.
    pub fail_ratio: f64,
    /// After those, accept but answer only after `late_by` with this probability (a
    /// receiver that acknowledged too late: the sender gave up waiting).
    pub late_ratio: f64,
    /// How late a late answer is.
    pub late_by: Duration,
    /// Refuse everything (500), with a body of `refusal_bytes` bytes.
    pub always_fail: bool,
    /// Size of a refusal's body.
    pub refusal_bytes: usize,
    /// Answer everything with this redirect status and `Location` (e.g. 307 to another
    /// origin), when set.
    pub redirect: Option<(u16, String)>,
    /// Answer every request this long after it arrived (it is logged on arrival): an
    /// endpoint slow within the sender's deadline, so deliveries queue behind it.
    pub answer_after: Duration,
}

/// What the receiver answered to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 2xx at once.
    Accepted,
    /// 2xx, after the sender's deadline.
    Late,
    /// 500.
    Refused,
    /// 401: no signature verified with any secret (or the timestamp was stale).
    BadSignature,
    /// A redirect.
    Redirected,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `webhook-id`.
    pub webhook_id: String,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// The body, parsed.
    pub body: serde_json::Value,
    /// How many signatures `webhook-signature` carried.
    pub signatures: usize,
    /// What it was answered.
    pub answer: Answer,
    /// The URL's query string (tells apart endpoints on one receiver).
    pub query: String,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, in microseconds since the epoch (to compare with the body's
    /// `timestamp`, when what it tells happened).
    pub at_us: i64,
}

#[derive(Default)]
struct State {
    secrets: Mutex<Vec<String>>,
    behaviour: Mutex<Behaviour>,
    log: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<String, u32>>,
    changed: Notify,
}

/// A running (or stopped) receiver.
pub struct Receiver {
    address: SocketAddr,
    state: Arc<State>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// A receiver on a free loopback port, answering per `behaviour`.
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let address = listener.local_addr().expect("receiver address");
        let receiver = Receiver {
            address,
            state: Arc::new(State::default()),
            server: Mutex::new(None),
        };
        *receiver.state.behaviour.lock().expect("lock") = behaviour;
        receiver.serve(listener);
        receiver
    }

    /// `http://ADDRESS/hook`: where to subscribe.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Verifies signatures with these secrets (`whsec_...`), any one sufficing.
    pub fn trust(&self, secrets: &[String]) {
        *self.state.secrets.lock().expect("lock") = secrets.to_vec();
    }

    /// Answers per `behaviour` from now on.
    pub fn behave(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().expect("lock") = behaviour;
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().expect("lock").clone()
    }

    /// Stops listening, cutting every connection (as a crash would).
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().expect("lock").take() {
            server.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "rebind {}: {error}",
                        self.address
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// Waits until `done` holds of the requests received, failing after `timeout` with
    /// `what` and a summary.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            {
                let log = self.state.log.lock().expect("lock");
                if done(&log) {
                    return log.clone();
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let log = self.received();
                let accepted = accepted_ids(&log).len();
                panic!(
                    "{what}: not within {timeout:?} ({} requests, {accepted} distinct ids accepted)",
                    log.len()
                );
            }
        }
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        *self.server.lock().expect("lock") = Some(server);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The distinct `webhook-id`s answered 2xx (on time or late).
pub fn accepted_ids(log: &[Received]) -> std::collections::BTreeSet<String> {
    log.iter()
        .filter(|r| matches!(r.answer, Answer::Accepted | Answer::Late))
        .map(|r| r.webhook_id.clone())
        .collect()
}

async fn receive(
    Shared(state): Shared<Arc<State>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (webhook_id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp").parse::<i64>().unwrap_or(0),
        header("webhook-signature"),
    );
    let secrets = state.secrets.lock().expect("lock").clone();
    let verified = verify(&secrets, &webhook_id, timestamp, &body, &signature);
    let behaviour = state.behaviour.lock().expect("lock").clone();
    let attempt = {
        let mut attempts = state.attempts.lock().expect("lock");
        let n = attempts.entry(webhook_id.clone()).or_default();
        *n += 1;
        *n
    };
    let answer = if behaviour.redirect.is_some() {
        Answer::Redirected
    } else if !verified {
        Answer::BadSignature
    } else if behaviour.always_fail || attempt <= behaviour.fail_first {
        Answer::Refused
    } else {
        let roll: f64 = rand::rng().random();
        if roll < behaviour.fail_ratio {
            Answer::Refused
        } else if roll < behaviour.fail_ratio + behaviour.late_ratio {
            Answer::Late
        } else {
            Answer::Accepted
        }
    };
    if answer == Answer::Late {
        tokio::time::sleep(behaviour.late_by).await;
    }
    let received = Received {
        webhook_id,
        timestamp,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        signatures: signature.split(' ').filter(|s| !s.is_empty()).count(),
        answer,
        query: query.unwrap_or_default(),
        at: Instant::now(),
        at_us: chrono::Utc::now().timestamp_micros(),
    };
    state.log.lock().expect("lock").push(received);
    state.changed.notify_waiters();
    tokio::time::sleep(behaviour.answer_after).await;
    let mut answer_headers = HeaderMap::new();
    let (status, body) = match answer {
        Answer::Accepted | Answer::Late => (StatusCode::NO_CONTENT, String::new()),
        Answer::Refused => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "x".repeat(behaviour.refusal_bytes.max(1)),
        ),
        Answer::BadSignature => (StatusCode::UNAUTHORIZED, "bad signature".into()),
        Answer::Redirected => {
            let (status, location) = behaviour.redirect.clone().unwrap_or_default();
            if let Ok(location) = location.parse() {
                answer_headers.insert("location", location);
            }
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT),
                String::new(),
            )
        }
    };
    (status, answer_headers, body)
}

/// The specification's verification: some `v1,` signature equals the HMAC of
/// `id.timestamp.body` under one of the secrets, and the timestamp is within 5 minutes.
pub fn verify(secrets: &[String], id: &str, timestamp: i64, body: &str, header: &str) -> bool {
    let now = chrono::Utc::now().timestamp();
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let content = format!("{id}.{timestamp}.{body}");
    header
        .split(' ')
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|signature| STANDARD.decode(signature).ok())
        .any(|signature| {
            secrets.iter().any(|secret| {
                mac(secret, &content).is_some_and(|mac| mac.verify_slice(&signature).is_ok())
            })
        })
}

/// The base64 signature of a delivery under `secret`, as a sender computes it.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    mac(secret, &format!("{id}.{timestamp}.{body}"))
        .map(|mac| STANDARD.encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// The HMAC-SHA256 of `content` under the key of `secret` (`whsec_<base64>`).
fn mac(secret: &str, content: &str) -> Option<Hmac<Sha256>> {
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(content.as_bytes());
    Some(mac)
}
