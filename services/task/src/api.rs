//! The task service's gRPC adapter: parse the request, apply the domain rules in one
//! transaction with the totals and the outbox event, map errors.

use agilepm_platform::auth::{act_for, caller};
use agilepm_platform::client::PeerChannel;
use agilepm_platform::db::{Db, UnitOfWork};
use agilepm_platform::error::{AppError, AppResult, from_peer};
use agilepm_platform::optimistic::{Attempt, check_version, retry_lost_races};
use agilepm_platform::outbox;
use agilepm_platform::time::{now_micros, timestamp, today_utc};
use agilepm_platform::{paging, validate};
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{BacklogItemStatus, GetBacklogItemRequest};
use agilepm_proto::task::v1::task_service_server::TaskService;
use agilepm_proto::task::v1::*;
use chrono::NaiveDate;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain;
use crate::estimates::{Estimate, EstimateWriter};
use crate::events::{self, About};
use crate::mapping::task_message;
use crate::store::{self, TaskRow};

/// The task service's gRPC adapter.
#[derive(Clone)]
pub struct TaskApi {
    db: Db,
    backlog_items: BacklogItemServiceClient<PeerChannel>,
    estimates: EstimateWriter,
}

/// What a command does to a task, decided from its current state.
struct Plan {
    after: TaskRow,
    log: Option<(NaiveDate, i32)>,
    totals_delta: Option<(i64, i64)>,
    events: Vec<Planned>,
}

/// Events a plan emits; materialised once the new totals are known.
#[derive(Clone, Copy)]
enum Planned {
    Renamed,
    Described,
    Volunteer,
    StatusChanged(TaskStatus),
    HoursEstimated(NaiveDate, i32),
    Removed,
}

impl TaskApi {
    /// An adapter over `db`, checking backlog items through `backlog_items`. Starts the
    /// estimate writer, so it must be called inside the tokio runtime.
    pub fn new(db: Db, backlog_items: BacklogItemServiceClient<PeerChannel>) -> TaskApi {
        let estimates = crate::estimates::start_writer(db.clone());
        TaskApi {
            db,
            backlog_items,
            estimates,
        }
    }

    /// Tasks may only be defined for an existing, not removed item of the same tenant.
    async fn check_backlog_item(&self, tenant: &str, backlog_item_id: &str) -> AppResult<()> {
        let mut request = act_for(
            tenant,
            GetBacklogItemRequest {
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

    /// Changes descriptive fields only (no hours, no totals) with `set`, emitting `event`
    /// if anything changed, and returns the task as the response carries it.
    async fn change_fields(
        &self,
        tenant: &str,
        id: &str,
        expected_version: Option<i64>,
        event: Planned,
        set: impl Fn(&mut TaskRow),
    ) -> AppResult<Task> {
        let (row, _) = self
            .mutate(tenant, id, expected_version, None, |before, _| {
                let mut after = before.clone();
                set(&mut after);
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
        self.to_proto(row).await
    }

    /// The task an earlier DefineTask with `request_id` created. Releases its connection
    /// before returning: a caller that then loads the log (another connection) must not
    /// hold one while waiting for the next, or a busy pool deadlocks.
    async fn defined_by(&self, tenant: &str, request_id: &str) -> AppResult<Option<TaskRow>> {
        let mut conn = self.db.pool().acquire().await?;
        Ok(store::by_request_id(&mut conn, tenant, request_id).await?)
    }

    async fn to_proto(&self, row: TaskRow) -> AppResult<Task> {
        let mut logs = store::logs(&self.db, &[row.id.as_str()]).await?;
        let log = logs.remove(&row.id).unwrap_or_default();
        Ok(task_message(row, log))
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
        decide: impl Fn(&TaskRow, Option<i32>) -> AppResult<Plan>,
    ) -> AppResult<(TaskRow, BacklogItemTaskTotals)> {
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
            let totals = match plan.totals_delta {
                Some((hours, count)) => {
                    store::add_to_totals(
                        &mut uow,
                        tenant,
                        &plan.after.backlog_item_id,
                        hours,
                        count,
                    )
                    .await?
                }
                None => store::totals(uow.conn(), tenant, &plan.after.backlog_item_id).await?,
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
    before: &TaskRow,
    after: &TaskRow,
    event: &Planned,
    totals: &BacklogItemTaskTotals,
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
            let event = events::status_changed(about, before.status as i32, *new_status as i32);
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

fn page_key(token: &str) -> AppResult<Option<(i64, String)>> {
    let Some(key) = paging::decode_token("page_token", token)? else {
        return Ok(None);
    };
    let (time, id) = key
        .split_once('|')
        .ok_or_else(|| AppError::invalid("page_token", "malformed page token"))?;
    let time = time
        .parse()
        .map_err(|_| AppError::invalid("page_token", "malformed page token"))?;
    Ok(Some((time, id.to_owned())))
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn define_task(
        &self,
        request: Request<DefineTaskRequest>,
    ) -> Result<Response<DefineTaskResponse>, Status> {
        let who = caller(&request)?;
        let tenant = who.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let backlog_item_id = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let name = validate::name("name", &r.name)?;
        let description = validate::description("description", &r.description)?;
        let volunteer_id =
            validate::member_id("volunteer_id", &r.volunteer_id)?.unwrap_or_default();
        let hours = domain::hours("hours_remaining", r.hours_remaining)?;

        if let Some(existing) = self.defined_by(&tenant, &request_id).await? {
            return Ok(Response::new(DefineTaskResponse {
                task: Some(self.to_proto(existing).await?),
            }));
        }
        self.check_backlog_item(&tenant, &backlog_item_id).await?;

        let today = today_utc();
        let now = now_micros();
        let progress = domain::defined(hours, today);
        let task = TaskRow {
            id: Uuid::now_v7().to_string(),
            tenant_id: tenant.clone(),
            backlog_item_id: backlog_item_id.clone(),
            name,
            description,
            volunteer_id,
            status: progress.status,
            hours,
            latest_log_day: progress.latest_log_date,
            version: 1,
            create_time_us: now,
            update_time_us: now,
            removed_time_us: None,
        };
        let mut uow = self.db.begin().await.map_err(AppError::from)?;
        match store::insert(&mut uow, &task, &request_id)
            .await
            .map_err(AppError::from)
        {
            Ok(()) => {}
            Err(AppError::AlreadyExists(_)) => {
                // A concurrent retry of the same request won the race: answer as it did.
                drop(uow);
                let existing = self
                    .defined_by(&tenant, &request_id)
                    .await?
                    .ok_or_else(|| {
                        AppError::Internal("request id collided but no task found".into())
                    })?;
                return Ok(Response::new(DefineTaskResponse {
                    task: Some(self.to_proto(existing).await?),
                }));
            }
            Err(error) => return Err(error.into()),
        }
        store::log_estimate(&mut uow, &task, today, hours, now).await?;
        let totals =
            store::add_to_totals(&mut uow, &tenant, &backlog_item_id, i64::from(hours), 1).await?;
        let log = vec![EstimationLogEntry {
            date: today.format("%Y-%m-%d").to_string(),
            hours_remaining: hours,
            record_time: Some(timestamp(now)),
            estimated_by: who.actor().to_owned(),
        }];
        let message = task_message(task.clone(), log);
        let event = events::defined(message.clone(), totals);
        outbox::append(&mut uow, About::task(&task).subject(), &event).await?;
        uow.commit().await.map_err(AppError::from)?;
        Ok(Response::new(DefineTaskResponse {
            task: Some(message),
        }))
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let row = store::get(&mut conn, &tenant, &id)
            .await
            .map_err(AppError::from)?
            .ok_or_else(|| AppError::not_found(format!("task {id}")))?;
        drop(conn);
        Ok(Response::new(GetTaskResponse {
            task: Some(self.to_proto(row).await?),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let item = validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let after = page_key(&r.page_token)?;
        let (rows, next_page_token) = paging::finish_page(
            store::list(&self.db, &tenant, &item, after, size + 1)
                .await
                .map_err(AppError::from)?,
            size,
            |last| format!("{}|{}", last.create_time_us, last.id),
        );
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let mut logs = store::logs(&self.db, &ids).await?;
        let tasks = rows
            .into_iter()
            .map(|row| {
                let log = logs.remove(&row.id).unwrap_or_default();
                task_message(row, log)
            })
            .collect();
        Ok(Response::new(ListTasksResponse {
            tasks,
            next_page_token,
        }))
    }

    async fn rename_task(
        &self,
        request: Request<RenameTaskRequest>,
    ) -> Result<Response<RenameTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let name = validate::name("name", &r.name)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let task = self
            .change_fields(&tenant, &id, expected, Planned::Renamed, |task| {
                task.name = name.clone()
            })
            .await?;
        Ok(Response::new(RenameTaskResponse { task: Some(task) }))
    }

    async fn describe_task(
        &self,
        request: Request<DescribeTaskRequest>,
    ) -> Result<Response<DescribeTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let description = validate::description("description", &r.description)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let task = self
            .change_fields(&tenant, &id, expected, Planned::Described, |task| {
                task.description = description.clone()
            })
            .await?;
        Ok(Response::new(DescribeTaskResponse { task: Some(task) }))
    }

    async fn assign_task_volunteer(
        &self,
        request: Request<AssignTaskVolunteerRequest>,
    ) -> Result<Response<AssignTaskVolunteerResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let volunteer = validate::member_id("volunteer_id", &r.volunteer_id)?
            .ok_or_else(|| AppError::invalid("volunteer_id", "required"))?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let task = self
            .change_fields(&tenant, &id, expected, Planned::Volunteer, |task| {
                task.volunteer_id = volunteer.clone()
            })
            .await?;
        Ok(Response::new(AssignTaskVolunteerResponse {
            task: Some(task),
        }))
    }

    async fn unassign_task_volunteer(
        &self,
        request: Request<UnassignTaskVolunteerRequest>,
    ) -> Result<Response<UnassignTaskVolunteerResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let task = self
            .change_fields(&tenant, &id, expected, Planned::Volunteer, |task| {
                task.volunteer_id = String::new()
            })
            .await?;
        Ok(Response::new(UnassignTaskVolunteerResponse {
            task: Some(task),
        }))
    }

    async fn change_task_status(
        &self,
        request: Request<ChangeTaskStatusRequest>,
    ) -> Result<Response<ChangeTaskStatusResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let status = TaskStatus::try_from(r.status)
            .map_err(|_| AppError::invalid("status", format!("unknown status {}", r.status)))?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let today = today_utc();
        let (row, _) = self
            .mutate(
                &tenant,
                &id,
                expected,
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
                        || (status == TaskStatus::Done && logged_today.is_some_and(|h| h != 0))
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
        Ok(Response::new(ChangeTaskStatusResponse {
            task: Some(self.to_proto(row).await?),
        }))
    }

    async fn estimate_task_hours_remaining(
        &self,
        request: Request<EstimateTaskHoursRemainingRequest>,
    ) -> Result<Response<EstimateTaskHoursRemainingResponse>, Status> {
        let who = caller(&request)?;
        let (tenant, actor) = (who.tenant()?.to_owned(), who.actor().to_owned());
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let hours = domain::hours("hours_remaining", r.hours_remaining)?;
        let day = if r.date.is_empty() {
            today_utc()
        } else {
            validate::date("date", &r.date)?
        };
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let estimated = self
            .estimates
            .submit(Estimate {
                tenant,
                task_id: id,
                day,
                hours,
                expected_version,
                actor,
            })
            .await?;
        Ok(Response::new(EstimateTaskHoursRemainingResponse {
            task: Some(estimated.task),
            totals: Some(estimated.totals),
        }))
    }

    async fn remove_task(
        &self,
        request: Request<RemoveTaskRequest>,
    ) -> Result<Response<RemoveTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("id", &r.id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let today = today_utc();
        let now = now_micros();
        let (_, totals) = self
            .mutate(
                &tenant,
                &id,
                expected,
                Some(today),
                |before, logged_today| {
                    // The burndown stops counting the task from today on.
                    let log = (before.hours != 0 || logged_today.is_some_and(|h| h != 0))
                        .then_some((today, 0));
                    let after = TaskRow {
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
        Ok(Response::new(RemoveTaskResponse {
            totals: Some(totals),
        }))
    }

    async fn get_backlog_item_task_totals(
        &self,
        request: Request<GetBacklogItemTaskTotalsRequest>,
    ) -> Result<Response<GetBacklogItemTaskTotalsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let item =
            validate::uuid("backlog_item_id", &request.get_ref().backlog_item_id)?.to_string();
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let totals = store::totals(&mut conn, &tenant, &item).await?;
        Ok(Response::new(GetBacklogItemTaskTotalsResponse {
            totals: Some(totals),
        }))
    }

    async fn get_burndown(
        &self,
        request: Request<GetBurndownRequest>,
    ) -> Result<Response<GetBurndownResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        if r.backlog_item_ids.is_empty() || r.backlog_item_ids.len() > 1000 {
            return Err(
                AppError::invalid("backlog_item_ids", "name 1 to 1000 backlog items").into(),
            );
        }
        let ids = r
            .backlog_item_ids
            .iter()
            .map(|id| validate::uuid("backlog_item_ids", id).map(|u| u.to_string()))
            .collect::<AppResult<Vec<_>>>()?;
        let start = validate::date("start_date", &r.start_date)?;
        let end = validate::date("end_date", &r.end_date)?;
        if end < start {
            return Err(AppError::invalid("end_date", "must be on or after start_date").into());
        }
        if (end - start).num_days() > 366 {
            return Err(
                AppError::invalid("end_date", "the range may span at most 366 days").into(),
            );
        }
        let entries = store::burndown_entries(&self.db, &tenant, &ids, end).await?;
        let days = crate::burndown::burndown(&entries, start, end)
            .into_iter()
            .map(|(date, hours_remaining)| BurndownDay {
                date: date.format("%Y-%m-%d").to_string(),
                hours_remaining,
            })
            .collect();
        Ok(Response::new(GetBurndownResponse { days }))
    }
}
