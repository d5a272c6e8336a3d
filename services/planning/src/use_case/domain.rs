//! The UseCase aggregate, free of I/O and of protobuf.

use agilepm_platform::numbered_enum;

numbered_enum! {
    /// Whether a use case is in scope.
    pub enum State {
        /// In scope.
        Active = 1,
        /// Out of scope; kept for history.
        Retired = 2,
    }
}

/// A use case of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseCase {
    /// Id (UUID).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Product.
    pub product_id: String,
    /// Title.
    pub title: String,
    /// Why it matters.
    pub value_statement: String,
    /// Key ordering the product's use cases (ascending).
    pub rank: String,
    /// In scope or retired.
    pub state: State,
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
    /// New title.
    Title(String),
    /// New value statement.
    ValueStatement(String),
}

/// `before` with `changes`.
pub fn update(before: &UseCase, changes: &[Change]) -> UseCase {
    let mut after = before.clone();
    for change in changes {
        match change.clone() {
            Change::Title(title) => after.title = title,
            Change::ValueStatement(value) => after.value_statement = value,
        }
    }
    after
}

/// Takes `before` out of scope (retiring a retired use case changes nothing).
pub fn retire(before: &UseCase) -> UseCase {
    UseCase {
        state: State::Retired,
        ..before.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_case() -> UseCase {
        UseCase {
            id: "u".into(),
            tenant_id: "t".into(),
            product_id: "p".into(),
            title: "Sign up".into(),
            value_statement: String::new(),
            rank: "m".into(),
            state: State::Active,
            version: 1,
            create_time_us: 1,
            update_time_us: 1,
        }
    }

    #[test]
    fn retiring_is_final_and_idempotent() {
        let retired = retire(&use_case());
        assert_eq!(retired.state, State::Retired);
        assert_eq!(retire(&retired), retired);
    }

    #[test]
    fn an_update_changes_only_the_fields_it_names() {
        let before = use_case();
        let after = update(&before, &[Change::ValueStatement("growth".into())]);
        assert_eq!(after.title, before.title);
        assert_eq!(after.value_statement, "growth");
        assert_eq!(update(&before, &[]), before);
    }
}
