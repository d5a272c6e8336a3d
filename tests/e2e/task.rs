//! The task service over real gRPC, on both engines, beside a real backlog-item service
//! (tasks are defined only for live items of the caller's tenant).

use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::BacklogItemStatus;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_proto::task::v1::*;
use agilepm_testkit::{Engine, TestSystem, day, engine_tests};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use uuid::Uuid;

engine_tests!(
    defining_a_task_logs_its_initial_estimate,
    tasks_are_listed_in_pages,
    a_second_estimate_the_same_day_replaces_the_first,
    status_and_hours_never_contradict,
    resending_the_same_estimate_changes_nothing,
    bad_input_is_refused_naming_the_field,
    estimate_dates_are_bounded_and_the_latest_rules,
    views_carry_the_log_only_when_asked,
    other_tenants_tasks_do_not_exist,
    a_stale_version_is_aborted_and_changes_nothing,
    tasks_need_a_live_backlog_item_of_the_same_tenant,
    a_retried_define_creates_one_task,
    totals_stay_exact_under_32_concurrent_estimators,
    estimates_sent_at_once_each_get_their_own_outcome,
    events_carry_the_totals_and_revision,
    removing_a_task_takes_it_out_of_the_totals,
    the_burndown_sums_each_days_latest_estimates,
    renaming_describing_and_volunteering,
);

struct Fixture {
    system: TestSystem,
    backlog: Option<TestSystem>,
}

impl Fixture {
    /// The task service with a real backlog-item service beside it.
    async fn start(engine: Engine) -> Fixture {
        let backlog = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
        let endpoint = format!("http://{}", backlog.address(ServiceName::BacklogItem));
        let system = TestSystem::start_with(
            engine,
            &[ServiceName::Task],
            &[(ServiceName::BacklogItem, endpoint)],
        )
        .await;
        Fixture {
            system,
            backlog: Some(backlog),
        }
    }

    /// A real backlog item of `tenant`, driven to `status`.
    async fn item(&self, tenant: &str, status: BacklogItemStatus) -> String {
        let backlog = self.backlog.as_ref().expect("backlog-item service running");
        crate::given::item_in_status(backlog, tenant, status)
            .await
            .id
    }

    fn tasks(&self, tenant: &str) -> TaskServiceClient<PeerChannel> {
        TaskServiceClient::new(self.system.channel(ServiceName::Task, tenant))
    }

    async fn define(&self, tenant: &str, item: &str, name: &str, hours: i32) -> Task {
        self.tasks(tenant)
            .define_task(DefineTaskRequest {
                request_id: Uuid::new_v4().to_string(),
                backlog_item_id: item.into(),
                name: name.into(),
                hours_remaining: hours,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
    }

    async fn stop(mut self) {
        self.system.stop().await;
        if let Some(backlog) = self.backlog.take() {
            backlog.stop().await;
        }
    }
}

/// An estimate in the default (BASIC) view.
fn estimate(id: &str, hours: i32, date: &str) -> EstimateTaskHoursRemainingRequest {
    EstimateTaskHoursRemainingRequest {
        id: id.into(),
        hours_remaining: hours,
        date: date.into(),
        expected_version: None,
        view: TaskView::Unspecified as i32,
    }
}

/// An estimate whose response carries the whole estimation log.
fn estimate_full(id: &str, hours: i32, date: &str) -> EstimateTaskHoursRemainingRequest {
    EstimateTaskHoursRemainingRequest {
        view: TaskView::Full as i32,
        ..estimate(id, hours, date)
    }
}

async fn totals(tasks: &mut TaskServiceClient<PeerChannel>, item: &str) -> BacklogItemTaskTotals {
    tasks
        .get_backlog_item_task_totals(GetBacklogItemTaskTotalsRequest {
            backlog_item_id: item.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .totals
        .unwrap()
}

async fn defining_a_task_logs_its_initial_estimate(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "Write the parser", 12).await;
    assert_eq!(task.status, TaskStatus::NotStarted as i32);
    assert_eq!(task.hours_remaining, 12);
    assert_eq!(task.version, 1);
    assert_eq!(task.tenant_id, "acme");
    let fetched = f
        .tasks("acme")
        .get_task(GetTaskRequest {
            view: 0,
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(fetched.estimation_log.len(), 1);
    assert_eq!(fetched.estimation_log[0].date, day(0));
    assert_eq!(fetched.estimation_log[0].hours_remaining, 12);
    let zero = f.define("acme", &item, "Already done", 0).await;
    assert_eq!(zero.status, TaskStatus::Done as i32, "zero hours is DONE");
    let t = totals(&mut f.tasks("acme"), &item).await;
    assert_eq!((t.hours_remaining, t.task_count, t.revision), (12, 2, 2));
    f.stop().await;
}

async fn tasks_are_listed_in_pages(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let mut names = Vec::new();
    for i in 0..5 {
        names.push(
            f.define("acme", &item, &format!("task {i}"), i + 1)
                .await
                .name,
        );
    }
    let mut tasks = f.tasks("acme");
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = tasks
            .list_tasks(ListTasksRequest {
                backlog_item_id: item.clone(),
                page_size: 2,
                page_token: token,
                view: TaskView::Unspecified as i32,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tasks.len() <= 2);
        assert!(
            page.tasks.iter().all(|t| t.estimation_log.is_empty()),
            "a list is BASIC by default"
        );
        listed.extend(page.tasks.into_iter().map(|t| t.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, names);
    let error = tasks
        .list_tasks(ListTasksRequest {
            view: 0,
            backlog_item_id: item,
            page_size: 2,
            page_token: "bogus".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    f.stop().await;
}

async fn a_second_estimate_the_same_day_replaces_the_first(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 12).await;
    let mut tasks = f.tasks("acme");
    tasks
        .estimate_task_hours_remaining(estimate(&task.id, 10, &day(-1)))
        .await
        .unwrap();
    let response = tasks
        .estimate_task_hours_remaining(estimate_full(&task.id, 8, &day(-1)))
        .await
        .unwrap()
        .into_inner();
    let log = response.task.unwrap().estimation_log;
    let on_day: Vec<_> = log.iter().filter(|e| e.date == day(-1)).collect();
    assert_eq!(on_day.len(), 1, "one entry per day");
    assert_eq!(on_day[0].hours_remaining, 8);
    assert_eq!(
        response.totals.unwrap().hours_remaining,
        12,
        "yesterday's entry corrects history; today's definition still rules"
    );
    let next = tasks
        .estimate_task_hours_remaining(estimate_full(&task.id, 7, &day(1)))
        .await
        .unwrap()
        .into_inner();
    let log = next.task.unwrap().estimation_log;
    assert_eq!(
        log.iter()
            .map(|e| (e.date.as_str(), e.hours_remaining))
            .collect::<Vec<_>>(),
        vec![
            (day(-1).as_str(), 8),
            (day(0).as_str(), 12),
            (day(1).as_str(), 7)
        ]
    );
    assert_eq!(next.totals.unwrap().hours_remaining, 7);
    f.stop().await;
}

async fn status_and_hours_never_contradict(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 5).await;
    let mut tasks = f.tasks("acme");
    let status = |r: &Task| TaskStatus::try_from(r.status).unwrap();

    let started = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 4, ""))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(status(&started), TaskStatus::InProgress);
    let done = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 0, ""))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(status(&done), TaskStatus::Done);
    let reopened = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 1, ""))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(status(&reopened), TaskStatus::InProgress);

    let impeded = tasks
        .change_task_status(ChangeTaskStatusRequest {
            view: 0,
            id: task.id.clone(),
            status: TaskStatus::Impeded as i32,
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(status(&impeded), TaskStatus::Impeded);
    let still = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 3, ""))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        status(&still),
        TaskStatus::Impeded,
        "IMPEDED stays until cleared"
    );

    let marked = tasks
        .change_task_status(ChangeTaskStatusRequest {
            id: task.id.clone(),
            status: TaskStatus::Done as i32,
            expected_version: None,
            view: TaskView::Full as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        (status(&marked), marked.hours_remaining),
        (TaskStatus::Done, 0)
    );
    let today_entry = marked
        .estimation_log
        .iter()
        .find(|e| e.date == day(0))
        .unwrap();
    assert_eq!(
        today_entry.hours_remaining, 0,
        "marking DONE logs 0 for today"
    );
    assert_eq!(totals(&mut tasks, &item).await.hours_remaining, 0);

    let refused = tasks
        .change_task_status(ChangeTaskStatusRequest {
            view: 0,
            id: task.id.clone(),
            status: TaskStatus::InProgress as i32,
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    f.stop().await;
}

async fn resending_the_same_estimate_changes_nothing(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 5).await;
    let mut tasks = f.tasks("acme");
    let first = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 3, &day(0)))
        .await
        .unwrap()
        .into_inner();
    let again = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 3, &day(0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.task.as_ref().unwrap().version,
        again.task.as_ref().unwrap().version
    );
    assert_eq!(
        first.totals.unwrap().revision,
        again.totals.unwrap().revision
    );
    let events = feed_events(&f, "acme", 3).await;
    let estimates = events
        .iter()
        .filter(|e| e.event_type == "agilepm.task.v1.TaskHoursRemainingEstimated")
        .count();
    assert_eq!(estimates, 1, "the repeat emitted nothing");
    f.stop().await;
}

async fn bad_input_is_refused_naming_the_field(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 5).await;
    let mut tasks = f.tasks("acme");
    let define = |name: String, hours: i32, item: &str| DefineTaskRequest {
        request_id: Uuid::new_v4().to_string(),
        backlog_item_id: item.into(),
        name,
        hours_remaining: hours,
        ..Default::default()
    };
    let cases: Vec<(&str, Result<_, Status>)> = vec![
        (
            "hours_remaining",
            tasks
                .define_task(define("x".into(), -1, &item))
                .await
                .map(|_| ()),
        ),
        (
            "hours_remaining",
            tasks
                .define_task(define("x".into(), 1001, &item))
                .await
                .map(|_| ()),
        ),
        (
            "name",
            tasks
                .define_task(define(String::new(), 1, &item))
                .await
                .map(|_| ()),
        ),
        (
            "name",
            tasks
                .define_task(define("n".repeat(10_000), 1, &item))
                .await
                .map(|_| ()),
        ),
        (
            "backlog_item_id",
            tasks
                .define_task(define("x".into(), 1, "not-a-uuid"))
                .await
                .map(|_| ()),
        ),
        (
            "hours_remaining",
            tasks
                .estimate_task_hours_remaining(estimate(&task.id, -5, ""))
                .await
                .map(|_| ()),
        ),
        (
            "hours_remaining",
            tasks
                .estimate_task_hours_remaining(estimate(&task.id, 1001, ""))
                .await
                .map(|_| ()),
        ),
        (
            "date",
            tasks
                .estimate_task_hours_remaining(estimate(&task.id, 1, "2026-13-01"))
                .await
                .map(|_| ()),
        ),
        (
            "id",
            tasks
                .estimate_task_hours_remaining(estimate("123", 1, ""))
                .await
                .map(|_| ()),
        ),
        (
            "id",
            tasks
                .get_task(GetTaskRequest {
                    id: "zz".into(),
                    view: 0,
                })
                .await
                .map(|_| ()),
        ),
    ];
    for (field, result) in cases {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            field,
            "{status:?}"
        );
    }
    let unchanged = tasks
        .get_task(GetTaskRequest {
            view: 0,
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(unchanged.version, 1, "bad input changed nothing");
    assert_eq!(totals(&mut tasks, &item).await.task_count, 1);
    f.stop().await;
}

/// A typo in a date must not pin a task: far-future and absurdly early dates are refused
/// naming the bound, and the task still reaches 0 today.
async fn estimate_dates_are_bounded_and_the_latest_rules(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 3).await;
    let mut tasks = f.tasks("acme");
    let tomorrow = day(1);
    let earliest = day(-366);
    for (date, bound) in [
        ("2062-01-01".to_owned(), format!("at most {tomorrow}")),
        ("9999-12-31".to_owned(), format!("at most {tomorrow}")),
        (day(2), format!("at most {tomorrow}")),
        (
            "0000-01-01".to_owned(),
            format!("at the earliest {earliest}"),
        ),
        (day(-367), format!("at the earliest {earliest}")),
    ] {
        let refused = tasks
            .estimate_task_hours_remaining(estimate(&task.id, 1, &date))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{date}: {refused:?}");
        assert!(refused.message().contains(&bound), "{date}: {refused:?}");
        let details = refused.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "date"
        );
    }
    // The bounds themselves are accepted: a year back corrects history only...
    let corrected = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 9, &earliest))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(corrected.totals.unwrap().hours_remaining, 3);
    // ...and today's 0 is the latest entry, so the task is DONE.
    let done = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 0, ""))
        .await
        .unwrap()
        .into_inner();
    let done_task = done.task.unwrap();
    assert_eq!(
        (done_task.status(), done_task.hours_remaining),
        (TaskStatus::Done, 0)
    );
    assert_eq!(done.totals.unwrap().hours_remaining, 0);
    // Tomorrow (a team already past midnight) is accepted and becomes the latest.
    let tomorrow_estimate = tasks
        .estimate_task_hours_remaining(estimate(&task.id, 2, &tomorrow))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tomorrow_estimate.task.unwrap().hours_remaining, 2);
    f.stop().await;
}

/// The estimation log grows with a task's age; responses carry it only when asked.
async fn views_carry_the_log_only_when_asked(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 9).await;
    assert!(
        task.estimation_log.is_empty(),
        "DefineTask is BASIC by default"
    );
    let mut tasks = f.tasks("acme");
    for offset in 1..=3 {
        let basic = tasks
            .estimate_task_hours_remaining(estimate(&task.id, 9 - offset, &day(-i64::from(offset))))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert!(
            basic.estimation_log.is_empty(),
            "an estimate is BASIC by default"
        );
    }
    let full = tasks
        .estimate_task_hours_remaining(estimate_full(&task.id, 2, ""))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    let days = |t: &Task| {
        t.estimation_log
            .iter()
            .map(|e| (e.date.clone(), e.hours_remaining))
            .collect::<Vec<_>>()
    };
    let whole = vec![(day(-3), 6), (day(-2), 7), (day(-1), 8), (day(0), 2)];
    assert_eq!(days(&full), whole);
    let get = |view: TaskView| GetTaskRequest {
        id: task.id.clone(),
        view: view as i32,
    };
    let got = tasks.get_task(get(TaskView::Unspecified)).await.unwrap();
    assert_eq!(
        days(got.get_ref().task.as_ref().unwrap()),
        whole,
        "GetTask is FULL by default"
    );
    let got = tasks.get_task(get(TaskView::Basic)).await.unwrap();
    assert!(
        got.get_ref()
            .task
            .as_ref()
            .unwrap()
            .estimation_log
            .is_empty()
    );
    let listed = tasks
        .list_tasks(ListTasksRequest {
            backlog_item_id: item.clone(),
            page_size: 10,
            page_token: String::new(),
            view: TaskView::Full as i32,
        })
        .await
        .unwrap();
    assert_eq!(days(&listed.get_ref().tasks[0]), whole);
    let renamed = tasks
        .rename_task(RenameTaskRequest {
            id: task.id.clone(),
            name: "renamed".into(),
            expected_version: None,
            view: TaskView::Full as i32,
        })
        .await
        .unwrap();
    assert_eq!(days(renamed.get_ref().task.as_ref().unwrap()), whole);
    let refused = tasks
        .get_task(GetTaskRequest {
            id: task.id.clone(),
            view: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "view"
    );
    f.stop().await;
}

async fn other_tenants_tasks_do_not_exist(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "secret", 5).await;
    let mut globex = f.tasks("globex");
    assert_eq!(
        globex
            .get_task(GetTaskRequest {
                view: 0,
                id: task.id.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        globex
            .estimate_task_hours_remaining(estimate(&task.id, 1, ""))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        globex
            .remove_task(RemoveTaskRequest {
                id: task.id.clone(),
                expected_version: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = globex
        .list_tasks(ListTasksRequest {
            backlog_item_id: item.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tasks.is_empty());
    assert_eq!(totals(&mut globex, &item).await.task_count, 0);
    // Nor can globex define tasks on acme's item.
    let error = globex
        .define_task(DefineTaskRequest {
            request_id: "r1".into(),
            backlog_item_id: item.clone(),
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    f.stop().await;
}

async fn a_stale_version_is_aborted_and_changes_nothing(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 5).await;
    let mut tasks = f.tasks("acme");
    let renamed = tasks
        .rename_task(RenameTaskRequest {
            view: 0,
            id: task.id.clone(),
            name: "first".into(),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(renamed.version, 2);
    let stale = tasks
        .rename_task(RenameTaskRequest {
            view: 0,
            id: task.id.clone(),
            name: "second".into(),
            expected_version: Some(1),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let stale_estimate = tasks
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            expected_version: Some(1),
            ..estimate(&task.id, 1, "")
        })
        .await
        .unwrap_err();
    assert_eq!(stale_estimate.code(), Code::Aborted);
    let now = tasks
        .get_task(GetTaskRequest {
            view: 0,
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        (now.name.as_str(), now.hours_remaining, now.version),
        ("first", 5, 2)
    );
    f.stop().await;
}

async fn tasks_need_a_live_backlog_item_of_the_same_tenant(engine: Engine) {
    let mut f = Fixture::start(engine).await;
    let removed = f.item("acme", BacklogItemStatus::Removed).await;
    let mut tasks = f.tasks("acme");
    let request = |item: &str| DefineTaskRequest {
        request_id: Uuid::new_v4().to_string(),
        backlog_item_id: item.into(),
        name: "x".into(),
        hours_remaining: 1,
        ..Default::default()
    };
    let error = tasks.define_task(request(&removed)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("REMOVED"), "{error:?}");
    let error = tasks
        .define_task(request(&Uuid::now_v7().to_string()))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("does not exist"), "{error:?}");
    // With the backlog-item service down, the answer is UNAVAILABLE, not a guess.
    let item = f.item("acme", BacklogItemStatus::Planned).await;
    f.backlog.take().unwrap().stop().await;
    let error = tasks.define_task(request(&item)).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    f.stop().await;
}

async fn a_retried_define_creates_one_task(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let mut tasks = f.tasks("acme");
    let request = DefineTaskRequest {
        request_id: "define-once".into(),
        backlog_item_id: item.clone(),
        name: "x".into(),
        hours_remaining: 3,
        ..Default::default()
    };
    let calls = (0..8).map(|_| {
        let mut tasks = tasks.clone();
        let request = request.clone();
        tokio::spawn(async move {
            tasks
                .define_task(request)
                .await
                .unwrap()
                .into_inner()
                .task
                .unwrap()
                .id
        })
    });
    let ids: std::collections::HashSet<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "every retry answered with the same task");
    // The same key with another body is a client bug, refused naming the key.
    let reused = tasks
        .define_task(DefineTaskRequest {
            hours_remaining: 4,
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains("\"define-once\""), "{reused:?}");
    let t = totals(&mut tasks, &item).await;
    assert_eq!((t.task_count, t.hours_remaining), (1, 3));
    // A request that failed (an unknown item) changed nothing and gives its key back: the
    // corrected request may use it.
    let failed = tasks
        .define_task(DefineTaskRequest {
            request_id: "define-after-a-mistake".into(),
            backlog_item_id: Uuid::new_v4().to_string(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert_ne!(failed.code(), Code::AlreadyExists, "{failed:?}");
    tasks
        .define_task(DefineTaskRequest {
            request_id: "define-after-a-mistake".into(),
            ..request
        })
        .await
        .unwrap();
    assert_eq!(totals(&mut tasks, &item).await.task_count, 2);
    f.stop().await;
}

async fn totals_stay_exact_under_32_concurrent_estimators(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let mut ids = Vec::new();
    for i in 0..32 {
        ids.push(f.define("acme", &item, &format!("t{i}"), 100).await.id);
    }
    // 32 clients, each estimating its own task down ten times today, plus 32 more racing on
    // the same tasks without versions: every write must land in the totals exactly once.
    let mut workers = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let mut tasks = f.tasks("acme");
        let id = id.clone();
        workers.push(tokio::spawn(async move {
            for day in 1..=10 {
                let hours = 100 - day * 9 - (n as i32 % 3);
                tasks
                    .estimate_task_hours_remaining(estimate(&id, hours, ""))
                    .await
                    .unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let t = totals(&mut f.tasks("acme"), &item).await;
    let db = f.system.database(ServiceName::Task).await;
    let (sum, count): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(hours_remaining), 0) AS BIGINT), CAST(COUNT(*) AS BIGINT) FROM tasks \
         WHERE backlog_item_id = $1 AND removed_time_us IS NULL",
    )
    .bind(&item)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        (t.hours_remaining, t.task_count),
        (sum, count),
        "totals equal a recount"
    );
    let expected: i64 = (0..32).map(|n| i64::from(100 - 90 - (n % 3))).sum();
    assert_eq!(sum, expected);
    assert_eq!(t.revision, 32 + 32 * 10, "one revision per change");
    db.close().await;
    f.stop().await;
}

/// Estimates that arrive together are applied in shared transactions (group commit);
/// each must still fail or succeed on its own, and each event must carry the totals right
/// after its own estimate, exactly as if they had committed one by one in feed order.
async fn estimates_sent_at_once_each_get_their_own_outcome(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(f.define("acme", &item, &format!("t{i}"), 12).await.id);
    }
    // Every task's twelve days in one burst (so batches hold several estimates of one
    // task, some back-dated behind a newer one), with stale versions and unknown tasks
    // mixed in. The twelve days end tomorrow: ten corrections of the past, then today
    // (which replaces the definition's entry) and tomorrow.
    let mut calls = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        for day in 1..=12 {
            let mut request =
                estimate_full(id, 12 - day, &agilepm_testkit::day(i64::from(day) - 11));
            let expect = if day == 6 && n == 0 {
                request.expected_version = Some(1_000);
                Some(Code::Aborted)
            } else {
                None
            };
            calls.push((request, expect));
        }
        calls.push((
            estimate(&Uuid::new_v4().to_string(), 1, &day(0)),
            Some(Code::NotFound),
        ));
    }
    let mut running = Vec::new();
    for (request, expect) in calls {
        let mut tasks = f.tasks("acme");
        running.push(tokio::spawn(async move {
            let outcome = tasks.estimate_task_hours_remaining(request).await;
            (outcome.map(|r| r.into_inner()), expect)
        }));
    }
    let mut succeeded = 0;
    for call in running {
        let (outcome, expect) = call.await.unwrap();
        match expect {
            None => {
                let response = outcome.expect("a valid estimate succeeds");
                let task = response.task.unwrap();
                assert!(
                    task.estimation_log
                        .windows(2)
                        .all(|w| w[0].date < w[1].date),
                    "the response's log is in day order, one entry per day"
                );
                succeeded += 1;
            }
            Some(code) => assert_eq!(outcome.unwrap_err().code(), code),
        }
    }
    assert_eq!(succeeded, 4 * 12 - 1);

    // Replay the feed: every estimate event's totals are those right after it.
    let events = feed_events(&f, "acme", 4 + 47).await;
    let mut hours: std::collections::HashMap<String, (String, i64)> =
        ids.iter().map(|id| (id.clone(), (day(0), 12))).collect();
    let mut revision = 4;
    let mut estimates = 0;
    for event in &events {
        if event.event_type != "agilepm.task.v1.TaskHoursRemainingEstimated" {
            continue;
        }
        estimates += 1;
        let e: TaskHoursRemainingEstimated =
            prost::Message::decode(event.payload.as_ref().unwrap().value.as_slice()).unwrap();
        let (latest, current) = hours.get_mut(&e.task_id).unwrap();
        if e.date >= *latest {
            *latest = e.date.clone();
            if i64::from(e.hours_remaining) != *current {
                *current = i64::from(e.hours_remaining);
                revision += 1;
            }
        }
        let sum: i64 = hours.values().map(|(_, h)| h).sum();
        let t = e.totals.unwrap();
        assert_eq!(
            (t.hours_remaining, t.task_count, t.revision),
            (sum, 4, revision),
            "event {} carries the totals right after it",
            event.event_id
        );
    }
    assert_eq!(
        estimates, 47,
        "one event per estimate that changed something"
    );
    let t = totals(&mut f.tasks("acme"), &item).await;
    let sum: i64 = hours.values().map(|(_, h)| h).sum();
    assert_eq!((t.hours_remaining, t.revision), (sum, revision));
    f.stop().await;
}

/// Events on the task feed for `tenant`: at least `count`, and every one committed by then.
async fn feed_events(
    f: &Fixture,
    tenant: &str,
    count: usize,
) -> Vec<agilepm_proto::events::v1::Event> {
    agilepm_testkit::feed_events(f.system.channel(ServiceName::Task, tenant), count).await
}

async fn events_carry_the_totals_and_revision(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let a = f.define("acme", &item, "a", 4).await;
    let b = f.define("acme", &item, "b", 6).await;
    let mut tasks = f.tasks("acme");
    tasks
        .estimate_task_hours_remaining(estimate(&a.id, 0, &day(0)))
        .await
        .unwrap();
    tasks
        .remove_task(RemoveTaskRequest {
            id: b.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let events = feed_events(&f, "acme", 5).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "agilepm.task.v1.TaskDefined",
            "agilepm.task.v1.TaskDefined",
            "agilepm.task.v1.TaskHoursRemainingEstimated",
            "agilepm.task.v1.TaskStatusChanged",
            "agilepm.task.v1.TaskRemoved",
        ]
    );
    let estimated: TaskHoursRemainingEstimated =
        prost::Message::decode(events[2].payload.as_ref().unwrap().value.as_slice()).unwrap();
    assert_eq!(
        (estimated.hours_remaining, estimated.date.as_str()),
        (0, day(0).as_str())
    );
    let t = estimated.totals.unwrap();
    assert_eq!((t.hours_remaining, t.task_count, t.revision), (6, 2, 3));
    let removed: TaskRemoved =
        prost::Message::decode(events[4].payload.as_ref().unwrap().value.as_slice()).unwrap();
    let t = removed.totals.unwrap();
    assert_eq!((t.hours_remaining, t.task_count, t.revision), (0, 1, 4));
    assert!(
        events
            .iter()
            .all(|e| e.aggregate_type == "Task" && e.tenant_id == "acme")
    );
    // Another tenant's subscriber sees none of it.
    assert!(feed_events(&f, "globex", 0).await.is_empty());
    f.stop().await;
}

async fn removing_a_task_takes_it_out_of_the_totals(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let a = f.define("acme", &item, "a", 4).await;
    f.define("acme", &item, "b", 6).await;
    let mut tasks = f.tasks("acme");
    let removed = tasks
        .remove_task(RemoveTaskRequest {
            id: a.id.clone(),
            expected_version: Some(1),
        })
        .await
        .unwrap()
        .into_inner();
    let t = removed.totals.unwrap();
    assert_eq!((t.hours_remaining, t.task_count), (6, 1));
    assert_eq!(
        tasks
            .get_task(GetTaskRequest {
                id: a.id.clone(),
                view: 0
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        tasks
            .remove_task(RemoveTaskRequest {
                id: a.id,
                expected_version: None
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    f.stop().await;
}

async fn the_burndown_sums_each_days_latest_estimates(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let other = f.item("acme", BacklogItemStatus::Committed).await;
    let mut tasks = f.tasks("acme");
    let a = f.define("acme", &item, "a", 10).await;
    let b = f.define("acme", &item, "b", 8).await;
    let c = f.define("acme", &other, "c", 5).await;
    // Day 1: a=10 b=8; day 2: a=7; day 3: b=5, a=7; day 4: a=0; day 5: nothing new. The
    // days are past ones: corrections of history, which the burndown reads.
    let [d1, d2, d3, d4, d5] = [-10, -9, -8, -7, -6].map(day);
    for (id, hours, day) in [
        (&a.id, 10, &d1),
        (&b.id, 8, &d1),
        (&c.id, 5, &d1),
        (&a.id, 9, &d2),
        (&a.id, 7, &d2),
        (&b.id, 5, &d3),
        (&a.id, 0, &d4),
        (&c.id, 1, &d4),
    ] {
        tasks
            .estimate_task_hours_remaining(estimate(id, hours, day))
            .await
            .unwrap();
    }
    let days = tasks
        .get_burndown(GetBurndownRequest {
            backlog_item_ids: vec![item.clone()],
            start_date: d1.clone(),
            end_date: d5.clone(),
            per_item: false,
        })
        .await
        .unwrap()
        .into_inner()
        .days;
    let got: Vec<(&str, i64)> = days
        .iter()
        .map(|d| (d.date.as_str(), d.hours_remaining))
        .collect();
    assert_eq!(
        got,
        vec![
            (d1.as_str(), 18),
            (d2.as_str(), 15),
            (d3.as_str(), 12),
            (d4.as_str(), 5),
            (d5.as_str(), 5)
        ]
    );
    let both = tasks
        .get_burndown(GetBurndownRequest {
            backlog_item_ids: vec![item.clone(), other.clone()],
            start_date: d3.clone(),
            end_date: d4.clone(),
            per_item: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        both.days
            .iter()
            .map(|d| d.hours_remaining)
            .collect::<Vec<_>>(),
        vec![17, 6]
    );
    // Per item, in the order asked: a + b, then c.
    assert_eq!(
        both.items
            .iter()
            .map(|i| (i.backlog_item_id.as_str(), i.hours_remaining.clone()))
            .collect::<Vec<_>>(),
        vec![(item.as_str(), vec![12, 5]), (other.as_str(), vec![5, 1])]
    );
    let error = tasks
        .get_burndown(GetBurndownRequest {
            backlog_item_ids: vec![a.id],
            start_date: d5.clone(),
            end_date: d1.clone(),
            per_item: false,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    f.stop().await;
}

async fn renaming_describing_and_volunteering(engine: Engine) {
    let f = Fixture::start(engine).await;
    let item = f.item("acme", BacklogItemStatus::Committed).await;
    let task = f.define("acme", &item, "t", 5).await;
    let mut tasks = f.tasks("acme");
    tasks
        .rename_task(RenameTaskRequest {
            view: 0,
            id: task.id.clone(),
            name: "renamed".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    tasks
        .describe_task(DescribeTaskRequest {
            view: 0,
            id: task.id.clone(),
            description: "why".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    // Ada is on the team, as planning records it (SyncMembers); an older fact that came
    // late does not undo the newer one.
    let mut as_planning = TaskServiceClient::new(f.system.channel_as_service(
        ServiceName::Task,
        ServiceName::Planning,
        "acme",
    ));
    let fact = |enabled: bool, member_version: i64| SyncMembersRequest {
        members: vec![MemberFacts {
            member_id: "ada".into(),
            enabled,
            team_member: true,
            member_version,
        }],
    };
    for (request, applied) in [(fact(true, 2), 1), (fact(false, 1), 0)] {
        let response = as_planning
            .sync_members(request)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.applied, applied);
    }
    let assigned = tasks
        .assign_task_volunteer(AssignTaskVolunteerRequest {
            view: 0,
            id: task.id.clone(),
            volunteer_id: "ada".into(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        (
            assigned.name.as_str(),
            assigned.description.as_str(),
            assigned.volunteer_id.as_str(),
            assigned.version
        ),
        ("renamed", "why", "ada", 4)
    );
    let unassigned = tasks
        .unassign_task_volunteer(UnassignTaskVolunteerRequest {
            view: 0,
            id: task.id.clone(),
            expected_version: Some(4),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        (unassigned.volunteer_id.as_str(), unassigned.version),
        ("", 5)
    );
    let events = feed_events(&f, "acme", 5).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.event_type.rsplit('.').next().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "TaskDefined",
            "TaskRenamed",
            "TaskDescribed",
            "TaskVolunteerAssigned",
            "TaskVolunteerAssigned"
        ]
    );
    f.stop().await;
}
