//! The backlog-item service over real gRPC, on both engines: the status machine, ranking,
//! priority, the reconcile guard, manual mode, tenants, versions and bad input.

use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::*;
use agilepm_proto::common::v1::StatusTransitionMode;
use agilepm_proto::events::v1::Event;
use agilepm_proto::planning::v1::ListReleasesRequest;
use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
use agilepm_testkit::{Engine, TestSystem, engine_tests};
use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

engine_tests!(
    items_walk_the_status_machine,
    illegal_transitions_are_refused_naming_the_rule,
    planning_is_idempotent_on_request_id,
    the_backlog_lists_in_rank_order_and_moves_write_one_row,
    many_moves_into_one_spot_rebalance_and_keep_the_order,
    priority_ordering_and_filters,
    page_tokens_are_bound_to_their_query_and_expire,
    reconcile_ignores_stale_and_duplicate_revisions,
    a_reconcile_batch_answers_each_basis_and_refuses_malformed_calls_whole,
    racing_reconciles_settle_on_the_newest_basis,
    lookups_by_id_take_the_primary_key_before_there_are_statistics,
    manual_mode_flags_and_accepts_by_hand,
    story_fields_update_with_a_mask,
    tenants_and_versions_and_bad_input,
);

struct Fixture {
    system: TestSystem,
}

impl Fixture {
    async fn start(engine: Engine) -> Fixture {
        Fixture {
            system: TestSystem::start(engine, &[ServiceName::BacklogItem]).await,
        }
    }

    fn client(&self, tenant: &str) -> BacklogItemServiceClient<PeerChannel> {
        BacklogItemServiceClient::new(self.system.channel(ServiceName::BacklogItem, tenant))
    }

    /// A client playing the planning service, the only caller of the commands that name
    /// a sprint or release.
    fn as_planning(&self, tenant: &str) -> BacklogItemServiceClient<PeerChannel> {
        BacklogItemServiceClient::new(self.system.channel_as_service(
            ServiceName::BacklogItem,
            ServiceName::Planning,
            tenant,
        ))
    }

    /// A client playing the coordinator, the only caller of the reconcile RPCs.
    fn as_coordinator(&self, tenant: &str) -> BacklogItemServiceClient<PeerChannel> {
        BacklogItemServiceClient::new(self.system.channel_as_service(
            ServiceName::BacklogItem,
            ServiceName::Coordinator,
            tenant,
        ))
    }

    /// Plans one item per summary in `product`, in order; their ids.
    async fn plan_all(
        &self,
        tenant: &str,
        product: &str,
        summaries: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        for summary in summaries {
            ids.push(self.plan(tenant, product, &summary).await.id);
        }
        ids
    }

    /// Records `product` for `tenant` as the planning service does when it is created.
    async fn register(&self, tenant: &str, product: &str) {
        self.record_mode(tenant, product, StatusTransitionMode::Automatic, 1)
            .await;
    }

    /// Records `product`'s transition mode at `version`, as planning does on a switch.
    async fn record_mode(
        &self,
        tenant: &str,
        product: &str,
        mode: StatusTransitionMode,
        version: i64,
    ) -> i32 {
        self.as_planning(tenant)
            .sync_products(SyncProductsRequest {
                products: vec![ProductFacts {
                    product_id: product.into(),
                    status_transition_mode: mode as i32,
                    product_version: version,
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .applied
    }

    async fn plan(&self, tenant: &str, product: &str, summary: &str) -> BacklogItem {
        self.register(tenant, product).await;
        self.client(tenant)
            .plan_backlog_item(PlanBacklogItemRequest {
                request_id: Uuid::new_v4().to_string(),
                product_id: product.into(),
                summary: summary.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
    }

    /// Events on the backlog-item feed: at least `count`, and every one committed by then.
    async fn events(&self, count: usize) -> Vec<Event> {
        let channel = self
            .system
            .channel(ServiceName::BacklogItem, &agilepm_testkit::operator_token());
        agilepm_testkit::feed_events(channel, count).await
    }
}

fn product() -> String {
    Uuid::now_v7().to_string()
}

fn status(item: &BacklogItem) -> BacklogItemStatus {
    BacklogItemStatus::try_from(item.status).unwrap()
}

/// The status changes among `events` that task hours caused, in feed order.
fn task_hours_changes(events: &[Event]) -> Vec<BacklogItemStatusChanged> {
    events
        .iter()
        .filter(|e| e.event_type.ends_with("StatusChanged"))
        .map(|e| prost::Message::decode(e.payload.as_ref().unwrap().value.as_slice()).unwrap())
        .filter(|e: &BacklogItemStatusChanged| e.cause == StatusChangeCause::TaskHours as i32)
        .collect()
}

async fn items_walk_the_status_machine(engine: Engine) {
    let f = Fixture::start(engine).await;
    let p = product();
    let item = f.plan("acme", &p, "Story").await;
    assert_eq!(
        (status(&item), item.version),
        (BacklogItemStatus::Planned, 1)
    );
    let mut c = f.as_planning("acme");
    let (release, sprint, sprint2) = (product(), product(), product());
    let scheduled = c
        .schedule_backlog_item(ScheduleBacklogItemRequest {
            id: item.id.clone(),
            release_id: release.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (status(&scheduled), scheduled.release_id.as_str()),
        (BacklogItemStatus::Scheduled, release.as_str())
    );
    let committed = c
        .commit_backlog_item(CommitBacklogItemRequest {
            id: item.id.clone(),
            sprint_id: sprint.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(status(&committed), BacklogItemStatus::Committed);
    let moved = c
        .commit_backlog_item(CommitBacklogItemRequest {
            id: item.id.clone(),
            sprint_id: sprint2.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(moved.sprint_id, sprint2);
    let uncommitted = c
        .uncommit_backlog_item(UncommitBacklogItemRequest {
            id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (status(&uncommitted), uncommitted.sprint_id.as_str()),
        (BacklogItemStatus::Scheduled, "")
    );
    let unscheduled = c
        .unschedule_backlog_item(UnscheduleBacklogItemRequest {
            id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(status(&unscheduled), BacklogItemStatus::Planned);
    let removed = c
        .remove_backlog_item(RemoveBacklogItemRequest {
            id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(status(&removed), BacklogItemStatus::Removed);

    let events = f.events(12).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.event_type.rsplit('.').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "BacklogItemPlanned",
            "BacklogItemScheduled",
            "BacklogItemStatusChanged",
            "BacklogItemCommitted",
            "BacklogItemStatusChanged",
            "BacklogItemUncommitted",
            "BacklogItemCommitted",
            "BacklogItemUncommitted",
            "BacklogItemStatusChanged",
            "BacklogItemUnscheduled",
            "BacklogItemStatusChanged",
            "BacklogItemMarkedAsRemoved",
            "BacklogItemStatusChanged",
        ]
    );
    f.system.stop().await;
}

async fn illegal_transitions_are_refused_naming_the_rule(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.plan("acme", &product(), "Story").await;
    let mut c = f.as_planning("acme");
    let error = c
        .commit_backlog_item(CommitBacklogItemRequest {
            id: item.id.clone(),
            sprint_id: product(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("scheduled for a release"),
        "{error:?}"
    );
    let error = f
        .client("acme")
        .mark_backlog_item_done(MarkBacklogItemDoneRequest {
            id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    c.remove_backlog_item(RemoveBacklogItemRequest {
        id: item.id.clone(),
        expected_version: None,
    })
    .await
    .unwrap();
    let error = c
        .remove_backlog_item(RemoveBacklogItemRequest {
            id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert!(error.message().contains("DONE and REMOVED"), "{error:?}");
    let after = c
        .get_backlog_item(GetBacklogItemRequest {
            consistency_token: String::new(),
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(after.version, 2, "refusals changed nothing");
    f.system.stop().await;
}

async fn planning_is_idempotent_on_request_id(engine: Engine) {
    let f = Fixture::start(engine).await;
    let p = product();
    f.register("acme", &p).await;
    let request = PlanBacklogItemRequest {
        request_id: "plan-once".into(),
        product_id: p.clone(),
        summary: "S".into(),
        ..Default::default()
    };
    let calls = (0..6).map(|_| {
        let mut c = f.client("acme");
        let request = request.clone();
        tokio::spawn(async move {
            c.plan_backlog_item(request)
                .await
                .unwrap()
                .into_inner()
                .backlog_item
                .unwrap()
                .id
        })
    });
    let ids: std::collections::HashSet<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    let reused = f
        .client("acme")
        .plan_backlog_item(PlanBacklogItemRequest {
            summary: "another story".into(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains("\"plan-once\""), "{reused:?}");
    // Keys are per tenant: another tenant's same key is its own.
    let other = product();
    f.register("globex", &other).await;
    f.client("globex")
        .plan_backlog_item(PlanBacklogItemRequest {
            product_id: other,
            ..request
        })
        .await
        .unwrap();
    let listed = f
        .client("acme")
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.backlog_items.len(), 1);
    f.system.stop().await;
}

async fn list_summaries(
    c: &mut BacklogItemServiceClient<PeerChannel>,
    product: &str,
    page_size: i32,
) -> Vec<String> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_backlog_items(ListBacklogItemsRequest {
                product_id: product.into(),
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.backlog_items.into_iter().map(|i| i.summary));
        token = page.next_page_token;
        if token.is_empty() {
            return all;
        }
    }
}

async fn the_backlog_lists_in_rank_order_and_moves_write_one_row(engine: Engine) {
    let f = Fixture::start(engine).await;
    let p = product();
    let ids = f
        .plan_all("acme", &p, (0..6).map(|i| format!("s{i}")))
        .await;
    let mut c = f.client("acme");
    assert_eq!(
        list_summaries(&mut c, &p, 4).await,
        vec!["s0", "s1", "s2", "s3", "s4", "s5"]
    );
    let before_versions: Vec<i64> = futures::future::join_all(ids.iter().map(|id| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            c.get_backlog_item(GetBacklogItemRequest {
                id,
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
            .version
        }
    }))
    .await;
    c.move_backlog_item(MoveBacklogItemRequest {
        id: ids[5].clone(),
        anchor: Some(move_backlog_item_request::Anchor::BeforeId(ids[0].clone())),
        expected_version: None,
    })
    .await
    .unwrap();
    c.move_backlog_item(MoveBacklogItemRequest {
        id: ids[0].clone(),
        anchor: Some(move_backlog_item_request::Anchor::AfterId(ids[3].clone())),
        expected_version: None,
    })
    .await
    .unwrap();
    assert_eq!(
        list_summaries(&mut c, &p, 4).await,
        vec!["s5", "s1", "s2", "s3", "s0", "s4"]
    );
    // Only the moved items changed.
    for (i, id) in ids.iter().enumerate() {
        let v = c
            .get_backlog_item(GetBacklogItemRequest {
                id: id.clone(),
                consistency_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap()
            .version;
        let moved = i == 0 || i == 5;
        assert_eq!(v, before_versions[i] + i64::from(moved), "item {i}");
    }
    let other = f.plan("acme", &product(), "elsewhere").await;
    let error = c
        .move_backlog_item(MoveBacklogItemRequest {
            id: ids[1].clone(),
            anchor: Some(move_backlog_item_request::Anchor::BeforeId(other.id)),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    f.system.stop().await;
}

async fn many_moves_into_one_spot_rebalance_and_keep_the_order(engine: Engine) {
    let f = Fixture::start(engine).await;
    let p = product();
    let ids = f
        .plan_all("acme", &p, (0..30).map(|i| format!("{i:02}")))
        .await;
    let mut c = f.client("acme");
    // Repeatedly move the last item to just after the first: the gap between the first
    // two keys is halved each time until a rebalance respaces the backlog.
    let mut expected: Vec<String> = (0..30).map(|i| format!("{i:02}")).collect();
    for round in 0..400 {
        let last = expected.last().unwrap().clone();
        let last_id = ids[last.parse::<usize>().unwrap()].clone();
        c.move_backlog_item(MoveBacklogItemRequest {
            id: last_id,
            anchor: Some(move_backlog_item_request::Anchor::AfterId(ids[0].clone())),
            expected_version: None,
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let moved = expected.pop().unwrap();
        expected.insert(1, moved);
    }
    assert_eq!(list_summaries(&mut c, &p, 7).await, expected);
    let first = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p,
            page_size: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        first.backlog_items.iter().all(|i| i.rank.len() <= 48),
        "rebalancing bounds the key length"
    );
    f.system.stop().await;
}

async fn priority_ordering_and_filters(engine: Engine) {
    let f = Fixture::start(engine).await;
    let p = product();
    f.register("acme", &p).await;
    let mut c = f.as_planning("acme");
    let rated = |benefit, cost| BusinessPriority {
        benefit,
        penalty: 1,
        cost,
        risk: 1,
    };
    let plan = |summary: &str, priority: Option<BusinessPriority>, item_type: BacklogItemType| {
        let mut c = c.clone();
        let request = PlanBacklogItemRequest {
            request_id: Uuid::new_v4().to_string(),
            product_id: p.clone(),
            summary: summary.into(),
            business_priority: priority,
            r#type: item_type as i32,
            ..Default::default()
        };
        async move {
            c.plan_backlog_item(request)
                .await
                .unwrap()
                .into_inner()
                .backlog_item
                .unwrap()
        }
    };
    let low = plan("low", Some(rated(1, 9)), BacklogItemType::Feature).await;
    let high = plan("high", Some(rated(9, 1)), BacklogItemType::Defect).await;
    plan("unrated", None, BacklogItemType::Feature).await;
    plan("mid", Some(rated(5, 5)), BacklogItemType::Feature).await;
    assert!(
        (high.priority_score - 5.0).abs() < 1e-9,
        "(9 + 1) / (1 + 1)"
    );
    assert!(low.priority_score < high.priority_score);
    let by_priority = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p.clone(),
            order_by: "priority_score desc".into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        by_priority
            .backlog_items
            .iter()
            .map(|i| i.summary.as_str())
            .collect::<Vec<_>>(),
        vec!["high", "mid"]
    );
    let rest = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p.clone(),
            order_by: "priority_score desc".into(),
            page_size: 2,
            page_token: by_priority.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.backlog_items
            .iter()
            .map(|i| i.summary.as_str())
            .collect::<Vec<_>>(),
        vec!["low", "unrated"]
    );
    let defects = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p.clone(),
            r#type: BacklogItemType::Defect as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(defects.backlog_items.len(), 1);
    let release = product();
    c.schedule_backlog_item(ScheduleBacklogItemRequest {
        id: low.id.clone(),
        release_id: release.clone(),
        expected_version: None,
    })
    .await
    .unwrap();
    let in_release = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p.clone(),
            release_id: release,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        in_release
            .backlog_items
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>(),
        vec![low.id.as_str()]
    );
    let scheduled = c
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: p,
            statuses: vec![BacklogItemStatus::Scheduled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scheduled.backlog_items.len(), 1);
    f.system.stop().await;
}

/// AIP-158: a page token is accepted only with the query that returned it, and only for
/// an hour.
async fn page_tokens_are_bound_to_their_query_and_expire(engine: Engine) {
    let f = Fixture::start(engine).await;
    let (p, other) = (product(), product());
    for product in [&p, &other] {
        f.register("acme", product).await;
        for n in 0..3 {
            f.plan("acme", product, &format!("story {n}")).await;
        }
    }
    let mut c = f.as_planning("acme");
    let first = ListBacklogItemsRequest {
        product_id: p.clone(),
        page_size: 2,
        ..Default::default()
    };
    let token = c
        .list_backlog_items(first.clone())
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token.is_empty());
    let next = ListBacklogItemsRequest {
        page_token: token.clone(),
        ..first.clone()
    };
    let second = c
        .list_backlog_items(next.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.backlog_items.len(),
        1,
        "the token works with its own query"
    );
    let page_size_may_change = ListBacklogItemsRequest {
        page_size: 10,
        ..next.clone()
    };
    c.list_backlog_items(page_size_may_change).await.unwrap();

    let refused = |status: tonic::Status, why: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(why), "{status:?}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "page_token"
        );
    };
    for (what, request) in [
        (
            "another product",
            ListBacklogItemsRequest {
                product_id: other.clone(),
                ..next.clone()
            },
        ),
        (
            "another order",
            ListBacklogItemsRequest {
                order_by: "priority_score desc".into(),
                ..next.clone()
            },
        ),
        (
            "another filter",
            ListBacklogItemsRequest {
                statuses: vec![BacklogItemStatus::Planned as i32],
                ..next.clone()
            },
        ),
    ] {
        let status = c.list_backlog_items(request).await.unwrap_err();
        eprintln!("{what}: {}", status.message());
        refused(status, "another query");
    }
    // Another tenant, same product id and fields.
    let status = f
        .as_planning("globex")
        .list_backlog_items(next.clone())
        .await
        .unwrap_err();
    refused(status, "another query");
    // Another RPC: the planning service's ListReleases.
    let planning = TestSystem::start(engine, &[ServiceName::Planning]).await;
    let status = ReleaseServiceClient::new(planning.channel(ServiceName::Planning, "acme"))
        .list_releases(ListReleasesRequest {
            product_id: p.clone(),
            page_size: 2,
            page_token: token.clone(),
            show_archived: false,
        })
        .await
        .unwrap_err();
    refused(status, "another query");
    planning.stop().await;
    // The same token, issued two hours ago.
    let text = String::from_utf8(hex::decode(&token).unwrap()).unwrap();
    let (issued, rest) = text.strip_prefix("k2:").unwrap().split_once(':').unwrap();
    let issued: i64 = issued.parse().unwrap();
    let expired = hex::encode(format!("k2:{}:{rest}", issued - 2 * 3600));
    let status = c
        .list_backlog_items(ListBacklogItemsRequest {
            page_token: expired,
            ..first
        })
        .await
        .unwrap_err();
    refused(status, "expired");
    f.system.stop().await;
}

async fn committed_item(f: &Fixture, tenant: &str) -> BacklogItem {
    let item = f.plan(tenant, &product(), "Story").await;
    let mut c = f.as_planning(tenant);
    c.schedule_backlog_item(ScheduleBacklogItemRequest {
        id: item.id.clone(),
        release_id: product(),
        expected_version: None,
    })
    .await
    .unwrap();
    c.commit_backlog_item(CommitBacklogItemRequest {
        id: item.id.clone(),
        sprint_id: product(),
        expected_version: None,
    })
    .await
    .unwrap()
    .into_inner()
    .backlog_item
    .unwrap()
}

fn basis(
    id: &str,
    hours: i64,
    count: i64,
    revision: i64,
    mode: StatusTransitionMode,
) -> ReconcileBacklogItemStatusRequest {
    ReconcileBacklogItemStatusRequest {
        id: id.into(),
        task_hours_remaining: hours,
        task_count: count,
        task_revision: revision,
        transition_mode: mode as i32,
    }
}

async fn reconcile_ignores_stale_and_duplicate_revisions(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = committed_item(&f, "acme").await;
    let mut c = f.as_coordinator("acme");
    let auto = StatusTransitionMode::Automatic;
    let outcome =
        |r: &ReconcileBacklogItemStatusResponse| ReconcileOutcome::try_from(r.outcome).unwrap();
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 5, 2, 3, auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&r), ReconcileOutcome::Unchanged);
    // The product is AUTOMATIC: a caller naming MANUAL does not hold the item back.
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 0, 2, 5, StatusTransitionMode::Manual))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (outcome(&r), status(r.backlog_item.as_ref().unwrap())),
        (ReconcileOutcome::Changed, BacklogItemStatus::Done)
    );
    // A late, older basis (hours still 5 at revision 4) must not reopen the item.
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 5, 2, 4, auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (outcome(&r), status(r.backlog_item.as_ref().unwrap())),
        (ReconcileOutcome::IgnoredStale, BacklogItemStatus::Done)
    );
    // A duplicate of the applied one is ignored too.
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 0, 2, 5, auto))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome(&r), ReconcileOutcome::IgnoredStale);
    // Concurrent deliveries of the same newer basis: exactly one applies the change.
    let calls = (0..8).map(|_| {
        let mut c = c.clone();
        let request = basis(&item.id, 1, 2, 6, auto);
        tokio::spawn(async move {
            ReconcileOutcome::try_from(
                c.reconcile_backlog_item_status(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .outcome,
            )
            .unwrap()
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == ReconcileOutcome::Changed)
            .count(),
        1,
        "{outcomes:?}"
    );
    let now = f
        .client("acme")
        .get_backlog_item(GetBacklogItemRequest {
            consistency_token: String::new(),
            id: item.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (status(&now), now.reconciled_task_revision),
        (BacklogItemStatus::Committed, 6)
    );
    let changes = task_hours_changes(&f.events(7).await);
    assert_eq!(
        changes.len(),
        2,
        "one StatusChanged per real change: DONE, then back"
    );
    assert_eq!(changes[0].new_status, BacklogItemStatus::Done as i32);
    assert_eq!(changes[0].task_revision, 5);
    let error = c
        .reconcile_backlog_item_status(basis(&item.id, -1, 2, 9, auto))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    f.system.stop().await;
}

async fn a_reconcile_batch_answers_each_basis_and_refuses_malformed_calls_whole(engine: Engine) {
    let f = Fixture::start(engine).await;
    let a = committed_item(&f, "acme").await;
    let b = committed_item(&f, "acme").await;
    let unknown = Uuid::now_v7().to_string();
    let mut c = f.as_coordinator("acme");
    let auto = StatusTransitionMode::Automatic;
    let batch = |reconciles| ReconcileBacklogItemStatusesRequest { reconciles };
    // What each result says: the outcome and the item's status, or the error's code.
    let summary = |results: Vec<ReconcileResult>| -> Vec<Result<_, Code>> {
        results
            .into_iter()
            .map(|r| match r.result.unwrap() {
                reconcile_result::Result::Reconciled(r) => Ok((
                    ReconcileOutcome::try_from(r.outcome).unwrap(),
                    status(r.backlog_item.as_ref().unwrap()),
                )),
                reconcile_result::Result::Error(e) => Err(Code::from_i32(e.code)),
            })
            .collect()
    };

    // Several bases of one item apply in request order; an unknown item fails alone.
    let results = c
        .reconcile_backlog_item_statuses(batch(vec![
            basis(&a.id, 5, 2, 3, auto),
            basis(&b.id, 0, 2, 4, auto),
            basis(&unknown, 0, 1, 1, auto),
            basis(&a.id, 0, 2, 5, auto),
            basis(&a.id, 5, 2, 4, auto),
        ]))
        .await
        .unwrap()
        .into_inner()
        .results;
    use BacklogItemStatus::{Committed, Done};
    use ReconcileOutcome::{Changed, IgnoredStale, Unchanged};
    assert_eq!(
        summary(results),
        vec![
            Ok((Unchanged, Committed)),
            Ok((Changed, Done)),
            Err(Code::NotFound),
            Ok((Changed, Done)),
            Ok((IgnoredStale, Done)),
        ]
    );
    // Two bases of an item with hours left, the newer second: the fast statement
    // applies the newer one and reports it applied, whether or not the two share a
    // group-commit batch (the older one is stale if they do).
    let c_item = committed_item(&f, "acme").await;
    let results = c
        .reconcile_backlog_item_statuses(batch(vec![
            basis(&c_item.id, 4, 2, 4, auto),
            basis(&c_item.id, 3, 2, 6, auto),
        ]))
        .await
        .unwrap()
        .into_inner()
        .results;
    let results = summary(results);
    assert!(
        matches!(results[0], Ok((IgnoredStale | Unchanged, Committed))),
        "{results:?}"
    );
    assert_eq!(results[1], Ok((Unchanged, Committed)), "{results:?}");
    // A call acting for another tenant does not reach acme's items.
    let results = f
        .as_coordinator("globex")
        .reconcile_backlog_item_statuses(batch(vec![basis(&b.id, 3, 2, 9, auto)]))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(summary(results), vec![Err(Code::NotFound)]);

    // A malformed basis refuses the whole call, naming its place; the valid basis
    // beside it (which would reopen b) changes nothing.
    let error = c
        .reconcile_backlog_item_statuses(batch(vec![
            basis(&b.id, 3, 2, 9, auto),
            basis(&a.id, -1, 2, 9, auto),
        ]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error
            .message()
            .contains("reconciles[1].task_hours_remaining"),
        "{}",
        error.message()
    );
    for (empty_or_too_many, count) in [("empty", 0), ("too many", 1001)] {
        let error = c
            .reconcile_backlog_item_statuses(batch(vec![basis(&b.id, 3, 2, 9, auto); count]))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{empty_or_too_many}");
        assert!(
            error.message().contains("reconciles"),
            "{}",
            error.message()
        );
    }
    let b_now = f
        .client("acme")
        .get_backlog_item(GetBacklogItemRequest {
            id: b.id.clone(),
            consistency_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!((status(&b_now), b_now.reconciled_task_revision), (Done, 4));
    // One StatusChanged per real change: a and b reaching DONE.
    let done: Vec<String> = task_hours_changes(&f.events(11).await)
        .into_iter()
        .map(|e| e.backlog_item_id)
        .collect();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done.contains(&a.id) && done.contains(&b.id), "{done:?}");
    f.system.stop().await;
}

async fn manual_mode_flags_and_accepts_by_hand(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = committed_item(&f, "acme").await;
    let mut c = f.as_coordinator("acme");
    let (manual, auto) = (
        StatusTransitionMode::Manual,
        StatusTransitionMode::Automatic,
    );
    assert_eq!(f.record_mode("acme", &item.product_id, manual, 2).await, 1);
    // An older fact does not undo the switch.
    assert_eq!(f.record_mode("acme", &item.product_id, auto, 1).await, 0);
    // The mode a caller names is ignored: the recorded MANUAL applies.
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 0, 3, 1, auto))
        .await
        .unwrap()
        .into_inner();
    let flagged = r.backlog_item.unwrap();
    assert_eq!(
        (status(&flagged), flagged.awaiting_acceptance),
        (BacklogItemStatus::Committed, true)
    );
    let done = f
        .client("acme")
        .mark_backlog_item_done(MarkBacklogItemDoneRequest {
            id: item.id.clone(),
            expected_version: Some(flagged.version),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (status(&done), done.awaiting_acceptance),
        (BacklogItemStatus::Done, false)
    );
    // Discovered work reopens it in either mode.
    let r = c
        .reconcile_backlog_item_status(basis(&item.id, 4, 4, 2, manual))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status(r.backlog_item.as_ref().unwrap()),
        BacklogItemStatus::Committed
    );
    f.system.stop().await;
}

async fn story_fields_update_with_a_mask(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.plan("acme", &product(), "Old").await;
    let mut c = f.client("acme");
    let update = BacklogItem {
        id: item.id.clone(),
        summary: "New".into(),
        story: "As a user...".into(),
        story_points: StoryPoints::Unestimable as i32,
        business_priority: Some(BusinessPriority {
            benefit: 4,
            penalty: 4,
            cost: 2,
            risk: 2,
        }),
        category: "ignored: not in the mask".into(),
        ..Default::default()
    };
    let mask = prost_types::FieldMask {
        paths: vec![
            "summary".into(),
            "story".into(),
            "story_points".into(),
            "business_priority".into(),
        ],
    };
    let updated = c
        .update_backlog_item(UpdateBacklogItemRequest {
            backlog_item: Some(update.clone()),
            update_mask: Some(mask),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .backlog_item
        .unwrap();
    assert_eq!(
        (
            updated.summary.as_str(),
            updated.category.as_str(),
            updated.version
        ),
        ("New", "", 2)
    );
    assert_eq!(updated.story_points, StoryPoints::Unestimable as i32);
    assert!((updated.priority_score - 2.0).abs() < 1e-9);
    let bad = c
        .update_backlog_item(UpdateBacklogItemRequest {
            backlog_item: Some(update.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status".into()],
            }),
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let kinds: Vec<String> = f
        .events(5)
        .await
        .iter()
        .map(|e| e.event_type.rsplit('.').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "BacklogItemPlanned",
            "BacklogItemSummarized",
            "BacklogItemStoryTold",
            "BacklogItemStoryPointsAssigned",
            "BacklogItemBusinessPriorityAssigned"
        ]
    );
    f.system.stop().await;
}

async fn tenants_and_versions_and_bad_input(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.plan("acme", &product(), "Secret").await;
    let mut globex = f.client("globex");
    assert_eq!(
        globex
            .get_backlog_item(GetBacklogItemRequest {
                consistency_token: String::new(),
                id: item.id.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        globex
            .remove_backlog_item(RemoveBacklogItemRequest {
                id: item.id.clone(),
                expected_version: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = globex
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: item.product_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.backlog_items.is_empty());

    let mut c = f.as_planning("acme");
    let stale = c
        .schedule_backlog_item(ScheduleBacklogItemRequest {
            id: item.id.clone(),
            release_id: product(),
            expected_version: Some(7),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);

    let cases = vec![
        (
            "product_id",
            PlanBacklogItemRequest {
                request_id: "a".into(),
                product_id: "nope".into(),
                summary: "s".into(),
                ..Default::default()
            },
        ),
        (
            "summary",
            PlanBacklogItemRequest {
                request_id: "b".into(),
                product_id: product(),
                summary: String::new(),
                ..Default::default()
            },
        ),
        (
            "summary",
            PlanBacklogItemRequest {
                request_id: "c".into(),
                product_id: product(),
                summary: "x".repeat(10_000),
                ..Default::default()
            },
        ),
        (
            "request_id",
            PlanBacklogItemRequest {
                request_id: String::new(),
                product_id: product(),
                summary: "s".into(),
                ..Default::default()
            },
        ),
        (
            "business_priority.cost",
            PlanBacklogItemRequest {
                request_id: "d".into(),
                product_id: product(),
                summary: "s".into(),
                business_priority: Some(BusinessPriority {
                    benefit: 1,
                    penalty: 1,
                    cost: 10,
                    risk: 1,
                }),
                ..Default::default()
            },
        ),
        (
            "story_points",
            PlanBacklogItemRequest {
                request_id: "e".into(),
                product_id: product(),
                summary: "s".into(),
                story_points: 99,
                ..Default::default()
            },
        ),
    ];
    for (field, request) in cases {
        let error = c.plan_backlog_item(request).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{field}");
        assert_eq!(
            error
                .get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    let error = c
        .get_backlog_item(GetBacklogItemRequest {
            id: "x".into(),
            consistency_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    f.system.stop().await;
}

/// Lookups of an item by id and tenant (the statement that settles most reconcile bases,
/// and the plain read by id) take the primary key, even when planned before the table has
/// statistics (a new deployment; a connection keeps its plans). While the request-id index
/// led with tenant_id, PostgreSQL's plans entered through it and read every item of the
/// tenant per lookup (migration 0101_request_id_first).
async fn lookups_by_id_take_the_primary_key_before_there_are_statistics(engine: Engine) {
    use agilepm_backlog_item::store::{RevisionMove, advance_revisions_statement};
    use sqlx::{Executor as _, Row as _};

    let fixture = Fixture::start(engine).await;
    let p = product();
    let ids = fixture
        .plan_all("acme", &p, (0..100).map(|n| format!("item {n}")))
        .await;
    let moves: Vec<RevisionMove<'_>> = ids[..2]
        .iter()
        .map(|id| RevisionMove {
            tenant: "acme",
            id,
            basis: agilepm_backlog_item::domain::TaskBasis {
                hours: 3,
                count: 1,
                revision: 1,
            },
        })
        .collect();
    let statement = advance_revisions_statement(engine, &moves);
    let pool = fixture.system.database(ServiceName::BacklogItem).await;
    let mut conn = pool.acquire().await.unwrap();
    let plan: Vec<String> = match engine {
        Engine::Postgres => {
            // Planned as the services plan (`platform::storage::db`): once, generically.
            conn.execute("SET random_page_cost = 1.1; SET plan_cache_mode = force_generic_plan")
                .await
                .unwrap();
            conn.execute(sqlx::AssertSqlSafe(format!(
                "PREPARE fast AS {}",
                statement.text()
            )))
            .await
            .unwrap();
            conn.execute(
                "PREPARE by_id AS SELECT id FROM backlog_items WHERE id = $1 AND tenant_id = $2",
            )
            .await
            .unwrap();
            let mut plans = Vec::new();
            for explain in [
                format!(
                    "EXPLAIN EXECUTE fast('{{{},{}}}', '{{acme,acme}}', '{{1,1}}', '{{3,3}}', '{{1,1}}')",
                    ids[0], ids[1]
                ),
                format!("EXPLAIN EXECUTE by_id('{}', 'acme')", ids[0]),
            ] {
                let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(explain))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get::<String, _>(0))
                    .collect();
                assert!(
                    plan.join("\n").contains("backlog_items_pkey"),
                    "each plan finds the item by its id:\n{plan:#?}"
                );
                plans.extend(plan);
            }
            plans
        }
        Engine::Sqlite => {
            let mut explain = sqlx::query(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {}",
                statement.text()
            )));
            for m in &moves {
                explain = explain.bind(m.id.to_owned()).bind("acme").bind(1_i64);
            }
            explain
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect()
        }
    };
    let plan = plan.join("\n");
    let by_id = match engine {
        Engine::Postgres => "backlog_items_pkey",
        Engine::Sqlite => "sqlite_autoindex_backlog_items_1 (id=?)",
    };
    assert!(plan.contains(by_id), "the item is found by its id:\n{plan}");
    assert!(
        !plan.contains("request_id"),
        "not through the tenant's index:\n{plan}"
    );
}

/// Bases of the same items arriving at once and out of order, as single calls and as
/// batch calls (hours left and zero hours mixed: the fast statement and the full path
/// both at work), settle on each item's newest basis, and each item's status events form
/// one unbroken chain, in revision order, ending in its final status.
async fn racing_reconciles_settle_on_the_newest_basis(engine: Engine) {
    const REVISIONS: i64 = 24;
    let f = Fixture::start(engine).await;
    let auto = StatusTransitionMode::Automatic;
    let mut items = Vec::new();
    for _ in 0..6 {
        items.push(committed_item(&f, "acme").await);
    }
    // Every third basis is at zero hours; the newest is at zero for even items only.
    let hours = |item: usize, revision: i64| match revision {
        REVISIONS if item.is_multiple_of(2) => 0,
        REVISIONS => 3,
        r if r % 3 == 0 => 0,
        r => r,
    };
    // Single calls in a scrambled order, and pairs (one basis with hours left, the next
    // at zero) as batch calls, all at once; ABORTED (a lost race, retried three times
    // inside) is retried as the coordinator would.
    let mut singles = Vec::new();
    let mut pairs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for revision in 1..=REVISIONS {
            let request = basis(&item.id, hours(i, revision), 2, revision, auto);
            if revision % 6 == 2 {
                let next = basis(&item.id, hours(i, revision + 1), 2, revision + 1, auto);
                pairs.push(vec![request, next]);
            } else if revision % 6 != 3 {
                singles.push(request);
            }
        }
    }
    singles.sort_by_key(|r| (r.task_revision * 7) % REVISIONS);
    let single_calls = singles.into_iter().map(|request| {
        let mut c = f.as_coordinator("acme");
        tokio::spawn(async move {
            loop {
                match c.reconcile_backlog_item_status(request.clone()).await {
                    Err(status) if status.code() == Code::Aborted => continue,
                    other => return other.map(|_| ()).map_err(|s| s.code()),
                }
            }
        })
    });
    let pair_calls = pairs.into_iter().map(|reconciles| {
        let mut c = f.as_coordinator("acme");
        tokio::spawn(async move {
            loop {
                let request = ReconcileBacklogItemStatusesRequest {
                    reconciles: reconciles.clone(),
                };
                let results = c.reconcile_backlog_item_statuses(request).await;
                let results = results.map_err(|s| s.code())?.into_inner().results;
                let aborted = results.iter().any(|r| {
                    matches!(&r.result, Some(reconcile_result::Result::Error(e)) if e.code == Code::Aborted as i32)
                });
                if !aborted {
                    return Ok(());
                }
            }
        })
    });
    let (singles, pairs) = tokio::join!(
        futures::future::join_all(single_calls),
        futures::future::join_all(pair_calls)
    );
    for outcome in singles.into_iter().chain(pairs) {
        assert_eq!(outcome.unwrap(), Ok(()));
    }

    let events = f.events(0).await;
    let mut c = f.client("acme");
    for (i, item) in items.iter().enumerate() {
        let now = c
            .get_backlog_item(GetBacklogItemRequest {
                consistency_token: String::new(),
                id: item.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .backlog_item
            .unwrap();
        let expected = if i.is_multiple_of(2) {
            BacklogItemStatus::Done
        } else {
            BacklogItemStatus::Committed
        };
        assert_eq!(
            (status(&now), now.reconciled_task_revision),
            (expected, REVISIONS),
            "item {i} settled on its newest basis"
        );
        let changes: Vec<BacklogItemStatusChanged> = task_hours_changes(&events)
            .into_iter()
            .filter(|change| change.backlog_item_id == item.id)
            .collect();
        let mut at = (BacklogItemStatus::Committed as i32, 0);
        for change in &changes {
            assert_eq!(
                change.old_status, at.0,
                "item {i}: each change starts where the last ended"
            );
            assert!(
                change.task_revision > at.1,
                "item {i}: changes in revision order"
            );
            at = (change.new_status, change.task_revision);
        }
        assert_eq!(
            at.0, expected as i32,
            "item {i}: the last change is its final status"
        );
    }
    f.system.stop().await;
}
