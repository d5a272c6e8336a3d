//! The planning game's rules, free of I/O and of protobuf.

use agilepm_platform::domain::error::{AppError, AppResult};

/// Where a backlog item stands, as far as the game cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    /// Still only planned or scheduled: its story may be reshaped.
    Open,
    /// Committed to a sprint, or DONE: its story is settled.
    Settled,
    /// Already removed (by an earlier attempt of the same command, say).
    Removed,
}

/// Whether item `id` may be split or grouped. A removed one may: a retried command finds
/// the originals its first attempt removed.
pub fn reshapeable(id: &str, status: ItemStatus) -> AppResult<()> {
    match status {
        ItemStatus::Open | ItemStatus::Removed => Ok(()),
        ItemStatus::Settled => Err(AppError::precondition(format!(
            "backlog item {id} must be PLANNED or SCHEDULED to be split or grouped"
        ))),
    }
}

/// The summary of a spike investigating the item summarised `summary`, when the caller
/// names none: at most 200 characters, no trailing space.
pub fn spike_summary(summary: &str) -> String {
    let mut default: String = format!("Spike: {summary}").chars().take(200).collect();
    default.truncate(default.trim_end().len());
    default
}

/// Where prioritising puts an item: after the one placed before it, or before the
/// backlog's current top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Directly after this item.
    After(String),
    /// Directly before this item.
    Before(String),
    /// Where it is: it is already the top.
    Stay,
}

/// The place of `id` when `previous` was placed just before it and `top` heads the
/// backlog. Re-running a prioritisation gives the same order.
pub fn place(previous: Option<&str>, top: Option<&str>, id: &str) -> Place {
    match (previous, top) {
        (Some(previous), _) => Place::After(previous.to_owned()),
        (None, Some(top)) if top != id => Place::Before(top.to_owned()),
        (None, _) => Place::Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_or_already_removed_items_are_reshaped() {
        assert!(reshapeable("a", ItemStatus::Open).is_ok());
        assert!(reshapeable("a", ItemStatus::Removed).is_ok());
        let error = reshapeable("a", ItemStatus::Settled).unwrap_err();
        assert!(error.to_string().contains("backlog item a"), "{error}");
    }

    #[test]
    fn a_spike_summary_is_bounded_and_trimmed() {
        assert_eq!(spike_summary("Login"), "Spike: Login");
        let long = "x".repeat(300);
        assert_eq!(spike_summary(&long).chars().count(), 200);
        let spaced = format!("{}  tail", "y".repeat(191));
        assert_eq!(
            spike_summary(&spaced),
            format!("Spike: {}", "y".repeat(191))
        );
    }

    #[test]
    fn prioritised_items_go_to_the_top_in_order() {
        assert_eq!(place(None, Some("t"), "a"), Place::Before("t".into()));
        assert_eq!(place(None, Some("a"), "a"), Place::Stay);
        assert_eq!(place(None, None, "a"), Place::Stay);
        assert_eq!(place(Some("a"), Some("t"), "b"), Place::After("a".into()));
    }
}
