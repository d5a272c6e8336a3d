//! Reports: the sprint burndown (from the task service's estimation logs, with an ideal
//! line) and velocity (story points done per completed sprint).

use agilepm_platform::auth::{act_for, caller};
use agilepm_platform::error::{AppError, from_peer};
use agilepm_platform::validate;
use agilepm_proto::backlog::v1::ListBacklogItemsRequest;
use agilepm_proto::planning::v1::report_service_server::ReportService;
use agilepm_proto::planning::v1::*;
use agilepm_proto::task::v1::GetBurndownRequest;
use tonic::{Request, Response, Status};

use crate::PlanningApi;

/// The ideal line: `first` hours on day 0 falling linearly to zero on the last day.
pub fn ideal(first: i64, days: usize) -> Vec<f64> {
    if days <= 1 {
        return vec![0.0; days];
    }
    (0..days)
        .map(|d| first as f64 * (1.0 - d as f64 / (days - 1) as f64))
        .collect()
}

#[tonic::async_trait]
impl ReportService for PlanningApi {
    async fn get_sprint_burndown(
        &self,
        request: Request<GetSprintBurndownRequest>,
    ) -> Result<Response<GetSprintBurndownResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("sprint_id", &request.get_ref().sprint_id)?.to_string();
        let sprint = {
            let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
            crate::sprints::get(&mut conn, &tenant, &id)
                .await?
                .ok_or_else(|| AppError::not_found(format!("sprint {id}")))?
        };
        // Membership lives on the items: the ones committed to the sprint now (DONE ones
        // keep their sprint id).
        let filter = ListBacklogItemsRequest {
            product_id: sprint.product_id.clone(),
            sprint_id: id.clone(),
            ..Default::default()
        };
        let items = self.peers.all_backlog_items(&tenant, filter).await?;
        let days = if items.is_empty() {
            let begin = validate::date("begin_date", &sprint.begin_date)?;
            let end = validate::date("end_date", &sprint.end_date)?;
            begin
                .iter_days()
                .take_while(|d| *d <= end)
                .map(|d| (d.to_string(), 0))
                .collect::<Vec<_>>()
        } else {
            let request = GetBurndownRequest {
                backlog_item_ids: items.iter().map(|i| i.id.clone()).collect(),
                start_date: sprint.begin_date.clone(),
                end_date: sprint.end_date.clone(),
            };
            let response = self
                .peers
                .tasks
                .clone()
                .get_burndown(act_for(&tenant, request))
                .await
                .map_err(|s| from_peer("task service", s))?;
            response
                .into_inner()
                .days
                .into_iter()
                .map(|d| (d.date, d.hours_remaining))
                .collect()
        };
        let first = days.first().map_or(0, |d| d.1);
        let ideal = ideal(first, days.len());
        let days = days
            .into_iter()
            .zip(ideal)
            .map(
                |((date, hours_remaining), ideal_hours_remaining)| SprintBurndownDay {
                    date,
                    hours_remaining,
                    ideal_hours_remaining,
                },
            )
            .collect();
        Ok(Response::new(GetSprintBurndownResponse { days }))
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
        let mut conn = self.db.pool().acquire().await.map_err(AppError::from)?;
        let sprints: Vec<SprintVelocity> =
            crate::sprints::completed(&mut conn, &tenant, &product_id, count)
                .await?
                .into_iter()
                .map(|s| SprintVelocity {
                    story_points_done: s.summary.map_or(0, |summary| summary.story_points_done),
                    sprint_id: s.id,
                    sprint_name: s.name,
                })
                .collect();
        let average_story_points = if sprints.is_empty() {
            0.0
        } else {
            sprints
                .iter()
                .map(|s| f64::from(s.story_points_done))
                .sum::<f64>()
                / sprints.len() as f64
        };
        Ok(Response::new(GetVelocityResponse {
            sprints,
            average_story_points,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_line_falls_linearly_to_zero() {
        assert_eq!(ideal(100, 5), vec![100.0, 75.0, 50.0, 25.0, 0.0]);
        assert_eq!(ideal(7, 1), vec![0.0]);
        assert!(ideal(7, 0).is_empty());
    }
}
