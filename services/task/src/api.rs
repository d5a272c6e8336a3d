//! The task service's gRPC adapter: each RPC parses and checks its request, runs a
//! command (`commands`) or reads the store (`store`), and maps the result to its
//! response (`mapping`).

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::team_zone::TeamZone;
use agilepm_platform::domain::{consistency, paging, validate};
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::idempotency::{self, Key};
use agilepm_platform::wire::auth::caller;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::task::v1::task_service_server::TaskService;
use agilepm_proto::task::v1::*;
use tonic::{Request, Response, Status};

use crate::burndown;
use crate::commands::{Commands, Estimate, FieldChange, NewTask};
use crate::domain;
use crate::mapping::{self, View, task_message, totals_message};
use crate::store;

/// The task service's gRPC adapter.
#[derive(Clone)]
pub struct TaskApi {
    db: Db,
    commands: Commands,
}

impl TaskApi {
    /// An adapter over `db`, checking backlog items through `backlog_items`. Starts the
    /// estimate writer, so it must be called inside the tokio runtime.
    pub fn new(db: Db, backlog_items: BacklogItemServiceClient<PeerChannel>) -> TaskApi {
        let commands = Commands::new(db.clone(), backlog_items);
        TaskApi { db, commands }
    }

    /// The consistency token of `task`'s item as it stands now: its totals revision now is
    /// at least the one the change just made (for changes that do not answer totals).
    async fn token_now(&self, tenant: &str, task: &domain::Task) -> AppResult<String> {
        let mut conn = self.db.pool().acquire().await?;
        let totals = store::totals(&mut conn, tenant, &task.backlog_item_id).await?;
        Ok(consistency::encode(&task.backlog_item_id, totals.revision))
    }

    /// `task` as responses carry it in `view`: the FULL view reads its estimation log.
    async fn shown(&self, task: domain::Task, view: View) -> AppResult<Task> {
        let log = match view {
            View::Basic => Vec::new(),
            View::Full => {
                let mut logs = store::logs(&self.db, &[task.id.as_str()]).await?;
                logs.remove(&task.id).unwrap_or_default()
            }
        };
        Ok(task_message(&task, &log))
    }

    /// Parses an RPC that changes one descriptive field (its id, then the field with
    /// `change`, then its expected version) and runs it.
    async fn change_field(
        &self,
        tenant: &str,
        id: &str,
        change: impl FnOnce() -> AppResult<FieldChange>,
        expected_version: Option<i64>,
        view: i32,
    ) -> AppResult<Task> {
        let id = validate::uuid("id", id)?.to_string();
        let change = change()?;
        let expected = validate::expected_version("expected_version", expected_version)?;
        let view = mapping::view(view, View::Basic)?;
        let task = self
            .commands
            .change_field(tenant, &id, expected, change)
            .await?;
        self.shown(task, view).await
    }
}

/// Most facts in one `SyncMembers` call.
pub const MAX_MEMBER_FACTS: usize = 1000;

/// Checks a SyncMembers request's facts.
fn parse_member_facts(members: &[MemberFacts]) -> AppResult<Vec<(String, domain::Standing, i64)>> {
    if members.is_empty() || members.len() > MAX_MEMBER_FACTS {
        return Err(AppError::invalid(
            "members",
            format!(
                "must hold 1 to {MAX_MEMBER_FACTS} facts, not {}",
                members.len()
            ),
        ));
    }
    members
        .iter()
        .enumerate()
        .map(|(i, fact)| {
            let field = format!("members[{i}].member_id");
            let id = validate::member_id(&field, &fact.member_id)?
                .ok_or_else(|| AppError::invalid(&field, "required"))?;
            if fact.member_version < 1 {
                return Err(AppError::invalid(
                    format!("members[{i}].member_version"),
                    "must be at least 1",
                ));
            }
            let standing = domain::Standing {
                enabled: fact.enabled,
                team_member: fact.team_member,
            };
            Ok((id, standing, fact.member_version))
        })
        .collect()
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn sync_members(
        &self,
        request: Request<SyncMembersRequest>,
    ) -> Result<Response<SyncMembersResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let facts = parse_member_facts(&request.into_inner().members)?;
        let applied = self.commands.sync_members(&tenant, &facts).await?;
        Ok(Response::new(SyncMembersResponse {
            applied: applied as i32,
        }))
    }

    async fn sync_team_settings(
        &self,
        request: Request<SyncTeamSettingsRequest>,
    ) -> Result<Response<SyncTeamSettingsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let zone = TeamZone::parse("time_zone", &r.time_zone)?;
        if r.settings_version < 1 {
            return Err(AppError::invalid("settings_version", "must be at least 1").into());
        }
        let applied = self
            .commands
            .sync_team_zone(&tenant, zone, r.settings_version)
            .await?;
        Ok(Response::new(SyncTeamSettingsResponse { applied }))
    }

    async fn define_task(
        &self,
        request: Request<DefineTaskRequest>,
    ) -> Result<Response<DefineTaskResponse>, Status> {
        let who = caller(&request)?;
        let (tenant, actor) = (who.tenant()?.to_owned(), who.actor().to_owned());
        let r = request.into_inner();
        let key = Key::new(
            &tenant,
            &r.request_id,
            "agilepm.task.v1.TaskService/DefineTask",
            &r,
        );
        let new = NewTask {
            request_id: validate::request_id("request_id", &r.request_id)?,
            backlog_item_id: validate::uuid("backlog_item_id", &r.backlog_item_id)?.to_string(),
            name: validate::name("name", &r.name)?,
            description: validate::description("description", &r.description)?,
            volunteer_id: validate::member_id("volunteer_id", &r.volunteer_id)?.unwrap_or_default(),
            hours: domain::hours("hours_remaining", r.hours_remaining)?,
        };
        let view = mapping::view(r.view, View::Basic)?;
        let response = idempotency::once(&self.db, &key, || async {
            let task = self.commands.define(&tenant, &actor, new).await?;
            Ok(DefineTaskResponse {
                consistency_token: self.token_now(&tenant, &task).await?,
                task: Some(self.shown(task, view).await?),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_task(
        &self,
        request: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("id", &request.get_ref().id)?.to_string();
        let view = mapping::view(request.get_ref().view, View::Full)?;
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let task = store::get(&mut conn, &tenant, &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("task {id}")))?;
        drop(conn);
        Ok(Response::new(GetTaskResponse {
            task: Some(self.shown(task, view).await?),
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
        let query =
            paging::PageQuery::new("agilepm.task.v1.TaskService/ListTasks", &[&tenant, &item]);
        let after = paging::decode_numbered("page_token", &r.page_token, &query)?;
        let view = mapping::view(r.view, View::Basic)?;
        let (rows, next_page_token) = paging::finish_page(
            store::list(&self.db, &tenant, &item, after, size + 1).await?,
            size,
            &query,
            |last| format!("{}|{}", last.create_time_us, last.id),
        );
        let mut logs = match view {
            View::Basic => Default::default(),
            View::Full => {
                let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
                store::logs(&self.db, &ids).await?
            }
        };
        let tasks = rows
            .into_iter()
            .map(|task| {
                let log = logs.remove(&task.id).unwrap_or_default();
                task_message(&task, &log)
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
        let change = || Ok(FieldChange::Name(validate::name("name", &r.name)?));
        let task = self
            .change_field(&tenant, &r.id, change, r.expected_version, r.view)
            .await?;
        Ok(Response::new(RenameTaskResponse { task: Some(task) }))
    }

    async fn describe_task(
        &self,
        request: Request<DescribeTaskRequest>,
    ) -> Result<Response<DescribeTaskResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let change = || {
            Ok(FieldChange::Description(validate::description(
                "description",
                &r.description,
            )?))
        };
        let task = self
            .change_field(&tenant, &r.id, change, r.expected_version, r.view)
            .await?;
        Ok(Response::new(DescribeTaskResponse { task: Some(task) }))
    }

    async fn assign_task_volunteer(
        &self,
        request: Request<AssignTaskVolunteerRequest>,
    ) -> Result<Response<AssignTaskVolunteerResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let change = || {
            Ok(FieldChange::Volunteer(
                validate::member_id("volunteer_id", &r.volunteer_id)?
                    .ok_or_else(|| AppError::invalid("volunteer_id", "required"))?,
            ))
        };
        let task = self
            .change_field(&tenant, &r.id, change, r.expected_version, r.view)
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
        let change = || Ok(FieldChange::Volunteer(String::new()));
        let task = self
            .change_field(&tenant, &r.id, change, r.expected_version, r.view)
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
        let status = mapping::status("status", r.status)?;
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let view = mapping::view(r.view, View::Basic)?;
        let task = self
            .commands
            .change_status(&tenant, &id, expected, status)
            .await?;
        Ok(Response::new(ChangeTaskStatusResponse {
            consistency_token: self.token_now(&tenant, &task).await?,
            task: Some(self.shown(task, view).await?),
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
        // Undated: the team's today, decided with the batch that reads the team's zone.
        let day = if r.date.is_empty() {
            None
        } else {
            Some(validate::date("date", &r.date)?)
        };
        let expected_version = validate::expected_version("expected_version", r.expected_version)?;
        let view = mapping::view(r.view, View::Basic)?;
        let estimated = self
            .commands
            .estimate(Estimate {
                tenant,
                task_id: id,
                day,
                hours,
                expected_version,
                actor,
                trace_parent: agilepm_platform::storage::trace_parent::current(),
                with_log: view == View::Full,
            })
            .await?;
        let log = estimated.log.unwrap_or_default();
        Ok(Response::new(EstimateTaskHoursRemainingResponse {
            task: Some(task_message(&estimated.task, &log)),
            consistency_token: consistency::encode(
                &estimated.totals.backlog_item_id,
                estimated.totals.revision,
            ),
            totals: Some(totals_message(&estimated.totals)),
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
        let totals = self.commands.remove(&tenant, &id, expected).await?;
        Ok(Response::new(RemoveTaskResponse {
            consistency_token: consistency::encode(&totals.backlog_item_id, totals.revision),
            totals: Some(totals_message(&totals)),
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
            totals: Some(totals_message(&totals)),
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
        let days = burndown::burndown(&entries, start, end)
            .into_iter()
            .map(|(date, hours_remaining)| BurndownDay {
                date: date.format("%Y-%m-%d").to_string(),
                hours_remaining,
            })
            .collect();
        let items = if r.per_item {
            burndown::per_item(&entries, &ids, start, end)
                .into_iter()
                .map(|(backlog_item_id, hours_remaining)| ItemBurndown {
                    backlog_item_id,
                    hours_remaining,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(GetBurndownResponse { days, items }))
    }
}
