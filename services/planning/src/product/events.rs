//! Every event of the Product aggregate, built once.

use agilepm_platform::storage::outbox::{NewEvent, Subject};
use agilepm_proto::planning::v1::{ProductCreated, ProductTransitionModeChanged, ProductUpdated};

use super::domain::{self, Product};
use super::mapping::product_message;

/// Where a product's events go in the outbox.
pub fn subject(product: &Product) -> Subject<'_> {
    Subject {
        aggregate_type: "Product",
        aggregate_id: &product.id,
        tenant_id: &product.tenant_id,
    }
}

/// `product` was created.
pub fn created(product: &Product) -> NewEvent<'_> {
    let event = ProductCreated {
        product: Some(product_message(product)),
    };
    NewEvent::of(subject(product), &event)
}

/// The events of a change from `before` to `after`: its description, then its mode.
pub fn changed<'a>(before: &Product, after: &'a Product) -> Vec<NewEvent<'a>> {
    let mut events = Vec::new();
    if domain::described_differently(before, after) {
        let event = ProductUpdated {
            product: Some(product_message(after)),
        };
        events.push(NewEvent::of(subject(after), &event));
    }
    if after.transition_mode != before.transition_mode {
        let event = ProductTransitionModeChanged {
            product_id: after.id.clone(),
            tenant_id: after.tenant_id.clone(),
            status_transition_mode: after.transition_mode.number(),
        };
        events.push(NewEvent::of(subject(after), &event));
    }
    events
}
