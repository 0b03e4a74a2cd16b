//! Frames towards one peer: bounded, dropping the oldest when full (DESIGN.md §7.4). Every frame
//! is periodic or TTL-bound, so a slow peer loses old news, never blocks the sender, and never
//! grows this side's memory.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Frames queued towards one peer; past that the oldest is dropped.
pub const MAILBOX: usize = 64;

/// A drop-oldest queue with one reader. Closing lets the reader take what is queued, then ends.
#[derive(Debug)]
pub struct Mailbox<T> {
    /// The queue, and whether it is closed.
    queue: Mutex<(VecDeque<T>, bool)>,
    ready: Notify,
}

impl<T: Send + 'static> Mailbox<T> {
    pub fn new() -> Arc<Mailbox<T>> {
        Arc::new(Mailbox {
            queue: Mutex::new((VecDeque::new(), false)),
            ready: Notify::new(),
        })
    }

    /// Queues `item` (dropping the oldest when full); nothing once closed.
    pub fn push(&self, item: T) {
        let mut q = self.queue.lock();
        if q.1 {
            return;
        }
        if q.0.len() >= MAILBOX {
            q.0.pop_front();
        }
        q.0.push_back(item);
        drop(q);
        self.ready.notify_one();
    }

    /// Ends the stream once the queued items are out.
    pub fn close(&self) {
        self.queue.lock().1 = true;
        self.ready.notify_one();
    }

    /// Queues `last` and closes.
    pub fn finish(&self, last: T) {
        self.push(last);
        self.close();
    }

    /// The next item; `None` once closed and empty.
    pub async fn next(&self) -> Option<T> {
        loop {
            {
                let mut q = self.queue.lock();
                if let Some(item) = q.0.pop_front() {
                    return Some(item);
                }
                if q.1 {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The items as a stream, for the transport to send.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = T> + Send {
        futures_util::stream::unfold(self, |m| async move { m.next().await.map(|i| (i, m)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    #[tokio::test]
    async fn a_full_mailbox_drops_the_oldest() {
        let m = Mailbox::new();
        for i in 0..MAILBOX + 10 {
            m.push(i);
        }
        m.close();
        let got: Vec<usize> = m.stream().collect().await;
        assert_eq!(got, (10..MAILBOX + 10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn closing_delivers_what_is_queued_then_ends_and_refuses_more() {
        let m = Mailbox::new();
        m.push("a");
        m.finish("last");
        m.push("late");
        assert_eq!(m.next().await, Some("a"));
        assert_eq!(m.next().await, Some("last"));
        assert_eq!(m.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_waits_for_the_next_item() {
        let m = Mailbox::new();
        let reader = tokio::spawn({
            let m = m.clone();
            async move { m.next().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!reader.is_finished());
        m.push(7);
        assert_eq!(reader.await.expect("reader"), Some(7));
    }
}
