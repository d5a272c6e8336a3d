//! The trust boundary, tried as an attacker would, against real services: forged internal
//! calls, expired and foreign tokens, rotated keys, and the role table enforced on every
//! RPC of every service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agilepm_platform::wire::auth::access::{self, Guard};
use agilepm_platform::wire::auth::{AuthConfig, Caller, Role, Signer, TokenSpec};
use agilepm_platform::wire::client::PeerChannel;
use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::backlog::v1::{
    BacklogItem, BacklogItemStatus, CommitBacklogItemRequest, GetBacklogItemRequest,
    ReconcileBacklogItemStatusRequest, ReconcileBacklogItemStatusesRequest,
};
use agilepm_proto::events::v1::GetFeedHeadRequest;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::planning::v1::ListProductsRequest;
use agilepm_proto::planning::v1::product_service_client::ProductServiceClient;
use agilepm_proto::task::v1::task_service_client::TaskServiceClient;
use agilepm_testkit::{Engine, TestSystem, channel, engine_tests};

use crate::given;
use base64::Engine as _;
use secrecy::SecretString;
use tonic::Code;
use uuid::Uuid;

engine_tests!(
    a_tenant_cannot_forge_a_reconcile,
    tokens_expire_name_their_audience_and_rotate_by_kid,
    a_tenant_sees_only_its_own_feed_head,
);

/// A backlog item of `tenant` committed to a sprint, as planning would leave it.
async fn committed_item(system: &TestSystem, tenant: &str) -> BacklogItem {
    given::item_in_status(system, tenant, BacklogItemStatus::Committed).await
}

/// The attack from the issue: a tenant's own token, every tenant role, a reconcile that
/// claims zero hours at revision 2^60. Refused; the item is untouched.
async fn a_tenant_cannot_forge_a_reconcile(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
    let item = committed_item(&system, "acme").await;
    let forged = ReconcileBacklogItemStatusRequest {
        id: item.id.clone(),
        task_hours_remaining: 0,
        task_count: 1,
        task_revision: 1 << 60,
        transition_mode: 0,
    };
    let address = system.address(ServiceName::BacklogItem);
    let every_person_role = [
        Role::ProductOwner,
        Role::TeamMember,
        Role::Viewer,
        Role::Operator,
    ];
    let signed_tenant = agilepm_testkit::person_token("mallory", "acme", &every_person_role);
    // Claiming the service role does not make a person a service.
    let claims_service = agilepm_testkit::person_token("mallory", "acme", &[Role::Service]);
    let refused = BacklogItemServiceClient::new(channel(address, &claims_service))
        .reconcile_backlog_item_status(forged.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let task_service = agilepm_testkit::service_token(ServiceName::Task);
    for token in ["acme", signed_tenant.as_str(), task_service.as_str()] {
        let mut client = BacklogItemServiceClient::new(channel(address, token));
        let refused = client
            .reconcile_backlog_item_status(forged.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("only the coordinator service may call it"),
            "{refused:?}"
        );
        let refused = client
            .reconcile_backlog_item_statuses(ReconcileBacklogItemStatusesRequest {
                reconciles: vec![forged.clone()],
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        // Committing directly would skip planning's check of the sprint: refused too.
        let refused = client
            .commit_backlog_item(CommitBacklogItemRequest {
                id: item.id.clone(),
                sprint_id: Uuid::now_v7().to_string(),
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let after = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"))
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
        (after.status, after.version),
        (BacklogItemStatus::Committed as i32, item.version)
    );
    system.stop().await;
}

/// An Ed25519 key pair: the private key as a PEM file, the public half as a JWK.
struct PersonKey {
    kid: String,
    pem: PathBuf,
    jwk: serde_json::Value,
}

impl PersonKey {
    fn generate(dir: &Path, kid: &str) -> PersonKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pem = dir.join(format!("{kid}.pem"));
        std::fs::write(&pem, pair.serialize_pem()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
        PersonKey {
            kid: kid.to_owned(),
            pem,
            jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x}),
        }
    }

    fn signer(&self, audience: &str) -> Signer {
        Signer::from_pem_file(&self.pem, &self.kid)
            .unwrap()
            .with_issuer_and_audience(None, Some(audience.into()))
    }
}

fn write_key_set(path: &Path, keys: &[&PersonKey]) {
    let set = serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    // Written beside and renamed, as a key distributor would, so no reader sees half a file.
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec(&set).unwrap()).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn product_client(system: &TestSystem, token: &str) -> ProductServiceClient<PeerChannel> {
    ProductServiceClient::new(channel(system.address(ServiceName::Planning), token))
}

async fn list_products(system: &TestSystem, token: &str) -> Result<(), tonic::Status> {
    product_client(system, token)
        .list_products(ListProductsRequest::default())
        .await
        .map(|_| ())
}

/// Waits (10 s at most) until listing products with `token` answers `wanted`.
async fn until_answer(system: &TestSystem, token: &str, wanted: Option<Code>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let code = list_products(system, token).await.err().map(|s| s.code());
        if code == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {code:?}, waited for {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tokens_expire_name_their_audience_and_rotate_by_kid(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let first = PersonKey::generate(dir.path(), "people-1");
    let second = PersonKey::generate(dir.path(), "people-2");
    let jwks = dir.path().join("jwks.json");
    write_key_set(&jwks, &[&first]);
    let secret = SecretString::from(format!(
        "{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    ));
    let auth = AuthConfig::from_settings(
        Some(secret),
        Some(jwks.clone()),
        None,
        None,
        Some("agilepm".into()),
    )
    .unwrap();
    let system = TestSystem::start_with_auth(
        engine,
        &[
            ServiceName::BacklogItem,
            ServiceName::Task,
            ServiceName::Planning,
        ],
        &[],
        auth,
    )
    .await;
    let ann = TokenSpec::person("ann", "acme", &[Role::ProductOwner, Role::TeamMember]);
    let valid = first
        .signer("agilepm")
        .mint(&ann, Duration::from_secs(300))
        .unwrap();

    // The services' own identities are verified too: planning calls backlog-item, task
    // calls backlog-item, all in strict mode.
    let product = given::product(
        channel(system.address(ServiceName::Planning), &valid),
        "Secured",
    )
    .await;
    let item = given::item(
        channel(system.address(ServiceName::BacklogItem), &valid),
        &product.id,
    )
    .await;
    given::task(
        channel(system.address(ServiceName::Task), &valid),
        &item.id,
        3,
    )
    .await;

    let unauthenticated = |result: Result<(), tonic::Status>, says: &str| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            status.message().contains(says),
            "{status:?} should say {says}"
        );
    };
    // Expired, beyond the leeway.
    let now = jsonwebtoken::get_current_timestamp();
    let expired = jsonwebtoken::encode(
        &{
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            header.kid = Some(first.kid.clone());
            header
        },
        &serde_json::json!({"sub": "ann", "tenant": "acme", "roles": ["viewer"], "aud": "agilepm", "exp": now - 120}),
        &jsonwebtoken::EncodingKey::from_ed_pem(&std::fs::read(&first.pem).unwrap()).unwrap(),
    )
    .unwrap();
    unauthenticated(list_products(&system, &expired).await, "token expired");
    // For another audience.
    let foreign = first
        .signer("another-system")
        .mint(&ann, Duration::from_secs(300))
        .unwrap();
    unauthenticated(
        list_products(&system, &foreign).await,
        "token is for another audience",
    );
    // Signed by a key the set does not hold (yet).
    let rotated = second
        .signer("agilepm")
        .mint(&ann, Duration::from_secs(300))
        .unwrap();
    unauthenticated(
        list_products(&system, &rotated).await,
        "unknown signing key \"people-2\"",
    );
    // A plain tenant id is development mode's token only.
    unauthenticated(list_products(&system, "acme").await, "not a JWT");

    // Rotation without a restart: publish the new key beside the old, then retire the old.
    write_key_set(&jwks, &[&first, &second]);
    until_answer(&system, &rotated, None).await;
    list_products(&system, &valid).await.unwrap();
    write_key_set(&jwks, &[&second]);
    until_answer(&system, &valid, Some(Code::Unauthenticated)).await;
    list_products(&system, &rotated).await.unwrap();
    system.stop().await;
}

async fn a_tenant_sees_only_its_own_feed_head(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;
    let feed = |token: &str| {
        EventFeedServiceClient::new(channel(system.address(ServiceName::BacklogItem), token))
    };
    committed_item(&system, "acme").await;
    let head = |token: String| {
        let mut client = feed(&token);
        async move {
            client
                .get_feed_head(GetFeedHeadRequest {})
                .await
                .unwrap()
                .into_inner()
                .head_position
        }
    };
    let acme_before = head("acme".into()).await;
    assert!(!acme_before.is_empty());
    committed_item(&system, "globex").await;
    let acme_after = head("acme".into()).await;
    let globex = head("globex".into()).await;
    let everyone = head(agilepm_testkit::operator_token()).await;
    assert_eq!(acme_after, acme_before, "globex's writes moved acme's head");
    assert_ne!(globex, acme_after);
    assert_eq!(everyone, globex, "globex wrote last");

    // An operator may narrow the feed to one tenant by naming it: its head, and a
    // subscription that streams that tenant's events only.
    let as_operator_for = |tenant: &str| {
        agilepm_platform::wire::client::connect_lazy_acting_for(
            &format!("http://{}", system.address(ServiceName::BacklogItem)),
            agilepm_platform::wire::auth::Credentials::fixed(&agilepm_testkit::operator_token())
                .unwrap(),
            tenant,
        )
        .unwrap()
    };
    let narrowed_head = EventFeedServiceClient::new(as_operator_for("acme"))
        .get_feed_head(GetFeedHeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .head_position;
    assert_eq!(narrowed_head, acme_after, "the operator named acme");
    let events = agilepm_testkit::feed_events(as_operator_for("acme"), 1).await;
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|event| event.tenant_id == "acme"),
        "an operator narrowed to acme saw {:?}",
        events.iter().map(|e| &e.tenant_id).collect::<Vec<_>>()
    );
    let all = agilepm_testkit::feed_events(
        channel(
            system.address(ServiceName::BacklogItem),
            &agilepm_testkit::operator_token(),
        ),
        events.len() + 1,
    )
    .await;
    assert!(
        all.iter().any(|event| event.tenant_id == "globex"),
        "naming none sees all"
    );
    system.stop().await;
}

/// Every method of every agilepm service, called over real gRPC by every kind of caller,
/// is admitted exactly when the role table admits it. The methods come from the
/// descriptor set the servers are generated from, so a new RPC without a row fails here.
///
/// SQLite only: what is checked is the authentication layer in front of the handlers,
/// which is the same code on either engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_admits_exactly_the_roles_in_the_table() {
    agilepm_testkit::init();
    let system = TestSystem::start(Engine::Sqlite, &ServiceName::ALL).await;
    let server_of = |package: &str| match package {
        "agilepm.backlog.v1" => Some(ServiceName::BacklogItem),
        "agilepm.task.v1" => Some(ServiceName::Task),
        "agilepm.planning.v1" => Some(ServiceName::Planning),
        "agilepm.coordinator.v1" => Some(ServiceName::Coordinator),
        "agilepm.notifier.v1" => Some(ServiceName::Notifier),
        // Every service serves a feed; the task service's is the one the coordinator reads.
        "agilepm.events.v1" => Some(ServiceName::Task),
        _ => None,
    };
    let mut callers: Vec<(String, String, Caller)> = Vec::new();
    for role in [Role::ProductOwner, Role::TeamMember, Role::Viewer] {
        callers.push((
            role.to_string(),
            agilepm_testkit::person_token("ann", "acme", &[role]),
            Caller::person("ann".into(), "acme".into(), vec![role]),
        ));
    }
    callers.push((
        "system operator".into(),
        agilepm_testkit::operator_token(),
        Caller::system_operator("op".into(), None),
    ));
    for service in ServiceName::ALL {
        callers.push((
            format!("{service} service"),
            agilepm_testkit::service_token(service),
            Caller::service(service, None),
        ));
    }

    let descriptors = <prost_types::FileDescriptorSet as prost::Message>::decode(
        agilepm_proto::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    let mut methods = 0;
    for file in &descriptors.file {
        let Some(server) = server_of(file.package()) else {
            continue;
        };
        for service in &file.service {
            for method in &service.method {
                methods += 1;
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                let Guard::Ruled(rule) = access::guard(&path) else {
                    panic!("{path} has no row in the role table");
                };
                let mut admitted_anyone = false;
                for (name, token, caller) in &callers {
                    let admitted = access::authorize(caller, method.name(), &rule).is_ok();
                    admitted_anyone |= admitted;
                    let code = call(
                        channel(system.address(server), token),
                        &path,
                        method.server_streaming(),
                    )
                    .await;
                    if admitted {
                        assert!(
                            !matches!(code, Some(Code::PermissionDenied | Code::Unauthenticated)),
                            "{path} as {name}: admitted by the table, refused with {code:?}"
                        );
                    } else {
                        assert_eq!(
                            code,
                            Some(Code::PermissionDenied),
                            "{path} as {name}: refused by the table"
                        );
                    }
                }
                assert!(admitted_anyone, "{path}: nobody may call it");
            }
        }
    }
    assert_eq!(
        methods,
        access::TABLE.len(),
        "every row is a method and vice versa"
    );
    system.stop().await;
}

/// The field table too: every field a narrower rule covers, set in a real request by each
/// kind of caller, is admitted exactly when both the method's row and the field's admit
/// it, and a refusal names the field and the role it needs (issue 36 §6: a team member
/// could set business priority, a product owner story points).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_field_rule_admits_exactly_the_roles_in_the_table() {
    use agilepm_proto::backlog::v1::{
        BusinessPriority, PlanBacklogItemRequest, UpdateBacklogItemRequest,
    };
    use agilepm_proto::planning::v1::{
        BreakDownUseCaseRequest, GroupBacklogItemsRequest, SplitBacklogItemRequest, StoryDraft,
    };
    agilepm_testkit::init();
    let system = TestSystem::start(Engine::Sqlite, &ServiceName::ALL).await;
    let id = || Uuid::now_v7().to_string();
    let sized = || StoryDraft {
        summary: "a story".into(),
        story_points: 3,
        ..Default::default()
    };
    let update = |field: &str| UpdateBacklogItemRequest {
        backlog_item: Some(BacklogItem {
            id: id(),
            story_points: 3,
            business_priority: Some(BusinessPriority {
                benefit: 5,
                penalty: 5,
                cost: 5,
                risk: 5,
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![field.into()],
        }),
        expected_version: None,
    };
    let plan = |points: i32, priority: bool| PlanBacklogItemRequest {
        request_id: id(),
        product_id: id(),
        summary: "a story".into(),
        story_points: points,
        business_priority: priority.then_some(BusinessPriority {
            benefit: 5,
            penalty: 5,
            cost: 5,
            risk: 5,
        }),
        ..Default::default()
    };
    let mut callers: Vec<(String, String, Caller)> = Vec::new();
    for role in [Role::ProductOwner, Role::TeamMember, Role::Viewer] {
        callers.push((
            role.to_string(),
            agilepm_testkit::person_token("ann", "acme", &[role]),
            Caller::person("ann".into(), "acme".into(), vec![role]),
        ));
    }
    callers.push((
        "the planning service".into(),
        agilepm_testkit::service_token(ServiceName::Planning),
        Caller::service(ServiceName::Planning, Some("acme".into())),
    ));
    let mut covered = 0;
    for rule in access::FIELDS {
        let body: Vec<u8> = match (rule.method, rule.field) {
            ("PlanBacklogItem", "story_points") => prost::Message::encode_to_vec(&plan(4, false)),
            ("PlanBacklogItem", "business_priority") => {
                prost::Message::encode_to_vec(&plan(0, true))
            }
            ("UpdateBacklogItem", field) => prost::Message::encode_to_vec(&update(field)),
            ("BreakDownUseCase", _) => prost::Message::encode_to_vec(&BreakDownUseCaseRequest {
                request_id: id(),
                use_case_id: id(),
                stories: vec![sized()],
            }),
            ("SplitBacklogItem", _) => prost::Message::encode_to_vec(&SplitBacklogItemRequest {
                request_id: id(),
                backlog_item_id: id(),
                stories: vec![sized(), sized()],
            }),
            ("GroupBacklogItems", _) => prost::Message::encode_to_vec(&GroupBacklogItemsRequest {
                request_id: id(),
                backlog_item_ids: vec![id(), id()],
                story: Some(sized()),
            }),
            (method, field) => panic!("no request sets {method}.{field}: add one here"),
        };
        let server = if rule.service.starts_with("agilepm.backlog") {
            ServiceName::BacklogItem
        } else {
            ServiceName::Planning
        };
        let path = format!("/{}/{}", rule.service, rule.method);
        let Guard::Ruled(method_rule) = access::guard(&path) else {
            panic!("{path} has no row");
        };
        for (name, token, caller) in &callers {
            let admitted = access::authorize(caller, rule.method, &method_rule).is_ok()
                && access::authorize_field(caller, rule.service, rule.method, rule.field).is_ok();
            let status =
                call_with(channel(system.address(server), token), &path, body.clone()).await;
            let code = status.as_ref().map(tonic::Status::code);
            if admitted {
                assert!(
                    !matches!(code, Some(Code::PermissionDenied | Code::Unauthenticated)),
                    "{path}.{} as {name}: admitted by the tables, refused: {status:?}",
                    rule.field
                );
            } else {
                let status = status.expect("refused");
                assert_eq!(status.code(), Code::PermissionDenied, "{path} as {name}");
                if access::authorize(caller, rule.method, &method_rule).is_ok() {
                    assert!(
                        status.message().contains(&format!("field {}", rule.field))
                            && status.message().contains("needs role"),
                        "{path} as {name}: {status:?}"
                    );
                }
            }
        }
        covered += 1;
    }
    assert_eq!(covered, access::FIELDS.len());
    system.stop().await;
}

/// Calls unary `path` with the encoded request `body`; the refusal, or `None`.
async fn call_with(channel: PeerChannel, path: &str, body: Vec<u8>) -> Option<tonic::Status> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Raw {}
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<Encoded, Raw>::default();
    let mut request = tonic::Request::new(Encoded(body));
    request.set_timeout(Duration::from_secs(5));
    grpc.unary(request, path, codec).await.err()
}

/// An already encoded message, sent as it is.
#[derive(Debug, Clone, Default, PartialEq)]
struct Encoded(Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Calls `path` with an empty request (a valid encoding of every request message) and
/// returns the status code, or `None` for success. Responses are decoded as `()`, which
/// skips every field.
async fn call(channel: PeerChannel, path: &str, streaming: bool) -> Option<Code> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let mut request = tonic::Request::new(());
    request.set_timeout(Duration::from_secs(5));
    if streaming {
        grpc.server_streaming(request, path, codec)
            .await
            .err()
            .map(|s| s.code())
    } else {
        grpc.unary(request, path, codec)
            .await
            .err()
            .map(|s| s.code())
    }
}

engine_tests!(every_event_and_estimate_names_who_acted);

/// Who acted is recorded on every event and estimation-log entry, including what a
/// person did through planning (planning names them to backlog-item) and what the
/// coordinator did on its own.
async fn every_event_and_estimate_names_who_acted(engine: Engine) {
    use agilepm_proto::common::v1::StatusTransitionMode;
    use agilepm_proto::planning::v1::release_service_client::ReleaseServiceClient;
    use agilepm_proto::planning::v1::sprint_service_client::SprintServiceClient;
    use agilepm_proto::planning::v1::{
        CommitBacklogItemToSprintRequest, ScheduleBacklogItemForReleaseRequest,
    };

    use crate::coordinator::Sprinting;
    use agilepm_proto::task::v1::{EstimateTaskHoursRemainingRequest, GetTaskRequest};

    let system = TestSystem::start(engine, &ServiceName::ALL).await;
    let ann = agilepm_testkit::person_token("ann", "acme", &[Role::ProductOwner]);
    let bob = agilepm_testkit::person_token("bob", "acme", &[Role::TeamMember]);
    let scene = Sprinting::prepare_as(system, StatusTransitionMode::Automatic, &ann).await;
    let (system, release, sprint) = (&scene.system, &scene.release, &scene.sprint);
    let at = |service| system.address(service);
    let item = given::item(
        channel(at(ServiceName::BacklogItem), &ann),
        &scene.product.id,
    )
    .await;
    ReleaseServiceClient::new(channel(at(ServiceName::Planning), &ann))
        .schedule_backlog_item_for_release(ScheduleBacklogItemForReleaseRequest {
            release_id: release.id.clone(),
            backlog_item_id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    SprintServiceClient::new(channel(at(ServiceName::Planning), &bob))
        .commit_backlog_item_to_sprint(CommitBacklogItemToSprintRequest {
            sprint_id: sprint.id.clone(),
            backlog_item_id: item.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let task = given::task(channel(at(ServiceName::Task), &bob), &item.id, 2).await;
    let mut tasks = TaskServiceClient::new(channel(at(ServiceName::Task), &bob));
    tasks
        .estimate_task_hours_remaining(EstimateTaskHoursRemainingRequest {
            id: task.id.clone(),
            hours_remaining: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let logged = tasks
        .get_task(GetTaskRequest {
            view: 0,
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert!(!logged.estimation_log.is_empty());
    for entry in &logged.estimation_log {
        assert_eq!(entry.estimated_by, "bob", "{entry:?}");
    }

    let operator = agilepm_testkit::operator_token();
    let actors = |events: Vec<agilepm_proto::events::v1::Event>| {
        events
            .into_iter()
            .map(|e| {
                (
                    e.event_type.rsplit('.').next().unwrap_or("").to_owned(),
                    e.actor,
                )
            })
            .collect::<Vec<_>>()
    };
    let planning_events = actors(
        agilepm_testkit::feed_events(channel(at(ServiceName::Planning), &operator), 3).await,
    );
    assert_eq!(
        planning_events,
        vec![
            ("ProductCreated".into(), "ann".into()),
            ("ReleaseScheduled".into(), "ann".into()),
            ("SprintScheduled".into(), "ann".into()),
        ]
    );
    let task_events =
        actors(agilepm_testkit::feed_events(channel(at(ServiceName::Task), &operator), 2).await);
    assert!(task_events.len() >= 2, "{task_events:?}");
    assert!(
        task_events.iter().all(|(_, actor)| actor == "bob"),
        "{task_events:?}"
    );
    // The coordinator's DONE arrives last; wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let backlog_events = loop {
        let events = actors(
            agilepm_testkit::feed_events(channel(at(ServiceName::BacklogItem), &operator), 4).await,
        );
        if events
            .iter()
            .any(|(_, actor)| actor == "service:coordinator")
            || tokio::time::Instant::now() > deadline
        {
            break events;
        }
    };
    let expected: Vec<(String, String)> = vec![
        ("BacklogItemPlanned".into(), "ann".into()),
        ("BacklogItemScheduled".into(), "ann".into()),
        ("BacklogItemCommitted".into(), "bob".into()),
        (
            "BacklogItemStatusChanged".into(),
            "service:coordinator".into(),
        ),
    ];
    for wanted in &expected {
        assert!(
            backlog_events.contains(wanted),
            "{wanted:?} in {backlog_events:?}"
        );
    }
    assert!(
        backlog_events.iter().all(|(_, actor)| !actor.is_empty()),
        "{backlog_events:?}"
    );

    // A person cannot claim to act for someone else.
    let mut request = tonic::Request::new(ListProductsRequest::default());
    request.metadata_mut().insert(
        agilepm_platform::wire::auth::ACTOR_HEADER,
        "ann".parse().unwrap(),
    );
    let refused = ProductServiceClient::new(channel(at(ServiceName::Planning), &bob))
        .list_products(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    scene.system.stop().await;
}
