//! The notifier's gRPC adapter: subscriptions for a tenant's product owner, deliveries
//! for the product owner and operators. Who may call each method is the platform's
//! access table; here, which tenant's data a caller sees.

use std::sync::Arc;

use agilepm_platform::domain::error::{AppError, AppResult};
use agilepm_platform::domain::time::{micros, now_micros};
use agilepm_platform::domain::{paging, validate};
use agilepm_platform::storage::db::Db;
use agilepm_platform::wire::auth::caller;
use agilepm_proto::notifier::v1::notifier_service_server::NotifierService;
use agilepm_proto::notifier::v1::redeliver_deliveries_request::Target;
use agilepm_proto::notifier::v1::*;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use agilepm_platform::storage::idempotency::{self, Key};

use crate::commands;
use crate::domain::{SigningSecrets, Subscription};
use crate::mapping::{delivery_message, kinds, state_filter, subscription_message};
use crate::signing::new_secret;
use crate::store::{self, DeliveryFilter, Redeliver};
use crate::target::{self, Targets};

/// The longest description, in characters.
const MAX_DESCRIPTION: usize = 256;
/// The longest rotation overlap, in seconds (7 days), and the default (1 day).
const MAX_OVERLAP_SECONDS: i32 = 7 * 86_400;
const DEFAULT_OVERLAP_SECONDS: i32 = 86_400;

/// The notifier's gRPC adapter.
pub struct NotifierApi {
    db: Db,
    targets: Targets,
    /// Told when deliveries become pending (a redelivery).
    deliveries_waiting: Arc<Notify>,
}

impl NotifierApi {
    /// An adapter over `db`, accepting the targets `targets` allows.
    pub fn new(db: Db, targets: Targets, deliveries_waiting: Arc<Notify>) -> NotifierApi {
        NotifierApi {
            db,
            targets,
            deliveries_waiting,
        }
    }

    async fn subscription(&self, tenant: &str, id: &str) -> AppResult<Subscription> {
        let id = validate::uuid("subscription_id", id)?.to_string();
        store::get_subscription(&self.db, Some(tenant), &id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("subscription {id}")))
    }
}

/// The tenant whose deliveries the caller sees: its own, or for a system operator the
/// one it acts for, or every tenant (`None`).
fn delivery_scope<T>(request: &Request<T>) -> AppResult<Option<String>> {
    let caller = caller(request)?;
    if caller.is_all_tenants() {
        Ok(caller.tenant().ok().map(str::to_owned))
    } else {
        Ok(Some(caller.tenant()?.to_owned()))
    }
}

fn description(value: &str) -> AppResult<String> {
    validate::text("description", value, 0, MAX_DESCRIPTION)
}

#[tonic::async_trait]
impl NotifierService for NotifierApi {
    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<CreateSubscriptionResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.notifier.v1.NotifierService/CreateSubscription",
            &r,
        );
        let url = target::parse("target_url", &r.target_url, &self.targets.hosts)?;
        let kinds = kinds("notification_types", &r.notification_types)?;
        let description = description(&r.description)?;
        // Resolved last: bad input is named before anything is looked up.
        self.targets.vet("target_url", &url).await?;
        // A retry returns the first response, its secret included: the caller may never
        // have seen it, and without it the subscription is of no use.
        let response = idempotency::once(&self.db, &key, || async {
            let now = now_micros();
            let secret = new_secret();
            let subscription = Subscription {
                id: uuid::Uuid::now_v7().to_string(),
                tenant_id: tenant.clone(),
                target_url: url.to_string(),
                kinds,
                description,
                enabled: !r.disabled,
                secrets: SigningSecrets {
                    current: secret.clone(),
                    previous: None,
                },
                previous_secret_expire_us: None,
                create_time_us: now,
                update_time_us: now,
                version: 1,
            };
            commands::create(&self.db, &subscription).await?;
            tracing::info!(subscription_id = %subscription.id, "webhook subscription created");
            Ok(CreateSubscriptionResponse {
                subscription: Some(subscription_message(&subscription)),
                signing_secret: secret,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<GetSubscriptionResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let subscription = self
            .subscription(&tenant, &request.get_ref().subscription_id)
            .await?;
        Ok(Response::new(GetSubscriptionResponse {
            subscription: Some(subscription_message(&subscription)),
        }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 25, 100)?;
        let query = paging::PageQuery::new(
            "agilepm.notifier.v1.NotifierService/ListSubscriptions",
            &[&tenant],
        );
        let after = paging::decode_numbered::<i64>("page_token", &r.page_token, &query)?;
        let rows = store::list_subscriptions(&self.db, &tenant, after, size + 1).await?;
        let (rows, next_page_token) = paging::finish_page(rows, size, &query, |s| {
            format!("{}|{}", s.create_time_us, s.id)
        });
        Ok(Response::new(ListSubscriptionsResponse {
            subscriptions: rows.iter().map(subscription_message).collect(),
            next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<UpdateSubscriptionRequest>,
    ) -> Result<Response<UpdateSubscriptionResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("subscription_id", &r.subscription_id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let url = r
            .target_url
            .as_deref()
            .map(|url| target::parse("target_url", url, &self.targets.hosts))
            .transpose()?;
        let new_kinds = if r.notification_types.is_empty() {
            None
        } else {
            Some(kinds("notification_types", &r.notification_types)?)
        };
        let new_description = r.description.as_deref().map(description).transpose()?;
        if let Some(url) = &url {
            self.targets.vet("target_url", url).await?;
        }
        let url = url.map(|url| url.to_string());
        let subscription = commands::change(&self.db, &tenant, &id, expected, |before| {
            let mut after = before.clone();
            if let Some(url) = &url {
                after.target_url.clone_from(url);
            }
            if let Some(kinds) = &new_kinds {
                after.kinds.clone_from(kinds);
            }
            if let Some(text) = &new_description {
                after.description.clone_from(text);
            }
            if let Some(enabled) = r.enabled {
                after.enabled = enabled;
            }
            Ok(after)
        })
        .await?;
        if subscription.enabled {
            // Deliveries that waited while it was disabled.
            self.deliveries_waiting.notify_one();
        }
        Ok(Response::new(UpdateSubscriptionResponse {
            subscription: Some(subscription_message(&subscription)),
        }))
    }

    async fn rotate_subscription_secret(
        &self,
        request: Request<RotateSubscriptionSecretRequest>,
    ) -> Result<Response<RotateSubscriptionSecretResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let request_id = validate::request_id("request_id", &r.request_id)?;
        let id = validate::uuid("subscription_id", &r.subscription_id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        let overlap = match r.overlap_seconds {
            0 => DEFAULT_OVERLAP_SECONDS,
            n @ 1..=MAX_OVERLAP_SECONDS => n,
            n => {
                return Err(AppError::invalid(
                    "overlap_seconds",
                    format!("must be 0 (one day) to {MAX_OVERLAP_SECONDS}, got {n}"),
                )
                .into());
            }
        };
        let key = Key::new(
            &tenant,
            &request_id,
            "agilepm.notifier.v1.NotifierService/RotateSubscriptionSecret",
            &r,
        );
        // A retried rotation returns the first one's secret and rotates nothing: rotating
        // again would end the overlap of the secret receivers hold.
        let response = idempotency::once(&self.db, &key, || async {
            let secret = new_secret();
            let subscription = commands::change(&self.db, &tenant, &id, expected, |before| {
                let now = now_micros();
                Ok(Subscription {
                    secrets: SigningSecrets {
                        previous: Some(before.secrets.current.clone()),
                        current: secret.clone(),
                    },
                    previous_secret_expire_us: Some(now + i64::from(overlap) * 1_000_000),
                    ..before.clone()
                })
            })
            .await?;
            tracing::info!(subscription_id = %subscription.id, overlap_seconds = overlap, "webhook signing secret rotated");
            Ok(RotateSubscriptionSecretResponse {
                subscription: Some(subscription_message(&subscription)),
                signing_secret: secret,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<DeleteSubscriptionResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let r = request.into_inner();
        let id = validate::uuid("subscription_id", &r.subscription_id)?.to_string();
        let expected = validate::expected_version("expected_version", r.expected_version)?;
        commands::delete(&self.db, &tenant, &id, expected).await?;
        Ok(Response::new(DeleteSubscriptionResponse {}))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let scope = delivery_scope(&request)?;
        let r = request.into_inner();
        let size = validate::page_size("page_size", r.page_size, 100, 1000)?;
        let subscription_id = validate::optional_uuid("subscription_id", &r.subscription_id)?
            .map(|id| id.to_string());
        let filter = DeliveryFilter {
            tenant_id: scope.clone(),
            subscription_id,
            state: state_filter("state", r.state)?,
            from_us: r.create_time_from.as_ref().map(micros),
            to_us: r.create_time_to.as_ref().map(micros),
        };
        let query = paging::PageQuery::new(
            "agilepm.notifier.v1.NotifierService/ListDeliveries",
            &[
                scope.as_deref().unwrap_or("*"),
                filter.subscription_id.as_deref().unwrap_or(""),
                &r.state.to_string(),
                &format!("{:?}", filter.from_us),
                &format!("{:?}", filter.to_us),
            ],
        );
        let before = paging::decode_token("page_token", &r.page_token, &query)?
            .map(|key| {
                key.parse::<i64>()
                    .map_err(|_| AppError::invalid("page_token", "malformed page token"))
            })
            .transpose()?;
        let rows = store::list_deliveries(&self.db, &filter, before, size + 1).await?;
        let (rows, next_page_token) =
            paging::finish_page(rows, size, &query, |d| d.seq.to_string());
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: rows.iter().map(delivery_message).collect(),
            next_page_token,
        }))
    }

    async fn redeliver_deliveries(
        &self,
        request: Request<RedeliverDeliveriesRequest>,
    ) -> Result<Response<RedeliverDeliveriesResponse>, Status> {
        let scope = delivery_scope(&request)?;
        let which = match request.into_inner().target {
            Some(Target::DeliveryId(id)) => {
                let id = validate::uuid("delivery_id", &id)?.to_string();
                if !store::delivery_exists(&self.db, scope.as_deref(), &id).await? {
                    return Err(AppError::not_found(format!("delivery {id}")).into());
                }
                Redeliver::Delivery(id)
            }
            Some(Target::SubscriptionId(id)) => {
                let id = validate::uuid("subscription_id", &id)?.to_string();
                if store::get_subscription(&self.db, scope.as_deref(), &id)
                    .await?
                    .is_none()
                {
                    return Err(AppError::not_found(format!("subscription {id}")).into());
                }
                Redeliver::Subscription(id)
            }
            None => {
                return Err(
                    AppError::invalid("target", "name a delivery_id or a subscription_id").into(),
                );
            }
        };
        let redelivered = store::redeliver(&self.db, scope.as_deref(), &which).await?;
        if redelivered > 0 {
            tracing::info!(
                redelivered,
                ?which,
                "dead-lettered webhook deliveries sent again"
            );
            self.deliveries_waiting.notify_one();
        }
        Ok(Response::new(RedeliverDeliveriesResponse {
            redelivered: i32::try_from(redelivered).unwrap_or(i32::MAX),
        }))
    }
}
