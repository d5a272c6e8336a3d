//! The notifier: follows the backlog-item, planning and task feeds and tells tenants'
//! endpoints what happened, as signed webhooks delivered exactly once in effect.
//!
//! An event becomes deliveries in the notifier's database in the same transaction that
//! advances its checkpoint of the feed (the inbox), keyed by event id; the dispatcher
//! then sends each subscription's deliveries in order, retrying with backoff until the
//! endpoint answers 2xx or the delivery is dead-lettered for an operator to send again.
//!
//! | module | holds |
//! |---|---|
//! | [`api`] | the gRPC adapter: subscriptions, deliveries, redelivery |
//! | [`commands`] | subscription writes: the tenant's bound, version-guarded changes |
//! | [`domain`] | notification kinds, subscriptions, deliveries, the retry schedule |
//! | [`events`] | the followed events, decoded, and what each means to the notifier |
//! | [`inbox`] | a feed batch -> deliveries and checkpoint, one transaction |
//! | [`dispatch`] | lanes sending each subscription's deliveries in order |
//! | [`sender`] | one signed POST, with the limits a tenant's endpoint needs |
//! | [`signing`] | Standard Webhooks signatures and secrets |
//! | [`target`] | which URLs and addresses deliveries may go to |
//! | [`sprint_health`] | sprints at risk and back on track |
//! | [`store`] | the notifier's database |
//! | [`mapping`] | domain <-> protobuf |
//! | [`meters`] | delivery metrics |
//! | [`options`] | the notifier's own settings |

use std::sync::Arc;

use agilepm_platform::events::follower::{FollowOptions, follow};
use agilepm_platform::runtime::service::ServiceSpec;
use agilepm_platform::storage::db::Migrations;
use agilepm_platform::wire::config::{CommonConfig, ServiceName};
use agilepm_proto::events::v1::event_feed_service_client::EventFeedServiceClient;
use agilepm_proto::notifier::v1::notifier_service_server::NotifierServiceServer;
use agilepm_proto::planning::v1::report_service_client::ReportServiceClient;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod api;
pub mod commands;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod inbox;
pub mod mapping;
pub mod meters;
pub mod options;
pub mod sender;
pub mod signing;
pub mod sprint_health;
pub mod store;
pub mod target;

use events::Source;
use inbox::{Inbox, InboxCheckpoint};
use options::NotifierOptions;
use sprint_health::DirtyTenants;

static MIGRATIONS: Migrations = agilepm_platform::migrations!();

/// How the notifier starts. It owns no aggregate, so it serves no event feed.
pub static SPEC: ServiceSpec = ServiceSpec {
    name: ServiceName::Notifier,
    migrations: &MIGRATIONS,
    serves_feed: false,
};

/// Runs the notifier on `listener` until `shutdown`, with its own settings from the
/// environment.
pub async fn run(
    config: CommonConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut options = NotifierOptions::from_env()?;
    options.sender.resolve_networks(config.auth.development);
    agilepm_platform::runtime::service::run(
        &SPEC,
        config,
        listener,
        shutdown,
        |context, server| async move {
            let peers = &context.config.peers;
            let meters = meters::Meters::new();
            let deliveries_waiting = Arc::new(Notify::new());
            let dirty = DirtyTenants::default();
            for source in Source::ALL {
                let endpoint = match source {
                    Source::BacklogItem => &peers.backlog_item,
                    Source::Planning => &peers.planning,
                    Source::Task => &peers.task,
                };
                let feed = EventFeedServiceClient::new(context.connect(endpoint)?);
                let inbox = Inbox::new(
                    context.db.clone(),
                    source,
                    deliveries_waiting.clone(),
                    dirty.clone(),
                    meters.clone(),
                );
                let checkpoint = InboxCheckpoint::new(context.db.clone(), source);
                let follow_options = FollowOptions {
                    event_types: source.event_types(),
                    consumer: Some(source.checkpoint().to_owned()),
                    ..FollowOptions::default()
                };
                let shutdown = context.shutdown.clone();
                context.tasks.spawn(async move {
                    follow(feed, &checkpoint, &inbox, &follow_options, shutdown).await;
                });
            }
            let reports = ReportServiceClient::new(context.connect(&peers.planning)?);
            context.tasks.spawn(sprint_health::watch(
                context.db.clone(),
                reports,
                dirty,
                options.health,
                deliveries_waiting.clone(),
                context.shutdown.clone(),
            ));
            let sender = sender::Sender::new(&options.sender)?;
            let dispatcher =
                dispatch::Dispatcher::new(context.db.clone(), sender, options.retry, meters);
            context
                .tasks
                .spawn(dispatcher.run(deliveries_waiting.clone(), context.shutdown.clone()));
            context.tasks.spawn(dispatch::prune(
                context.db.clone(),
                options.keep_delivered,
                context.shutdown.clone(),
            ));
            let api = api::NotifierApi::new(
                context.db.clone(),
                options.sender.targets.clone(),
                deliveries_waiting,
            );
            Ok(server.add_service(NotifierServiceServer::new(api)))
        },
    )
    .await
}
