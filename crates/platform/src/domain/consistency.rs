//! Consistency tokens: read-your-write across the task and backlog-item services.
//!
//! Every task mutation that moves a backlog item's task totals answers a token naming
//! the item and the totals revision it produced. A backlog-item read given the token
//! waits until the item has applied that revision (the coordinator carries it over) or
//! the call's deadline passes: a deterministic wait, never a stale answer. The token is
//! opaque to clients; its format is `v1.<backlog item id>.<revision>`.

use uuid::Uuid;

use crate::domain::error::{AppError, AppResult};

/// What a token asks for: item `backlog_item_id` at task revision `revision` or later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The backlog item.
    pub backlog_item_id: String,
    /// The task totals revision the item must have applied.
    pub revision: i64,
}

/// The token of item `backlog_item_id` at `revision`.
pub fn encode(backlog_item_id: &str, revision: i64) -> String {
    format!("v1.{backlog_item_id}.{revision}")
}

/// Parses the token in request field `field`; empty means none.
pub fn decode(field: &str, token: &str) -> AppResult<Option<Token>> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        AppError::invalid(
            field,
            "not a consistency token; pass one a task mutation answered, unchanged",
        )
    };
    let mut parts = token.splitn(3, '.');
    let (Some("v1"), Some(item), Some(revision)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let item = Uuid::parse_str(item).map_err(|_| malformed())?;
    let revision: i64 = revision.parse().map_err(|_| malformed())?;
    if revision < 0 {
        return Err(malformed());
    }
    Ok(Some(Token {
        backlog_item_id: item.to_string(),
        revision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let item = "0190c3b4-5f1e-7cc0-a000-000000000001";
        let token = decode("t", &encode(item, 42)).unwrap().unwrap();
        assert_eq!((token.backlog_item_id.as_str(), token.revision), (item, 42));
        assert_eq!(decode("t", "").unwrap(), None);
        for bad in [
            "v2.x.1",
            "v1.not-a-uuid.1",
            &format!("v1.{item}.-1"),
            &format!("v1.{item}"),
        ] {
            let error = decode("t", bad).unwrap_err();
            assert!(error.to_string().starts_with("t: "), "{error}");
        }
    }
}
