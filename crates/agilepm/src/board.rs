//! The board `agilepm dev` serves on a port of its own: static assets embedded in the
//! binary (built from `board/` by `npm run build`; CI rebuilds the bundle and fails if the
//! committed one differs), and `/config.json`, which tells the page where the services
//! answer. The page calls the services itself over gRPC-Web; this server holds no
//! session, sets no cookie, and sees no token.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The page, its style and its script, as built.
const INDEX: &str = include_str!("../board/index.html");
const STYLE: &str = include_str!("../board/board.css");
const SCRIPT: &str = include_str!("../board/dist/board.js");

/// What the page is told: the services' gRPC-Web endpoints, and whether a tenant name
/// is enough (development mode) or a token is needed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoardConfig {
    /// `http://host:port` (or `https://`) per service the page calls.
    pub endpoints: Endpoints,
    /// Whether the services run open.
    pub development: bool,
}

/// The endpoints the page calls.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The backlog-item service.
    pub backlog_item: String,
    /// The task service.
    pub task: String,
    /// The planning service.
    pub planning: String,
}

/// The bytes of the script as served, for the size check in the tests.
pub fn script_bytes() -> usize {
    SCRIPT.len()
}

/// Serves the board on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: BoardConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let endpoints = [
        &config.endpoints.backlog_item,
        &config.endpoints.task,
        &config.endpoints.planning,
    ];
    // The page may load only itself and call only the services.
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self' {}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        endpoints.map(String::as_str).join(" ")
    );
    let policy = HeaderValue::from_str(&policy)?;
    let config = serde_json::to_string(&config)?;
    let asset = move |content_type: &'static str, body: &'static str| {
        let policy = policy.clone();
        move || async move {
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                    (header::CONTENT_SECURITY_POLICY, policy),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                    (
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                ],
                body,
            )
                .into_response()
        }
    };
    let app = Router::new()
        .route("/", get(asset("text/html; charset=utf-8", INDEX)))
        .route("/board.css", get(asset("text/css; charset=utf-8", STYLE)))
        .route(
            "/board.js",
            get(asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/config.json",
            get(move || {
                let config = config.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        config,
                    )
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// The origin a board served at `address` calls from (`http://127.0.0.1:50050`).
pub fn origin(address: SocketAddr) -> String {
    format!("http://{address}")
}
