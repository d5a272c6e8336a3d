//! Sprint health: whether an active sprint's remaining hours are above its ideal
//! burndown line by more than a margin, told once per sprint per day while it stays so
//! (`sprint.at_risk`), and once when it recovers (`sprint.back_on_track`).
//!
//! The day judged is the later of the team's today (in its time zone, as planning reports
//! it with the burndown) and the latest day the team has estimated for: an estimate may
//! be dated a day ahead, for a team whose day has begun before its zone was set. A sprint is judged when its tenant's estimates change (at most once a
//! second, however many arrive) and every few minutes in any case, which catches a new
//! day on which nobody burned anything. The verdict, and the notification it causes, are
//! recorded in one transaction; a notification's id is derived from the sprint, the
//! verdict and the day, so judging again after a crash records nothing twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agilepm_platform::domain::error::from_peer;
use agilepm_platform::domain::time::{now_micros, today_utc};
use agilepm_platform::events::failure_run::FailureRun;
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::act_for;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
use agilepm_proto::planning::v1::{GetSprintBurndownRequest, SprintBurndownDay};
use chrono::NaiveDate;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{Kind, Notification};
use crate::events::body;
use crate::store::{self, WatchedSprint};

/// Tenants whose sprints should be judged again soon.
#[derive(Clone, Default)]
pub struct DirtyTenants {
    tenants: Arc<Mutex<HashSet<String>>>,
    changed: Arc<Notify>,
}

impl DirtyTenants {
    /// Marks `tenants` for judging.
    pub fn mark(&self, tenants: Vec<String>) {
        if tenants.is_empty() {
            return;
        }
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tenants);
        self.changed.notify_one();
    }

    fn take(&self) -> Vec<String> {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }
}

/// How health is judged.
#[derive(Debug, Clone, Copy)]
pub struct HealthOptions {
    /// How far above the ideal line a sprint may be, as a fraction of its first day's
    /// hours (the line's start), before it is at risk.
    pub margin: f64,
    /// How often every active sprint is judged, changes or not.
    pub recheck_every: Duration,
    /// The least time between two judging passes.
    pub settle: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            margin: 0.10,
            recheck_every: Duration::from_secs(300),
            settle: Duration::from_secs(1),
        }
    }
}

/// A sprint's health on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The day judged.
    pub day: NaiveDate,
    /// Remaining hours at its end.
    pub hours_remaining: i64,
    /// The ideal line on it.
    pub ideal_hours_remaining: f64,
    /// The margin, in hours.
    pub margin_hours: f64,
    /// Whether the remaining hours are above the line by more than the margin.
    pub at_risk: bool,
}

/// Judges `days` (a burndown) on `day`: `None` before the sprint's first day or for a
/// sprint with no hours on it. A sprint past its last day is judged on that day.
pub fn judge(days: &[SprintBurndownDay], day: NaiveDate, margin: f64) -> Option<Verdict> {
    let first = days.first()?;
    let first_day: NaiveDate = first.date.parse().ok()?;
    if day < first_day || first.hours_remaining <= 0 {
        return None;
    }
    let on = days
        .iter()
        .rev()
        .find(|d| d.date.parse::<NaiveDate>().is_ok_and(|d| d <= day))?;
    let margin_hours = margin * first.hours_remaining as f64;
    Some(Verdict {
        day: on.date.parse().ok()?,
        hours_remaining: on.hours_remaining,
        ideal_hours_remaining: on.ideal_hours_remaining,
        margin_hours,
        at_risk: on.hours_remaining as f64 > on.ideal_hours_remaining + margin_hours,
    })
}

/// The notification a new verdict causes given the last one, if any.
pub fn notification_for(
    sprint: &WatchedSprint,
    verdict: &Verdict,
    margin: f64,
) -> Option<Notification> {
    let day = verdict.day.to_string();
    let kind = if verdict.at_risk && !(sprint.at_risk && sprint.at_risk_day == day) {
        Kind::SprintAtRisk
    } else if !verdict.at_risk && sprint.at_risk {
        Kind::SprintBackOnTrack
    } else {
        return None;
    };
    let id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!(
            "agilepm:notifier:{}:{}:{day}",
            sprint.sprint_id,
            kind.webhook_type()
        )
        .as_bytes(),
    )
    .to_string();
    let occur_time_us = now_micros();
    let data = json!({
        "tenant_id": sprint.tenant_id,
        "sprint_id": sprint.sprint_id,
        "product_id": sprint.product_id,
        "day": day,
        "hours_remaining": verdict.hours_remaining,
        "ideal_hours_remaining": verdict.ideal_hours_remaining,
        "margin_hours": verdict.margin_hours,
        "margin": margin,
    });
    Some(Notification {
        id,
        tenant_id: sprint.tenant_id.clone(),
        kind,
        payload: body(kind, occur_time_us, data),
        trace_parent: String::new(),
        occur_time_us,
    })
}

/// Judges sprints as their tenants' estimates change, and all of them every
/// `recheck_every`, until `shutdown`.
pub async fn watch(
    db: Db,
    reports: ReportServiceClient<PeerChannel>,
    dirty: DirtyTenants,
    options: HealthOptions,
    deliveries_waiting: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut run = FailureRun::new("judging sprint health");
    // On start every sprint is judged: what changed while the notifier was down counts.
    let mut everything = true;
    loop {
        let tenants = dirty.take();
        let which = (!everything).then_some(tenants.as_slice());
        match judge_sprints(&db, &reports, which, options.margin).await {
            Ok((created, retry)) => {
                if created > 0 {
                    deliveries_waiting.notify_one();
                }
                if retry.is_empty() {
                    run.progressed();
                } else {
                    dirty.mark(retry);
                }
            }
            Err(error) => {
                run.failed(&format!("{error:#}"));
                dirty.mark(tenants);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(options.settle) => {}
        }
        everything = tokio::select! {
            () = shutdown.cancelled() => return,
            () = dirty.changed.notified() => false,
            () = tokio::time::sleep(options.recheck_every) => true,
        };
    }
}

/// Judges the watched sprints (of `tenants` only, when given). Returns the deliveries
/// created and the tenants whose sprints could not be judged (to try again).
async fn judge_sprints(
    db: &Db,
    reports: &ReportServiceClient<PeerChannel>,
    tenants: Option<&[String]>,
    margin: f64,
) -> anyhow::Result<(u64, Vec<String>)> {
    let mut created = 0;
    let mut retry = Vec::new();
    for sprint in store::watched_sprints(db, tenants).await? {
        let request = GetSprintBurndownRequest {
            sprint_id: sprint.sprint_id.clone(),
        };
        let burndown = match reports
            .clone()
            .get_sprint_burndown(act_for(&sprint.tenant_id, request))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::warn!(
                    sprint_id = %sprint.sprint_id,
                    error = %from_peer("planning service", status),
                    "could not read a sprint's burndown; judging it again later"
                );
                retry.push(sprint.tenant_id.clone());
                continue;
            }
        };
        let day = judged_day(&burndown.today, &sprint.tenant_day);
        let Some(verdict) = judge(&burndown.days, day, margin) else {
            continue;
        };
        let notification = notification_for(&sprint, &verdict, margin);
        if notification.is_none() && verdict.at_risk == sprint.at_risk {
            continue;
        }
        let at_risk_day = if verdict.at_risk {
            verdict.day.to_string()
        } else {
            sprint.at_risk_day.clone()
        };
        created += store::judge_sprint(
            db,
            &sprint.sprint_id,
            verdict.at_risk,
            &at_risk_day,
            notification.as_ref(),
        )
        .await?;
    }
    Ok((created, retry))
}

/// The day a sprint is judged on: the later of the team's today as planning reported it
/// (UTC's, from a planning that does not report it) and the latest day the team
/// estimated for.
fn judged_day(team_today: &str, latest_estimated: &str) -> NaiveDate {
    let today = team_today.parse().unwrap_or_else(|_| today_utc());
    today.max(latest_estimated.parse().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burndown(hours: &[i64]) -> Vec<SprintBurndownDay> {
        let first = hours[0] as f64;
        let last = (hours.len() - 1) as f64;
        hours
            .iter()
            .enumerate()
            .map(|(i, h)| SprintBurndownDay {
                date: format!("2026-12-{:02}", i + 1),
                hours_remaining: *h,
                ideal_hours_remaining: first * (1.0 - i as f64 / last),
            })
            .collect()
    }

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    #[test]
    fn a_sprint_above_its_line_by_more_than_the_margin_is_at_risk() {
        // 100 h over 5 days: the line is 100, 75, 50, 25, 0; the margin is 10 h.
        let behind = burndown(&[100, 90, 90, 90, 90]);
        let verdict = judge(&behind, day(2), 0.10).unwrap();
        assert_eq!(verdict.hours_remaining, 90);
        assert_eq!(verdict.ideal_hours_remaining, 75.0);
        assert_eq!(verdict.margin_hours, 10.0);
        assert!(verdict.at_risk, "90 > 75 + 10");
        let on_track = burndown(&[100, 85, 85, 85, 85]);
        assert!(
            !judge(&on_track, day(2), 0.10).unwrap().at_risk,
            "85 = 75 + 10"
        );
        assert!(judge(&behind, NaiveDate::from_ymd_opt(2026, 11, 30).unwrap(), 0.1).is_none());
        assert_eq!(
            judge(&behind, day(20), 0.1).unwrap().day,
            day(5),
            "past the end: the last day"
        );
        assert!(
            judge(&burndown(&[0, 0]), day(2), 0.1).is_none(),
            "no hours, no line"
        );
    }

    #[test]
    fn at_risk_is_told_once_a_day_and_recovery_once() {
        let sprint = |at_risk: bool, at_risk_day: &str| WatchedSprint {
            sprint_id: "s1".into(),
            tenant_id: "acme".into(),
            product_id: "p1".into(),
            at_risk,
            at_risk_day: at_risk_day.into(),
            tenant_day: String::new(),
        };
        let behind = judge(&burndown(&[100, 90, 90]), day(2), 0.1).unwrap();
        let told = notification_for(&sprint(false, ""), &behind, 0.1).unwrap();
        assert_eq!(told.kind, Kind::SprintAtRisk);
        assert_eq!(
            told.id,
            notification_for(&sprint(false, ""), &behind, 0.1)
                .unwrap()
                .id,
            "the same sprint, verdict and day: the same notification"
        );
        assert!(notification_for(&sprint(true, "2026-12-02"), &behind, 0.1).is_none());
        let next_day = judge(&burndown(&[100, 90, 90]), day(3), 0.1).unwrap();
        let again = notification_for(&sprint(true, "2026-12-02"), &next_day, 0.1).unwrap();
        assert_ne!(again.id, told.id, "a new day, a new reminder");
        let recovered = judge(&burndown(&[100, 60, 60]), day(2), 0.1).unwrap();
        let back = notification_for(&sprint(true, "2026-12-02"), &recovered, 0.1).unwrap();
        assert_eq!(back.kind, Kind::SprintBackOnTrack);
        assert!(notification_for(&sprint(false, "2026-12-02"), &recovered, 0.1).is_none());
    }

    #[test]
    fn the_day_judged_is_the_team_s_not_utc_s() {
        // At 17:00 in Los Angeles on the 7th, UTC's day is the 8th: planning reports the
        // team's today, and that is the day judged.
        assert_eq!(judged_day("2026-12-07", ""), day(7));
        assert_eq!(judged_day("2026-12-07", "2026-12-05"), day(7));
        // A team that estimated a day ahead is judged on that day.
        assert_eq!(judged_day("2026-12-07", "2026-12-08"), day(8));
        // A planning that reports no today: UTC's.
        assert_eq!(judged_day("", ""), today_utc());
    }
}
