//! A list stored in a table and ordered by [`rank`](crate::domain::rank) keys within a tenant's
//! product: a product backlog, a product's use cases. Every such table has `id`,
//! `tenant_id`, `product_id` and `rank` columns and a unique index on
//! `(tenant_id, product_id, rank)`: a list never reaches into another tenant's rows, even
//! under a product id that tenant also uses.
//!
//! Placing a row writes that row only, except when repeated moves into one gap have
//! grown the key past [`MAX_KEY_LEN`](crate::domain::rank::MAX_KEY_LEN): then the whole list is
//! respaced once, in order, inside the caller's transaction.

use sqlx::AnyConnection;

use crate::domain::rank;

/// The statements of one ranked table, built at compile time by [`ranked_list!`]
/// (so no SQL is assembled at run time).
pub struct RankedList {
    #[doc(hidden)]
    pub table: &'static str,
    #[doc(hidden)]
    pub last: &'static str,
    #[doc(hidden)]
    pub before: &'static str,
    #[doc(hidden)]
    pub after: &'static str,
    #[doc(hidden)]
    pub ids_in_order: &'static str,
    #[doc(hidden)]
    pub park_all: &'static str,
    #[doc(hidden)]
    pub set_rank: &'static str,
}

/// The [`RankedList`] of a table, e.g. `ranked_list!("use_cases")`.
#[macro_export]
macro_rules! ranked_list {
    ($table:literal) => {
        $crate::storage::ranked::RankedList {
            table: $table,
            last: concat!(
                "SELECT rank FROM ",
                $table,
                " WHERE tenant_id = $1 AND product_id = $2 ORDER BY rank DESC LIMIT 1"
            ),
            before: concat!(
                "SELECT rank FROM ",
                $table,
                " WHERE tenant_id = $1 AND product_id = $2 AND rank < $3 AND id <> $4 \
                 ORDER BY rank DESC LIMIT 1"
            ),
            after: concat!(
                "SELECT rank FROM ",
                $table,
                " WHERE tenant_id = $1 AND product_id = $2 AND rank > $3 AND id <> $4 \
                 ORDER BY rank LIMIT 1"
            ),
            ids_in_order: concat!(
                "SELECT id FROM ",
                $table,
                " WHERE tenant_id = $1 AND product_id = $2 ORDER BY rank"
            ),
            // Temporary keys sort after every real key ('~' > 'z'), so the unique index
            // never sees a collision while the list is rewritten.
            park_all: concat!(
                "UPDATE ",
                $table,
                " SET rank = '~' || id WHERE tenant_id = $1 AND product_id = $2"
            ),
            set_rank: concat!("UPDATE ", $table, " SET rank = $1 WHERE id = $2"),
        }
    };
}

/// Where a row goes, relative to another row of the same list.
#[derive(Debug, Clone, Copy)]
pub struct Anchor<'a> {
    /// The other row's id.
    pub id: &'a str,
    /// The other row's current rank.
    pub rank: &'a str,
    /// Directly before it (`true`) or directly after it.
    pub before: bool,
}

impl RankedList {
    /// The key of a row appended at the end of `tenant_id`'s `product_id` list.
    pub async fn key_at_end(
        &self,
        conn: &mut AnyConnection,
        tenant_id: &str,
        product_id: &str,
    ) -> Result<String, sqlx::Error> {
        let last: Option<String> = sqlx::query_scalar(self.last)
            .bind(tenant_id)
            .bind(product_id)
            .fetch_optional(conn)
            .await?;
        Ok(rank::between(last.as_deref(), None))
    }

    /// The key that puts row `moving_id` (now at `moving_key`) next to `anchor`. Run it
    /// in the write transaction that then stores the key on the row: if the list had to
    /// be respaced, the returned key is the one the respacing already gave the row. A row
    /// already in that place keeps its key, so a repeated move changes nothing.
    pub async fn key_next_to(
        &self,
        conn: &mut AnyConnection,
        tenant_id: &str,
        product_id: &str,
        (moving_id, moving_key): (&str, &str),
        anchor: Anchor<'_>,
    ) -> Result<String, sqlx::Error> {
        let sql = if anchor.before {
            self.before
        } else {
            self.after
        };
        let neighbour: Option<String> = sqlx::query_scalar(sql)
            .bind(tenant_id)
            .bind(product_id)
            .bind(anchor.rank)
            .bind(moving_id)
            .fetch_optional(&mut *conn)
            .await?;
        let (low, high) = if anchor.before {
            (neighbour.as_deref(), Some(anchor.rank))
        } else {
            (Some(anchor.rank), neighbour.as_deref())
        };
        let already_there = low.is_none_or(|low| low < moving_key)
            && high.is_none_or(|high| moving_key < high)
            && moving_id != anchor.id;
        if already_there {
            return Ok(moving_key.to_owned());
        }
        let key = rank::between(low, high);
        if key.len() <= rank::MAX_KEY_LEN {
            return Ok(key);
        }
        // Too many moves into one gap: respace the whole list with the row in place.
        let mut order: Vec<String> = sqlx::query_scalar(self.ids_in_order)
            .bind(tenant_id)
            .bind(product_id)
            .fetch_all(&mut *conn)
            .await?;
        order.retain(|other| other != moving_id);
        let at = order
            .iter()
            .position(|other| other == anchor.id)
            .unwrap_or(order.len());
        order.insert(
            if anchor.before { at } else { at + 1 },
            moving_id.to_owned(),
        );
        sqlx::query(self.park_all)
            .bind(tenant_id)
            .bind(product_id)
            .execute(&mut *conn)
            .await?;
        let mut moved_key = String::new();
        for (id, key) in order.iter().zip(rank::spread(order.len())) {
            sqlx::query(self.set_rank)
                .bind(&key)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if id == moving_id {
                moved_key = key;
            }
        }
        tracing::info!(table = self.table, %product_id, rows = order.len(), "respaced rank keys");
        Ok(moved_key)
    }
}
