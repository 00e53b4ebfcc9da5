//! MQTT 5 topic aliases ([MQTT-3.3.2.3.4]), one table per direction and
//! connection.

use std::collections::HashMap;

use ferrymq_codec::{Property, Publish, ReasonCode, TopicName};

use crate::protocol::Close;

/// Aliases the client set, up to the Topic Alias Maximum we announced.
#[derive(Debug, Default)]
pub struct Inbound {
    max: u16,
    topics: Vec<Option<TopicName>>,
}

impl Inbound {
    pub fn new(max: u16) -> Inbound {
        Inbound {
            max,
            topics: Vec::new(),
        }
    }

    /// Resolves the alias of an inbound PUBLISH: records a new mapping or
    /// fills in the topic from an existing one.
    pub fn resolve(&mut self, publish: &mut Publish) -> Result<(), Close> {
        let Some(alias) = publish.properties.topic_alias() else {
            return Ok(());
        };
        if alias == 0 || alias > self.max {
            return Err(Close::violation(
                ReasonCode::TopicAliasInvalid,
                format!("topic alias {alias} outside 1..={}", self.max),
            ));
        }
        let slot = usize::from(alias - 1);
        if self.topics.len() <= slot {
            self.topics.resize(slot + 1, None);
        }
        let Some(entry) = self.topics.get_mut(slot) else {
            return Ok(());
        };
        if publish.topic.is_empty() {
            match entry {
                Some(topic) => publish.topic = topic.clone(),
                // [MQTT-3.3.4-?]: an alias used before it was set.
                None => {
                    return Err(Close::violation(
                        ReasonCode::ProtocolError,
                        format!("topic alias {alias} used before it was set"),
                    ))
                }
            }
        } else {
            *entry = Some(publish.topic.clone());
        }
        Ok(())
    }
}

/// Aliases we assign for a client that accepts them: the first topics get
/// one each until the client's maximum is reached, after which topics go out
/// in full.
#[derive(Debug, Default)]
pub struct Outbound {
    max: u16,
    /// Boxed on the first alias: most connections never get one, and an
    /// empty map is 48 bytes of every connection.
    #[allow(clippy::box_collection)] // boxed for the idle cost: see above
    assigned: Option<Box<HashMap<TopicName, u16>>>,
}

impl Outbound {
    pub fn new(max: u16) -> Outbound {
        Outbound {
            max,
            assigned: None,
        }
    }

    /// Rewrites `publish` to use an alias where one exists or can be made.
    pub fn apply(&mut self, publish: &mut Publish) {
        if self.max == 0 {
            return;
        }
        let assigned = self.assigned.get_or_insert_with(Box::default);
        if let Some(&alias) = assigned.get(&publish.topic) {
            publish.topic = TopicName::default();
            publish.properties.push(Property::TopicAlias(alias));
        } else if assigned.len() < usize::from(self.max) {
            let alias = assigned.len() as u16 + 1;
            assigned.insert(publish.topic.clone(), alias);
            publish.properties.push(Property::TopicAlias(alias));
        }
    }
}
