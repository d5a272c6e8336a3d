//! The SQLite and PostgreSQL migration folders of each service cannot drift apart: both
//! are applied to fresh databases and the resulting schemas compared — tables, columns
//! (name, kind, nullability), primary keys, indexes (name, uniqueness, columns in order)
//! and foreign keys. The few differences the engines need are listed, each with its why.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::{Db, Engine};
use agilepm_testkit::TestDb;
use sqlx::Row;

/// One table as both engines can describe it.
#[derive(Debug, PartialEq, Eq, Default)]
struct Table {
    /// Column name -> (kind, NOT NULL).
    columns: BTreeMap<String, (Kind, bool)>,
    primary_key: Vec<String>,
    /// Index name -> (unique, columns in order). Primary-key indexes are left out.
    indexes: BTreeMap<String, (bool, Vec<String>)>,
    /// (columns, referenced table, referenced columns).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
}

/// What a column holds, across the engines' type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Text,
    Integer,
    Real,
    Bytes,
    Boolean,
}

fn kind(declared: &str) -> Kind {
    let declared = declared.to_ascii_lowercase();
    match declared.as_str() {
        "text" | "character varying" | "varchar" | "uuid" | "date" => Kind::Text,
        "bigint" | "integer" | "int" | "int8" | "int4" | "smallint" | "bigserial" => Kind::Integer,
        "real" | "double precision" | "double" | "float8" => Kind::Real,
        "blob" | "bytea" => Kind::Bytes,
        "boolean" | "bool" => Kind::Boolean,
        other => panic!("a column type the comparison does not know: {other}"),
    }
}

/// Columns the engines need to differ in, by table: compared away, from the columns, the
/// primary key and the indexes that hold them (an index keeps its other columns).
/// - The outbox's order: SQLite numbers events by an AUTOINCREMENT `position` (commits
///   are serial, so it is gap-safe); PostgreSQL orders by the writing transaction and a
///   sequence (`txid`, `seq`), read below a settle horizon (feed/reader.rs).
const ENGINE_SPECIFIC_COLUMNS: &[(&str, &str)] = &[
    ("outbox", "position"),
    ("outbox", "txid"),
    ("outbox", "seq"),
];

async fn sqlite_schema(db: &Db) -> BTreeMap<String, Table> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut tables = BTreeMap::new();
    for name in names {
        let mut table = Table::default();
        let columns = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{name}')"
        )))
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mut primary_key = Vec::new();
        for column in columns {
            let column_name: String = column.get("name");
            let declared: String = column.get("type");
            let not_null: i64 = column.get("notnull");
            let pk: i64 = column.get("pk");
            // SQLite lets a primary-key column be NULL unless declared NOT NULL;
            // PostgreSQL never does. Compare what the data can hold in practice.
            table.columns.insert(
                column_name.clone(),
                (kind(&declared), not_null == 1 || pk > 0),
            );
            if pk > 0 {
                primary_key.push((pk, column_name));
            }
        }
        primary_key.sort();
        table.primary_key = primary_key.into_iter().map(|(_, c)| c).collect();
        let indexes = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name, \"unique\", origin FROM pragma_index_list('{name}')"
        )))
        .fetch_all(db.pool())
        .await
        .unwrap();
        for index in indexes {
            let index_name: String = index.get("name");
            let unique: i64 = index.get("unique");
            let origin: String = index.get("origin");
            if origin == "pk" {
                continue;
            }
            let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_index_info('{index_name}') ORDER BY seqno"
            )))
            .fetch_all(db.pool())
            .await
            .unwrap();
            // A UNIQUE constraint's automatic index has an engine-made name: name it
            // by its columns, as the PostgreSQL side does.
            let key = if origin == "u" {
                format!("unique({})", columns.join(","))
            } else {
                index_name
            };
            table.indexes.insert(key, (unique == 1, columns));
        }
        let keys = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, \"table\" AS target, \"from\" AS source, \"to\" AS referenced \
             FROM pragma_foreign_key_list('{name}') ORDER BY id, seq"
        )))
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, (Vec<String>, String, Vec<String>)> = BTreeMap::new();
        for key in keys {
            let entry = by_id
                .entry(key.get("id"))
                .or_insert_with(|| (Vec::new(), key.get::<String, _>("target"), Vec::new()));
            entry.0.push(key.get("source"));
            entry.2.push(key.get("referenced"));
        }
        table.foreign_keys = by_id.into_values().collect();
        tables.insert(name, table);
    }
    tables
}

async fn postgres_schema(db: &Db) -> BTreeMap<String, Table> {
    let pool = db.pool();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name NOT LIKE '_sqlx_%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut tables = BTreeMap::new();
    for name in names {
        let mut table = Table::default();
        let columns = sqlx::query(
            "SELECT column_name::text AS name, data_type::text AS type, \
             (is_nullable = 'NO') AS not_null FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for column in columns {
            let declared: String = column.get("type");
            table.columns.insert(
                column.get("name"),
                (kind(&declared), column.get::<bool, _>("not_null")),
            );
        }
        // Every index with its columns in order, and whether it backs the primary key.
        let indexes = sqlx::query(
            "SELECT index.relname::text AS name, pg_index.indisunique AS is_unique, \
                    pg_index.indisprimary AS is_primary, \
                    (SELECT string_agg(attribute.attname::text, ',' ORDER BY key.ordinality) \
                       FROM unnest(pg_index.indkey) WITH ORDINALITY AS key(number, ordinality) \
                       JOIN pg_attribute AS attribute \
                         ON attribute.attrelid = pg_index.indrelid \
                        AND attribute.attnum = key.number) AS columns, \
                    EXISTS (SELECT 1 FROM pg_constraint \
                             WHERE conindid = pg_index.indexrelid AND contype = 'u') \
                      AS is_constraint \
               FROM pg_index \
               JOIN pg_class AS index ON index.oid = pg_index.indexrelid \
               JOIN pg_class AS owner ON owner.oid = pg_index.indrelid \
              WHERE owner.relname = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for index in indexes {
            let columns: Vec<String> = index
                .get::<String, _>("columns")
                .split(',')
                .map(str::to_owned)
                .collect();
            if index.get::<bool, _>("is_primary") {
                table.primary_key = columns;
                continue;
            }
            let key = if index.get::<bool, _>("is_constraint") {
                format!("unique({})", columns.join(","))
            } else {
                index.get("name")
            };
            table
                .indexes
                .insert(key, (index.get::<bool, _>("is_unique"), columns));
        }
        let keys = sqlx::query(
            "SELECT (SELECT string_agg(attribute.attname::text, ',' ORDER BY key.ordinality) \
                       FROM unnest(constraint_.conkey) WITH ORDINALITY AS key(number, ordinality) \
                       JOIN pg_attribute AS attribute \
                         ON attribute.attrelid = constraint_.conrelid \
                        AND attribute.attnum = key.number) AS source, \
                    target.relname::text AS target, \
                    (SELECT string_agg(attribute.attname::text, ',' ORDER BY key.ordinality) \
                       FROM unnest(constraint_.confkey) WITH ORDINALITY AS key(number, ordinality) \
                       JOIN pg_attribute AS attribute \
                         ON attribute.attrelid = constraint_.confrelid \
                        AND attribute.attnum = key.number) AS referenced \
               FROM pg_constraint AS constraint_ \
               JOIN pg_class AS owner ON owner.oid = constraint_.conrelid \
               JOIN pg_class AS target ON target.oid = constraint_.confrelid \
              WHERE constraint_.contype = 'f' AND owner.relname = $1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap();
        for key in keys {
            let split = |column: &str| -> Vec<String> {
                key.get::<String, _>(column)
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            };
            table
                .foreign_keys
                .insert((split("source"), key.get("target"), split("referenced")));
        }
        tables.insert(name, table);
    }
    tables
}

/// Removes what [`ENGINE_SPECIFIC_COLUMNS`] allows to differ.
fn comparable(mut tables: BTreeMap<String, Table>) -> BTreeMap<String, Table> {
    for (table, column) in ENGINE_SPECIFIC_COLUMNS {
        if let Some(table) = tables.get_mut(*table) {
            table.columns.remove(*column);
            table.primary_key.retain(|c| c != column);
            for (_, columns) in table.indexes.values_mut() {
                columns.retain(|c| c != column);
            }
            table.indexes.retain(|_, (_, columns)| !columns.is_empty());
        }
    }
    tables
}

async fn schemas(spec: &ServiceSpec) -> (BTreeMap<String, Table>, BTreeMap<String, Table>) {
    let sqlite = TestDb::create(Engine::Sqlite).await;
    let sqlite_db = sqlite.connect(spec.migrations).await;
    let postgres = TestDb::create(Engine::Postgres).await;
    let postgres_db = postgres.connect(spec.migrations).await;
    let result = (
        comparable(sqlite_schema(&sqlite_db).await),
        comparable(postgres_schema(&postgres_db).await),
    );
    sqlite_db.close().await;
    postgres_db.close().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_migrate_every_service_to_the_same_schema() {
    agilepm_testkit::init();
    if agilepm_testkit::postgres_admin_url().is_none() {
        return;
    }
    for spec in [
        &agilepm_backlog_item::SPEC,
        &agilepm_task::SPEC,
        &agilepm_planning::SPEC,
        &agilepm_coordinator::SPEC,
    ] {
        let (sqlite, postgres) = schemas(spec).await;
        assert!(!sqlite.is_empty(), "{}: no tables", spec.name);
        let names = |tables: &BTreeMap<String, Table>| tables.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&sqlite), names(&postgres), "{}: tables", spec.name);
        for (name, table) in &sqlite {
            assert_eq!(
                table, &postgres[name],
                "{}: table {name}, SQLite (left) and PostgreSQL (right)",
                spec.name
            );
        }
    }
}
