//! Inputs that are not what they claim to be are refused with INVALID_ARGUMENT before
//! anything reaches the database: bodies of the wrong shape, forged page tokens, feed
//! filters larger than a subscription may hold.

use std::time::Duration;

use agilepm_platform::wire::config::ServiceName;
use agilepm_proto::backlog::v1::ListBacklogItemsRequest;
use agilepm_proto::backlog::v1::backlog_item_service_client::BacklogItemServiceClient;
use agilepm_proto::events::v1::SubscribeRequest;
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_testkit::{Engine, TestSystem, engine_tests};
use tonic::Code;
use uuid::Uuid;

engine_tests!(malformed_inputs_are_refused_before_the_database);

/// `GetBacklogItemRequest` has `string id = 1`; this sends field 1 as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(int64, tag = "1")]
    id: i64,
}

async fn malformed_inputs_are_refused_before_the_database(engine: Engine) {
    let system = TestSystem::start(engine, &[ServiceName::BacklogItem]).await;

    let mut grpc = tonic::client::Grpc::new(system.channel(ServiceName::BacklogItem, "acme"));
    grpc.ready().await.unwrap();
    let refused = grpc
        .unary(
            tonic::Request::new(WrongWireType { id: 7 }),
            "/agilepm.backlog.v1.BacklogItemService/GetBacklogItem"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::<WrongWireType, ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{refused:?}"
    );

    // A page token carrying a NUL byte once reached PostgreSQL and came back INTERNAL.
    let forged = hex_of(&format!("k1:{}\0x", Uuid::now_v7()));
    let refused = BacklogItemServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"))
        .list_backlog_items(ListBacklogItemsRequest {
            product_id: Uuid::now_v7().to_string(),
            page_token: forged,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().starts_with("page_token"), "{refused:?}");

    // Feed filters are bounded: what a subscription holds is what it may ask for.
    let mut feed = EventFeedServiceClient::new(system.channel(ServiceName::BacklogItem, "acme"));
    for (request, field) in [
        (
            SubscribeRequest {
                aggregate_ids: (0..1001).map(|_| Uuid::now_v7().to_string()).collect(),
                ..Default::default()
            },
            "aggregate_ids",
        ),
        (
            SubscribeRequest {
                aggregate_ids: vec!["x".repeat(300)],
                ..Default::default()
            },
            "aggregate_ids",
        ),
        (
            SubscribeRequest {
                event_types: (0..101).map(|i| format!("t{i}")).collect(),
                ..Default::default()
            },
            "event_types",
        ),
    ] {
        let mut call = tonic::Request::new(request);
        call.set_timeout(Duration::from_secs(5));
        let refused = feed.subscribe(call).await.expect_err("refused");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        assert!(refused.message().starts_with(field), "{refused:?}");
    }
    system.stop().await;
}

fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
