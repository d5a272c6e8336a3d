//! Which events a subscription wants: its caller's tenants, and optionally some event
//! types and aggregate ids. Checked by the hub per batch (to deliver only batches the
//! subscriber may want) and by the subscriber per event.

use std::collections::HashSet;

use crate::events::feed::StoredEvent;
use crate::events::feed::hub::Batch;
use crate::wire::auth::Caller;

/// A subscription's filter.
pub struct Filter {
    /// Who subscribes: the tenants it may see.
    pub caller: Caller,
    /// Wanted event types; empty for all.
    pub event_types: HashSet<String>,
    /// Wanted aggregates; empty for all.
    pub aggregate_ids: HashSet<String>,
}

impl Filter {
    /// The tenant whose events the subscription sees, or `None` for every tenant.
    pub fn tenant(&self) -> Option<&str> {
        feed_tenant(&self.caller)
    }

    /// Whether any event of `batch` may pass. The batch's distinct types are compared
    /// first: a few lookups rule out most batches for a subscriber filtering on types.
    pub fn may_admit_any(&self, batch: &Batch) -> bool {
        let typed = self.event_types.is_empty()
            || batch
                .event_types
                .iter()
                .any(|event_type| self.event_types.contains(event_type));
        typed && (self.aggregate_ids.is_empty() || batch.events.iter().any(|e| self.admits(e)))
    }

    /// Whether `event` passes.
    pub fn admits(&self, event: &StoredEvent) -> bool {
        self.caller.may_see(&event.tenant_id)
            && self.tenant().is_none_or(|tenant| tenant == event.tenant_id)
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.aggregate_ids.is_empty() || self.aggregate_ids.contains(&event.aggregate_id))
    }
}

/// The tenant whose feed `caller` reads: a person's own; the one a system operator names
/// for the call (the `x-agilepm-tenant` header), narrowing the feed to it; every tenant
/// (`None`) for an operator naming none and for agilepm's own followers.
pub fn feed_tenant(caller: &Caller) -> Option<&str> {
    match caller.service_name() {
        Some(_) => None,
        None => caller.tenant().ok(),
    }
}
