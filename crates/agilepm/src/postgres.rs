//! Giving each service its own PostgreSQL database on one server.

use anyhow::Context as _;
use sqlx::Connection as _;

/// Replaces the database name in a `postgres://` URL.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").context("a postgres:// URL")? + 3;
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let server = path_start.map_or(base, |i| &base[..i]);
    Ok(match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    })
}

/// Creates `database` on the server of `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "database names are letters, digits and '_': {database:?}"
    );
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}",
                agilepm_platform::storage::db::redacted_url(admin_url)
            )
        })?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let create = format!("CREATE DATABASE \"{database}\"");
        match sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Drops `database` (terminating its connections).
pub async fn drop_database(admin_url: &str, database: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url).await?;
    let drop = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://root@127.0.0.1:5432/test", "x").unwrap(),
            "postgres://root@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://root@h", "x").unwrap(),
            "postgres://root@h/x"
        );
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x").unwrap(),
            "postgres://h/x?sslmode=disable"
        );
    }
}
