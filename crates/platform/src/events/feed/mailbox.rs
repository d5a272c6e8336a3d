//! Where the hub leaves one subscriber's batches: a bounded queue and a wake-up.
//!
//! The hub delivers to a subscriber only the batches its filter may want, so a subscriber
//! whose tenant is quiet, or whose event types are not being written, is never woken.
//! Each delivery says where the subscriber's previous one ended ([`Delivery::after`]), so
//! skipped batches leave no doubt: nothing the subscriber wants lies between. A queue
//! that reaches [`BATCHES_KEPT`](super::hub::BATCHES_KEPT) (a client not reading) is
//! emptied and replaced by one mark, "read from the database up to here", which the
//! subscriber does at its own pace under a catch-up permit: memory per subscriber stays
//! bounded whatever its client does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::events::feed::Position;
use crate::events::feed::hub::Batch;

/// One batch for one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where the subscriber's previous delivery ended (or where it joined): nothing it
    /// wants lies between that and this batch.
    pub after: Position,
    /// The batch, shared by every subscriber it is delivered to.
    pub batch: Arc<Batch>,
}

/// What a subscriber finds in its mailbox.
#[derive(Debug)]
pub enum Mail {
    /// The next batch.
    Delivery(Delivery),
    /// Batches were dropped (the queue was full): read the database up to here.
    Overflowed(Position),
    /// Nothing yet.
    Empty,
    /// The hub stopped: the process shuts down.
    Closed,
}

#[derive(Default)]
struct State {
    deliveries: VecDeque<Delivery>,
    overflowed_until: Option<Position>,
    closed: bool,
}

/// One subscriber's queue of deliveries.
#[derive(Default)]
pub struct Mailbox {
    state: Mutex<State>,
    arrived: Notify,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves `delivery`, or, past `capacity` queued, drops the queue for a mark up to the
    /// delivery's batch.
    pub fn deliver(&self, delivery: Delivery, capacity: usize) {
        {
            let mut state = self.state();
            if state.overflowed_until.is_some() || state.deliveries.len() >= capacity {
                state.deliveries.clear();
                state.overflowed_until = Some(delivery.batch.until);
            } else {
                state.deliveries.push_back(delivery);
            }
        }
        self.arrived.notify_one();
    }

    /// Marks the mailbox closed and wakes its subscriber.
    pub fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_one();
    }

    /// Whether nothing waits to be taken.
    pub fn is_empty(&self) -> bool {
        let state = self.state();
        state.deliveries.is_empty() && state.overflowed_until.is_none()
    }

    /// Takes what is there, without waiting.
    pub fn take(&self) -> Mail {
        let mut state = self.state();
        if let Some(until) = state.overflowed_until.take() {
            return Mail::Overflowed(until);
        }
        match state.deliveries.pop_front() {
            Some(delivery) => Mail::Delivery(delivery),
            None if state.closed => Mail::Closed,
            None => Mail::Empty,
        }
    }

    /// Resolves once something was left since the last [`Mailbox::take`] that found it
    /// empty (a delivery made between the two is not missed: its wake-up is kept).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(after: i64, until: i64) -> Delivery {
        Delivery {
            after: Position {
                txid: 0,
                seq: after,
            },
            batch: Arc::new(Batch::new(
                Position {
                    txid: 0,
                    seq: until,
                },
                Vec::new(),
            )),
        }
    }

    #[test]
    fn a_full_queue_becomes_one_mark_up_to_the_newest_batch() {
        let mailbox = Mailbox::default();
        mailbox.deliver(delivery(0, 1), 2);
        mailbox.deliver(delivery(1, 2), 2);
        mailbox.deliver(delivery(2, 3), 2);
        mailbox.deliver(delivery(3, 4), 2);
        assert!(matches!(mailbox.take(), Mail::Overflowed(p) if p.seq == 4));
        assert!(matches!(mailbox.take(), Mail::Empty));
        mailbox.deliver(delivery(4, 5), 2);
        assert!(matches!(mailbox.take(), Mail::Delivery(d) if d.after.seq == 4));
        mailbox.close();
        assert!(matches!(mailbox.take(), Mail::Closed));
    }

    #[tokio::test]
    async fn a_delivery_before_the_wait_is_not_missed() {
        let mailbox = Mailbox::default();
        assert!(matches!(mailbox.take(), Mail::Empty));
        mailbox.deliver(delivery(0, 1), 8);
        tokio::time::timeout(std::time::Duration::from_secs(1), mailbox.arrived())
            .await
            .expect("woken");
    }
}
