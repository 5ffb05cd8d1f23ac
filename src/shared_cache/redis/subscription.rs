//! Waiting without polling: the replicas of one process that wait for a lease holder's token
//! share one Redis pub/sub connection, made when the first of them waits. The lease holder
//! `PUBLISH`es on the token key's channel when it stores the token (or gives up its lease);
//! the message wakes every waiter of that key with the value it carries (see
//! [`publication`](super::publication)), or, without one, to read the key.
//!
//! In a Redis Cluster a `PUBLISH` reaches the subscribers of every node, so the connection
//! goes to any node that answers: the first given, and when its connection ends (the node went
//! away), the next one, in turn.
//!
//! A message can be lost (the pub/sub connection drops, or is not yet subscribed when the
//! holder publishes): waiters also look at the key every
//! [`poll_interval`](crate::shared_cache::SharedCache::poll_interval), a slow fallback.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use tokio::{sync::watch, task::AbortHandle};

use super::{failure::Failure, publication};
use crate::shared_cache::{Entry, Listener, Published};

/// The channels this process is subscribed to, each with the sender that wakes its waiters
/// with the value published.
type Channels = Arc<Mutex<HashMap<String, watch::Sender<Option<Published>>>>>;

/// The pub/sub connection of one cache, shared by every waiter of the process.
pub(crate) struct Subscriptions {
    /// The server, or every node of a cluster given.
    clients: Vec<redis::Client>,
    /// The node to try first: the one after the last whose connection ended or failed.
    next: Arc<AtomicUsize>,
    /// Only the subscribed channels are here; emptied when the connection ends, which wakes
    /// every waiter (their senders are dropped).
    channels: Channels,
    /// The live connection, if any. Locked while connecting or subscribing.
    live: tokio::sync::Mutex<Option<Live>>,
}

/// A pub/sub connection and the task that reads its messages.
struct Live {
    sink: PubSubSink,
    reader: AbortHandle,
    channels: Channels,
}

impl Drop for Live {
    /// Nothing is subscribed any more: the waiters wake (their senders are dropped), and the
    /// next wait subscribes again on a new connection.
    fn drop(&mut self) {
        self.reader.abort();
        lock(&self.channels).clear();
    }
}

impl Subscriptions {
    pub(crate) fn new(clients: Vec<redis::Client>) -> Self {
        Self {
            clients,
            next: Arc::default(),
            channels: Arc::default(),
            live: tokio::sync::Mutex::new(None),
        }
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<Option<Published>>>> {
        lock(&self.channels)
    }

    /// A wake-up for `channel` if this process already listens to it: made before the key is
    /// read, so that no publication after the read is missed.
    pub(crate) fn listening(&self, channel: &str) -> Option<Listener> {
        self.channels()
            .get(channel)
            .map(|sender| Listener::with_values(sender.subscribe()))
    }

    /// Subscribes to `channel` (connecting first if needed) and a wake-up for it. A
    /// publication before this returned was missed: the caller reads the key once more. If
    /// the caller gives up (its timeout) while this connects, the next call starts afresh:
    /// the connection being made is dropped with the future.
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<Listener, Failure> {
        let mut live = self.live.lock().await;
        if let Some(listener) = self.listening(channel) {
            return Ok(listener);
        }
        let result = self.subscribe_on(&mut live, channel).await;
        if result.is_err() {
            // Start afresh next time.
            *live = None;
        }
        result
    }

    async fn subscribe_on(
        &self,
        live: &mut Option<Live>,
        channel: &str,
    ) -> Result<Listener, Failure> {
        let mut connection = match live.take() {
            Some(connection) if !connection.reader.is_finished() => connection,
            _ => self.connect().await?,
        };
        connection.sink.subscribe(channel).await?;
        *live = Some(connection);
        let (sender, receiver) = watch::channel(None);
        self.channels().insert(channel.to_owned(), sender);
        tracing::debug!("shared token cache: listening for publications");
        Ok(Listener::with_values(receiver))
    }

    /// A new pub/sub connection to the first node that answers, from the one after the last
    /// that failed, with the task that wakes the waiters of each message. The next node is
    /// marked before each attempt, so that an attempt abandoned at the caller's timeout (a
    /// node that does not answer) moves on too.
    async fn connect(&self) -> Result<Live, Failure> {
        let count = self.clients.len().max(1);
        let first = self.next.load(Ordering::Relaxed);
        let mut failure = None;
        let mut connected = None;
        for attempt in 0..count {
            let node = (first + attempt) % count;
            let Some(client) = self.clients.get(node) else {
                break;
            };
            self.next.store((node + 1) % count, Ordering::Relaxed);
            match client.get_async_pubsub().await {
                Ok(pubsub) => {
                    self.next.store(node, Ordering::Relaxed);
                    connected = Some((node, pubsub));
                    break;
                }
                Err(error) => failure = Some(Failure::from(error)),
            }
        }
        let Some((node, pubsub)) = connected else {
            return Err(failure.unwrap_or_else(|| Failure::Redis {
                kind: "no node to listen on".into(),
            }));
        };
        let (sink, mut stream) = pubsub.split();
        let channels = Arc::clone(&self.channels);
        let next = Arc::clone(&self.next);
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                if let Some(sender) = lock(&channels).get(message.get_channel_name()) {
                    let published = publication::decode(message.get_payload_bytes()).map(
                        |(time_to_live, value)| {
                            Published::new(Entry {
                                value: value.to_vec(),
                                time_to_live: Some(time_to_live),
                            })
                        },
                    );
                    sender.send_replace(published);
                }
            }
            tracing::debug!("shared token cache: the pub/sub connection ended");
            // Listen on the next node the next time.
            next.store((node + 1) % count, Ordering::Relaxed);
            // Dropping the senders wakes every waiter.
            lock(&channels).clear();
        });
        Ok(Live {
            sink,
            reader: reader.abort_handle(),
            channels: Arc::clone(&self.channels),
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
