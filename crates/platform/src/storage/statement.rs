//! SQL statements assembled in parts: each part appends its text and binds its values,
//! and placeholders are numbered across the parts in the order they are placed, so that
//! parts written separately (a table's rows, the outbox's events) combine into one
//! statement.
//!
//! Many rows go in as a [`RowSet`]. On PostgreSQL it is bound as one array per column
//! and unnested, so the statement's text does not depend on how many rows it carries:
//! PostgreSQL parses and plans it once per connection instead of once per batch size
//! (measured: planning was ~30% of the database's time for an estimate batch). SQLite
//! takes a `VALUES` list; both name the columns `v.column1`, `v.column2`, ...

use sqlx::Arguments;
use sqlx::any::{Any, AnyArguments};
use sqlx::encode::Encode;
use sqlx::types::Type;

use crate::domain::error::{AppError, AppResult};
use crate::storage::db::Engine;

/// One column of a [`RowSet`]: its values, one per row.
pub enum Column {
    /// Text, `None` for NULL.
    Text(Vec<Option<String>>),
    /// 64-bit integers.
    BigInt(Vec<i64>),
    /// Bytes.
    Bytes(Vec<Vec<u8>>),
}

impl Column {
    /// A text column without NULLs.
    pub fn text<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Column {
        Column::Text(values.into_iter().map(|v| Some(v.into())).collect())
    }

    fn len(&self) -> usize {
        match self {
            Column::Text(values) => values.len(),
            Column::BigInt(values) => values.len(),
            Column::Bytes(values) => values.len(),
        }
    }

    /// The column as a PostgreSQL array literal and the cast that reads it.
    fn postgres_array(&self) -> (String, &'static str) {
        fn quoted(text: &str) -> String {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        }
        let elements: Vec<String> = match self {
            Column::Text(values) => values
                .iter()
                .map(|v| v.as_deref().map_or_else(|| "NULL".to_owned(), quoted))
                .collect(),
            Column::BigInt(values) => values.iter().map(i64::to_string).collect(),
            Column::Bytes(values) => values
                .iter()
                .map(|bytes| {
                    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    quoted(&format!("\\x{hex}"))
                })
                .collect(),
        };
        let cast = match self {
            Column::Text(_) => "TEXT[]",
            Column::BigInt(_) => "BIGINT[]",
            Column::Bytes(_) => "BYTEA[]",
        };
        (format!("{{{}}}", elements.join(",")), cast)
    }
}

/// Rows given column by column, all columns of one length.
pub struct RowSet(pub Vec<Column>);

/// SQL text and its bound values, placeholders numbered in the order values are bound.
pub struct Statement {
    engine: Engine,
    sql: String,
    args: AnyArguments,
    placeholders: usize,
    bind_error: Option<String>,
}

impl Statement {
    /// An empty statement for `engine`.
    pub fn new(engine: Engine) -> Statement {
        Statement {
            engine,
            sql: String::new(),
            args: AnyArguments::default(),
            placeholders: 0,
            bind_error: None,
        }
    }

    /// Appends `rows` as a table named `v` with columns `column1`, `column2`, ..., for
    /// `FROM` (`UPDATE t SET ... FROM <rows> WHERE t.id = v.column1`) or an insert
    /// (`INSERT INTO t (...) SELECT * FROM <rows> WHERE true ON CONFLICT ...`: SQLite
    /// needs the `WHERE` to read `ON CONFLICT` as the insert's). At least one row.
    pub fn rows(&mut self, rows: RowSet) -> &mut Self {
        let RowSet(columns) = rows;
        let count = columns.first().map_or(0, Column::len);
        if columns.iter().any(|c| c.len() != count) && self.bind_error.is_none() {
            self.bind_error = Some("a row set's columns differ in length".into());
        }
        match self.engine {
            Engine::Postgres => {
                self.sql.push_str("unnest(");
                let mut names = Vec::new();
                for (i, column) in columns.iter().enumerate() {
                    let (array, cast) = column.postgres_array();
                    if i > 0 {
                        self.sql.push_str(", ");
                    }
                    self.sql.push_str("CAST(");
                    self.placeholder().bind(array);
                    self.sql.push_str(&format!(" AS {cast})"));
                    names.push(format!("column{}", i + 1));
                }
                self.sql.push_str(&format!(") AS v({})", names.join(", ")));
            }
            Engine::Sqlite => {
                self.sql.push_str("(VALUES ");
                self.value_rows(count, columns.len());
                self.sql.push_str(") AS v");
                for row in 0..count {
                    for column in &columns {
                        match column {
                            Column::Text(values) => self.bind(values[row].clone()),
                            Column::BigInt(values) => self.bind(values[row]),
                            Column::Bytes(values) => self.bind(values[row].clone()),
                        };
                    }
                }
            }
        }
        self
    }

    /// Appends a condition that `column` is one of `values` (at least one), bound as one
    /// array on PostgreSQL for the same reason as [`Statement::rows`].
    pub fn any_of(&mut self, column: &str, values: &[&str]) -> &mut Self {
        self.sql.push_str(column);
        match self.engine {
            Engine::Postgres => {
                let (array, cast) = Column::text(values.iter().copied()).postgres_array();
                self.sql.push_str(" = ANY(CAST(");
                self.placeholder().bind(array);
                self.sql.push_str(&format!(" AS {cast}))"));
            }
            Engine::Sqlite => {
                self.sql.push_str(" IN ");
                self.value_rows(1, values.len());
                for value in values {
                    self.bind((*value).to_owned());
                }
            }
        }
        self
    }

    /// Appends SQL text. Only fixed text and generated placeholders belong here: every
    /// value is bound.
    pub fn sql(&mut self, text: &str) -> &mut Self {
        self.sql.push_str(text);
        self
    }

    /// Appends `rows` parenthesised rows of `columns` placeholders each, numbered after
    /// those already placed; bind their values row by row.
    pub fn value_rows(&mut self, rows: usize, columns: usize) -> &mut Self {
        let first = self.placeholders + 1;
        self.sql.push_str(&value_rows_from(first, rows, columns));
        self.placeholders += rows * columns;
        self
    }

    /// Appends one placeholder.
    pub fn placeholder(&mut self) -> &mut Self {
        self.placeholders += 1;
        self.sql.push_str(&format!("${}", self.placeholders));
        self
    }

    /// Binds the next value.
    pub fn bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'q, Any> + Type<Any> + 'q,
    {
        if let Err(error) = self.args.add(value)
            && self.bind_error.is_none()
        {
            self.bind_error = Some(error.to_string());
        }
        self
    }

    /// The SQL text so far (to `EXPLAIN` it in a test, say).
    pub fn text(&self) -> &str {
        &self.sql
    }

    /// The query, once every placeholder has its value.
    pub fn query(self) -> AppResult<sqlx::query::Query<'static, Any, AnyArguments>> {
        if let Some(error) = self.bind_error {
            return Err(AppError::Internal(format!("cannot bind a value: {error}")));
        }
        if self.args.len() != self.placeholders {
            return Err(AppError::Internal(format!(
                "a statement has {} placeholders and {} values",
                self.placeholders,
                self.args.len()
            )));
        }
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args))
    }
}

/// `rows` parenthesised rows of `columns` numbered placeholders each, from `$first`:
/// `value_rows_from(3, 2, 2)` is `($3, $4), ($5, $6)`. Private: a list's length shapes the
/// statement's text only on SQLite, through [`Statement::rows`] and [`Statement::any_of`].
fn value_rows_from(first: usize, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let start = first + row * columns;
            let row: Vec<String> = (start..start + columns).map(|i| format!("${i}")).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_placeholders_row_by_row() {
        assert_eq!(value_rows_from(1, 1, 1), "($1)");
        assert_eq!(value_rows_from(1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(value_rows_from(1, 0, 3), "");
        assert_eq!(value_rows_from(3, 2, 2), "($3, $4), ($5, $6)");
    }

    #[test]
    fn postgres_arrays_quote_every_element() {
        let text = Column::Text(vec![Some(r#"a"b\c"#.into()), None, Some("{x,y}".into())]);
        assert_eq!(
            text.postgres_array(),
            (r#"{"a\"b\\c",NULL,"{x,y}"}"#.to_owned(), "TEXT[]")
        );
        assert_eq!(
            Column::BigInt(vec![-1, 2]).postgres_array(),
            ("{-1,2}".to_owned(), "BIGINT[]")
        );
        assert_eq!(
            Column::Bytes(vec![vec![0x0a, 0xff], vec![]]).postgres_array(),
            (r#"{"\\x0aff","\\x"}"#.to_owned(), "BYTEA[]")
        );
    }
}
