//! Waking feed subscribers when events commit.
//!
//! In-process, [`CommitNotifier`] is bumped by `UnitOfWork::commit`. Across processes (a
//! service with several replicas on one PostgreSQL database), the outbox append queues a
//! `NOTIFY` that PostgreSQL delivers on commit, and [`listen_postgres`] turns it into the
//! same bump. Subscribers also poll on a timer, so a lost notification costs latency,
//! never events.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A counter bumped on every commit that wrote events; subscribers wait for it to change.
#[derive(Clone, Debug)]
pub struct CommitNotifier {
    sender: Arc<watch::Sender<u64>>,
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
            sender: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Wakes every waiting subscriber.
    pub fn notify(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next notification.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

/// Relays PostgreSQL `NOTIFY agilepm_outbox` to `notifier` until `shutdown`. Reconnects
/// with a pause after errors; subscribers keep polling meanwhile.
pub async fn listen_postgres(url: String, notifier: CommitNotifier, shutdown: CancellationToken) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(crate::outbox::NOTIFY_CHANNEL).await?;
            // Whatever committed while we were not listening is found by this first wake.
            notifier.notify();
            loop {
                listener.recv().await?;
                notifier.notify();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = listener => {
                if let Err(error) = result {
                    tracing::error!(%error, "outbox LISTEN connection failed; subscribers fall back to polling");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
