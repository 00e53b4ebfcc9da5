//! Retained messages ([MQTT-3.3.1-5]): the last retained message of each
//! topic, handed to new matching subscriptions.
//!
//! A level trie of topic names, so that a subscription visits only the
//! branches its filter can match (a literal level is one lookup, `+` the
//! children of one node, `#` one subtree) instead of every retained topic.
//! Every walk is a loop with its own stack: a topic's depth is the
//! publisher's choice. Matching hands messages to a callback that may stop
//! the walk, so a subscription never collects more than its queue takes.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::message::Message;

type Hasher = BuildHasherDefault<ahash::AHasher>;

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node, Hasher>,
    message: Option<Arc<Message>>,
}

impl Drop for Node {
    /// Frees the subtree node by node: the derived drop would recurse once
    /// per level.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = std::mem::take(&mut self.children).into_values().collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(std::mem::take(&mut node.children).into_values());
        }
    }
}

#[derive(Default)]
struct Tree {
    root: Node,
    count: usize,
    bytes: usize,
}

impl Tree {
    fn insert(&mut self, message: &Arc<Message>) {
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match node.message.replace(message.clone()) {
            Some(old) => self.bytes -= old.payload.len(),
            None => self.count += 1,
        }
        self.bytes += message.payload.len();
    }

    fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        // `cut`: the depth whose node loses its child on the path, so that
        // no node without a message or children stays behind.
        let mut cut = None;
        let mut node = &self.root;
        for (depth, level) in levels.iter().enumerate() {
            let Some(child) = node.children.get(*level) else {
                return;
            };
            let last = depth + 1 == levels.len();
            let only_path = if last {
                child.children.is_empty()
            } else {
                child.message.is_none() && child.children.len() == 1
            };
            if only_path {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let mut node = &mut self.root;
        for (depth, level) in levels.iter().enumerate() {
            if Some(depth) == cut {
                if let Some(gone) = node.children.remove(*level) {
                    // The message sits at the end of the removed chain.
                    let mut end = &gone;
                    for level in levels.iter().skip(depth + 1) {
                        match end.children.get(*level) {
                            Some(next) => end = next,
                            None => break,
                        }
                    }
                    self.forget(end.message.as_ref());
                }
                return;
            }
            match node.children.get_mut(*level) {
                Some(child) => node = child,
                None => return,
            }
        }
        let old = node.message.take();
        self.forget(old.as_ref());
    }

    fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.as_ref()
    }

    fn forget(&mut self, old: Option<&Arc<Message>>) {
        if let Some(old) = old {
            self.count -= 1;
            self.bytes -= old.payload.len();
        }
    }
}

/// A read view of the retained messages ([`RetainStore::read`]).
pub struct View<'a>(parking_lot::RwLockReadGuard<'a, Tree>);

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("messages", &self.0.count)
            .finish()
    }
}

impl View<'_> {
    /// Calls `f` with each retained message whose topic matches `filter`
    /// (a valid topic filter), until `f` returns false. Topics beginning
    /// with `$` match no filter beginning with a wildcard ([MQTT-4.7.2-1]).
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&Arc<Message>) -> bool) {
        let tree = &self.0;
        let levels: Vec<&str> = filter.split('/').collect();
        let mut stack: Vec<(&Node, usize)> = vec![(&tree.root, 0)];
        while let Some((node, i)) = stack.pop() {
            let at_root = i == 0;
            match levels.get(i) {
                None => {
                    if let Some(m) = &node.message {
                        if !f(m) {
                            return;
                        }
                    }
                }
                Some(&"#") => {
                    // `a/#` matches `a` too ([MQTT-4.7.1-2]).
                    if let Some(m) = node.message.as_ref().filter(|_| !at_root) {
                        if !f(m) {
                            return;
                        }
                    }
                    let mut subtree: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(level, _)| !(at_root && level.starts_with('$')))
                        .map(|(_, child)| child)
                        .collect();
                    while let Some(n) = subtree.pop() {
                        if let Some(m) = &n.message {
                            if !f(m) {
                                return;
                            }
                        }
                        subtree.extend(n.children.values());
                    }
                }
                Some(&"+") => {
                    for (level, child) in &node.children {
                        if !(at_root && level.starts_with('$')) {
                            stack.push((child, i + 1));
                        }
                    }
                }
                Some(level) => {
                    if let Some(child) = node.children.get(*level) {
                        stack.push((child, i + 1));
                    }
                }
            }
        }
    }
}

#[derive(Default)]
pub struct RetainStore {
    tree: RwLock<Tree>,
}

impl std::fmt::Debug for RetainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainStore")
            .field("messages", &self.len())
            .finish_non_exhaustive()
    }
}

impl RetainStore {
    /// Stores `message` as the retained message of its topic; an empty
    /// payload removes it ([MQTT-3.3.1-6]). `then` runs under the same
    /// write lock, so that what follows the change (its store write) is
    /// ordered as the changes are: of two publishers racing on one topic,
    /// memory and disk keep the same winner.
    pub fn set(&self, message: &Arc<Message>, then: impl FnOnce()) {
        let mut tree = self.tree.write();
        if message.payload.is_empty() {
            tree.remove(&message.topic);
        } else {
            tree.insert(message);
        }
        then();
    }

    /// Calls `f` with each retained message whose topic matches `filter`
    /// (a valid topic filter), until `f` returns false. Topics beginning
    /// with `$` match no filter beginning with a wildcard ([MQTT-4.7.2-1]).
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&Arc<Message>) -> bool) {
        self.read().for_each_match(filter, f);
    }

    /// The retained messages as they are now, and stay until the view is
    /// dropped: a SUBSCRIBE enters the topic index while holding one, so
    /// that a retained publication is either in its view or routed to the
    /// new subscription after it, never both in the wrong order (a
    /// publisher changes the store, then routes).
    pub fn read(&self) -> View<'_> {
        View(self.tree.read())
    }

    /// The retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        self.for_each_match(filter, |m| {
            out.push(m.clone());
            true
        });
        out
    }

    pub fn len(&self) -> usize {
        self.tree.read().count
    }

    /// Number of retained messages and their payload bytes.
    pub fn summary(&self) -> (usize, usize) {
        let tree = self.tree.read();
        (tree.count, tree.bytes)
    }

    /// Every retained message (for the admin API), in topic order.
    pub fn all(&self) -> Vec<Arc<Message>> {
        let tree = self.tree.read();
        let mut all = Vec::with_capacity(tree.count);
        let mut stack = vec![&tree.root];
        while let Some(node) = stack.pop() {
            all.extend(node.message.iter().cloned());
            stack.extend(node.children.values());
        }
        drop(tree);
        all.sort_by(|a, b| a.topic.cmp(&b.topic));
        all
    }

    /// Removes every retained message whose Message Expiry Interval has
    /// passed at `now` (`retain_expiry_interval`'s sweep), calling
    /// `removed` with each under the write lock, as [`RetainStore::set`]
    /// calls its `then`. Returns how many went.
    pub fn remove_expired(
        &self,
        now: std::time::Instant,
        mut removed: impl FnMut(&Message),
    ) -> usize {
        // Found under the read lock, so publishers wait only for removals.
        let expired: Vec<Arc<Message>> = {
            let tree = self.tree.read();
            let mut found = Vec::new();
            let mut stack = vec![&tree.root];
            while let Some(node) = stack.pop() {
                found.extend(node.message.iter().filter(|m| m.is_expired(now)).cloned());
                stack.extend(node.children.values());
            }
            found
        };
        let mut tree = self.tree.write();
        let mut count = 0;
        for message in expired {
            // Only if it is still the one found: a newer one stays.
            if tree
                .get(&message.topic)
                .is_some_and(|m| Arc::ptr_eq(m, &message))
            {
                tree.remove(&message.topic);
                removed(&message);
                count += 1;
            }
        }
        count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::filter_matches;
    use bytes::Bytes;
    use ferrymq_codec::{Properties, QoS, TopicName};
    use proptest::prelude::*;

    fn message(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(topic).unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::new(),
            received: std::time::Instant::now(),
            origin: 0,
            source: None,
        })
    }

    fn matched(store: &RetainStore, filter: &str) -> Vec<String> {
        let mut t: Vec<String> = store
            .matching(filter)
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_remove_and_totals() {
        let s = RetainStore::default();
        s.set(&message("a/b", b"12"), || {});
        s.set(&message("a", b"1"), || {});
        s.set(&message("a/b", b"123"), || {});
        assert_eq!(s.summary(), (2, 4));
        s.set(&message("a/b", b""), || {});
        assert_eq!(s.summary(), (1, 1));
        assert_eq!(matched(&s, "a/#"), vec!["a"]);
        s.set(&message("a", b""), || {});
        assert!(s.is_empty());
        assert!(s.tree.read().root.children.is_empty(), "pruned");
        s.set(&message("x/y/z", b"1"), || {});
        s.set(&message("x", b"1"), || {});
        s.set(&message("x/y/z", b""), || {});
        assert_eq!(s.summary(), (1, 1));
        assert!(s.tree.read().root.children["x"].children.is_empty());
    }

    #[test]
    fn dollar_topics_and_early_stop() {
        let s = RetainStore::default();
        for t in ["$SYS/x", "a/b", "a/c", "b"] {
            s.set(&message(t, b"1"), || {});
        }
        assert_eq!(matched(&s, "#"), vec!["a/b", "a/c", "b"]);
        assert_eq!(matched(&s, "+/+"), vec!["a/b", "a/c"]);
        assert_eq!(matched(&s, "$SYS/#"), vec!["$SYS/x"]);
        let mut n = 0;
        s.for_each_match("#", |_| {
            n += 1;
            n < 2
        });
        assert_eq!(n, 2);
    }

    /// Issue 20, item 0: a retained topic as deep as a packet allows is
    /// stored, matched and removed without recursion.
    #[test]
    fn deep_topics_are_walked_without_recursion() {
        let s = RetainStore::default();
        let topic = format!("{}a", "a/".repeat(32_767));
        s.set(&message(&topic, b"1"), || {});
        assert_eq!(s.matching("#").len(), 1);
        assert_eq!(s.matching(&format!("{}#", "a/".repeat(32_767))).len(), 1);
        assert_eq!(s.matching(&format!("{}+", "+/".repeat(32_767))).len(), 1);
        assert_eq!(s.all().len(), 1);
        s.set(&message(&topic, b""), || {});
        assert!(s.is_empty());
        s.set(&message(&topic, b"1"), || {});
        drop(s);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".into()),
            Just("".into()),
            Just("$c".into())
        ]
    }

    proptest! {
        /// The trie agrees with the brute-force matcher.
        #[test]
        fn trie_agrees_with_brute_force(
            topics in prop::collection::vec(prop::collection::vec(level(), 1..5), 1..30),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            filters in prop::collection::vec(
                (prop::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..5), any::<bool>()),
                1..20,
            ),
        ) {
            let s = RetainStore::default();
            let topics: Vec<String> = topics.iter().map(|l| l.join("/")).collect();
            for t in &topics {
                s.set(&message(t, b"1"), || {});
            }
            let mut live: std::collections::BTreeSet<String> = topics.iter().cloned().collect();
            for idx in removed {
                let t = &topics[idx.index(topics.len())];
                s.set(&message(t, b""), || {});
                live.remove(t);
            }
            prop_assert_eq!(s.len(), live.len());
            for (mut levels, hash) in filters {
                if hash {
                    levels.push("#".into());
                }
                let filter = levels.join("/");
                let expected: Vec<String> =
                    live.iter().filter(|t| filter_matches(&filter, t)).cloned().collect();
                prop_assert_eq!(matched(&s, &filter), expected, "filter {}", filter);
            }
        }
    }
}
