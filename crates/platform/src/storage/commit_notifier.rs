//! Waking this process's event-feed reader when a unit of work commits events: held by
//! the database handle (which commits) and waited on by the feed (which reads), so it
//! belongs to neither. How commits of other processes are relayed is `feed::notify`.

use std::sync::Arc;

use tokio::sync::watch;

/// Wakes this process's feed subscribers on every commit that wrote events, and tells
/// the announcer which commits were local.
#[derive(Clone, Debug)]
pub struct CommitNotifier {
    /// Bumped for every commit, local or announced by another process.
    pub(crate) subscribers: Arc<watch::Sender<u64>>,
    /// Bumped for local commits only: what [`announce_postgres`] announces.
    pub(crate) local: Arc<watch::Sender<u64>>,
    /// Sent as the payload of our announcements, so our own listener skips them.
    pub(crate) token: Arc<str>,
}

impl Default for CommitNotifier {
    fn default() -> Self {
        CommitNotifier::new()
    }
}

impl CommitNotifier {
    /// A notifier nobody waits on yet.
    pub fn new() -> CommitNotifier {
        CommitNotifier {
            subscribers: Arc::new(watch::Sender::new(0)),
            local: Arc::new(watch::Sender::new(0)),
            token: uuid::Uuid::new_v4().to_string().into(),
        }
    }

    /// A local commit wrote events: wakes every waiting subscriber, and other processes
    /// through the announcer.
    pub fn notify(&self) {
        self.local
            .send_modify(|count| *count = count.wrapping_add(1));
        self.wake_subscribers();
    }

    /// Another process committed events: wakes every waiting subscriber.
    pub(crate) fn wake_subscribers(&self) {
        self.subscribers
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next notification.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.subscribers.subscribe()
    }
}
