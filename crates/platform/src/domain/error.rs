//! The one place where failures become gRPC status codes.
//!
//! Handlers return [`AppError`]; nothing else in the code base constructs a
//! `tonic::Status` by hand. The mapping follows the table in `docs/design.md` §4: bad input is
//! `INVALID_ARGUMENT` naming the field, missing or other tenant's is `NOT_FOUND`, a broken
//! rule is `FAILED_PRECONDITION`, a stale version is `ABORTED`, a duplicate is
//! `ALREADY_EXISTS`, a dependency that is down is `UNAVAILABLE`. Never `UNKNOWN`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A failure of a request, classified by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The request is malformed; `field` names the offending request field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// Request field path, e.g. `hours_remaining` or `backlog_item.summary`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The resource does not exist, or belongs to another tenant (indistinguishable).
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well-formed but breaks a domain rule (the message names the rule).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Lost an optimistic-concurrency race: the version is stale.
    #[error("{0}")]
    Aborted(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A dependency (database, peer service) cannot be reached; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// No or invalid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller holds as much of something as it may (subscriptions, say).
    #[error("{0}")]
    ResourceExhausted(String),
    /// What the call waited for did not happen within its deadline (the message says
    /// what it waited for).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug or an unexpected state; the detail is logged, not sent to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for results whose error is an [`AppError`].
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// `INVALID_ARGUMENT` for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AppError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `FAILED_PRECONDITION` with a message naming the rule.
    pub fn precondition(rule: impl Into<String>) -> Self {
        AppError::FailedPrecondition(rule.into())
    }

    /// `NOT_FOUND` for a resource described as e.g. `task 0190…`.
    pub fn not_found(what: impl Into<String>) -> Self {
        AppError::NotFound(what.into())
    }

    /// `ABORTED` for a stale `expected_version`.
    pub fn stale_version(what: &str, expected: i64, actual: i64) -> Self {
        AppError::Aborted(format!(
            "expected_version: {what} is at version {actual}, not {expected}; re-read and retry"
        ))
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            AppError::InvalidArgument { .. } => Code::InvalidArgument,
            AppError::NotFound(_) => Code::NotFound,
            AppError::FailedPrecondition(_) => Code::FailedPrecondition,
            AppError::Aborted(_) => Code::Aborted,
            AppError::AlreadyExists(_) => Code::AlreadyExists,
            AppError::Unavailable(_) => Code::Unavailable,
            AppError::Unauthenticated(_) => Code::Unauthenticated,
            AppError::PermissionDenied(_) => Code::PermissionDenied,
            AppError::ResourceExhausted(_) => Code::ResourceExhausted,
            AppError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            AppError::Internal(_) => Code::Internal,
        }
    }
}

/// How many characters of a client's value an error message echoes.
pub const ECHO_CHARS: usize = 64;
/// Longest field name an error names.
const MAX_FIELD_CHARS: usize = 128;
/// Longest message (or reason) an error carries, so that a status always fits in the
/// 8 KiB of trailers every gRPC client accepts, and a log line stays short.
const MAX_MESSAGE_CHARS: usize = 1024;

/// A client-supplied value as an error message shows it: quoted, at most [`ECHO_CHARS`]
/// characters, with its full length when cut. Messages and logs never carry more of it.
pub fn shown(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(ECHO_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

/// `text` cut to `max` characters, marked when cut.
fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => {
            std::borrow::Cow::Owned(format!("{}… (cut at {max} characters)", &text[..cut]))
        }
    }
}

impl From<AppError> for Status {
    fn from(error: AppError) -> Status {
        // Every failure is logged once, here, inside the request's span, so the log line
        // carries the trace id of the call that failed. Server faults are errors (and go
        // to Sentry when it is configured); a client's mistake is not: it is logged at
        // info, where an operator answering "why was my call refused?" finds it.
        match error.code() {
            Code::Internal | Code::Unavailable => {
                tracing::error!(code = ?error.code(), error = %bounded(&error.to_string(), MAX_MESSAGE_CHARS), "request failed");
            }
            code => {
                tracing::info!(?code, error = %bounded(&error.to_string(), MAX_MESSAGE_CHARS), "request refused");
            }
        }
        match error {
            AppError::InvalidArgument { field, reason } => {
                let field = bounded(&field, MAX_FIELD_CHARS).into_owned();
                let reason = bounded(&reason, MAX_MESSAGE_CHARS).into_owned();
                let message = format!("{field}: {reason}");
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request_violation(field, reason),
                )
            }
            AppError::Internal(_) => Status::internal("internal error; see the server log"),
            AppError::Unavailable(message) => retry_later(&bounded(&message, MAX_MESSAGE_CHARS)),
            other => Status::new(
                other.code(),
                bounded(&other.to_string(), MAX_MESSAGE_CHARS).into_owned(),
            ),
        }
    }
}

/// How soon a caller told UNAVAILABLE may try again (`google.rpc.RetryInfo`): the time a
/// database restart or a pool timeout usually takes to pass, not a promise.
pub const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// UNAVAILABLE with `message` and a retry hint of [`RETRY_DELAY`], not logged: for a
/// refusal whose cause was logged once where it was found.
pub fn retry_later(message: &str) -> Status {
    Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(RETRY_DELAY)),
    )
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> AppError {
        match &error {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                from_database_code(&code, db.message())
                    .unwrap_or_else(|| AppError::Internal(error.to_string()))
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                AppError::Unavailable(format!("database unavailable, retry: {error}"))
            }
            sqlx::Error::RowNotFound => AppError::NotFound("row".into()),
            _ => AppError::Internal(error.to_string()),
        }
    }
}

/// What a database's error code means for the caller, if it means more than a bug.
fn from_database_code(code: &str, message: &str) -> Option<AppError> {
    Some(match code {
        // PostgreSQL unique_violation; SQLite UNIQUE / PRIMARY KEY constraint.
        "23505" | "2067" | "1555" => AppError::AlreadyExists(message.to_owned()),
        // PostgreSQL serialization failure and deadlock: another writer won; the caller
        // may retry.
        "40001" | "40P01" => {
            AppError::Aborted(format!("concurrent modification, retry: {message}"))
        }
        // SQLite busy (or busy while recovering) past its busy timeout of 10 s: writes of
        // this service queue in its one write connection, so something outside it holds
        // the database (a backup, an operator's shell): it is away, not contended.
        "5" | "517" => AppError::Unavailable(format!("database busy, retry: {message}")),
        // PostgreSQL shutting down or starting (57P01-57P03), out of connections (53300),
        // the connection lost (class 08): the database is away, not the request wrong.
        "57P01" | "57P02" | "57P03" | "53300" => {
            AppError::Unavailable(format!("database unavailable, retry: {message}"))
        }
        // PostgreSQL's statement_timeout (the database too slow to answer in time).
        "57014" => AppError::Unavailable(format!("database too slow, retry: {message}")),
        connection if connection.starts_with("08") => {
            AppError::Unavailable(format!("database connection lost, retry: {message}"))
        }
        _ => return None,
    })
}

/// Classifies a status returned by a peer service, for callers that need to decide
/// whether to retry: `true` for failures that may go away by themselves.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

/// Turns a peer's status into our error when it must be passed on to our own caller.
/// A peer's `NOT_FOUND` or `INVALID_ARGUMENT` is passed through; its outage becomes
/// `UNAVAILABLE` naming the peer.
pub fn from_peer(peer: &str, status: Status) -> AppError {
    match status.code() {
        Code::NotFound => AppError::NotFound(status.message().to_owned()),
        Code::InvalidArgument => {
            AppError::invalid("request", format!("{peer}: {}", status.message()))
        }
        Code::FailedPrecondition => AppError::FailedPrecondition(status.message().to_owned()),
        Code::Aborted => AppError::Aborted(status.message().to_owned()),
        Code::AlreadyExists => AppError::AlreadyExists(status.message().to_owned()),
        Code::PermissionDenied | Code::Unauthenticated => AppError::Internal(format!(
            "{peer} refused our credentials: {}",
            status.message()
        )),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            AppError::Unavailable(format!("{peer} unavailable: {}", status.message()))
        }
        _ => AppError::Internal(format!("{peer}: {:?}: {}", status.code(), status.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_the_field_in_message_and_details() {
        let status: Status = AppError::invalid("hours_remaining", "must be 0 to 1000").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "hours_remaining: must be 0 to 1000");
        let details = status.get_error_details();
        let violation = &details
            .bad_request()
            .expect("bad request details")
            .field_violations[0];
        assert_eq!(violation.field, "hours_remaining");
    }

    #[test]
    fn echoed_values_and_messages_are_bounded() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "x".repeat(10_000);
        let echoed = shown(&long);
        assert!(echoed.len() < 100, "{echoed}");
        assert!(echoed.ends_with("(10000 bytes)"), "{echoed}");
        let multibyte = "é".repeat(100);
        assert!(shown(&multibyte).contains("(200 bytes)"));

        let status: Status = AppError::invalid(long.clone(), long.clone()).into();
        assert!(status.message().len() < 2 * 1024 + 200);
        let detail = status.get_error_details();
        let violation = &detail.bad_request().expect("details").field_violations[0];
        assert!(violation.field.len() < 200 && violation.description.len() < 1200);
        let status: Status = AppError::NotFound(long).into();
        assert!(status.message().len() < 1200);
    }

    #[test]
    fn database_codes_say_what_the_caller_can_do() {
        let code = |sqlstate| from_database_code(sqlstate, "m").map(|e| e.code());
        assert_eq!(code("23505"), Some(Code::AlreadyExists));
        assert_eq!(code("40001"), Some(Code::Aborted));
        for away in [
            "57P01", "57P02", "57P03", "53300", "08006", "08003", "57014", "5", "517",
        ] {
            assert_eq!(code(away), Some(Code::Unavailable), "{away}");
        }
        assert_eq!(code("42P01"), None, "a missing table is a bug");
    }

    #[test]
    fn unavailable_carries_a_retry_hint() {
        let status: Status = AppError::Unavailable("database away".into()).into();
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        let hint = details.retry_info().expect("retry info");
        assert_eq!(hint.retry_delay, Some(RETRY_DELAY));
    }

    #[test]
    fn internal_detail_is_not_leaked() {
        let status: Status = AppError::Internal("password=hunter2".into()).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn every_variant_maps_to_a_specific_code() {
        let errors = [
            AppError::not_found("x"),
            AppError::precondition("x"),
            AppError::Aborted("x".into()),
            AppError::AlreadyExists("x".into()),
            AppError::Unavailable("x".into()),
            AppError::Unauthenticated("x".into()),
            AppError::PermissionDenied("x".into()),
            AppError::ResourceExhausted("x".into()),
            AppError::DeadlineExceeded("x".into()),
        ];
        for error in errors {
            assert_ne!(Status::from(error).code(), Code::Unknown);
        }
    }
}
