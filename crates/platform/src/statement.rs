//! SQL statements assembled in parts: each part appends its text and binds its values,
//! and placeholders are numbered across the parts in the order they are placed, so that
//! parts written separately (a table's rows, the outbox's events) combine into one
//! statement.

use sqlx::Arguments;
use sqlx::any::{Any, AnyArguments};
use sqlx::encode::Encode;
use sqlx::types::Type;

use crate::error::{AppError, AppResult};

/// SQL text and its bound values, placeholders numbered in the order values are bound.
#[derive(Default)]
pub struct Statement {
    sql: String,
    args: AnyArguments,
    placeholders: usize,
    bind_error: Option<String>,
}

impl Statement {
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
        self.sql
            .push_str(&crate::db::value_rows_from(first, rows, columns));
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
