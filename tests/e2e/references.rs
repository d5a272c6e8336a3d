//! References between aggregates, checked through their owner: an item is planned only for
//! a product the planning service recorded for the same tenant, a product change reaches
//! the backlog-item service before it is acknowledged, and a mode switch acknowledged
//! before the last estimate decides how the item finishes.

use std::time::Duration;

use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItemStatus, PlanBacklogItemRequest, ProductFacts, SyncProductsRequest,
};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::team_service_client::TeamServiceClient;
use agilepm_proto::planning::v1::{
    AddMemberRequest, CreateProductRequest, GetMemberRequest, ListProductsRequest, Member,
    MemberRole, Product, UpdateProductRequest,
};
use agilepm_proto::task::v1::DefineTaskRequest;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::{Engine, TestDb, TestSystem, engine_tests};
use tonic::Code;
use uuid::Uuid;

use crate::coordinator::{Sprinting, estimate};
use crate::given;

engine_tests!(
    items_reference_only_recorded_products_and_their_own_tenants_items,
    a_mode_switch_acknowledged_before_the_last_estimate_is_honoured,
    planning_records_every_product_again_when_it_starts,
    planning_records_every_member_again_when_it_starts,
    an_items_use_case_is_one_of_its_own_tenant_and_product,
    planning_records_every_use_case_again_when_it_starts,
);

/// A use case made through planning, for `product`.
async fn use_case(system: &TestSystem, tenant: &str, product: &str) -> String {
    use agilepm_proto::planning::v1::use_case_service_client::UseCaseServiceClient;
    use agilepm_proto::planning::v1::{CreateUseCaseRequest, UseCase};
    UseCaseServiceClient::new(system.channel(ServiceName::Planning, tenant))
        .create_use_case(CreateUseCaseRequest {
            request_id: Uuid::new_v4().to_string(),
            use_case: Some(UseCase {
                product_id: product.into(),
                title: "Pay by card".into(),
                value_statement: "because cash is gone".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("create the use case")
        .into_inner()
        .use_case
        .unwrap()
        .id
}

/// Issue 36 §3: `use_case_id` on PlanBacklogItem and UpdateBacklogItem names a use case
/// planning recorded for the item's tenant and product; an unknown, another product's or
/// another tenant's is FAILED_PRECONDITION naming the field, and changes nothing.
async fn an_items_use_case_is_one_of_its_own_tenant_and_product(engine: Engine) {
    use agilepm_proto::backlog::v1::{BacklogItem, UpdateBacklogItemRequest};
    let system = TestSystem::start(
        engine,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
    )
    .await;
    let planning = |tenant: &str| system.channel(ServiceName::Planning, tenant);
    let product = given::product(planning("acme"), "Shop").await;
    let other_product = given::product(planning("acme"), "Warehouse").await;
    let globex_product = given::product(planning("globex"), "Shop").await;
    let ours = use_case(&system, "acme", &product.id).await;
    let other_products = use_case(&system, "acme", &other_product.id).await;
    let globex = use_case(&system, "globex", &globex_product.id).await;
    let mut items = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"));
    for (what, use_case_id) in [
        ("unknown", Uuid::now_v7().to_string()),
        ("another product's", other_products.clone()),
        ("another tenant's", globex.clone()),
    ] {
        let refused = items
            .plan_backlog_item(PlanBacklogItemRequest {
                use_case_id: use_case_id.clone(),
                ..plan(&product.id, vec![])
            })
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{what}: {refused:?}"
        );
        assert!(
            refused.message().starts_with("use_case_id:"),
            "{what}: {refused:?}"
        );
    }
    let item = items
        .plan_backlog_item(PlanBacklogItemRequest {
            use_case_id: ours.clone(),
            ..plan(&product.id, vec![])
        })
        .await
        .expect("its own product's use case")
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(item.use_case_id, ours);
    let update = |use_case_id: &str| UpdateBacklogItemRequest {
        backlog_item: Some(BacklogItem {
            id: item.id.clone(),
            use_case_id: use_case_id.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["use_case_id".into()],
        }),
        expected_version: None,
    };
    for use_case_id in [other_products.as_str(), globex.as_str()] {
        let refused = items
            .update_backlog_item(update(use_case_id))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().starts_with("use_case_id:"), "{refused:?}");
    }
    let cleared = items
        .update_backlog_item(update(""))
        .await
        .expect("no use case")
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (cleared.use_case_id.as_str(), cleared.version),
        ("", item.version + 1)
    );
    system.stop().await;
}

/// The backlog-item service forgets the use cases (as if they predated its record of
/// them): planning records them again when it starts, and items can name them again.
async fn planning_records_every_use_case_again_when_it_starts(engine: Engine) {
    let (backlog_db, planning_db) = (TestDb::create(engine).await, TestDb::create(engine).await);
    let databases = [
        (ServiceName::BacklogItem, backlog_db.url().to_owned()),
        (ServiceName::Planning, planning_db.url().to_owned()),
    ];
    let system = TestSystem::start_on_databases(&databases).await;
    let product = given::product(system.channel(ServiceName::Planning, "acme"), "Shop").await;
    let use_case_id = use_case(&system, "acme", &product.id).await;
    system.stop().await;
    forget_every_row(backlog_db.url(), "use_cases").await;

    let system = TestSystem::start_on_databases(&databases).await;
    let mut items = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let request = PlanBacklogItemRequest {
            use_case_id: use_case_id.clone(),
            ..plan(&product.id, vec![])
        };
        match items.plan_backlog_item(request).await {
            Ok(_) => break,
            Err(status)
                if status.code() == Code::FailedPrecondition
                    && status.message().starts_with("use_case_id:") =>
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "planning did not record its use cases again within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    system.stop().await;
}

fn plan(product_id: &str, derived_from_ids: Vec<String>) -> PlanBacklogItemRequest {
    PlanBacklogItemRequest {
        request_id: Uuid::new_v4().to_string(),
        product_id: product_id.into(),
        summary: "Story".into(),
        derived_from_ids,
        ..Default::default()
    }
}

async fn items_reference_only_recorded_products_and_their_own_tenants_items(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
    let client = |tenant: &str| {
        BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, tenant))
    };
    let acme_product = Uuid::now_v7().to_string();
    let refused = client("acme")
        .plan_backlog_item(plan(&acme_product, vec![]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().starts_with("product_id: product "),
        "{refused:?}"
    );

    system.record_product("acme", &acme_product).await;
    let acme_item = client("acme")
        .plan_backlog_item(plan(&acme_product, vec![]))
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    // Another tenant cannot plan into acme's product...
    let refused = client("globex")
        .plan_backlog_item(plan(&acme_product, vec![]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // ...nor derive a story from acme's item.
    let globex_product = Uuid::now_v7().to_string();
    system.record_product("globex", &globex_product).await;
    let refused = client("globex")
        .plan_backlog_item(plan(&globex_product, vec![acme_item.id.clone()]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("derived_from_ids"),
        "{refused:?}"
    );
    client("acme")
        .plan_backlog_item(plan(&acme_product, vec![acme_item.id.clone()]))
        .await
        .unwrap();

    // The planning service's facts are bounded and validated, naming the fact.
    let mut as_planning = BacklogItemServiceClient::new(system.channel_as_service(
        ServiceName::BacklogItem,
        ServiceName::Planning,
        "acme",
    ));
    let fact = |id: &str| ProductFacts {
        product_id: id.into(),
        status_transition_mode: StatusTransitionMode::Manual as i32,
        product_version: 3,
    };
    for (facts, field) in [
        (vec![], "products"),
        (vec![fact(&acme_product); 1001], "products"),
        (vec![fact("not-a-uuid")], "products[0].product_id"),
        (
            vec![ProductFacts {
                product_version: 0,
                ..fact(&acme_product)
            }],
            "products[0].product_version",
        ),
    ] {
        let refused = as_planning
            .sync_products(SyncProductsRequest { products: facts })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}");
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
    // Several facts about one product in one call: the newest is recorded, once.
    let applied = as_planning
        .sync_products(SyncProductsRequest {
            products: vec![
                fact(&acme_product),
                ProductFacts {
                    product_version: 2,
                    ..fact(&acme_product)
                },
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .applied;
    assert_eq!(applied, 1);
    system.stop().await;
}

/// The deterministic half of the planning-game seed's choice: a switch to MANUAL that
/// returned before the last estimate is honoured, every time, with no cache in between.
/// 50 rounds, each racing the switch against the estimate sent right after it returns
/// (and switching back to AUTOMATIC for the next round, honoured just the same).
async fn a_mode_switch_acknowledged_before_the_last_estimate_is_honoured(engine: Engine) {
    const ROUNDS: usize = 50;
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let mut products = ProductServiceClient::new(s.system.channel(ServiceName::Planning, "acme"));
    let mut switch = async |mode: StatusTransitionMode| {
        products
            .update_product(UpdateProductRequest {
                product: Some(Product {
                    id: s.product.id.clone(),
                    status_transition_mode: mode as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["status_transition_mode".into()],
                }),
                expected_version: None,
            })
            .await
            .unwrap();
    };
    let mut task_client = s.tasks();
    let mut honoured = 0;
    for round in 0..ROUNDS {
        // Even rounds switch to MANUAL (the item waits, flagged), odd ones back to
        // AUTOMATIC (the item becomes DONE).
        let (mode, expected) = if round % 2 == 0 {
            (StatusTransitionMode::Manual, BacklogItemStatus::Committed)
        } else {
            (StatusTransitionMode::Automatic, BacklogItemStatus::Done)
        };
        let (item, tasks) = s.committed_item(2, 1).await;
        task_client
            .estimate_task_hours_remaining(estimate(&tasks[0], 0))
            .await
            .unwrap();
        switch(mode).await;
        task_client
            .estimate_task_hours_remaining(estimate(&tasks[1], 0))
            .await
            .unwrap();
        let flagged = mode == StatusTransitionMode::Manual;
        let settled = s.wait_for(&item, expected, flagged).await;
        assert_eq!(settled.status, expected as i32, "round {round}");
        honoured += 1;
    }
    assert_eq!(honoured, ROUNDS);
    s.system.stop().await;
}

async fn planning_records_every_product_again_when_it_starts(engine: Engine) {
    let (backlog_db, planning_db) = (TestDb::create(engine).await, TestDb::create(engine).await);
    let databases = [
        (ServiceName::BacklogItem, backlog_db.url().to_owned()),
        (ServiceName::Planning, planning_db.url().to_owned()),
    ];
    let system = TestSystem::start_on_databases(&databases).await;
    let product = given::product(
        system.channel(ServiceName::Planning, "acme"),
        "Older than the record",
    )
    .await;
    system.stop().await;
    // As if the product predated the backlog-item service's record of products.
    forget_every_row(backlog_db.url(), "products").await;

    let system = TestSystem::start_on_databases(&databases).await;
    let mut items = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match items.plan_backlog_item(plan(&product.id, vec![])).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::FailedPrecondition => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "planning did not record its products again within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    system.stop().await;
}

/// The task service forgets the team (as if the members predated its record of them):
/// planning records them again when it starts, and volunteering works again.
async fn planning_records_every_member_again_when_it_starts(engine: Engine) {
    let databases = futures::future::join_all([
        TestDb::create(engine),
        TestDb::create(engine),
        TestDb::create(engine),
    ])
    .await;
    let services = [
        ServiceName::BacklogItem,
        ServiceName::Task,
        ServiceName::Planning,
    ];
    let urls: Vec<(ServiceName, String)> = services
        .iter()
        .zip(&databases)
        .map(|(service, db)| (*service, db.url().to_owned()))
        .collect();
    let system = TestSystem::start_on_databases(&urls).await;
    TeamServiceClient::new(system.channel(ServiceName::Planning, "acme"))
        .add_member(AddMemberRequest {
            member: Some(Member {
                id: "ada".into(),
                display_name: "Ada".into(),
                roles: vec![MemberRole::TeamMember as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let product = given::product(system.channel(ServiceName::Planning, "acme"), "P").await;
    let item = given::item(
        system.channel(ServiceName::BacklogItem, "acme"),
        &product.id,
    )
    .await;
    system.stop().await;
    forget_every_row(databases[1].url(), "members").await;

    let system = TestSystem::start_on_databases(&urls).await;
    let mut tasks = TaskServiceClient::new(system.channel(ServiceName::Task, "acme"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let define = DefineTaskRequest {
            request_id: Uuid::new_v4().to_string(),
            backlog_item_id: item.id.clone(),
            name: "by Ada".into(),
            volunteer_id: "ada".into(),
            hours_remaining: 1,
            ..Default::default()
        };
        match tasks.define_task(define).await {
            Ok(defined) => {
                assert_eq!(defined.into_inner().task.unwrap().volunteer_id, "ada");
                break;
            }
            Err(status) if status.code() == Code::FailedPrecondition => {
                assert!(status.message().starts_with("volunteer_id"), "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "planning did not record its members again within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    system.stop().await;
}

/// The planning service alone, with `peer` at a port nothing listens on.
async fn planning_without(peer: ServiceName) -> TestSystem {
    agilepm_testkit::init();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    TestSystem::start_with(
        Engine::Sqlite,
        &[ServiceName::Planning],
        &[(peer, format!("http://{closed}"))],
    )
    .await
}

/// Without the backlog-item service, a product is not created at all: never one that
/// items cannot be planned for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_product_is_not_created_while_backlog_items_cannot_record_it() {
    let system = planning_without(ServiceName::BacklogItem).await;
    let mut products = ProductServiceClient::new(system.channel(ServiceName::Planning, "acme"));
    let refused = products
        .create_product(CreateProductRequest {
            request_id: Uuid::new_v4().to_string(),
            product: Some(Product {
                name: "Orphan".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let listed = products
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.products.is_empty(), "{listed:?}");
    system.stop().await;
}

/// Without the task service, a member is not added at all: never one the task service
/// would refuse as a volunteer after the caller heard OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_is_not_added_while_tasks_cannot_record_it() {
    let system = planning_without(ServiceName::Task).await;
    let mut team = TeamServiceClient::new(system.channel(ServiceName::Planning, "acme"));
    let refused = team
        .add_member(AddMemberRequest {
            member: Some(Member {
                id: "ada".into(),
                display_name: "Ada".into(),
                roles: vec![MemberRole::TeamMember as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let missing = team
        .get_member(GetMemberRequest { id: "ada".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    system.stop().await;
}

/// Without the task service, a team's zone is not changed at all: never one the task
/// service would not date estimates by after the caller heard OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_team_s_zone_is_not_changed_while_tasks_cannot_record_it() {
    use agilepm_proto::planning::v1::{
        GetTeamSettingsRequest, TeamSettings, UpdateTeamSettingsRequest,
    };
    let system = planning_without(ServiceName::Task).await;
    let mut team = TeamServiceClient::new(system.channel(ServiceName::Planning, "acme"));
    let refused = team
        .update_team_settings(UpdateTeamSettingsRequest {
            settings: Some(TeamSettings {
                time_zone: "America/Los_Angeles".into(),
                ..Default::default()
            }),
            update_mask: None,
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let settings = team
        .get_team_settings(GetTeamSettingsRequest {})
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!((settings.time_zone.as_str(), settings.version), ("UTC", 0));
    system.stop().await;
}

/// Deletes every row of `table` in the database at `url`, as a service that kept no record
/// yet would have none (the services using it are stopped).
async fn forget_every_row(url: &str, table: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
