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

use crate::domain::{MAX_SUBSCRIPTIONS_PER_TENANT, SigningSecrets, Subscription};
use crate::mapping::{delivery_message, kinds, state_filter, subscription_message};
use crate::signing::new_secret;
use crate::store::{self, DeliveryFilter, Redeliver};
use crate::target::{self, AllowedHosts};

/// The longest description, in characters.
const MAX_DESCRIPTION: usize = 256;
/// The longest rotation overlap, in seconds (7 days), and the default (1 day).
const MAX_OVERLAP_SECONDS: i32 = 7 * 86_400;
const DEFAULT_OVERLAP_SECONDS: i32 = 86_400;

/// The notifier's gRPC adapter.
pub struct NotifierApi {
    db: Db,
    allowed_hosts: AllowedHosts,
    /// Told when deliveries become pending (a redelivery).
    deliveries_waiting: Arc<Notify>,
}

impl NotifierApi {
    /// An adapter over `db`, accepting targets `allowed_hosts` allows.
    pub fn new(
        db: Db,
        allowed_hosts: AllowedHosts,
        deliveries_waiting: Arc<Notify>,
    ) -> NotifierApi {
        NotifierApi {
            db,
            allowed_hosts,
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
        let url = target::parse("target_url", &r.target_url, &self.allowed_hosts)?;
        let kinds = kinds("notification_types", &r.notification_types)?;
        let description = description(&r.description)?;
        if store::count_subscriptions(&self.db, &tenant).await? >= MAX_SUBSCRIPTIONS_PER_TENANT {
            return Err(AppError::ResourceExhausted(format!(
                "a tenant may hold {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions; delete one first"
            ))
            .into());
        }
        let now = now_micros();
        let secret = new_secret();
        let subscription = Subscription {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant,
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
        };
        store::insert_subscription(&self.db, &subscription).await?;
        tracing::info!(subscription_id = %subscription.id, "webhook subscription created");
        Ok(Response::new(CreateSubscriptionResponse {
            subscription: Some(subscription_message(&subscription)),
            signing_secret: secret,
        }))
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
        let mut subscription = self.subscription(&tenant, &r.subscription_id).await?;
        if let Some(url) = &r.target_url {
            subscription.target_url =
                target::parse("target_url", url, &self.allowed_hosts)?.to_string();
        }
        if !r.notification_types.is_empty() {
            subscription.kinds = kinds("notification_types", &r.notification_types)?;
        }
        if let Some(text) = &r.description {
            subscription.description = description(text)?;
        }
        if let Some(enabled) = r.enabled {
            subscription.enabled = enabled;
        }
        subscription.update_time_us = now_micros();
        store::update_subscription(&self.db, &subscription).await?;
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
        let mut subscription = self.subscription(&tenant, &r.subscription_id).await?;
        let now = now_micros();
        let secret = new_secret();
        subscription.secrets = SigningSecrets {
            previous: Some(std::mem::replace(
                &mut subscription.secrets.current,
                secret.clone(),
            )),
            current: secret.clone(),
        };
        subscription.previous_secret_expire_us = Some(now + i64::from(overlap) * 1_000_000);
        subscription.update_time_us = now;
        store::update_subscription(&self.db, &subscription).await?;
        tracing::info!(subscription_id = %subscription.id, overlap_seconds = overlap, "webhook signing secret rotated");
        Ok(Response::new(RotateSubscriptionSecretResponse {
            subscription: Some(subscription_message(&subscription)),
            signing_secret: secret,
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<DeleteSubscriptionResponse>, Status> {
        let tenant = caller(&request)?.tenant()?.to_owned();
        let id = validate::uuid("subscription_id", &request.get_ref().subscription_id)?.to_string();
        if !store::delete_subscription(&self.db, &tenant, &id).await? {
            return Err(AppError::not_found(format!("subscription {id}")).into());
        }
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
