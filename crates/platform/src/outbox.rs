//! The transactional outbox: a domain event is appended inside the same transaction as
//! the state change it describes, so there is no change without its event and no event
//! without its change. The event feed (`crate::feed`) serves the table to subscribers.

use agilepm_proto::EventType;
use uuid::Uuid;

use crate::db::{Engine, UnitOfWork};
use crate::time::now_micros;

/// The PostgreSQL notification channel commits are announced on.
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

/// Appends `event` to the outbox inside `uow` and returns its new, stable event id.
///
/// On PostgreSQL the first append of a transaction also queues a `NOTIFY`, which
/// PostgreSQL delivers only if and when the transaction commits, waking subscribers in
/// other processes; in-process subscribers are woken by [`UnitOfWork::commit`].
pub async fn append<E: EventType>(
    uow: &mut UnitOfWork,
    subject: Subject<'_>,
    event: &E,
) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_type, aggregate_id, tenant_id, \
         occur_time_us, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event_id.to_string())
    .bind(E::EVENT_TYPE)
    .bind(subject.aggregate_type)
    .bind(subject.aggregate_id)
    .bind(subject.tenant_id)
    .bind(now_micros())
    .bind(event.encode_to_vec())
    .execute(uow.conn())
    .await?;
    if !uow.wrote_events {
        if uow.engine() == Engine::Postgres {
            sqlx::query("SELECT pg_notify('agilepm_outbox', '')")
                .execute(uow.conn())
                .await?;
        }
        uow.wrote_events = true;
    }
    Ok(event_id)
}
