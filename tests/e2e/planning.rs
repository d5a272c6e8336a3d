//! The planning service with the real backlog-item and task services beside it, on both
//! engines: products, use cases, releases, sprints, the planning game, reports.

use agilepm_platform::wire::auth::identity::Role;
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, BacklogItemType, GetBacklogItemRequest,
    ListBacklogItemsRequest, MoveBacklogItemInSprintRequest, MoveBacklogItemRequest,
    PlanBacklogItemRequest, ReconcileBacklogItemStatusRequest, RemoveBacklogItemRequest,
    StoryPoints, move_backlog_item_in_sprint_request, move_backlog_item_request,
};
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::planning::v1::planning_game_service_client::PlanningGameServiceClient;
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
use agilepm_proto::planning::v1::team_service_client::TeamServiceClient;
use agilepm_proto::planning::v1::use_case_service_client::UseCaseServiceClient;
use agilepm_proto::planning::v1::*;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::{
    AssignTaskVolunteerRequest, DefineTaskRequest, EstimateTaskHoursRemainingRequest,
    GetTaskRequest, Task, TaskView,
};
use agilepm_testkit::{Engine, TestSystem, day, engine_tests};
use tonic::Code;
use uuid::Uuid;

engine_tests!(
    products_are_created_once_listed_and_updated,
    use_cases_are_ranked_updated_and_retired,
    releases_and_sprints_hold_items_of_their_own_product,
    the_sprint_lifecycle_allows_one_active_sprint,
    split_group_and_spike_are_safe_to_retry,
    a_split_racing_a_commitment_is_all_or_nothing,
    prioritizing_orders_the_top_and_removes,
    contradictory_game_inputs_are_refused_naming_the_field,
    the_burndown_and_velocity_have_exact_numbers,
    the_burndown_counts_each_day_its_members_then,
    releases_are_renamed_rescheduled_and_archived,
    a_sprint_orders_its_items_apart_from_the_backlog,
    the_team_decides_who_volunteers_and_owns_products,
    a_team_sets_its_zone_and_the_task_service_dates_by_it,
);

struct Fixture {
    system: TestSystem,
}

fn rid() -> String {
    Uuid::new_v4().to_string()
}

impl Fixture {
    async fn start(engine: Engine) -> Fixture {
        Fixture {
            system: TestSystem::start(
                engine,
                &[
                    ServiceName::BacklogItem,
                    ServiceName::Task,
                    ServiceName::Planning,
                ],
            )
            .await,
        }
    }
    fn planning(&self, tenant: &str) -> PeerChannel {
        self.system.channel(ServiceName::Planning, tenant)
    }
    fn products(&self, tenant: &str) -> ProductServiceClient<PeerChannel> {
        ProductServiceClient::new(self.planning(tenant))
    }
    fn sprints(&self) -> SprintServiceClient<PeerChannel> {
        SprintServiceClient::new(self.planning("acme"))
    }
    fn releases(&self) -> ReleaseServiceClient<PeerChannel> {
        ReleaseServiceClient::new(self.planning("acme"))
    }
    fn game(&self) -> PlanningGameServiceClient<PeerChannel> {
        PlanningGameServiceClient::new(self.planning("acme"))
    }
    fn items(&self) -> BacklogItemServiceClient<PeerChannel> {
        BacklogItemServiceClient::new(self.system.channel(ServiceName::BacklogItem, "acme"))
    }

    async fn product(&self, name: &str, mode: StatusTransitionMode) -> Product {
        let product = Product {
            name: name.into(),
            status_transition_mode: mode as i32,
            ..Default::default()
        };
        self.products("acme")
            .create_product(CreateProductRequest {
                request_id: rid(),
                product: Some(product),
            })
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap()
    }

    async fn item(&self, product: &str, summary: &str, points: StoryPoints) -> BacklogItem {
        let request = PlanBacklogItemRequest {
            request_id: rid(),
            product_id: product.into(),
            summary: summary.into(),
            story_points: points as i32,
            ..Default::default()
        };
        self.items()
            .plan_backlog_item(request)
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    async fn release(&self, product: &str) -> Release {
        let release = Release {
            product_id: product.into(),
            name: "R1".into(),
            begin_date: day(-60),
            end_date: day(120),
            ..Default::default()
        };
        self.releases()
            .schedule_release(ScheduleReleaseRequest {
                request_id: rid(),
                release: Some(release),
            })
            .await
            .unwrap()
            .into_inner()
            .release
            .unwrap()
    }

    async fn sprint(&self, product: &str, begin: &str, end: &str) -> Sprint {
        let sprint = Sprint {
            product_id: product.into(),
            name: format!("Sprint {begin}"),
            begin_date: begin.into(),
            end_date: end.into(),
            ..Default::default()
        };
        self.sprints()
            .schedule_sprint(ScheduleSprintRequest {
                request_id: rid(),
                sprint: Some(sprint),
            })
            .await
            .unwrap()
            .into_inner()
            .sprint
            .unwrap()
    }

    async fn commit(&self, release: &Release, sprint: &Sprint, item: &BacklogItem) {
        self.releases()
            .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
                release_id: release.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await
            .unwrap();
        self.sprints()
            .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
                sprint_id: sprint.id.clone(),
                backlog_item_id: item.id.clone(),
                expected_version: None,
            })
            .await
            .unwrap();
    }

    async fn get_item(&self, id: &str) -> BacklogItem {
        self.items()
            .get_backlog_item(GetBacklogItemRequest {
                id: id.into(),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }
}

async fn products_are_created_once_listed_and_updated(engine: Engine) {
    let f = Fixture::start(engine).await;
    let mut products = f.products("acme");
    let request = CreateProductRequest {
        request_id: "p-1".into(),
        product: Some(Product {
            name: "Zeta".into(),
            ..Default::default()
        }),
    };
    let first = products
        .create_product(request.clone())
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    let again = products
        .create_product(request)
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(first.id, again.id, "idempotent on request_id");
    assert_eq!(
        first.status_transition_mode,
        StatusTransitionMode::Automatic as i32,
        "the default mode"
    );
    let duplicate = products
        .create_product(CreateProductRequest {
            request_id: "p-2".into(),
            product: Some(Product {
                name: "Zeta".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    for name in ["Alpha", "Beta", "Gamma"] {
        f.product(name, StatusTransitionMode::Unspecified).await;
    }
    let page = products
        .list_products(ListProductsRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.products
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Alpha", "Beta", "Gamma"]
    );
    let rest = products
        .list_products(ListProductsRequest {
            page_size: 3,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.products
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["Zeta"]
    );
    assert!(rest.next_page_token.is_empty());

    let update = Product {
        id: first.id.clone(),
        status_transition_mode: StatusTransitionMode::Manual as i32,
        description: "d".into(),
        ..Default::default()
    };
    let mask = prost_types::FieldMask {
        paths: vec!["status_transition_mode".into(), "description".into()],
    };
    let updated = products
        .update_product(UpdateProductRequest {
            product: Some(update.clone()),
            update_mask: Some(mask.clone()),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(
        (
            updated.status_transition_mode,
            updated.version,
            updated.name.as_str()
        ),
        (StatusTransitionMode::Manual as i32, 2, "Zeta")
    );
    let stale = products
        .update_product(UpdateProductRequest {
            product: Some(update),
            update_mask: Some(mask),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let hidden = f
        .products("globex")
        .get_product(GetProductRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let bad = products
        .create_product(CreateProductRequest {
            request_id: "p-3".into(),
            product: Some(Product::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("product.name"), "{bad:?}");
    f.system.stop().await;
}

async fn use_cases_are_ranked_updated_and_retired(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let mut cases = UseCaseServiceClient::new(f.planning("acme"));
    let mut ids = Vec::new();
    for title in ["Sign up", "Pay", "Report"] {
        let use_case = UseCase {
            product_id: product.id.clone(),
            title: title.into(),
            value_statement: "because".into(),
            ..Default::default()
        };
        ids.push(
            cases
                .create_use_case(CreateUseCaseRequest {
                    request_id: rid(),
                    use_case: Some(use_case),
                })
                .await
                .unwrap()
                .into_inner()
                .use_case
                .unwrap()
                .id,
        );
    }
    cases
        .rank_use_case(RankUseCaseRequest {
            id: ids[2].clone(),
            anchor: Some(rank_use_case_request::Anchor::BeforeId(ids[0].clone())),
            expected_version: None,
        })
        .await
        .unwrap();
    let titles = |list: ListUseCasesResponse| {
        list.use_cases
            .into_iter()
            .map(|u| u.title)
            .collect::<Vec<_>>()
    };
    let listed = cases
        .list_use_cases(ListUseCasesRequest {
            product_id: product.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(listed), vec!["Report", "Sign up", "Pay"]);
    let update = UseCase {
        id: ids[1].clone(),
        title: "Pay by card".into(),
        ..Default::default()
    };
    let updated = cases
        .update_use_case(UpdateUseCaseRequest {
            use_case: Some(update),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into()],
            }),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .use_case
        .unwrap();
    assert_eq!(
        (updated.title.as_str(), updated.value_statement.as_str()),
        ("Pay by card", "because")
    );
    cases
        .retire_use_case(RetireUseCaseRequest {
            id: ids[0].clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let active = cases
        .list_use_cases(ListUseCasesRequest {
            product_id: product.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(titles(active), vec!["Report", "Pay by card"]);
    let all = cases
        .list_use_cases(ListUseCasesRequest {
            product_id: product.id.clone(),
            show_retired: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.use_cases.len(), 3);
    let orphan = UseCase {
        product_id: Uuid::now_v7().to_string(),
        title: "x".into(),
        ..Default::default()
    };
    let error = cases
        .create_use_case(CreateUseCaseRequest {
            request_id: rid(),
            use_case: Some(orphan),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    f.system.stop().await;
}

async fn releases_and_sprints_hold_items_of_their_own_product(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let other = f.product("Other", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    let sprint = f.sprint(&product.id, &day(5), &day(16)).await;
    let item = f.item(&product.id, "story", StoryPoints::Three).await;
    let foreign = f.item(&other.id, "elsewhere", StoryPoints::Three).await;
    f.commit(&release, &sprint, &item).await;
    let committed = f.get_item(&item.id).await;
    assert_eq!(
        (
            committed.status,
            committed.release_id.as_str(),
            committed.sprint_id.as_str()
        ),
        (
            BacklogItemStatus::Committed as i32,
            release.id.as_str(),
            sprint.id.as_str()
        )
    );
    let error = f
        .releases()
        .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
            release_id: release.id.clone(),
            backlog_item_id: foreign.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    let error = f
        .sprints()
        .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: sprint.id.clone(),
            backlog_item_id: foreign.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    let bad = Release {
        product_id: product.id.clone(),
        name: "R".into(),
        begin_date: "2099-02-01".into(),
        end_date: "2099-02-01".into(),
        ..Default::default()
    };
    let error = f
        .releases()
        .schedule_release(ScheduleReleaseRequest {
            request_id: rid(),
            release: Some(bad),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("release.end_date"));
    f.sprints()
        .uncommit_backlog_item_from_sprint(UncommitBacklogItemFromSprintRequest {
            backlog_item_id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    f.releases()
        .unschedule_backlog_item_from_release(UnscheduleBacklogItemFromReleaseRequest {
            backlog_item_id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(
        f.get_item(&item.id).await.status,
        BacklogItemStatus::Planned as i32
    );
    f.system.stop().await;
}

async fn the_sprint_lifecycle_allows_one_active_sprint(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    let first = f.sprint(&product.id, &day(5), &day(16)).await;
    let second = f.sprint(&product.id, &day(19), &day(30)).await;
    let done = f.item(&product.id, "done", StoryPoints::Five).await;
    let open = f.item(&product.id, "open", StoryPoints::Eight).await;
    f.commit(&release, &first, &done).await;
    f.commit(&release, &first, &open).await;
    mark_done(&f, &done.id, 1).await;
    let mut sprints = f.sprints();
    let started = sprints
        .start_sprint(StartSprintRequest {
            id: first.id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .sprint
        .unwrap();
    assert_eq!(started.state, SprintState::Active as i32);
    let error = sprints
        .start_sprint(StartSprintRequest {
            id: second.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    let completed = sprints
        .complete_sprint(CompleteSprintRequest {
            id: first.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .sprint
        .unwrap();
    let summary = completed.summary.unwrap();
    assert_eq!(summary.done_backlog_item_ids, vec![done.id.clone()]);
    assert_eq!(summary.unfinished_backlog_item_ids, vec![open.id.clone()]);
    assert_eq!(summary.story_points_done, 5);
    let error = sprints
        .complete_sprint(CompleteSprintRequest {
            id: first.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    sprints
        .start_sprint(StartSprintRequest {
            id: second.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let error = sprints
        .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: first.id.clone(),
            backlog_item_id: open.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Code::FailedPrecondition,
        "a COMPLETED sprint takes no more items"
    );
    let retro = Sprint {
        id: first.id.clone(),
        retrospective: "went well".into(),
        ..Default::default()
    };
    let updated = sprints
        .update_sprint(UpdateSprintRequest {
            sprint: Some(retro),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["retrospective".into()],
            }),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .sprint
        .unwrap();
    assert_eq!(updated.retrospective, "went well");
    f.system.stop().await;
}

/// Makes a committed item DONE the way the coordinator does: a reconcile with all task
/// hours at zero.
async fn mark_done(f: &Fixture, id: &str, revision: i64) {
    let request = ReconcileBacklogItemStatusRequest {
        id: id.into(),
        task_hours_remaining: 0,
        task_count: 1,
        task_revision: revision,
        transition_mode: 0,
    };
    let item = BacklogItemServiceClient::new(f.system.channel_as_service(
        ServiceName::BacklogItem,
        ServiceName::Coordinator,
        "acme",
    ))
    .reconcile_backlog_item_status(request)
    .await
    .unwrap()
    .into_inner()
    .backlog_item
    .unwrap();
    assert_eq!(item.status, BacklogItemStatus::Done as i32);
}

/// Moves the recorded sprint memberships of `sprint` to past days, as if the commits and
/// departures the test made today had happened then: `(item, committed on, left on)`.
/// Only the recorded times change; the rows are the ones the commands wrote.
async fn backdate_memberships(f: &Fixture, sprint: &str, spans: &[(&str, &str, Option<&str>)]) {
    let noon = |day: &str| {
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    let db = f.system.database(ServiceName::BacklogItem).await;
    for (item, committed, left) in spans {
        let changed = sqlx::query(
            "UPDATE sprint_memberships SET commit_time_us = $1, leave_time_us = $2 \
             WHERE sprint_id = $3 AND backlog_item_id = $4 AND (leave_time_us IS NULL) = $5",
        )
        .bind(noon(committed))
        .bind(left.map(noon))
        .bind(sprint)
        .bind(*item)
        .bind(left.is_none())
        .execute(&db)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(changed, 1, "one recorded membership of {item}");
    }
    db.close().await;
}

fn draft(summary: &str) -> StoryDraft {
    StoryDraft {
        summary: summary.into(),
        ..Default::default()
    }
}

async fn split_group_and_spike_are_safe_to_retry(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let mut cases = UseCaseServiceClient::new(f.planning("acme"));
    let use_case = cases
        .create_use_case(CreateUseCaseRequest {
            request_id: rid(),
            use_case: Some(UseCase {
                product_id: product.id.clone(),
                title: "Checkout".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .use_case
        .unwrap();
    let mut game = f.game();
    let broken = game
        .break_down_use_case(BreakDownUseCaseRequest {
            request_id: "bd".into(),
            use_case_id: use_case.id.clone(),
            stories: vec![draft("big"), draft("a"), draft("b"), draft("fuzzy")],
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_items;
    assert!(broken.iter().all(|i| i.use_case_id == use_case.id));
    let split = SplitBacklogItemRequest {
        request_id: "split-1".into(),
        backlog_item_id: broken[0].id.clone(),
        stories: vec![draft("big 1"), draft("big 2")],
    };
    let first = game
        .split_backlog_item(split.clone())
        .await
        .unwrap()
        .into_inner();
    let retried = game.split_backlog_item(split).await.unwrap().into_inner();
    let ids = |r: &SplitBacklogItemResponse| {
        r.backlog_items
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&first),
        ids(&retried),
        "a retried split creates nothing new"
    );
    assert_eq!(
        first.removed_backlog_item.unwrap().status,
        BacklogItemStatus::Removed as i32
    );
    assert!(
        first
            .backlog_items
            .iter()
            .all(|i| i.derived_from_ids == vec![broken[0].id.clone()]
                && i.use_case_id == use_case.id)
    );

    let grouped = game
        .group_backlog_items(GroupBacklogItemsRequest {
            request_id: "g".into(),
            backlog_item_ids: vec![broken[1].id.clone(), broken[2].id.clone()],
            story: Some(draft("a+b")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grouped.backlog_item.unwrap().derived_from_ids.len(), 2);
    assert!(
        grouped
            .removed_backlog_items
            .iter()
            .all(|i| i.status == BacklogItemStatus::Removed as i32)
    );

    let spike = game
        .plan_spike(PlanSpikeRequest {
            request_id: "s".into(),
            backlog_item_id: broken[3].id.clone(),
            summary: String::new(),
            story: "find out".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        spike.backlog_item.unwrap().story_points,
        StoryPoints::Unestimable as i32
    );
    let spike = spike.spike.unwrap();
    assert_eq!(
        (spike.r#type, spike.summary.as_str()),
        (BacklogItemType::Spike as i32, "Spike: fuzzy")
    );

    let live = f
        .items()
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: product.id.clone(),
            statuses: vec![BacklogItemStatus::Planned as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_items;
    let summaries: Vec<&str> = live.iter().map(|i| i.summary.as_str()).collect();
    assert_eq!(
        summaries,
        vec!["fuzzy", "big 1", "big 2", "a+b", "Spike: fuzzy"]
    );
    let error = game
        .split_backlog_item(SplitBacklogItemRequest {
            request_id: "x".into(),
            backlog_item_id: spike.id.clone(),
            stories: vec![draft("only one")],
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    f.system.stop().await;
}

async fn prioritizing_orders_the_top_and_removes(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let mut items = Vec::new();
    for s in ["a", "b", "c", "d", "e"] {
        items.push(f.item(&product.id, s, StoryPoints::One).await);
    }
    let request = PrioritizeBacklogRequest {
        request_id: rid(),
        product_id: product.id.clone(),
        ordered_backlog_item_ids: vec![items[3].id.clone(), items[1].id.clone()],
        removed_backlog_item_ids: vec![items[4].id.clone()],
    };
    let first = f
        .game()
        .prioritize_backlog(request.clone())
        .await
        .unwrap()
        .into_inner();
    let backlog_feed = || f.system.channel(ServiceName::BacklogItem, "acme");
    let events = agilepm_testkit::feed_events(backlog_feed(), 0).await.len();
    let versions = async || {
        f.items()
            .list_backlog_items(ListBacklogItemsRequest {
                product_id: product.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_items
            .into_iter()
            .map(|i| (i.id, i.rank, i.version))
            .collect::<Vec<_>>()
    };
    let before = versions().await;
    // No item changed (rank key, version) and no event was emitted.
    let nothing_changed = async || {
        assert_eq!(versions().await, before);
        let now = agilepm_testkit::feed_events(backlog_feed(), events).await;
        assert_eq!(now.len(), events);
    };
    // A retry is a no-op: the first response, no new rank key, version or event.
    let again = f
        .game()
        .prioritize_backlog(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);
    nothing_changed().await;
    // The same key with another body is refused and changes nothing.
    let reused = f
        .game()
        .prioritize_backlog(PrioritizeBacklogRequest {
            ordered_backlog_item_ids: vec![items[0].id.clone()],
            removed_backlog_item_ids: vec![],
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains(&request.request_id), "{reused:?}");
    // A retry whose first attempt did not complete (its key never recorded a response)
    // runs the steps again: moves to where items already are write nothing.
    f.game()
        .prioritize_backlog(PrioritizeBacklogRequest {
            request_id: rid(),
            ..request
        })
        .await
        .unwrap();
    nothing_changed().await;
    let listed = f
        .items()
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: product.id.clone(),
            statuses: vec![BacklogItemStatus::Planned as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_items;
    assert_eq!(
        listed
            .iter()
            .map(|i| i.summary.as_str())
            .collect::<Vec<_>>(),
        vec!["d", "b", "a", "c"]
    );
    f.system.stop().await;
}

/// A story grouped with itself, or an item both reordered and removed, is a contradiction:
/// refused naming the field, and nothing changes.
async fn contradictory_game_inputs_are_refused_naming_the_field(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let (a, b) = (
        f.item(&product.id, "a", StoryPoints::One).await,
        f.item(&product.id, "b", StoryPoints::One).await,
    );
    let refused = |status: tonic::Status, field: &str, why: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(why), "{status:?}");
        let details = tonic_types::StatusExt::get_error_details(&status);
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field
        );
    };
    let status = f
        .game()
        .group_backlog_items(GroupBacklogItemsRequest {
            request_id: rid(),
            backlog_item_ids: vec![a.id.clone(), a.id.clone()],
            story: Some(draft("a twice")),
        })
        .await
        .unwrap_err();
    refused(status, "backlog_item_ids[1]", "listed twice (also at [0])");
    let prioritize = |ordered: Vec<String>, removed: Vec<String>| PrioritizeBacklogRequest {
        request_id: rid(),
        product_id: product.id.clone(),
        ordered_backlog_item_ids: ordered,
        removed_backlog_item_ids: removed,
    };
    let status = f
        .game()
        .prioritize_backlog(prioritize(
            vec![b.id.clone(), a.id.clone()],
            vec![a.id.clone()],
        ))
        .await
        .unwrap_err();
    refused(
        status,
        "removed_backlog_item_ids[0]",
        "also in ordered_backlog_item_ids[1]",
    );
    let status = f
        .game()
        .prioritize_backlog(prioritize(vec![b.id.clone(), b.id.clone()], vec![]))
        .await
        .unwrap_err();
    refused(status, "ordered_backlog_item_ids[1]", "listed twice");
    let status = f
        .game()
        .prioritize_backlog(prioritize(vec![], vec!["nope".into()]))
        .await
        .unwrap_err();
    refused(status, "removed_backlog_item_ids[0]", "UUID");
    // Nothing changed: both items are still PLANNED at version 1, in plan order.
    let listed = f
        .items()
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: product.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_items;
    assert_eq!(
        listed
            .iter()
            .map(|i| (i.summary.as_str(), i.status, i.version))
            .collect::<Vec<_>>(),
        vec![
            ("a", BacklogItemStatus::Planned as i32, a.version),
            ("b", BacklogItemStatus::Planned as i32, b.version)
        ]
    );
    f.system.stop().await;
}

async fn the_burndown_and_velocity_have_exact_numbers(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    // The sprint's days are past ones, so estimates can be dated on each of them.
    let [d1, d2, d3, d4, d5] = [-10, -9, -8, -7, -6].map(day);
    let sprint = f.sprint(&product.id, &d1, &d5).await;
    let a = f.item(&product.id, "a", StoryPoints::Three).await;
    let b = f.item(&product.id, "b", StoryPoints::Eight).await;
    let outside = f
        .item(&product.id, "not in the sprint", StoryPoints::One)
        .await;
    f.commit(&release, &sprint, &a).await;
    f.commit(&release, &sprint, &b).await;
    let mut tasks = TaskServiceClient::new(f.system.channel(ServiceName::Task, "acme"));
    let mut define = async |item: &str| {
        let request = DefineTaskRequest {
            request_id: rid(),
            backlog_item_id: item.into(),
            name: "t".into(),
            hours_remaining: 1,
            ..Default::default()
        };
        tasks
            .define_task(request)
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .id
    };
    let (t1, t2, t3) = (
        define(&a.id).await,
        define(&b.id).await,
        define(&outside.id).await,
    );
    // Both items were committed on the sprint's first day.
    backdate_memberships(&f, &sprint.id, &[(&a.id, &d1, None), (&b.id, &d1, None)]).await;
    let mut tasks = TaskServiceClient::new(f.system.channel(ServiceName::Task, "acme"));
    for (task, hours, day) in [
        (&t1, 8, d1.as_str()),
        (&t2, 12, d1.as_str()),
        (&t3, 50, d1.as_str()),
        (&t1, 5, d2.as_str()),
        (&t2, 10, d3.as_str()),
        (&t1, 0, d4.as_str()),
        (&t2, 4, d4.as_str()),
    ] {
        let request = EstimateTaskHoursRemainingRequest {
            view: 0,
            id: task.clone(),
            hours_remaining: hours,
            date: day.into(),
            expected_version: None,
        };
        tasks.estimate_task_hours_remaining(request).await.unwrap();
    }
    let mut reports = ReportServiceClient::new(f.planning("acme"));
    let days = reports
        .get_sprint_burndown(GetSprintBurndownRequest {
            sprint_id: sprint.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .days;
    let got: Vec<(&str, i64, f64)> = days
        .iter()
        .map(|d| (d.date.as_str(), d.hours_remaining, d.ideal_hours_remaining))
        .collect();
    assert_eq!(
        got,
        vec![
            (d1.as_str(), 20, 20.0),
            (d2.as_str(), 17, 15.0),
            (d3.as_str(), 15, 10.0),
            (d4.as_str(), 4, 5.0),
            (d5.as_str(), 4, 0.0),
        ]
    );

    // Velocity: two completed sprints with 3 and 8 + 3 points done.
    let mut sprints = f.sprints();
    mark_done(&f, &a.id, 100).await;
    sprints
        .start_sprint(StartSprintRequest {
            id: sprint.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    sprints
        .complete_sprint(CompleteSprintRequest {
            id: sprint.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let next = f.sprint(&product.id, &day(-3), &day(1)).await;
    let c = f.item(&product.id, "c", StoryPoints::Three).await;
    f.sprints()
        .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: next.id.clone(),
            backlog_item_id: b.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    f.commit(&release, &next, &c).await;
    mark_done(&f, &b.id, 100).await;
    mark_done(&f, &c.id, 100).await;
    sprints
        .start_sprint(StartSprintRequest {
            id: next.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    sprints
        .complete_sprint(CompleteSprintRequest {
            id: next.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let velocity = reports
        .get_velocity(GetVelocityRequest {
            product_id: product.id.clone(),
            sprint_count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        velocity
            .sprints
            .iter()
            .map(|s| s.story_points_done)
            .collect::<Vec<_>>(),
        vec![11, 3],
        "newest first"
    );
    assert!((velocity.average_story_points - 7.0).abs() < 1e-9);
    f.system.stop().await;
}

/// The burndown reads membership from history: an item uncommitted mid-sprint counts on
/// the days it was in, one removed mid-sprint stops counting from its removal on, one
/// committed mid-sprint counts from then on. Exact numbers per day.
async fn the_burndown_counts_each_day_its_members_then(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    let [d1, d2, d3, d4, d5] = [-10, -9, -8, -7, -6].map(day);
    let sprint = f.sprint(&product.id, &d1, &d5).await;
    let mut members = Vec::new();
    for name in ["stays", "uncommitted", "removed", "joins", "stays too"] {
        let item = f.item(&product.id, name, StoryPoints::Three).await;
        f.commit(&release, &sprint, &item).await;
        members.push(item);
    }
    let [stays, uncommitted, removed, joins, stays_too] = &members[..] else {
        unreachable!()
    };
    let mut tasks = TaskServiceClient::new(f.system.channel(ServiceName::Task, "acme"));
    let mut estimates = Vec::new();
    for (item, days) in [
        (stays, vec![(&d1, 10), (&d3, 8), (&d5, 5)]),
        (uncommitted, vec![(&d1, 6), (&d2, 5), (&d4, 4)]),
        (removed, vec![(&d1, 5), (&d2, 5)]),
        (joins, vec![(&d1, 3), (&d4, 1)]),
        (stays_too, vec![(&d1, 4), (&d4, 2)]),
    ] {
        let task = tasks
            .define_task(DefineTaskRequest {
                request_id: rid(),
                backlog_item_id: item.id.clone(),
                name: "t".into(),
                hours_remaining: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        for (date, hours) in days {
            estimates.push((task.id.clone(), date.clone(), hours));
        }
    }
    for (id, date, hours) in estimates {
        tasks
            .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
                id,
                hours_remaining: hours,
                date,
                expected_version: None,
                view: 0,
            })
            .await
            .unwrap();
    }
    f.sprints()
        .uncommit_backlog_item_from_sprint(UncommitBacklogItemFromSprintRequest {
            backlog_item_id: uncommitted.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    f.items()
        .remove_backlog_item(RemoveBacklogItemRequest {
            id: removed.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    backdate_memberships(
        &f,
        &sprint.id,
        &[
            (&stays.id, &d1, None),
            (&uncommitted.id, &d1, Some(&d3)),
            (&removed.id, &d1, Some(&d4)),
            (&joins.id, &d2, None),
            (&stays_too.id, &d1, None),
        ],
    )
    .await;
    let days = ReportServiceClient::new(f.planning("acme"))
        .get_sprint_burndown(GetSprintBurndownRequest {
            sprint_id: sprint.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .days;
    let got: Vec<(&str, i64)> = days
        .iter()
        .map(|d| (d.date.as_str(), d.hours_remaining))
        .collect();
    // stays + uncommitted (until d3) + removed (until d4) + joins (from d2) + stays too.
    assert_eq!(
        got,
        vec![
            (d1.as_str(), 10 + 6 + 5 + 4),
            (d2.as_str(), 10 + 5 + 5 + 3 + 4),
            (d3.as_str(), 8 + 5 + 3 + 4),
            (d4.as_str(), 8 + 1 + 2),
            (d5.as_str(), 5 + 1 + 2),
        ]
    );
    f.system.stop().await;
}

/// A release changes after it is scheduled: renamed, described, rescheduled; archived
/// (hidden, closed to items and changes) and brought back. Every refusal changes nothing,
/// and each change is one event on the planning feed.
async fn releases_are_renamed_rescheduled_and_archived(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    let later = f.release(&product.id).await;
    let item = f.item(&product.id, "story", StoryPoints::Three).await;
    let update = |release: Release, paths: &[&str], expected_version: Option<i64>| {
        let mut releases = f.releases();
        let paths = paths.iter().map(|p| p.to_string()).collect();
        async move {
            releases
                .update_release(UpdateReleaseRequest {
                    release: Some(release),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    expected_version,
                })
                .await
                .map(|r| r.into_inner().release.unwrap())
        }
    };
    let changed = Release {
        id: release.id.clone(),
        name: "R1: payments".into(),
        description: "Card payments end to end".into(),
        end_date: day(150),
        begin_date: "ignored: not in the mask".into(),
        ..Default::default()
    };
    let renamed = update(changed, &["name", "description", "end_date"], Some(1))
        .await
        .unwrap();
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.description.as_str(),
            renamed.begin_date.as_str(),
            renamed.end_date.as_str(),
            renamed.version
        ),
        (
            "R1: payments",
            "Card payments end to end",
            release.begin_date.as_str(),
            day(150).as_str(),
            2
        )
    );
    assert!(renamed.update_time.unwrap().seconds >= release.create_time.unwrap().seconds);

    // Refusals, each naming the problem and changing nothing.
    let backwards = Release {
        id: release.id.clone(),
        begin_date: day(200),
        ..Default::default()
    };
    let error = update(backwards, &["begin_date"], None).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("release.end_date"), "{error:?}");
    let moved = Release {
        id: release.id.clone(),
        product_id: product.id.clone(),
        ..Default::default()
    };
    let error = update(moved, &["product_id"], None).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("update_mask"), "{error:?}");
    let error = update(renamed.clone(), &[], None).await.unwrap_err();
    assert!(error.message().starts_with("update_mask"), "{error:?}");
    let error = update(renamed.clone(), &["name"], Some(1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Aborted);
    let get = |id: String| {
        let mut releases = f.releases();
        async move {
            releases
                .get_release(GetReleaseRequest { id })
                .await
                .unwrap()
                .into_inner()
                .release
                .unwrap()
        }
    };
    assert_eq!(get(release.id.clone()).await, renamed);

    // Archived: kept, hidden from the default listing, closed to changes and items.
    let archive = |id: String| {
        let mut releases = f.releases();
        async move {
            releases
                .archive_release(ArchiveReleaseRequest {
                    id,
                    expected_version: None,
                })
                .await
                .unwrap()
                .into_inner()
                .release
                .unwrap()
        }
    };
    let archived = archive(release.id.clone()).await;
    assert!(archived.archived && archived.archive_time.is_some());
    assert_eq!(archived.version, 3);
    assert_eq!(
        archive(release.id.clone()).await,
        archived,
        "archiving twice changes nothing"
    );
    let list = |show_archived: bool| {
        let mut releases = f.releases();
        let product_id = product.id.clone();
        async move {
            releases
                .list_releases(ListReleasesRequest {
                    product_id,
                    show_archived,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .releases
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(false).await, vec![later.id.clone()]);
    assert_eq!(list(true).await, vec![release.id.clone(), later.id.clone()]);
    let error = update(renamed.clone(), &["name"], None).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("archived"), "{error:?}");
    let schedule = |release_id: String| {
        let mut releases = f.releases();
        let backlog_item_id = item.id.clone();
        async move {
            releases
                .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
                    release_id,
                    backlog_item_id,
                    expected_version: None,
                })
                .await
        }
    };
    let error = schedule(release.id.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("archived"), "{error:?}");
    assert_eq!(
        f.get_item(&item.id).await.status,
        BacklogItemStatus::Planned as i32
    );

    // Back in planning: it takes items again.
    let unarchived = f
        .releases()
        .unarchive_release(UnarchiveReleaseRequest {
            id: release.id.clone(),
            expected_version: Some(3),
        })
        .await
        .unwrap()
        .into_inner()
        .release
        .unwrap();
    assert!(!unarchived.archived && unarchived.archive_time.is_none());
    assert_eq!(unarchived.version, 4);
    schedule(release.id.clone()).await.unwrap();
    assert_eq!(f.get_item(&item.id).await.release_id, release.id);

    let channel = f
        .system
        .channel(ServiceName::Planning, &agilepm_testkit::operator_token());
    let kinds: Vec<String> = agilepm_testkit::feed_events(channel, 6)
        .await
        .iter()
        .filter(|e| e.aggregate_id == release.id)
        .map(|e| e.event_type.rsplit('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ReleaseScheduled",
            "ReleaseUpdated",
            "ReleaseArchived",
            "ReleaseUnarchived"
        ]
    );
    f.system.stop().await;
}

/// Summaries of `product`'s items in backlog order, or in `sprint`'s own order.
async fn order_of(f: &Fixture, product: &str, sprint: Option<&str>) -> Vec<String> {
    let request = ListBacklogItemsRequest {
        product_id: product.into(),
        sprint_id: sprint.unwrap_or_default().into(),
        order_by: if sprint.is_some() {
            "sprint_rank"
        } else {
            "rank"
        }
        .into(),
        ..Default::default()
    };
    f.items()
        .list_backlog_items(request)
        .await
        .unwrap()
        .into_inner()
        .backlog_items
        .into_iter()
        .map(|item| item.summary)
        .collect()
}

/// The team orders its sprint without touching the product backlog: a sprint starts in
/// backlog order, moves change only sprint ranks (a retried move nothing), concurrent moves
/// into one gap all land, and an item leaving the sprint leaves its order.
async fn a_sprint_orders_its_items_apart_from_the_backlog(engine: Engine) {
    let f = Fixture::start(engine).await;
    let product = f.product("P", StatusTransitionMode::Automatic).await;
    let release = f.release(&product.id).await;
    let sprint = f.sprint(&product.id, &day(-1), &day(12)).await;
    let mut items = Vec::new();
    for summary in ["a", "b", "c", "d"] {
        items.push(f.item(&product.id, summary, StoryPoints::Three).await);
    }
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| items[i].clone());
    for item in [&c, &a, &b] {
        f.commit(&release, &sprint, item).await;
    }
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["a", "b", "c"]
    );
    let committed = f.get_item(&c.id).await;
    assert_eq!(
        committed.sprint_rank, committed.rank,
        "a sprint starts in backlog order"
    );
    assert_eq!(
        f.get_item(&d.id).await.sprint_rank,
        "",
        "no sprint, no sprint rank"
    );

    let move_in_sprint = |id: &str, anchor: move_backlog_item_in_sprint_request::Anchor| {
        let mut items = f.items();
        let request = MoveBacklogItemInSprintRequest {
            id: id.into(),
            anchor: Some(anchor),
            expected_version: None,
        };
        async move {
            items
                .move_backlog_item_in_sprint(request)
                .await
                .map(|r| r.into_inner().backlog_item.unwrap())
        }
    };
    use move_backlog_item_in_sprint_request::Anchor::{AfterId, BeforeId};
    let moved = move_in_sprint(&c.id, BeforeId(a.id.clone())).await.unwrap();
    assert_eq!(
        (moved.rank.as_str(), moved.version),
        (committed.rank.as_str(), committed.version + 1)
    );
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["c", "a", "b"]
    );
    assert_eq!(order_of(&f, &product.id, None).await, ["a", "b", "c", "d"]);
    let again = move_in_sprint(&c.id, BeforeId(a.id.clone())).await.unwrap();
    assert_eq!(again, moved, "a move to where the item is changes nothing");

    // The product backlog moves without moving the sprint.
    f.items()
        .move_backlog_item(MoveBacklogItemRequest {
            id: b.id.clone(),
            anchor: Some(move_backlog_item_request::Anchor::BeforeId(a.id.clone())),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(order_of(&f, &product.id, None).await, ["b", "a", "c", "d"]);
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["c", "a", "b"]
    );

    // Refusals name the problem and change nothing.
    let error = move_in_sprint(&d.id, BeforeId(a.id.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("COMMITTED to a sprint"),
        "{error:?}"
    );
    let error = move_in_sprint(&a.id, AfterId(d.id.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("own sprint"), "{error:?}");
    let error = move_in_sprint(&a.id, AfterId(a.id.clone()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("after_id"), "{error:?}");
    let error = f
        .items()
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: product.id.clone(),
            order_by: "sprint_rank".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(error.message().starts_with("order_by"), "{error:?}");
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["c", "a", "b"]
    );

    // Leaving the sprint leaves its order; coming back starts from the backlog rank.
    f.sprints()
        .uncommit_backlog_item_from_sprint(UncommitBacklogItemFromSprintRequest {
            backlog_item_id: a.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(f.get_item(&a.id).await.sprint_rank, "");
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["c", "b"]
    );
    f.sprints()
        .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: sprint.id.clone(),
            backlog_item_id: a.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(
        order_of(&f, &product.id, Some(&sprint.id)).await,
        ["c", "a", "b"]
    );

    // Eight concurrent moves into the one gap before the sprint's first item: each lands.
    let mut racers = Vec::new();
    for i in 0..8 {
        let item = f
            .item(&product.id, &format!("r{i}"), StoryPoints::One)
            .await;
        f.commit(&release, &sprint, &item).await;
        racers.push(item);
    }
    let moves = racers
        .iter()
        .map(|item| move_in_sprint(&item.id, BeforeId(c.id.clone())));
    for result in futures::future::join_all(moves).await {
        result.unwrap();
    }
    let order = order_of(&f, &product.id, Some(&sprint.id)).await;
    let mut front: Vec<String> = order[..8].to_vec();
    front.sort();
    assert_eq!(front, (0..8).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(order[8..], ["c", "a", "b"]);

    // One event per real move: c's first move, the racers' eight; the retry wrote none.
    let channel = f
        .system
        .channel(ServiceName::BacklogItem, &agilepm_testkit::operator_token());
    let in_sprint = agilepm_testkit::feed_events(channel, 1)
        .await
        .iter()
        .filter(|e| e.event_type.ends_with("BacklogItemRankedInSprint"))
        .count();
    assert_eq!(in_sprint, 9);
    f.system.stop().await;
}

/// `id`, shown as `name`, holding `roles`.
fn member(id: &str, name: &str, roles: &[MemberRole]) -> Member {
    Member {
        id: id.into(),
        display_name: name.into(),
        email: format!("{id}@example.com"),
        roles: roles.iter().map(|r| *r as i32).collect(),
        ..Default::default()
    }
}

/// The tenant's team says who may volunteer (enabled team members) and own products
/// (enabled product owners); refusals name the field and why, and change nothing; a
/// disabled volunteer stays on their task; an estimate records who gave it.
async fn the_team_decides_who_volunteers_and_owns_products(engine: Engine) {
    use MemberRole::{ProductOwner as Po, TeamMember as Dev};
    let f = Fixture::start(engine).await;
    let team = TeamServiceClient::new(f.planning("acme"));
    let add = |m: Member| {
        let mut team = team.clone();
        async move {
            team.add_member(AddMemberRequest { member: Some(m) })
                .await
                .map(|r| r.into_inner().member.unwrap())
        }
    };
    let ada = add(member("ada", "Ada", &[Dev])).await.unwrap();
    assert_eq!(
        (ada.enabled, ada.version, ada.tenant_id.as_str()),
        (true, 1, "acme")
    );
    add(member("bob", "Bob", &[Po])).await.unwrap();
    add(member("cy", "Cy", &[Po, Dev])).await.unwrap();
    assert_eq!(
        add(member("ada", "Ada", &[Dev])).await.unwrap(),
        ada,
        "a repeated add"
    );
    let error = add(member("ada", "Ada L.", &[Dev])).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    for (bad, field) in [
        (member("dee", "Dee", &[]), "member.roles"),
        (member("dee", "Dee", &[Dev, Dev]), "member.roles"),
        (member("dee", "", &[Dev]), "member.display_name"),
        (member("", "Dee", &[Dev]), "member.id"),
        (
            Member {
                email: "dee at home".into(),
                ..member("dee", "Dee", &[Dev])
            },
            "member.email",
        ),
        (
            Member {
                roles: vec![7],
                ..member("dee", "Dee", &[Dev])
            },
            "member.roles[0]",
        ),
    ] {
        let error = add(bad).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert!(error.message().starts_with(field), "{field}: {error:?}");
    }

    // Product owners come from the team.
    let create = |owner: &str| {
        let mut products = f.products("acme");
        let product = Product {
            name: format!("owned by {owner}"),
            product_owner_id: owner.into(),
            ..Default::default()
        };
        async move {
            products
                .create_product(CreateProductRequest {
                    request_id: rid(),
                    product: Some(product),
                })
                .await
                .map(|r| r.into_inner().product.unwrap())
        }
    };
    for (owner, why) in [("ada", "product-owner role"), ("zed", "not on the team")] {
        let error = create(owner).await.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert!(
            error.message().starts_with("product.product_owner_id"),
            "{error:?}"
        );
        assert!(error.message().contains(why), "{error:?}");
    }
    let product = create("bob").await.unwrap();
    assert_eq!(product.product_owner_id, "bob");

    // Volunteers come from the team, enabled, holding the team-member role.
    let item = f.item(&product.id, "story", StoryPoints::Three).await;
    let tasks = TaskServiceClient::new(f.system.channel(ServiceName::Task, "acme"));
    let define = |volunteer: &str| {
        let mut tasks = tasks.clone();
        let request = DefineTaskRequest {
            request_id: rid(),
            backlog_item_id: item.id.clone(),
            name: format!("for {volunteer}"),
            volunteer_id: volunteer.into(),
            hours_remaining: 4,
            ..Default::default()
        };
        async move {
            tasks
                .define_task(request)
                .await
                .map(|r| r.into_inner().task.unwrap())
        }
    };
    let assign = |task: &Task, volunteer: &str| {
        let mut tasks = tasks.clone();
        let request = AssignTaskVolunteerRequest {
            id: task.id.clone(),
            volunteer_id: volunteer.into(),
            ..Default::default()
        };
        async move {
            tasks
                .assign_task_volunteer(request)
                .await
                .map(|r| r.into_inner().task.unwrap())
        }
    };
    let refused = |error: tonic::Status, why: &str| {
        assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
        assert!(error.message().starts_with("volunteer_id"), "{error:?}");
        assert!(error.message().contains(why), "{why}: {error:?}");
    };
    refused(define("bob").await.unwrap_err(), "team-member role");
    refused(define("zed").await.unwrap_err(), "not on the team");
    let adas = define("ada").await.unwrap();
    let cys = define("").await.unwrap();
    assert_eq!(assign(&cys, "cy").await.unwrap().volunteer_id, "cy");

    let set_enabled = |id: &str, enabled: bool| {
        let mut team = team.clone();
        let id = id.to_owned();
        async move {
            let member = if enabled {
                team.enable_member(EnableMemberRequest {
                    id,
                    expected_version: None,
                })
                .await
                .unwrap()
                .into_inner()
                .member
            } else {
                team.disable_member(DisableMemberRequest {
                    id,
                    expected_version: None,
                })
                .await
                .unwrap()
                .into_inner()
                .member
            };
            member.unwrap()
        }
    };
    let disabled = set_enabled("cy", false).await;
    assert_eq!((disabled.enabled, disabled.version), (false, 2));
    assert_eq!(
        set_enabled("cy", false).await,
        disabled,
        "disabling twice changes nothing"
    );
    refused(assign(&adas, "cy").await.unwrap_err(), "disabled");
    let kept = tasks
        .clone()
        .get_task(GetTaskRequest {
            id: cys.id.clone(),
            view: TaskView::Basic as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        kept.volunteer_id, "cy",
        "a disabled volunteer stays on their task"
    );
    set_enabled("cy", true).await;
    assert_eq!(assign(&adas, "cy").await.unwrap().volunteer_id, "cy");

    // A role taken away is taken away from volunteering too.
    let update = UpdateMemberRequest {
        member: Some(member("ada", "Ada Lovelace", &[Po])),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["roles".into(), "display_name".into()],
        }),
        expected_version: Some(1),
    };
    let updated = team
        .clone()
        .update_member(update)
        .await
        .unwrap()
        .into_inner()
        .member
        .unwrap();
    assert_eq!(
        (
            updated.display_name.as_str(),
            updated.roles.clone(),
            updated.version
        ),
        ("Ada Lovelace", vec![Po as i32], 2)
    );
    refused(assign(&cys, "ada").await.unwrap_err(), "team-member role");

    // The listing: enabled members by id, by role, disabled ones when asked, paged.
    set_enabled("bob", false).await;
    let list = |role: MemberRole, show_disabled: bool| {
        let mut team = team.clone();
        async move {
            let mut ids = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = team
                    .list_members(ListMembersRequest {
                        role: role as i32,
                        show_disabled,
                        page_size: 1,
                        page_token,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ids.extend(page.members.into_iter().map(|m| m.id));
                if page.next_page_token.is_empty() {
                    return ids;
                }
                page_token = page.next_page_token;
            }
        }
    };
    assert_eq!(list(MemberRole::Unspecified, false).await, ["ada", "cy"]);
    assert_eq!(
        list(MemberRole::Unspecified, true).await,
        ["ada", "bob", "cy"]
    );
    assert_eq!(list(Dev, true).await, ["cy"]);
    assert_eq!(list(Po, true).await, ["ada", "bob", "cy"]);

    // An estimate records who gave it: the subject of the caller's token.
    let token = agilepm_testkit::person_token("cy", "acme", &[Role::TeamMember]);
    let mut as_cy = TaskServiceClient::new(agilepm_testkit::channel(
        f.system.address(ServiceName::Task),
        &token,
    ));
    let estimated = as_cy
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            id: adas.id.clone(),
            hours_remaining: 2,
            view: TaskView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let today = estimated.estimation_log.last().unwrap();
    assert_eq!(
        (today.hours_remaining, today.estimated_by.as_str()),
        (2, "cy")
    );

    let channel = f
        .system
        .channel(ServiceName::Planning, &agilepm_testkit::operator_token());
    let kinds: Vec<String> = agilepm_testkit::feed_events(channel, 8)
        .await
        .iter()
        .filter(|e| e.event_type.contains(".Member"))
        .map(|e| {
            format!(
                "{} {}",
                e.event_type.rsplit('.').next().unwrap(),
                e.aggregate_id
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "MemberAdded ada",
            "MemberAdded bob",
            "MemberAdded cy",
            "MemberDisabled cy",
            "MemberEnabled cy",
            "MemberUpdated ada",
            "MemberDisabled bob",
        ]
    );
    f.system.stop().await;
}

/// Issue 36 §3: a split is one move. Split an item while a second client commits it, 50
/// rounds: exactly one of the two wins each round, and never both: when the commitment
/// wins, no story derived from the item exists; when the split wins, the item is REMOVED
/// and its two stories are there.
async fn a_split_racing_a_commitment_is_all_or_nothing(engine: Engine) {
    use crate::coordinator::Sprinting;
    const ROUNDS: usize = 50;
    let s = Sprinting::start(engine, StatusTransitionMode::Automatic).await;
    let mut game = PlanningGameServiceClient::new(s.system.channel(ServiceName::Planning, "acme"));
    let mut sprints = s.sprints();
    let mut wins = (0, 0);
    let mut originals = Vec::new();
    for round in 0..ROUNDS {
        let original = s.scheduled_item().await;
        let split = game.split_backlog_item(SplitBacklogItemRequest {
            request_id: format!("race-split-{round}"),
            backlog_item_id: original.clone(),
            stories: vec![draft("half 1"), draft("half 2")],
        });
        let commit = sprints.commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: s.sprint.id.clone(),
            backlog_item_id: original.clone(),
            expected_version: None,
        });
        let (split, commit) = tokio::join!(split, commit);
        match (&split, &commit) {
            (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => {
                assert_eq!(
                    refused.code(),
                    Code::FailedPrecondition,
                    "round {round}: {refused:?}"
                );
            }
            _ => panic!("round {round}: split {split:?}, commit {commit:?}: exactly one must win"),
        }
        if split.is_ok() {
            wins.0 += 1;
        } else {
            wins.1 += 1;
        }
        originals.push((original, split.is_ok()));
    }
    let items = BacklogItemServiceClient::new(s.system.channel(ServiceName::BacklogItem, "acme"))
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: s.product.id.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_items;
    for (original, split_won) in &originals {
        let stories = items
            .iter()
            .filter(|i| i.derived_from_ids.contains(original))
            .count();
        let status = s.item(original).await.status();
        if *split_won {
            assert_eq!(
                (status, stories),
                (BacklogItemStatus::Removed, 2),
                "{original}"
            );
        } else {
            assert_eq!(
                (status, stories),
                (BacklogItemStatus::Committed, 0),
                "{original}"
            );
        }
    }
    println!(
        "{ROUNDS} rounds: the split won {}, the commitment {}",
        wins.0, wins.1
    );
    s.system.stop().await;
}

/// A team's settings: UTC at version 0 until changed; a change is versioned, refused
/// specifically when wrong, and applied by the task service before the caller hears OK
/// (the next undated estimate is on the team's today). Across a midnight, under a
/// shifted clock: `clocks::a_team_s_days_turn_at_its_own_midnight`.
async fn a_team_sets_its_zone_and_the_task_service_dates_by_it(engine: Engine) {
    let f = Fixture::start(engine).await;
    let team = |tenant: &str| TeamServiceClient::new(f.planning(tenant));
    let update = |zone: &str, paths: &[&str], expected: Option<i64>| UpdateTeamSettingsRequest {
        settings: Some(TeamSettings {
            time_zone: zone.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        expected_version: expected,
    };
    let settings = |tenant: &str| {
        let mut team = team(tenant);
        async move {
            team.get_team_settings(GetTeamSettingsRequest {})
                .await
                .unwrap()
                .into_inner()
                .settings
                .unwrap()
        }
    };
    let defaults = settings("acme").await;
    assert_eq!(
        (
            defaults.time_zone.as_str(),
            defaults.version,
            defaults.update_time
        ),
        ("UTC", 0, None)
    );

    for (request, field) in [
        (
            update("Mars/Olympus", &["time_zone"], None),
            "settings.time_zone",
        ),
        (
            update("america/los_angeles", &["time_zone"], None),
            "settings.time_zone",
        ),
        (update("", &["time_zone"], None), "settings.time_zone"),
        (update("", &[], None), "settings.time_zone"),
        (update("UTC", &["version"], None), "update_mask"),
        (update("UTC", &["time_zone"], Some(-1)), "expected_version"),
    ] {
        let error = team("acme")
            .update_team_settings(request)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
        assert!(error.message().starts_with(field), "{field}: {error:?}");
    }
    let viewer = f.system.channel(
        ServiceName::Planning,
        &agilepm_testkit::person_token("vic", "acme", &[Role::Viewer]),
    );
    let refused = TeamServiceClient::new(viewer)
        .update_team_settings(update("Europe/Berlin", &["time_zone"], None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(settings("acme").await, defaults, "refusals change nothing");

    let changed = team("acme")
        .update_team_settings(update("America/Los_Angeles", &["time_zone"], Some(0)))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(
        (
            changed.time_zone.as_str(),
            changed.version,
            changed.tenant_id.as_str()
        ),
        ("America/Los_Angeles", 1, "acme")
    );
    assert!(changed.update_time.is_some());
    assert_eq!(settings("acme").await, changed);
    let stale = team("acme")
        .update_team_settings(update("Europe/Berlin", &["time_zone"], Some(0)))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let again = team("acme")
        .update_team_settings(update("America/Los_Angeles", &["time_zone"], None))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(again, changed, "setting the zone it has changes nothing");
    assert_eq!(
        settings("other").await.version,
        0,
        "another tenant's team is its own"
    );

    // The task service dates by the zone the caller heard OK for: the definition's log
    // and an undated estimate are on the team's today in Los Angeles.
    let la_today = || {
        chrono::Utc::now()
            .with_timezone(&chrono_tz::America::Los_Angeles)
            .date_naive()
            .to_string()
    };
    let product = f.product("zoned", StatusTransitionMode::Automatic).await;
    let item = f.item(&product.id, "a story", StoryPoints::Three).await;
    let mut tasks = TaskServiceClient::new(f.system.channel(ServiceName::Task, "acme"));
    let before = la_today();
    let task = tasks
        .define_task(DefineTaskRequest {
            request_id: rid(),
            backlog_item_id: item.id,
            name: "the work".into(),
            hours_remaining: 5,
            view: TaskView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let estimated = tasks
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            id: task.id,
            hours_remaining: 3,
            view: TaskView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let after = la_today();
    for log in [&task.estimation_log, &estimated.estimation_log] {
        let date = &log.last().expect("a log entry").date;
        assert!(
            *date == before || *date == after,
            "logged on {date}, not the team's today ({before}) in Los Angeles"
        );
    }
}
