//! Persistence of members, read into and written from `domain::Member`, and of the
//! team's settings. Roles are kept as a bit mask (bit n for role number n), so a listing
//! filters by role in SQL.

use agilepm_platform::domain::error::AppResult;
use agilepm_platform::storage::db::{Db, UnitOfWork};
use agilepm_platform::storage::keyset;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use agilepm_platform::domain::team_zone::TeamZone;

use super::domain::{Member, Role, TeamSettings};
use crate::versioned::Versioned;

macro_rules! select_members {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, id, display_name, email, roles, enabled, version, create_time_us, \
             update_time_us FROM members ",
            $rest
        )
    };
}

/// The bit of `role` in the `roles` column.
pub fn role_bit(role: Role) -> i64 {
    1 << role.number()
}

fn role_mask(roles: &[Role]) -> i64 {
    roles.iter().fold(0, |mask, role| mask | role_bit(*role))
}

fn member_from(row: &AnyRow) -> Result<Member, sqlx::Error> {
    let mask: i64 = row.try_get("roles")?;
    Ok(Member {
        tenant_id: row.try_get("tenant_id")?,
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        roles: [Role::TeamMember, Role::ProductOwner]
            .into_iter()
            .filter(|role| mask & role_bit(*role) != 0)
            .collect(),
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        version: row.try_get("version")?,
        create_time_us: row.try_get("create_time_us")?,
        update_time_us: row.try_get("update_time_us")?,
    })
}

/// Member `id` of `tenant`.
pub async fn get(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Member>> {
    Ok(
        sqlx::query(select_members!("WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(conn)
            .await?
            .map(|row| member_from(&row))
            .transpose()?,
    )
}

/// A listing of a tenant's team.
pub struct MemberQuery<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Only members holding this role.
    pub role: Option<Role>,
    /// Disabled members too.
    pub show_disabled: bool,
    /// Keyset: the last id of the previous page (empty: from the start).
    pub after_id: &'a str,
    /// Rows to read.
    pub limit: i64,
}

/// One page of `query`, by id.
pub async fn list(db: &Db, query: &MemberQuery<'_>) -> AppResult<Vec<Member>> {
    let rows = sqlx::query(select_members!(
        "WHERE tenant_id = $1 AND ($2 = 0 OR (roles & $2) <> 0) AND ($3 = 1 OR enabled = 1) \
         AND id > $4 ORDER BY id LIMIT $5"
    ))
    .bind(query.tenant)
    .bind(query.role.map_or(0, role_bit))
    .bind(i64::from(query.show_disabled))
    .bind(query.after_id)
    .bind(query.limit)
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(member_from).collect::<Result<_, _>>()?)
}

/// Every member after `after` (tenant, id), `limit` at most, for re-recording them in
/// the task service.
pub async fn all_after(db: &Db, after: &(String, String), limit: i64) -> AppResult<Vec<Member>> {
    let rows = keyset::rows_after(db, select_members!(""), after, limit).await?;
    Ok(rows.iter().map(member_from).collect::<Result<_, _>>()?)
}

/// Inserts a new member; one with the same id in the tenant is `AlreadyExists`.
pub async fn insert(uow: &mut UnitOfWork, member: &Member) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO members (tenant_id, id, display_name, email, roles, enabled, version, \
         create_time_us, update_time_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&member.tenant_id)
    .bind(&member.id)
    .bind(&member.display_name)
    .bind(&member.email)
    .bind(role_mask(&member.roles))
    .bind(i64::from(member.enabled))
    .bind(member.version)
    .bind(member.create_time_us)
    .bind(member.update_time_us)
    .execute(uow.conn())
    .await?;
    Ok(())
}

/// Writes `member` over the row last read at `read_version`; false if it has changed
/// since (a lost race).
pub async fn update(uow: &mut UnitOfWork, member: &Member, read_version: i64) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE members SET display_name = $1, email = $2, roles = $3, enabled = $4, \
         version = $5, update_time_us = $6 WHERE tenant_id = $7 AND id = $8 AND version = $9",
    )
    .bind(&member.display_name)
    .bind(&member.email)
    .bind(role_mask(&member.roles))
    .bind(i64::from(member.enabled))
    .bind(member.version)
    .bind(member.update_time_us)
    .bind(&member.tenant_id)
    .bind(&member.id)
    .bind(read_version)
    .execute(uow.conn())
    .await?;
    Ok(result.rows_affected() == 1)
}

impl Versioned for Member {
    const KIND: &'static str = "member";

    fn version(&self) -> i64 {
        self.version
    }

    fn set_version(&mut self, version: i64, now_us: i64) {
        self.version = version;
        self.update_time_us = now_us;
    }

    async fn load(conn: &mut AnyConnection, tenant: &str, id: &str) -> AppResult<Option<Member>> {
        get(conn, tenant, id).await
    }

    async fn store(&self, uow: &mut UnitOfWork, read_version: i64) -> AppResult<bool> {
        update(uow, self, read_version).await
    }
}

fn settings_from(row: &AnyRow) -> AppResult<TeamSettings> {
    let zone: String = row.try_get("time_zone")?;
    Ok(TeamSettings {
        tenant_id: row.try_get("tenant_id")?,
        time_zone: TeamZone::stored(&zone, "team_settings.time_zone")?,
        version: row.try_get("version")?,
        update_time_us: row.try_get("update_time_us")?,
    })
}

/// `tenant`'s team settings (the defaults until first changed).
pub async fn settings(conn: &mut AnyConnection, tenant: &str) -> AppResult<TeamSettings> {
    let row = sqlx::query(
        "SELECT tenant_id, time_zone, version, update_time_us FROM team_settings \
         WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    row.map_or_else(
        || Ok(TeamSettings::defaults(tenant)),
        |row| settings_from(&row),
    )
}

/// Every tenant's changed settings after tenant `after`, `limit` at most, for
/// re-recording them in the task service.
pub async fn all_settings_after(db: &Db, after: &str, limit: i64) -> AppResult<Vec<TeamSettings>> {
    sqlx::query(
        "SELECT tenant_id, time_zone, version, update_time_us FROM team_settings \
         WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await?
    .iter()
    .map(settings_from)
    .collect()
}

/// Team settings are one row per tenant, absent until first changed: version 0 inserts
/// it (false if a concurrent first change did), a later version updates it guarded.
impl Versioned for TeamSettings {
    const KIND: &'static str = "team settings";

    fn version(&self) -> i64 {
        self.version
    }

    fn set_version(&mut self, version: i64, now_us: i64) {
        self.version = version;
        self.update_time_us = now_us;
    }

    async fn load(
        conn: &mut AnyConnection,
        tenant: &str,
        _id: &str,
    ) -> AppResult<Option<TeamSettings>> {
        settings(conn, tenant).await.map(Some)
    }

    async fn store(&self, uow: &mut UnitOfWork, read_version: i64) -> AppResult<bool> {
        let result = if read_version == 0 {
            sqlx::query(
                "INSERT INTO team_settings (tenant_id, time_zone, version, update_time_us) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(&self.tenant_id)
            .bind(self.time_zone.name())
            .bind(self.version)
            .bind(self.update_time_us)
            .execute(uow.conn())
            .await?
        } else {
            sqlx::query(
                "UPDATE team_settings SET time_zone = $1, version = $2, update_time_us = $3 \
                 WHERE tenant_id = $4 AND version = $5",
            )
            .bind(self.time_zone.name())
            .bind(self.version)
            .bind(self.update_time_us)
            .bind(&self.tenant_id)
            .bind(read_version)
            .execute(uow.conn())
            .await?
        };
        Ok(result.rows_affected() == 1)
    }
}
