//! The transactional outbox: a domain event is appended inside the same transaction as
//! the state change it describes, so there is no change without its event and no event
//! without its change. The event feed (`crate::events::feed`) serves the table to subscribers.

use agilepm_proto::EventType;
use uuid::Uuid;

use crate::domain::error::AppError;
use crate::domain::time::now_micros;
use crate::storage::db::UnitOfWork;
use crate::storage::statement::{Column, RowSet, Statement};

/// The PostgreSQL notification channel commits are announced on
/// (`feed::notify::announce_postgres`).
pub(crate) const NOTIFY_CHANNEL: &str = "agilepm_outbox";

/// What an event is about: the aggregate's kind, id and tenant.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Kind of aggregate, e.g. `"Task"`.
    pub aggregate_type: &'static str,
    /// The aggregate's id.
    pub aggregate_id: &'a str,
    /// The tenant the aggregate belongs to.
    pub tenant_id: &'a str,
}

/// An event ready to append: its subject, type, encoded payload and who acted.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// What it is about.
    pub subject: Subject<'a>,
    /// Its type name (`EventType::EVENT_TYPE`).
    pub event_type: &'static str,
    /// The encoded event message.
    pub payload: Vec<u8>,
    /// Who acted (the request's acting subject, [`crate::domain::actor`]).
    pub actor: String,
    /// The `traceparent` of the request it is written for
    /// ([`trace_parent`](crate::storage::trace_parent)).
    pub trace_parent: String,
}

impl<'a> NewEvent<'a> {
    /// `event` about `subject`, done by the subject acting in the request this task is
    /// handling, in the current span's trace. Work done in another task for a request
    /// (a group-commit writer) uses [`NewEvent::for_request`].
    pub fn of<E: EventType>(subject: Subject<'a>, event: &E) -> NewEvent<'a> {
        NewEvent::for_request(
            subject,
            event,
            &crate::domain::actor::acting_subject().unwrap_or_default(),
            &crate::storage::trace_parent::current(),
        )
    }

    /// `event` about `subject`, done by `actor` in the request whose `traceparent` this
    /// is: both were captured where the request was handled and travelled with it.
    pub fn for_request<E: EventType>(
        subject: Subject<'a>,
        event: &E,
        actor: &str,
        trace_parent: &str,
    ) -> NewEvent<'a> {
        NewEvent {
            subject,
            event_type: E::EVENT_TYPE,
            payload: event.encode_to_vec(),
            actor: actor.to_owned(),
            trace_parent: trace_parent.to_owned(),
        }
    }
}

/// Appends `event` to the outbox inside `uow` and returns its new, stable event id.
pub async fn append<E: EventType>(
    uow: &mut UnitOfWork,
    subject: Subject<'_>,
    event: &E,
) -> Result<Uuid, AppError> {
    let ids = append_all(uow, &[NewEvent::of(subject, event)]).await?;
    Ok(ids[0])
}

/// Rows per INSERT: 9 values each stays far below either engine's bound-parameter limit.
const ROWS_PER_INSERT: usize = 500;

/// Appends `events`, in order, to the outbox inside `uow` with one statement per 500
/// events, and returns their new, stable event ids.
///
/// [`UnitOfWork::commit`] wakes the feed's subscribers, in this process and (through
/// `feed::notify`) in others.
pub async fn append_all(
    uow: &mut UnitOfWork,
    events: &[NewEvent<'_>],
) -> Result<Vec<Uuid>, AppError> {
    let mut ids = Vec::with_capacity(events.len());
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let mut statement = Statement::new(uow.engine());
        ids.extend(insert_events(&mut statement, chunk));
        statement.query()?.execute(uow.conn()).await?;
    }
    if !events.is_empty() {
        uow.wrote_events = true;
    }
    Ok(ids)
}

/// Appends to `statement` an `INSERT` of `events` into the outbox (at least one), for a
/// caller that writes them as part of a larger statement, and returns their new, stable
/// event ids. The caller must wake in-process subscribers once it has committed.
pub fn insert_events(statement: &mut Statement, events: &[NewEvent<'_>]) -> Vec<Uuid> {
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let now = now_micros();
    let rows = RowSet(vec![
        Column::text(ids.iter().map(Uuid::to_string)),
        Column::text(events.iter().map(|e| e.event_type)),
        Column::text(events.iter().map(|e| e.subject.aggregate_type)),
        Column::text(events.iter().map(|e| e.subject.aggregate_id)),
        Column::text(events.iter().map(|e| e.subject.tenant_id)),
        Column::BigInt(vec![now; events.len()]),
        Column::Bytes(events.iter().map(|e| e.payload.clone()).collect()),
        Column::text(events.iter().map(|e| e.actor.as_str())),
        Column::text(events.iter().map(|e| e.trace_parent.as_str())),
    ]);
    statement
        .sql(
            "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
             occur_time_us, payload, actor, trace_parent) SELECT * FROM ",
        )
        .rows(rows)
        .sql(" WHERE true");
    ids
}
