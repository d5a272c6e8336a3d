//! Who is acting in the request being handled: set by the authentication layer around
//! each handler, like the tracing span, and read where events and estimation-log entries
//! are recorded and where calls to peers are made. Work handed to another task (a
//! group-commit writer) carries it explicitly.

tokio::task_local! {
    static ACTING: String;
}

/// The subject acting in the request this task is handling, if it is handling one.
pub fn acting_subject() -> Option<String> {
    ACTING.try_with(Clone::clone).ok()
}

/// Runs `future` with `subject` as the acting subject.
pub fn acting_as<F: std::future::Future>(
    subject: String,
    future: F,
) -> tokio::task::futures::TaskLocalFuture<String, F> {
    ACTING.scope(subject, future)
}
