//! An in-process queue with SQS semantics: visibility timeouts, receive counts, redelivery, and an
//! optional dead-letter queue after `max_receive_count` receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;
use trace_core::ports::{Delivery, JobQueue, QueueError};

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    attributes: HashMap<String, String>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<Message>,
}

/// An in-process queue. Cloning gives another handle to the same queue.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    redrive: Option<(Box<MemoryQueue>, u32)>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue without a dead-letter queue.
    pub fn new() -> Self {
        MemoryQueue { state: Arc::default(), notify: Arc::new(Notify::new()), redrive: None }
    }

    /// An empty queue that moves a message to `dlq` when it would be received for the
    /// `max_receive_count + 1`-th time (as SQS's redrive policy does).
    pub fn with_dead_letter(dlq: MemoryQueue, max_receive_count: u32) -> Self {
        MemoryQueue { redrive: Some((Box::new(dlq), max_receive_count.max(1))), ..Self::new() }
    }

    /// Messages in the queue, visible or not.
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, message: Message) {
        self.lock().messages.push(message);
        self.notify.notify_waiters();
    }

    fn take_visible(&self, max: u32, visibility: Duration) -> Vec<Delivery> {
        let now = Instant::now();
        let mut dead = Vec::new();
        let mut out = Vec::new();
        {
            let mut state = self.lock();
            let mut i = 0;
            while i < state.messages.len() && out.len() < max as usize {
                if state.messages[i].visible_at > now {
                    i += 1;
                    continue;
                }
                if let Some((_, max_receives)) = &self.redrive {
                    if state.messages[i].receive_count >= *max_receives {
                        dead.push(state.messages.remove(i));
                        continue;
                    }
                }
                let m = &mut state.messages[i];
                m.receive_count += 1;
                m.visible_at = now + visibility;
                let receipt = uuid::Uuid::new_v4().to_string();
                m.receipt = Some(receipt.clone());
                out.push(Delivery {
                    message_id: m.id.clone(),
                    receipt,
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    receive_count: m.receive_count,
                });
                i += 1;
            }
        }
        if let Some((dlq, _)) = &self.redrive {
            for mut m in dead {
                m.receipt = None;
                m.visible_at = now;
                m.receive_count = 0;
                dlq.push(m);
            }
        }
        out
    }

    fn with_receipt<T>(
        &self,
        receipt: &str,
        f: impl FnOnce(&mut Vec<Message>, usize) -> T,
    ) -> Result<T, QueueError> {
        let mut state = self.lock();
        let index = state
            .messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt))
            .ok_or(QueueError::InvalidReceipt)?;
        Ok(f(&mut state.messages, index))
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<String, QueueError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.push(Message {
            id: id.clone(),
            body: body.to_owned(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            receive_count: 0,
            visible_at: Instant::now(),
            receipt: None,
        });
        Ok(id)
    }

    async fn receive(
        &self,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let got = self.take_visible(max.clamp(1, 10), visibility);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            // Wake on a send, or poll again shortly for messages whose visibility expires.
            let nap = (deadline - Instant::now()).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.with_receipt(receipt, |messages, i| {
            messages.remove(i);
        })
    }

    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.with_receipt(receipt, |messages, i| messages[i].visible_at = Instant::now() + visibility)?;
        self.notify.notify_waiters();
        Ok(())
    }
}
