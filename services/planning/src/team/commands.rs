//! The team's units of work. Each change that alters what volunteering needs (a member
//! added, enabled, disabled, or given or stripped of the team-member role), and each
//! change of the team's time zone, is recorded in the task service before it commits
//! here: once the caller hears OK, the task service applies it. If the task service is
//! down, the change is not made (UNAVAILABLE).

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::now_micros;
use agilepm_platform::storage::db::Db;
use agilepm_platform::storage::outbox::{self, NewEvent};

use agilepm_platform::domain::team_zone::TeamZone;

use super::domain::{Member, Role, TeamSettings};
use super::{events, mapping, store};
use crate::peers::Peers;
use crate::versioned;

/// Adds `new` (enabled, version 1) to `tenant`'s team, or returns the member an earlier
/// identical add made; a different member under the same id is ALREADY_EXISTS.
pub async fn add(db: &Db, peers: &Peers, tenant: &str, new: Member) -> AppResult<Member> {
    let now = now_micros();
    let member = Member {
        tenant_id: tenant.to_owned(),
        enabled: true,
        version: 1,
        create_time_us: now,
        update_time_us: now,
        ..new
    };
    // Twice at most: a concurrent add of the same id makes the insert fail once, and the
    // second pass compares with what it added.
    for _ in 0..2 {
        let mut uow = db.begin().await?;
        if let Some(existing) = store::get(uow.conn(), tenant, &member.id).await? {
            if existing.same_as_added(&member) {
                return Ok(existing);
            }
            return Err(AppError::AlreadyExists(format!(
                "member {:?} is on the team already, with other fields; use UpdateMember",
                member.id
            )));
        }
        match store::insert(&mut uow, &member).await {
            Ok(()) => {}
            Err(AppError::AlreadyExists(_)) => continue,
            Err(other) => return Err(other),
        }
        outbox::append_all(&mut uow, &[events::added(&member)]).await?;
        peers
            .record_members(tenant, &[mapping::facts(&member)])
            .await?;
        uow.commit().await?;
        return Ok(member);
    }
    Err(AppError::Aborted(format!(
        "member {:?} is being added concurrently; retry",
        member.id
    )))
}

/// Applies `change` to member `id` (compare-and-set on its version) with the event
/// `event` builds, recording the member in the task service first if what volunteering
/// needs changed.
pub async fn change(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    id: &str,
    expected: Option<i64>,
    change: impl Fn(&Member) -> Member,
    event: for<'a> fn(&'a Member) -> NewEvent<'a>,
) -> AppResult<Member> {
    let volunteering = |m: &Member| (m.enabled, m.holds(Role::TeamMember));
    versioned::change_then(
        db,
        tenant,
        id,
        expected,
        |before| Ok(change(before)),
        event,
        |before, after| {
            let changed = volunteering(before) != volunteering(after);
            let facts = mapping::facts(after);
            async move {
                if changed {
                    peers.record_members(tenant, &[facts]).await?;
                }
                Ok(())
            }
        },
    )
    .await
}

/// Sets `tenant`'s team zone to `zone` (compare-and-set on the settings' version, 0
/// before the first change), recording it in the task service before it commits.
pub async fn set_time_zone(
    db: &Db,
    peers: &Peers,
    tenant: &str,
    expected: Option<i64>,
    zone: TeamZone,
) -> AppResult<TeamSettings> {
    versioned::change_then(
        db,
        tenant,
        tenant,
        expected,
        |before: &TeamSettings| {
            Ok(TeamSettings {
                time_zone: zone,
                ..before.clone()
            })
        },
        events::settings_changed,
        |_, after| {
            let facts = mapping::settings_facts(after);
            async move { peers.record_team_settings(tenant, facts).await }
        },
    )
    .await
}
