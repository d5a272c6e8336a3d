//! Which transition mode applies to a backlog item: the item's product (backlog-item
//! service; an item never changes product, so this is cached for good) and the product's
//! mode (planning service; cached briefly, since a product owner may switch it).
//!
//! An item whose product the planning service does not know is reconciled AUTOMATIC,
//! the documented default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agilepm_platform::auth::act_for;
use agilepm_platform::client::PeerChannel;
use agilepm_proto::backlog::v1::GetBacklogItemRequest;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::planning::v1::GetProductRequest;
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use tonic::{Code, Status};

/// How long a product's mode is trusted before it is read again.
pub const MODE_TTL: Duration = Duration::from_secs(1);
/// Entries kept per cache before it is emptied (bounded memory).
const MAX_ENTRIES: usize = 100_000;

/// Resolves and caches transition modes.
pub struct Modes {
    backlog_items: BacklogItemServiceClient<PeerChannel>,
    products: ProductServiceClient<PeerChannel>,
    product_of_item: Mutex<HashMap<String, String>>,
    mode_of_product: Mutex<HashMap<String, (StatusTransitionMode, Instant)>>,
}

fn with_deadline<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut request = act_for(tenant, message);
    request.set_timeout(Duration::from_secs(2));
    request
}

impl Modes {
    /// Resolves through these clients.
    pub fn new(
        backlog_items: BacklogItemServiceClient<PeerChannel>,
        products: ProductServiceClient<PeerChannel>,
    ) -> Modes {
        Modes {
            backlog_items,
            products,
            product_of_item: Mutex::default(),
            mode_of_product: Mutex::default(),
        }
    }

    /// The mode for `backlog_item_id` of `tenant`.
    pub async fn of_item(
        &self,
        tenant: &str,
        backlog_item_id: &str,
    ) -> Result<StatusTransitionMode, Status> {
        let cached = self
            .product_of_item
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(backlog_item_id)
            .cloned();
        let product_id = match cached {
            Some(product_id) => product_id,
            None => {
                let request = with_deadline(
                    tenant,
                    GetBacklogItemRequest {
                        id: backlog_item_id.to_owned(),
                    },
                );
                let item = self
                    .backlog_items
                    .clone()
                    .get_backlog_item(request)
                    .await?
                    .into_inner()
                    .backlog_item
                    .unwrap_or_default();
                let mut cache = self
                    .product_of_item
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
                cache.insert(backlog_item_id.to_owned(), item.product_id.clone());
                item.product_id
            }
        };
        let fresh = self
            .mode_of_product
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&product_id)
            .filter(|(_, at)| at.elapsed() < MODE_TTL)
            .map(|(mode, _)| *mode);
        if let Some(mode) = fresh {
            return Ok(mode);
        }
        let request = with_deadline(
            tenant,
            GetProductRequest {
                id: product_id.clone(),
            },
        );
        let mode = match self.products.clone().get_product(request).await {
            Ok(response) => StatusTransitionMode::try_from(
                response
                    .into_inner()
                    .product
                    .unwrap_or_default()
                    .status_transition_mode,
            )
            .unwrap_or(StatusTransitionMode::Automatic),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                StatusTransitionMode::Automatic
            }
            Err(status) => return Err(status),
        };
        let mut cache = self
            .mode_of_product
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(product_id, (mode, Instant::now()));
        Ok(mode)
    }
}
