//! The ReportService adapter: parse, compose the report, map.

use agilepm_platform::domain::error::AppError;
use agilepm_platform::domain::validate;
use agilepm_platform::wire::auth::caller;
use agilepm_proto::planning::v1::report_service_server::ReportService;
use agilepm_proto::planning::v1::*;
use tonic::{Request, Response, Status};

use super::{commands, domain};
use crate::PlanningApi;

#[tonic::async_trait]
impl ReportService for PlanningApi {
    async fn get_sprint_burndown(
        &self,
        request: Request<GetSprintBurndownRequest>,
    ) -> Result<Response<GetSprintBurndownResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("sprint_id", &request.get_ref().sprint_id)?.to_string();
        let burndown = commands::sprint_burndown(&self.db, &self.peers, &tenant, &id).await?;
        let days = burndown
            .days
            .into_iter()
            .map(|day| SprintBurndownDay {
                date: day.date,
                hours_remaining: day.hours_remaining,
                ideal_hours_remaining: day.ideal_hours_remaining,
            })
            .collect();
        Ok(Response::new(GetSprintBurndownResponse {
            days,
            today: burndown.zone.today().to_string(),
            time_zone: burndown.zone.name().to_owned(),
        }))
    }

    async fn get_velocity(
        &self,
        request: Request<GetVelocityRequest>,
    ) -> Result<Response<GetVelocityResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let product_id = validate::uuid("product_id", &r.product_id)?.to_string();
        let count = match r.sprint_count {
            0 => 6,
            n @ 1..=100 => n as u32,
            _ => {
                return Err(
                    AppError::invalid("sprint_count", "must be 0 (default 6) to 100").into(),
                );
            }
        };
        let completed = commands::completed_sprints(&self.db, &tenant, &product_id, count).await?;
        let sprints: Vec<SprintVelocity> = completed
            .into_iter()
            .map(|s| SprintVelocity {
                story_points_done: s.summary.map_or(0, |summary| summary.story_points_done),
                sprint_id: s.id,
                sprint_name: s.name,
            })
            .collect();
        let points: Vec<i32> = sprints.iter().map(|s| s.story_points_done).collect();
        Ok(Response::new(GetVelocityResponse {
            sprints,
            average_story_points: domain::average(&points),
        }))
    }
}
