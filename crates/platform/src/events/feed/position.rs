//! Feed positions: opaque to clients, totally ordered, resumable.
//!
//! A position is `<feed id>.<txid>.<seq>`. The feed id is random per database, so a
//! position from another service's feed (or another database) is refused rather than
//! silently misread. `txid` is the writing transaction's id on PostgreSQL and always 0 on
//! SQLite; events are ordered by `(txid, seq)`.

use crate::domain::error::{AppError, AppResult, shown};

/// A place in one feed: the event at `(txid, seq)`, or the beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Writing transaction id (PostgreSQL) or 0 (SQLite).
    pub txid: i64,
    /// Sequence number within the outbox.
    pub seq: i64,
}

impl Position {
    /// Before the first event.
    pub const START: Position = Position { txid: 0, seq: 0 };

    /// Renders the position for clients of the feed `feed_id`.
    pub fn encode(self, feed_id: &str) -> String {
        format!("{feed_id}.{}.{}", self.txid, self.seq)
    }

    /// Parses a client-supplied position for feed `feed_id`; empty means the start.
    pub fn parse(field: &str, token: &str, feed_id: &str) -> AppResult<Position> {
        if token.is_empty() {
            return Ok(Position::START);
        }
        let mut parts = token.split('.');
        let (Some(id), Some(txid), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AppError::invalid(
                field,
                format!("malformed feed position {}", shown(token)),
            ));
        };
        if id != feed_id {
            return Err(AppError::invalid(
                field,
                format!(
                    "position {} was issued by another feed (this feed is {feed_id})",
                    shown(token)
                ),
            ));
        }
        let number = |text: &str| {
            text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                AppError::invalid(field, format!("malformed feed position {}", shown(token)))
            })
        };
        Ok(Position {
            txid: number(txid)?,
            seq: number(seq)?,
        })
    }
}

/// The place in feed order of a position token from any feed (`<feed>.<txid>.<seq>`;
/// empty or malformed: the start), for agilepm's own consumers, which may read the token
/// that is opaque to others (to keep a checkpoint or a reported position moving only
/// forward).
pub fn feed_order(token: &str) -> Position {
    let mut parts = token.rsplit('.');
    let seq = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let txid = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Position { txid, seq }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order() {
        let a = Position { txid: 7, seq: 90 };
        let b = Position { txid: 8, seq: 3 };
        assert!(a < b, "ordered by transaction first");
        assert_eq!(Position::parse("p", &a.encode("f1"), "f1").unwrap(), a);
        assert_eq!(Position::parse("p", "", "f1").unwrap(), Position::START);
        assert_eq!(feed_order(&a.encode("f1")), a);
        assert!(feed_order("f1.7.90") < feed_order("f1.8.3"));
        assert_eq!(feed_order(""), Position::START);
    }

    #[test]
    fn malformed_and_foreign_positions_are_refused() {
        for bad in ["x", "f1.1", "f1.1.2.3", "f1.-1.2", "f1.a.2"] {
            assert!(
                Position::parse("after_position", bad, "f1").is_err(),
                "{bad}"
            );
        }
        let err = Position::parse("after_position", "f2.1.2", "f1").unwrap_err();
        assert!(err.to_string().contains("another feed"));
    }
}
