//! Retained messages ([MQTT-3.3.1-5]): the last retained message of each
//! topic, handed to new matching subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::message::Message;
use crate::router::filter_matches;

#[derive(Debug, Default)]
pub struct RetainStore {
    messages: RwLock<HashMap<Box<str>, Arc<Message>>>,
}

impl RetainStore {
    /// Stores `message` as the retained message of its topic; an empty
    /// payload removes it ([MQTT-3.3.1-6]).
    pub fn set(&self, message: &Arc<Message>) {
        let topic: &str = &message.topic;
        if message.payload.is_empty() {
            self.messages.write().remove(topic);
        } else {
            self.messages.write().insert(topic.into(), message.clone());
        }
    }

    /// The retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let messages = self.messages.read();
        if !filter.contains(['+', '#']) {
            return messages.get(filter).cloned().into_iter().collect();
        }
        messages
            .iter()
            .filter(|(topic, _)| filter_matches(filter, topic))
            .map(|(_, m)| m.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.messages.read().len()
    }

    /// Number of retained messages and their payload bytes.
    pub fn summary(&self) -> (usize, usize) {
        let messages = self.messages.read();
        let bytes = messages.values().map(|m| m.payload.len()).sum();
        (messages.len(), bytes)
    }

    /// Every retained message (for the admin API), in topic order.
    pub fn all(&self) -> Vec<Arc<Message>> {
        let mut all: Vec<Arc<Message>> = self.messages.read().values().cloned().collect();
        all.sort_by(|a, b| a.topic.cmp(&b.topic));
        all
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
