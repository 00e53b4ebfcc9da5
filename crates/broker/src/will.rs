//! Delayed wills ([MQTT-3.1.3-9]): a will published after its Will Delay
//! Interval unless the client returns first, or at once when the session
//! ends sooner. The handle lives in the parked session (and its record in
//! the store, so a restart keeps the timer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::message::Message;
use crate::session::DelayedWill;

/// Publishes `message` after `delay` unless the returned handle is
/// cancelled first (or fired, which publishes at once). A will that falls
/// due is dropped from `client_id`'s parked session, in the store too, in
/// the same write as the will's own: published once, not again after a
/// restart.
pub fn schedule(
    broker: &Arc<Broker>,
    client_id: Arc<str>,
    message: Arc<Message>,
    delay: Duration,
    publish_at_unix_ms: u64,
    shutdown: &CancellationToken,
) -> DelayedWill {
    let delayed = DelayedWill {
        cancel: CancellationToken::new(),
        publish_now: Arc::new(AtomicBool::new(false)),
        message: message.clone(),
        publish_at_unix_ms,
    };
    let (broker, shutdown, handle) = (broker.clone(), shutdown.clone(), delayed.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(delay) => broker.publish_due_will(&client_id, &handle),
            () = handle.cancel.cancelled() => {
                // The session ended first: its record goes with it.
                if handle.publish_now.load(Ordering::SeqCst) {
                    broker.publish(message);
                }
            }
            () = shutdown.cancelled() => {}
        }
    });
    delayed
}
