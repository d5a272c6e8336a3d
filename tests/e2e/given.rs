//! Steps many tests take to set the scene, each one call with its request filled in and
//! its answer unwrapped: a product, an item planned for it (or driven further), a task on
//! the item.

use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, CommitBacklogItemRequest, RemoveBacklogItemRequest,
    ScheduleBacklogItemRequest,
};
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::{CreateProductRequest, Product};
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{DefineTaskRequest, Task};
use agilepm_testkit::TestSystem;
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
    agilepm_testkit::plan_item(backlog_items, product_id).await
}

/// A new backlog item of `tenant` on `backlog`'s backlog-item service, driven to `status`
/// the way the planning service drives it (as planning's identity, its product recorded,
/// a release and a sprint planning would have checked). Its state after the last step.
pub async fn item_in_status(
    backlog: &TestSystem,
    tenant: &str,
    status: BacklogItemStatus,
) -> BacklogItem {
    let mut planning = BacklogItemServiceClient::new(backlog.channel_as_service(
        ServiceName::BacklogItem,
        ServiceName::Planning,
        tenant,
    ));
    let mut item = backlog.planned_item(tenant).await;
    if matches!(
        status,
        BacklogItemStatus::Scheduled | BacklogItemStatus::Committed
    ) {
        item = planning
            .schedule_backlog_item(ScheduleBacklogItemRequest {
                id: item.id.clone(),
                release_id: Uuid::now_v7().to_string(),
                expected_version: None,
            })
            .await
            .expect("schedule the item")
            .into_inner()
            .backlog_item
            .expect("an item");
    }
    if status == BacklogItemStatus::Committed {
        item = planning
            .commit_backlog_item(CommitBacklogItemRequest {
                id: item.id.clone(),
                sprint_id: Uuid::now_v7().to_string(),
                expected_version: None,
            })
            .await
            .expect("commit the item")
            .into_inner()
            .backlog_item
            .expect("an item");
    }
    if status == BacklogItemStatus::Removed {
        item = planning
            .remove_backlog_item(RemoveBacklogItemRequest {
                id: item.id.clone(),
                expected_version: None,
            })
            .await
            .expect("remove the item")
            .into_inner()
            .backlog_item
            .expect("an item");
    }
    item
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
