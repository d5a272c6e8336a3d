//! A service's own database: SQLite (the embedded default) or PostgreSQL (production),
//! behind one `sqlx` pool of the `Any` driver so that store code is written once.
//!
//! Conventions that keep one SQL text valid on both engines: `$1` placeholders, ids as
//! `TEXT`, times as `BIGINT` microseconds, dates as `TEXT` `YYYY-MM-DD`, integers as
//! `BIGINT`, aggregates wrapped in `CAST(... AS BIGINT)`. Where the engines really
//! differ (the feed's gap-safe read, notifications) code branches on [`Engine`].

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::domain::service_name::ServiceName;

/// Migrations shared by every service (the outbox, feed identity, checkpoints). Their
/// versions are below 100; each service numbers its own from 100 up.
static PLATFORM_SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static PLATFORM_POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded, one file per service.
    Sqlite,
    /// Production engine.
    Postgres,
}

impl Engine {
    /// The engine `conn` is connected to.
    pub fn of(conn: &sqlx::AnyConnection) -> Engine {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }

    /// Infers the engine from a `sqlite:` or `postgres:`/`postgresql:` URL.
    pub fn of_url(url: &str) -> anyhow::Result<Engine> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Engine::Postgres)
        } else {
            anyhow::bail!(
                "database URL must start with sqlite:// or postgres://, got {}",
                redacted_url(url)
            )
        }
    }
}

/// A service's migrations for both engines (`sqlx::migrate!` of two folders).
pub struct Migrations {
    /// Applied on SQLite.
    pub sqlite: &'static Migrator,
    /// Applied on PostgreSQL.
    pub postgres: &'static Migrator,
}

/// The [`Migrations`] of the crate that invokes it: the folders `migrations/sqlite` and
/// `migrations/postgres` beside its `Cargo.toml`, embedded at compile time.
#[macro_export]
macro_rules! migrations {
    () => {{
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("./migrations/postgres");
        $crate::storage::db::Migrations {
            sqlite: &SQLITE,
            postgres: &POSTGRES,
        }
    }};
}

impl Migrations {
    /// Names the schema these migrations, with the platform's, build on `engine`: it
    /// changes whenever any of them does (version or checksum). Tests keep one migrated
    /// template database per fingerprint and copy it instead of migrating anew.
    pub fn fingerprint(&self, engine: Engine) -> String {
        let (platform, service) = match engine {
            Engine::Sqlite => (&PLATFORM_SQLITE, self.sqlite),
            Engine::Postgres => (&PLATFORM_POSTGRES, self.postgres),
        };
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for migration in platform.iter().chain(service.iter()) {
            for byte in migration
                .version
                .to_le_bytes()
                .iter()
                .chain(migration.checksum.iter())
            {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }
}

/// A connection pool to the service's own database.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    engine: Engine,
    service: ServiceName,
    url: String,
    notifier: crate::storage::commit_notifier::CommitNotifier,
    /// SQLite only: the one connection write transactions use.
    writer: Option<AnyPool>,
    /// How to open more connections (for pools of their own, like the event feed's).
    options: AnyConnectOptions,
}

impl Db {
    /// Opens (creating if needed) the database at `url` and applies the platform's and the
    /// service's migrations. On PostgreSQL the migrator holds an advisory lock, so replicas
    /// starting together apply each migration once.
    pub async fn connect(
        url: &str,
        service: ServiceName,
        max_connections: u32,
        migrations: &Migrations,
    ) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url)?;
        let url = match engine {
            Engine::Sqlite => sqlite_url(url)?,
            Engine::Postgres => postgres_url(url, service),
        };
        let options = AnyConnectOptions::from_str(&url)
            .with_context(|| format!("invalid database URL {}", redacted_url(&url)))?;
        let pool = open_pool(&options, engine, max_connections, Statements::Bounded)
            .await
            .with_context(|| format!("cannot open the {service} database"))?;
        // SQLite admits one writer at a time. A dedicated one-connection pool for writes
        // queues writers fairly in tokio (instead of in SQLite's sleeping busy handler)
        // and keeps the writer's page cache warm: only another connection's commit
        // invalidates a connection's cache, and no other connection commits.
        let writer = match engine {
            Engine::Sqlite => Some(open_pool(&options, engine, 1, Statements::Bounded).await?),
            Engine::Postgres => None,
        };

        let service_migrator = match engine {
            Engine::Sqlite => migrations.sqlite,
            Engine::Postgres => migrations.postgres,
        };
        let platform_migrator = match engine {
            Engine::Sqlite => &PLATFORM_SQLITE,
            Engine::Postgres => &PLATFORM_POSTGRES,
        };
        let mut all: Vec<_> = platform_migrator
            .iter()
            .chain(service_migrator.iter())
            .cloned()
            .collect();
        all.sort_by_key(|m| m.version);
        // A migration may rightly take long (an index on a large table): on PostgreSQL
        // it runs on a connection of its own, without the statement timeout every
        // service connection has.
        let migrating = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(open_pool(&options, engine, 1, Statements::Unbounded).await?),
        };
        Migrator::with_migrations(all)
            .run(migrating.as_ref().or(writer.as_ref()).unwrap_or(&pool))
            .await
            .with_context(|| format!("migrating the {service} database"))?;
        if let Some(migrating) = migrating {
            migrating.close().await;
        }
        tracing::info!(%service, engine = ?engine, "database ready");
        Ok(Db {
            pool,
            engine,
            service,
            url,
            notifier: crate::storage::commit_notifier::CommitNotifier::new(),
            writer,
            options,
        })
    }

    /// Whose database this is.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for a single-statement write outside a [`UnitOfWork`] (SQLite's one
    /// write connection, or the pool on PostgreSQL). Such a statement must not append
    /// events: only a unit of work wakes feed subscribers.
    pub fn write_pool(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    /// A pool of its own of at most `max_connections` to this database, for work whose
    /// connections must never be taken from the service's calls (or take theirs).
    pub async fn open_separate_pool(&self, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
        open_pool(
            &self.options,
            self.engine,
            max_connections,
            Statements::Bounded,
        )
        .await
    }

    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The connection URL (for the PostgreSQL listener).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The in-process commit notifier the event feed waits on.
    pub fn notifier(&self) -> &crate::storage::commit_notifier::CommitNotifier {
        &self.notifier
    }

    /// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`, taking the write
    /// lock up front so that two read-then-write transactions cannot deadlock on upgrade.
    pub async fn begin(&self) -> Result<UnitOfWork, sqlx::Error> {
        let tx = match &self.writer {
            Some(writer) => writer.begin_with("BEGIN IMMEDIATE").await?,
            None => self.pool.begin().await?,
        };
        Ok(UnitOfWork {
            tx,
            db: self.clone(),
            wrote_events: false,
        })
    }

    /// Closes the pools.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.pool.close().await;
    }
}

/// A write transaction that knows whether it appended events, so that committing it wakes
/// the event feed's subscribers at once instead of at their next poll.
pub struct UnitOfWork {
    tx: Transaction<'static, Any>,
    db: Db,
    pub(crate) wrote_events: bool,
}

impl UnitOfWork {
    /// The transaction's connection, for `execute`/`fetch` calls.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// The engine the transaction runs on.
    pub fn engine(&self) -> Engine {
        self.db.engine
    }

    /// Commits, then notifies in-process feed subscribers if events were appended.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let UnitOfWork {
            tx,
            db,
            wrote_events,
        } = self;
        tx.commit().await?;
        if wrote_events {
            db.notifier.notify();
        }
        Ok(())
    }
}

/// How long one PostgreSQL statement may run: well inside the server's default deadline
/// for calls (30 s), so a caller hears UNAVAILABLE from us rather than nothing.
const STATEMENT_TIMEOUT: &str = "SET statement_timeout = '20s'";

/// Whether a pool's PostgreSQL statements are bounded by [`STATEMENT_TIMEOUT`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Statements {
    /// Every service connection.
    Bounded,
    /// The migrations' connection.
    Unbounded,
}

/// How long a PostgreSQL connection may have sat idle in the pool and still be handed out
/// without a ping. A server restart takes longer than this (stopping alone waits for a
/// checkpoint), so every connection from before it is checked; a connection in steady
/// use never is, and under load the pool's connections come round far more often than
/// this. At low rates a ping costs one round trip on a call that has time for it.
/// (HikariCP's `aliveBypassWindowMs` is the same idea, at 500 ms.)
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_millis(100);

async fn open_pool(
    options: &AnyConnectOptions,
    engine: Engine,
    max_connections: u32,
    statements: Statements,
) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        // No ping before handing out a busy connection: it is a round trip on every
        // transaction (measured: a fifth of an estimate batch's time on PostgreSQL). A
        // connection idle for longer is pinged first, so one that the server closed
        // meanwhile (a restart terminates every backend) is dropped and replaced instead
        // of failing the next caller's call.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if engine == Engine::Postgres && meta.idle_for >= PING_WHEN_IDLE_FOR {
                    use sqlx::Connection as _;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if engine == Engine::Sqlite {
                    // WAL lets readers run beside the single writer; busy_timeout makes a
                    // writer outside the write pool (checkpoints, leases) wait instead of
                    // failing; NORMAL sync is durable in WAL mode against process crashes.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                } else {
                    // A service's working set lives in memory, where a random page read
                    // costs about what a sequential one does. At PostgreSQL's default
                    // (4.0) the planner answers a batch statement naming 16 rows of a
                    // 1,000-row table with a sequential scan and a hash join: correct, but
                    // its cost grows with the table (measured: 1.0 ms against 0.3 ms for
                    // the task service's batch read). 1.1 is the usual setting for data
                    // on SSD or in cache.
                    //
                    // Every statement is prepared once per connection and keeps one plan:
                    // PostgreSQL's default re-plans a statement whose generic plan it
                    // guesses costlier than a plan for the actual values, which for a
                    // batch bound as arrays (`statement::RowSet`) is always, so it paid
                    // ~0.16 ms of planning per execution on a 1M-task table. The generic
                    // plans of this system's statements are index plans (checked with
                    // EXPLAIN on 1M tasks; the component benchmarks cover listings).
                    //
                    // No statement runs longer than 20 s and no transaction idles open for
                    // 30 s holding its locks: a call gets its answer (UNAVAILABLE) inside
                    // the server's 30 s default deadline instead of waiting behind a stuck
                    // one.
                    conn.execute(
                        "SET random_page_cost = 1.1; SET plan_cache_mode = force_generic_plan; \
                         SET idle_in_transaction_session_timeout = '30s'",
                    )
                    .await?;
                    if statements == Statements::Bounded {
                        conn.execute(STATEMENT_TIMEOUT).await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await
}

fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!("SQLite needs a file path (services share it between connections): {url:?}");
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let query: Cow<'_, str> = if query.contains("mode=") {
        query.into()
    } else if query.is_empty() {
        "mode=rwc".into()
    } else {
        format!("{query}&mode=rwc").into()
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// The URL a service connects with: named after the service (`application_name`), and
/// in plaintext unless TLS is asked for.
///
/// Why plaintext unless asked: libpq's default, `sslmode=prefer`, encrypts opportunistically
/// without verifying the server, so it protects against nothing an attacker on the path
/// cannot undo. And with sqlx 0.9.0 it is expensive: sqlx no longer sets TCP_NODELAY
/// (its issue #4335, fixed upstream but not released), so a round trip split into TLS
/// records waits out delayed ACKs. Measured with `agilepm bench` on PostgreSQL: 2,850
/// estimates/s in plaintext, 950 with `prefer`. Ask for TLS with `sslmode=verify-full`
/// (and `sslrootcert`), which verifies the server, or set `PGSSLMODE`.
fn postgres_url(url: &str, service: ServiceName) -> String {
    let mut params = Vec::new();
    if !url.contains("application_name=") {
        params.push(format!("application_name=agilepm-{service}"));
    }
    if !url.contains("sslmode=") && std::env::var_os("PGSSLMODE").is_none() {
        params.push("sslmode=disable".to_owned());
    }
    if params.is_empty() {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{}", params.join("&"))
}

/// No service migrations (for tests of the platform alone).
pub static NO_MIGRATIONS: Migrations = Migrations {
    sqlite: &EMPTY,
    postgres: &EMPTY,
};
static EMPTY: Migrator = sqlx::migrate!("./migrations/none");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file() {
        assert_eq!(
            sqlite_url("sqlite://data/task.db").unwrap(),
            "sqlite://data/task.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url("sqlite:x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
        assert!(sqlite_url("sqlite::memory:").is_err());
    }

    #[test]
    fn engines_are_recognised() {
        assert_eq!(
            Engine::of_url("postgres://root@localhost/test").unwrap(),
            Engine::Postgres
        );
        assert_eq!(Engine::of_url("sqlite://a.db").unwrap(), Engine::Sqlite);
        assert!(Engine::of_url("mysql://x").is_err());
    }
}

/// `url` fit for a log line or an error message: the password (in the authority, or a
/// `password=` parameter) replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => base.to_owned(),
                },
                None => base.to_owned(),
            }
        }
        // Not a URL we can take apart: show none of it rather than risk a password.
        None => return "(a malformed URL, not shown)".to_owned(),
    };
    match query {
        None => base,
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::{postgres_url, redacted_url};
    use crate::domain::service_name::ServiceName;

    #[test]
    fn postgres_connections_are_named_and_use_tls_only_when_asked() {
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        assert_eq!(
            postgres_url("postgres://root@h/db", ServiceName::Task),
            "postgres://root@h/db?application_name=agilepm-task&sslmode=disable"
        );
        assert_eq!(
            postgres_url(
                "postgres://root@h/db?sslmode=verify-full",
                ServiceName::Task
            ),
            "postgres://root@h/db?sslmode=verify-full&application_name=agilepm-task"
        );
    }

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redacted_url("postgres://app:hunter2@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://db/x?user=app&password=hunter2"),
            "postgres://db/x?user=app&password=***"
        );
        assert_eq!(
            redacted_url("postgres://root@127.0.0.1/test"),
            "postgres://root@127.0.0.1/test"
        );
        assert_eq!(
            redacted_url("sqlite://data/task.db"),
            "sqlite://data/task.db"
        );
        assert_eq!(
            redacted_url("post:gres:hunter2@x"),
            "(a malformed URL, not shown)"
        );
    }
}
