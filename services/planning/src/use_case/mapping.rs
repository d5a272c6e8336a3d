//! Between use cases and their protobuf messages.

use agilepm_platform::domain::time::timestamp;
use agilepm_proto::planning::v1 as proto;

use super::domain::UseCase;

/// `use_case` as responses and events carry it.
pub fn use_case_message(use_case: &UseCase) -> proto::UseCase {
    proto::UseCase {
        id: use_case.id.clone(),
        tenant_id: use_case.tenant_id.clone(),
        product_id: use_case.product_id.clone(),
        title: use_case.title.clone(),
        value_statement: use_case.value_statement.clone(),
        rank: use_case.rank.clone(),
        state: use_case.state.number(),
        version: use_case.version,
        create_time: Some(timestamp(use_case.create_time_us)),
        update_time: Some(timestamp(use_case.update_time_us)),
    }
}

/// What the backlog-item service keeps of a use case: that it exists, and its product.
pub fn facts(use_case: &UseCase) -> agilepm_proto::backlog::v1::UseCaseFacts {
    agilepm_proto::backlog::v1::UseCaseFacts {
        use_case_id: use_case.id.clone(),
        product_id: use_case.product_id.clone(),
        use_case_version: use_case.version,
    }
}
