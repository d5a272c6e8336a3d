//! Between products and their protobuf messages.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::backlog::v1::ProductFacts;
use agilepm_proto::planning::v1 as proto;

use super::domain::{Product, TransitionMode};

/// `product` as responses and events carry it.
pub fn product_message(product: &Product) -> proto::Product {
    proto::Product {
        id: product.id.clone(),
        tenant_id: product.tenant_id.clone(),
        name: product.name.clone(),
        description: product.description.clone(),
        product_owner_id: product.product_owner_id.clone(),
        status_transition_mode: product.transition_mode.number(),
        version: product.version,
        create_time: Some(timestamp(product.create_time_us)),
        update_time: Some(timestamp(product.update_time_us)),
    }
}

/// What the backlog-item service records of `product`.
pub fn facts(product: &Product) -> ProductFacts {
    ProductFacts {
        product_id: product.id.clone(),
        status_transition_mode: product.transition_mode.number(),
        product_version: product.version,
    }
}

/// A request's transition mode in `field`; unset means AUTOMATIC.
pub fn transition_mode(field: &str, value: i32) -> AppResult<TransitionMode> {
    match value {
        0 => Ok(TransitionMode::Automatic),
        _ => TransitionMode::try_from(value)
            .map_err(|_| AppError::invalid(field, format!("unknown mode {value}"))),
    }
}
