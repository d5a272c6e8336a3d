//! The task service's units of work. Each loads the task, decides with the rules of
//! `domain`, and saves the task, its log entry, its item's totals and the events of
//! `events` in one transaction. Estimates, the hot path, go through the group commit of
//! `estimate_batch`.

pub mod estimate_batch;

use agilepm_platform::domain::error::{AppError, AppResult, from_peer};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::storage::outbox;
use agilepm_platform::wire::auth::act_for;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{BacklogItemStatus, GetBacklogItemRequest};
use chrono::NaiveDate;
use uuid::Uuid;

use crate::domain::{self, LogEntry, Status, Task, Totals};
use crate::events::{self, About};
use crate::store;
pub use estimate_batch::{Estimate, EstimateBatch, EstimateWriter, Estimated};

/// A new task as a (checked) define request describes it.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The request's idempotency key.
    pub request_id: String,
    /// The backlog item it belongs to.
    pub backlog_item_id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Volunteer, empty if none.
    pub volunteer_id: String,
    /// Hours remaining, logged for the team's today (in its zone).
    pub hours: i32,
}

/// A change of one descriptive field (no hours, no totals).
#[derive(Debug, Clone)]
pub enum FieldChange {
    /// New name.
    Name(String),
    /// New description.
    Description(String),
    /// New volunteer; empty unassigns.
    Volunteer(String),
}

/// The task service's commands, over its database.
#[derive(Clone)]
pub struct Commands {
    db: Db,
    backlog_items: BacklogItemServiceClient<PeerChannel>,
    estimates: EstimateWriter,
}

/// What a command does to a task, decided from its current state.
struct Plan {
    after: Task,
    log: Option<(NaiveDate, i32)>,
    totals_delta: Option<(i64, i64)>,
    events: Vec<Planned>,
}

/// Events a plan emits; built once the new totals are known.
#[derive(Clone, Copy)]
enum Planned {
    Renamed,
    Described,
    Volunteer,
    StatusChanged(Status),
    HoursEstimated(NaiveDate, i32),
    Removed,
}

impl Commands {
    /// Commands on `db`, checking backlog items through `backlog_items`. Starts the
    /// estimate writer, so it must be called inside the tokio runtime.
    pub fn new(db: Db, backlog_items: BacklogItemServiceClient<PeerChannel>) -> Commands {
        let estimates = estimate_batch::start_writer(db.clone());
        Commands {
            db,
            backlog_items,
            estimates,
        }
    }

    /// Defines `new` for an existing, live item of `tenant`, or returns the task an
    /// earlier define with the same request id created.
    pub async fn define(&self, tenant: &str, actor: &str, new: NewTask) -> AppResult<Task> {
        if let Some(existing) = self.defined_by(tenant, &new.request_id).await? {
            return Ok(existing);
        }
        self.check_backlog_item(tenant, &new.backlog_item_id)
            .await?;
        self.check_volunteer(tenant, &new.volunteer_id).await?;

        let now = now_micros();
        let today = store::team_zone(&self.db, tenant).await?.day_of(now);
        let progress = domain::defined(new.hours, today);
        let task = Task {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.to_owned(),
            backlog_item_id: new.backlog_item_id.clone(),
            name: new.name,
            description: new.description,
            volunteer_id: new.volunteer_id,
            status: progress.status,
            hours: new.hours,
            latest_log_day: progress.latest_log_date,
            version: 1,
            create_time_us: now,
            update_time_us: now,
            removed_time_us: None,
        };
        let mut uow = self.db.begin().await?;
        match store::insert(&mut uow, &task, &new.request_id).await {
            Ok(()) => {}
            Err(AppError::AlreadyExists(_)) => {
                // A concurrent retry of the same request won the race: answer as it did.
                drop(uow);
                return self
                    .defined_by(tenant, &new.request_id)
                    .await?
                    .ok_or_else(|| {
                        AppError::Internal("request id collided but no task found".into())
                    });
            }
            Err(error) => return Err(error),
        }
        store::log_estimate(&mut uow, &task, today, new.hours, now).await?;
        let totals = store::add_to_totals(
            &mut uow,
            tenant,
            &new.backlog_item_id,
            i64::from(new.hours),
            1,
        )
        .await?;
        let log = [LogEntry {
            day: today,
            hours: new.hours,
            record_time_us: now,
            estimated_by: actor.to_owned(),
        }];
        let event = events::defined(&task, &log, &totals);
        outbox::append(&mut uow, About::task(&task).subject(), &event).await?;
        uow.commit().await?;
        Ok(task)
    }

    /// Changes one descriptive field, with its event if anything changed.
    pub async fn change_field(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        change: FieldChange,
    ) -> AppResult<Task> {
        if let FieldChange::Volunteer(volunteer) = &change {
            self.check_volunteer(tenant, volunteer).await?;
        }
        let (task, _) = self
            .mutate(tenant, id, expected_version, None, |before, _| {
                let mut after = before.clone();
                let event = match &change {
                    FieldChange::Name(name) => {
                        after.name = name.clone();
                        Planned::Renamed
                    }
                    FieldChange::Description(description) => {
                        after.description = description.clone();
                        Planned::Described
                    }
                    FieldChange::Volunteer(volunteer) => {
                        after.volunteer_id = volunteer.clone();
                        Planned::Volunteer
                    }
                };
                let events = if after == *before {
                    Vec::new()
                } else {
                    vec![event]
                };
                Ok(Plan {
                    after,
                    log: None,
                    totals_delta: None,
                    events,
                })
            })
            .await?;
        Ok(task)
    }

    /// Changes the status by hand; DONE zeroes the hours and logs the team's today's estimate of 0.
    pub async fn change_status(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        status: Status,
    ) -> AppResult<Task> {
        let today = store::team_zone(&self.db, tenant).await?.today();
        let (task, _) = self
            .mutate(
                tenant,
                id,
                expected_version,
                Some(today),
                |before, logged_today| {
                    let effect = domain::change_status(before.progress(), status, today)?;
                    let after = before.with_progress(effect.after);
                    let mut events = Vec::new();
                    if after.status != before.status {
                        events.push(Planned::StatusChanged(after.status));
                    }
                    let mut log = None;
                    let mut totals_delta = None;
                    if effect.zeroed_hours
                        || (status == Status::Done && logged_today.is_some_and(|h| h != 0))
                    {
                        log = Some((today, 0));
                        if effect.zeroed_hours {
                            totals_delta = Some((-i64::from(before.hours), 0));
                        }
                        events.push(Planned::HoursEstimated(today, 0));
                    }
                    Ok(Plan {
                        after,
                        log,
                        totals_delta,
                        events,
                    })
                },
            )
            .await?;
        Ok(task)
    }

    /// Applies one estimate through the estimate group commit.
    pub async fn estimate(&self, estimate: Estimate) -> AppResult<Estimated> {
        self.estimates.submit(estimate).await
    }

    /// Removes the task; the burndown stops counting it from the team's today on. Returns its
    /// item's totals after.
    pub async fn remove(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
    ) -> AppResult<Totals> {
        let now = now_micros();
        let today = store::team_zone(&self.db, tenant).await?.day_of(now);
        let (_, totals) = self
            .mutate(
                tenant,
                id,
                expected_version,
                Some(today),
                |before, logged_today| {
                    let log = (before.hours != 0 || logged_today.is_some_and(|h| h != 0))
                        .then_some((today, 0));
                    let after = Task {
                        removed_time_us: Some(now),
                        ..before.clone()
                    };
                    Ok(Plan {
                        after,
                        log,
                        totals_delta: Some((-i64::from(before.hours), -1)),
                        events: vec![Planned::Removed],
                    })
                },
            )
            .await?;
        Ok(totals)
    }

    /// Tasks may only be defined for an existing, not removed item of the same tenant.
    /// A volunteer (if any) is an enabled team member, as planning last told us. Checked
    /// when the request arrives: a volunteer disabled concurrently is ordered after it.
    async fn check_volunteer(&self, tenant: &str, volunteer_id: &str) -> AppResult<()> {
        if volunteer_id.is_empty() {
            return Ok(());
        }
        let standing = store::member_standing(&self.db, tenant, volunteer_id).await?;
        domain::volunteer(volunteer_id, standing)
    }

    /// Records `facts` of `tenant`'s team members (id, standing, member version); returns
    /// how many were newer than what was kept.
    pub async fn sync_members(
        &self,
        tenant: &str,
        facts: &[(String, domain::Standing, i64)],
    ) -> AppResult<u64> {
        store::record_members(&self.db, tenant, facts).await
    }

    /// Records `tenant`'s team zone of settings `version`; false if a newer one is kept.
    pub async fn sync_team_zone(
        &self,
        tenant: &str,
        zone: TeamZone,
        version: i64,
    ) -> AppResult<bool> {
        store::record_team_zone(&self.db, tenant, zone, version).await
    }

    async fn check_backlog_item(&self, tenant: &str, backlog_item_id: &str) -> AppResult<()> {
        let mut request = act_for(
            tenant,
            GetBacklogItemRequest {
                consistency_token: String::new(),
                id: backlog_item_id.to_owned(),
            },
        );
        request.set_timeout(std::time::Duration::from_secs(2));
        match self.backlog_items.clone().get_backlog_item(request).await {
            Ok(response) => {
                let status = response.into_inner().backlog_item.map(|item| item.status);
                if status == Some(BacklogItemStatus::Removed as i32) {
                    Err(AppError::precondition(format!(
                        "backlog_item_id: backlog item {backlog_item_id} is REMOVED; tasks can only be defined for live items"
                    )))
                } else {
                    Ok(())
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => Err(AppError::precondition(
                format!("backlog_item_id: backlog item {backlog_item_id} does not exist"),
            )),
            Err(status) => Err(from_peer("backlog-item service", status)),
        }
    }

    /// The task an earlier define with `request_id` created. Releases its connection
    /// before returning: a caller that then loads the log (another connection) must not
    /// hold one while waiting for the next, or a busy pool deadlocks.
    async fn defined_by(&self, tenant: &str, request_id: &str) -> AppResult<Option<Task>> {
        let mut conn = self.db.pool().acquire().await?;
        store::by_request_id(&mut conn, tenant, request_id).await
    }

    /// Applies `decide` to the live task `id` in one transaction: the task row
    /// (compare-and-set on its version), its log entry, the item's totals and the outbox
    /// events. Without `expected_version` a lost race is retried on fresh state; with it,
    /// the caller gets ABORTED.
    async fn mutate(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        log_day: Option<NaiveDate>,
        decide: impl Fn(&Task, Option<i32>) -> AppResult<Plan>,
    ) -> AppResult<(Task, Totals)> {
        let what = format!("task {id}");
        retry_lost_races(&what, expected_version, || async {
            let mut uow = self.db.begin().await?;
            let found = match log_day {
                Some(day) => store::get_with_log(uow.conn(), tenant, id, day).await?,
                None => store::get(uow.conn(), tenant, id)
                    .await?
                    .map(|task| (task, None)),
            };
            let (before, logged) = found.ok_or_else(|| AppError::not_found(&what))?;
            check_version(&what, expected_version, before.version)?;
            let mut plan = decide(&before, logged)?;
            if plan.after == before && plan.log.is_none() {
                let totals = store::totals(uow.conn(), tenant, &before.backlog_item_id).await?;
                return Ok(Attempt::Done((before, totals)));
            }
            let now = now_micros();
            plan.after.version = before.version + 1;
            plan.after.update_time_us = now;
            if !store::update(&mut uow, &plan.after, before.version).await? {
                return Ok(Attempt::LostRace);
            }
            if let Some((day, hours)) = plan.log {
                store::log_estimate(&mut uow, &plan.after, day, hours, now).await?;
            }
            let item = &plan.after.backlog_item_id;
            let totals = match plan.totals_delta {
                Some((hours, count)) => {
                    store::add_to_totals(&mut uow, tenant, item, hours, count).await?
                }
                None => store::totals(uow.conn(), tenant, item).await?,
            };
            for event in &plan.events {
                emit(&mut uow, &before, &plan.after, event, &totals).await?;
            }
            uow.commit().await?;
            Ok(Attempt::Done((plan.after, totals)))
        })
        .await
    }
}

async fn emit(
    uow: &mut UnitOfWork,
    before: &Task,
    after: &Task,
    event: &Planned,
    totals: &Totals,
) -> AppResult<()> {
    let about = About::task(after);
    let subject = about.subject();
    match event {
        Planned::Renamed => outbox::append(uow, subject, &events::renamed(after)).await?,
        Planned::Described => outbox::append(uow, subject, &events::described(after)).await?,
        Planned::Volunteer => {
            outbox::append(uow, subject, &events::volunteer_assigned(after)).await?
        }
        Planned::StatusChanged(new_status) => {
            let event = events::status_changed(about, before.status, *new_status);
            outbox::append(uow, subject, &event).await?
        }
        Planned::HoursEstimated(day, hours) => {
            let event = events::hours_estimated(about, *day, *hours, totals);
            outbox::append(uow, subject, &event).await?
        }
        Planned::Removed => outbox::append(uow, subject, &events::removed(about, totals)).await?,
    };
    Ok(())
}
