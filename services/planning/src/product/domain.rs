//! The Product aggregate, free of I/O and of protobuf.

use agilepm_platform::numbered_enum;

numbered_enum! {
    /// How a product's items move once all their tasks are finished.
    pub enum TransitionMode {
        /// They become DONE by themselves.
        Automatic = 1,
        /// They await the product owner's acceptance.
        Manual = 2,
    }
}

/// A product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Description.
    pub description: String,
    /// Its product owner, empty if none.
    pub product_owner_id: String,
    /// How its finished items move.
    pub transition_mode: TransitionMode,
    /// Optimistic concurrency version.
    pub version: i64,
    /// Created (µs).
    pub create_time_us: i64,
    /// Last changed (µs).
    pub update_time_us: i64,
}

/// A checked change of one field (an update mask's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New name.
    Name(String),
    /// New description.
    Description(String),
    /// New product owner; empty for none.
    ProductOwner(String),
    /// New transition mode.
    TransitionMode(TransitionMode),
}

/// `before` with `changes`.
pub fn update(before: &Product, changes: &[Change]) -> Product {
    let mut after = before.clone();
    for change in changes {
        match change.clone() {
            Change::Name(name) => after.name = name,
            Change::Description(description) => after.description = description,
            Change::ProductOwner(owner) => after.product_owner_id = owner,
            Change::TransitionMode(mode) => after.transition_mode = mode,
        }
    }
    after
}

/// Whether a change from `before` to `after` touched what `ProductUpdated` carries (the
/// transition mode has an event of its own).
pub fn described_differently(before: &Product, after: &Product) -> bool {
    (&after.name, &after.description, &after.product_owner_id)
        != (&before.name, &before.description, &before.product_owner_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: "p".into(),
            tenant_id: "t".into(),
            name: "Backlog".into(),
            description: String::new(),
            product_owner_id: String::new(),
            transition_mode: TransitionMode::Automatic,
            version: 1,
            create_time_us: 1,
            update_time_us: 1,
        }
    }

    #[test]
    fn a_mode_switch_alone_is_no_description_change() {
        let before = product();
        let manual = update(&before, &[Change::TransitionMode(TransitionMode::Manual)]);
        assert_eq!(manual.transition_mode, TransitionMode::Manual);
        assert!(!described_differently(&before, &manual));
        let renamed = update(&before, &[Change::Name("Roadmap".into())]);
        assert!(described_differently(&before, &renamed));
        assert_eq!(update(&before, &[Change::Name("Backlog".into())]), before);
    }

    #[test]
    fn later_changes_of_a_mask_win() {
        let before = product();
        let after = update(
            &before,
            &[
                Change::ProductOwner("alice".into()),
                Change::ProductOwner(String::new()),
            ],
        );
        assert_eq!(after, before);
    }
}
