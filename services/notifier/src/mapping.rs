//! Between the notifier's domain and its protobuf messages.

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::timestamp;
use agilepm_proto::notifier::v1 as proto;

use crate::domain::{Delivery, Kind, State, Subscription};

/// A subscription as callers see it: never its secrets.
pub fn subscription_message(s: &Subscription) -> proto::Subscription {
    proto::Subscription {
        subscription_id: s.id.clone(),
        tenant_id: s.tenant_id.clone(),
        target_url: s.target_url.clone(),
        notification_types: s.kinds.iter().map(|k| *k as i32).collect(),
        description: s.description.clone(),
        enabled: s.enabled,
        previous_secret_expire_time: s
            .secrets
            .previous
            .as_ref()
            .and(s.previous_secret_expire_us)
            .map(timestamp),
        create_time: Some(timestamp(s.create_time_us)),
        update_time: Some(timestamp(s.update_time_us)),
        version: s.version,
    }
}

/// A delivery as callers see it.
pub fn delivery_message(d: &Delivery) -> proto::Delivery {
    proto::Delivery {
        delivery_id: d.id.clone(),
        subscription_id: d.subscription_id.clone(),
        tenant_id: d.tenant_id.clone(),
        webhook_id: d.webhook_id.clone(),
        notification_type: d.kind as i32,
        state: d.state as i32,
        attempts: i32::try_from(d.attempts).unwrap_or(i32::MAX),
        next_attempt_time: (d.state == State::Pending).then(|| timestamp(d.next_attempt_us)),
        last_error: d.last_error.clone(),
        last_http_status: i32::try_from(d.last_http_status).unwrap_or(0),
        create_time: Some(timestamp(d.create_time_us)),
        deliver_time: d.deliver_time_us.map(timestamp),
        payload: d.payload.clone(),
    }
}

/// The notification types of field `field`: at least one, each known, none twice.
pub fn kinds(field: &str, values: &[i32]) -> AppResult<Vec<Kind>> {
    if values.is_empty() {
        return Err(AppError::invalid(
            field,
            "name at least one notification type",
        ));
    }
    let mut kinds = Vec::with_capacity(values.len());
    for value in values {
        let kind = Kind::from_number(i64::from(*value)).ok_or_else(|| {
            AppError::invalid(field, format!("{value} is not a notification type"))
        })?;
        if kinds.contains(&kind) {
            return Err(AppError::invalid(
                field,
                format!("{} is named twice", proto_kind_name(kind)),
            ));
        }
        kinds.push(kind);
    }
    kinds.sort();
    Ok(kinds)
}

fn proto_kind_name(kind: Kind) -> &'static str {
    proto::NotificationType::try_from(kind as i32)
        .map_or("NOTIFICATION_TYPE_UNSPECIFIED", |k| k.as_str_name())
}

/// A delivery state filter: `None` for every state.
pub fn state_filter(field: &str, value: i32) -> AppResult<Option<State>> {
    match value {
        0 => Ok(None),
        n => State::from_number(i64::from(n))
            .map(Some)
            .ok_or_else(|| AppError::invalid(field, format!("{n} is not a delivery state"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_types_must_be_known_and_named_once() {
        assert_eq!(
            kinds("t", &[5, 1]).unwrap(),
            vec![Kind::BacklogItemDone, Kind::SprintAtRisk]
        );
        assert!(kinds("t", &[]).is_err());
        assert!(kinds("t", &[0]).is_err());
        assert!(kinds("t", &[8]).is_err());
        let twice = kinds("t", &[1, 1]).unwrap_err();
        assert!(
            twice
                .to_string()
                .contains("NOTIFICATION_TYPE_BACKLOG_ITEM_DONE is named twice")
        );
    }

    #[test]
    fn the_proto_numbers_are_the_domain_numbers() {
        use proto::NotificationType as T;
        let pairs = [
            (Kind::BacklogItemDone, T::BacklogItemDone),
            (Kind::BacklogItemRegressed, T::BacklogItemRegressed),
            (Kind::SprintStarted, T::SprintStarted),
            (Kind::SprintCompleted, T::SprintCompleted),
            (Kind::SprintAtRisk, T::SprintAtRisk),
            (Kind::SprintBackOnTrack, T::SprintBackOnTrack),
            (Kind::TaskImpeded, T::TaskImpeded),
        ];
        assert_eq!(pairs.len(), Kind::ALL.len());
        for (kind, message) in pairs {
            assert_eq!(kind as i32, message as i32, "{kind:?}");
        }
        assert_eq!(State::Pending as i32, proto::DeliveryState::Pending as i32);
        assert_eq!(
            State::Delivered as i32,
            proto::DeliveryState::Delivered as i32
        );
        assert_eq!(State::Dead as i32, proto::DeliveryState::Dead as i32);
    }
}
