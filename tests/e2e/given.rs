//! Steps many tests take to set the scene, each one call with its request filled in and
//! its answer unwrapped: a product, an item planned for it, a task on the item.

use agilepm_platform::client::PeerChannel;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{BacklogItem, PlanBacklogItemRequest};
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::{CreateProductRequest, Product};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{DefineTaskRequest, Task};
use uuid::Uuid;

/// A new product named `name`, created through `planning`.
pub async fn product(planning: PeerChannel, name: &str) -> Product {
    ProductServiceClient::new(planning)
        .create_product(CreateProductRequest {
            request_id: Uuid::new_v4().to_string(),
            product: Some(Product {
                name: name.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create the product")
        .into_inner()
        .product
        .expect("a product")
}

/// A new backlog item of `product_id`, planned through `backlog_items`.
pub async fn item(backlog_items: PeerChannel, product_id: &str) -> BacklogItem {
    BacklogItemServiceClient::new(backlog_items)
        .plan_backlog_item(PlanBacklogItemRequest {
            request_id: Uuid::new_v4().to_string(),
            product_id: product_id.into(),
            summary: "Story".into(),
            ..Default::default()
        })
        .await
        .expect("plan the item")
        .into_inner()
        .backlog_item
        .expect("an item")
}

/// A new task of `item_id` with `hours` remaining, defined through `tasks`.
pub async fn task(tasks: PeerChannel, item_id: &str, hours: i32) -> Task {
    TaskServiceClient::new(tasks)
        .define_task(DefineTaskRequest {
            request_id: Uuid::new_v4().to_string(),
            backlog_item_id: item_id.into(),
            name: "Task".into(),
            hours_remaining: hours,
            ..Default::default()
        })
        .await
        .expect("define the task")
        .into_inner()
        .task
        .expect("a task")
}
