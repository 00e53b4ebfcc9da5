//! The topic index: which subscriptions match a topic name.
//!
//! Shared by every connection task and read on every PUBLISH, so it is built
//! for concurrent reads with no global lock:
//! - filters without wildcards live in a concurrent hash map keyed by the
//!   filter itself (one lookup per publish);
//! - wildcard filters live in level tries sharded by their first level, so
//!   publishers on different first levels never touch the same lock; filters
//!   that start with `+` or `#` live in a root shard that `$` topics skip
//!   ([MQTT-4.7.2-1]).
//!
//! Each filter's subscriber list is an `Arc<[T]>` replaced on write: a
//! reader clones the `Arc` under a short read guard and fans out after
//! dropping it. The API is three calls (`subscribe`, `unsubscribe`,
//! `matches`) so the inside can change without touching callers.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;

/// What a subscriber list holds: anything that knows which subscriber it
/// belongs to, so a re-subscription replaces instead of adding.
pub trait Subscriber: Clone {
    type Key: Eq;
    fn key(&self) -> &Self::Key;
}

type Hasher = BuildHasherDefault<ahash::AHasher>;

/// A level trie of wildcard filters.
struct Node<T> {
    children: HashMap<Box<str>, Node<T>, Hasher>,
    plus: Option<Box<Node<T>>>,
    /// Subscribers whose filter ends at this node.
    here: Arc<[T]>,
    /// Subscribers whose filter ends with `#` after this node.
    hash: Arc<[T]>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            plus: None,
            here: Arc::from(Vec::new()),
            hash: Arc::from(Vec::new()),
        }
    }
}

impl<T: Subscriber> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }

    /// Walks `levels` and returns the list slot at the end of the filter,
    /// creating nodes on the way.
    fn slot<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>) -> &mut Arc<[T]> {
        match levels.next() {
            None => &mut self.here,
            Some("#") => &mut self.hash,
            Some("+") => self.plus.get_or_insert_with(Box::default).slot(levels),
            Some(level) => self.children.entry(level.into()).or_default().slot(levels),
        }
    }

    /// Removes `key` under the filter `levels`, pruning empty nodes.
    /// Returns whether something was removed.
    fn remove<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>, key: &T::Key) -> bool {
        match levels.next() {
            None => remove_from(&mut self.here, key),
            Some("#") => remove_from(&mut self.hash, key),
            Some("+") => {
                let Some(child) = self.plus.as_mut() else {
                    return false;
                };
                let removed = child.remove(levels, key);
                if child.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some(level) => {
                let Some(child) = self.children.get_mut(level) else {
                    return false;
                };
                let removed = child.remove(levels, key);
                if child.is_empty() {
                    self.children.remove(level);
                }
                removed
            }
        }
    }

    /// Calls `f` with every (filter, subscriber) pair under this node, whose
    /// filter so far is `levels`.
    fn visit<'a>(&'a self, levels: &mut Vec<&'a str>, f: &mut impl FnMut(&str, &T)) {
        if !self.here.is_empty() {
            let filter = levels.join("/");
            self.here.iter().for_each(|s| f(&filter, s));
        }
        if !self.hash.is_empty() {
            levels.push("#");
            let filter = levels.join("/");
            levels.pop();
            self.hash.iter().for_each(|s| f(&filter, s));
        }
        for (level, child) in &self.children {
            levels.push(level);
            child.visit(levels, f);
            levels.pop();
        }
        if let Some(plus) = &self.plus {
            levels.push("+");
            plus.visit(levels, f);
            levels.pop();
        }
    }

    /// Collects the lists of every filter under this node that matches the
    /// remaining topic `levels`.
    fn collect(&self, levels: &[&str], out: &mut Vec<Arc<[T]>>) {
        if !self.hash.is_empty() {
            // `a/#` matches `a` itself too ([MQTT-4.7.1-2]).
            out.push(self.hash.clone());
        }
        let Some((first, rest)) = levels.split_first() else {
            if !self.here.is_empty() {
                out.push(self.here.clone());
            }
            return;
        };
        if let Some(child) = self.children.get(*first) {
            child.collect(rest, out);
        }
        if let Some(plus) = &self.plus {
            plus.collect(rest, out);
        }
    }
}

fn insert_into<T: Subscriber>(list: &mut Arc<[T]>, sub: T) -> bool {
    let mut items: Vec<T> = list.iter().cloned().collect();
    let added = match items.iter_mut().find(|s| s.key() == sub.key()) {
        Some(existing) => {
            *existing = sub;
            false
        }
        None => {
            items.push(sub);
            true
        }
    };
    *list = Arc::from(items);
    added
}

fn remove_from<T: Subscriber>(list: &mut Arc<[T]>, key: &T::Key) -> bool {
    if !list.iter().any(|s| s.key() == key) {
        return false;
    }
    let items: Vec<T> = list.iter().filter(|s| s.key() != key).cloned().collect();
    *list = Arc::from(items);
    true
}

/// A trie of wildcard filters sharing a first level.
type Shard<T> = Arc<RwLock<Node<T>>>;

/// The topic index.
pub struct Router<T> {
    exact: DashMap<Box<str>, Arc<[T]>, Hasher>,
    /// Wildcard filters whose first level is a plain word, keyed by it.
    shards: DashMap<Box<str>, Shard<T>, Hasher>,
    /// Wildcard filters that begin with `+` or `#`.
    root: RwLock<Node<T>>,
    count: AtomicUsize,
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("subscriptions", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Subscriber> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: DashMap::default(),
            shards: DashMap::default(),
            root: RwLock::new(Node::default()),
            count: AtomicUsize::new(0),
        }
    }
}

fn is_wild_level(level: &str) -> bool {
    level == "+" || level == "#"
}

impl<T: Subscriber> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, subscriber) pairs.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `sub` under `filter` (a valid topic filter), replacing an
    /// existing subscription with the same key. Returns true if it is new.
    pub fn subscribe(&self, filter: &str, sub: T) -> bool {
        let added = if !filter.contains(['+', '#']) {
            let mut list = self
                .exact
                .entry(filter.into())
                .or_insert_with(|| Arc::from(Vec::new()));
            insert_into(&mut list, sub)
        } else {
            let mut levels = filter.split('/');
            let first = levels.next().unwrap_or_default();
            if is_wild_level(first) {
                let mut root = self.root.write();
                insert_into(root.slot(filter.split('/')), sub)
            } else {
                let shard = self
                    .shards
                    .entry(first.into())
                    .or_insert_with(|| Arc::new(RwLock::new(Node::default())))
                    .clone();
                let mut node = shard.write();
                insert_into(node.slot(levels), sub)
            }
        };
        if added {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    /// Removes the subscription of `key` under `filter`. Returns whether
    /// one existed.
    pub fn unsubscribe(&self, filter: &str, key: &T::Key) -> bool {
        let removed = if !filter.contains(['+', '#']) {
            let removed = match self.exact.get_mut(filter) {
                Some(mut list) => remove_from(&mut list, key),
                None => false,
            };
            self.exact.remove_if(filter, |_, list| list.is_empty());
            removed
        } else {
            let mut levels = filter.split('/');
            let first = levels.next().unwrap_or_default();
            if is_wild_level(first) {
                self.root.write().remove(filter.split('/'), key)
            } else {
                let Some(shard) = self.shards.get(first).map(|s| s.clone()) else {
                    return false;
                };
                let removed = shard.write().remove(levels, key);
                self.shards
                    .remove_if(first, |_, shard| shard.read().is_empty());
                removed
            }
        };
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Calls `f` with every (filter, subscriber) pair. For the admin API and
    /// statistics, not the publish path: it takes each shard's read lock in
    /// turn (never two at once), so writers wait at most for one shard.
    pub fn for_each(&self, mut f: impl FnMut(&str, &T)) {
        let exact: Vec<(Box<str>, Arc<[T]>)> = self
            .exact
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (filter, list) in &exact {
            list.iter().for_each(|s| f(filter, s));
        }
        let shards: Vec<(Box<str>, Shard<T>)> = self
            .shards
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (first, shard) in &shards {
            let node = shard.read();
            node.visit(&mut vec![&**first], &mut f);
        }
        self.root.read().visit(&mut Vec::new(), &mut f);
    }

    /// Appends to `out` the subscriber lists of every filter matching
    /// `topic` (a valid, non-empty topic name). No lock is held on return.
    pub fn matches(&self, topic: &str, out: &mut Vec<Arc<[T]>>) {
        if let Some(list) = self.exact.get(topic) {
            out.push(list.clone());
        }
        let mut levels = [""; 32];
        let mut n = 0;
        let mut long: Vec<&str> = Vec::new();
        for level in topic.split('/') {
            match levels.get_mut(n) {
                Some(slot) => *slot = level,
                None => {
                    if long.is_empty() {
                        long.extend_from_slice(&levels);
                    }
                    long.push(level);
                }
            }
            n += 1;
        }
        let levels: &[&str] = if long.is_empty() {
            levels.get(..n).unwrap_or_default()
        } else {
            &long
        };
        let Some((first, rest)) = levels.split_first() else {
            return;
        };
        if !self.shards.is_empty() {
            if let Some(shard) = self.shards.get(*first).map(|s| s.clone()) {
                shard.read().collect(rest, out);
            }
        }
        if !topic.starts_with('$') {
            self.root.read().collect(levels, out);
        }
    }
}

/// The reference matcher (used for retained messages, and the brute force
/// the index is property-tested against).
pub use ferrymq_codec::filter_matches;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Sub(u32);

    impl Subscriber for Sub {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.0
        }
    }

    fn matched(router: &Router<Sub>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        router.matches(topic, &mut out);
        let mut ids: Vec<u32> = out.iter().flat_map(|l| l.iter().map(|s| s.0)).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn spec_examples() {
        let r = Router::new();
        r.subscribe("sport/tennis/player1/#", Sub(1));
        r.subscribe("sport/tennis/+", Sub(2));
        r.subscribe("sport/+", Sub(3));
        r.subscribe("+/+", Sub(4));
        r.subscribe("/+", Sub(5));
        r.subscribe("+", Sub(6));
        r.subscribe("#", Sub(7));
        r.subscribe("$SYS/#", Sub(8));
        r.subscribe("+/monitor/Clients", Sub(9));
        r.subscribe("$SYS/monitor/+", Sub(10));
        assert_eq!(matched(&r, "sport/tennis/player1"), vec![1, 2, 7]);
        assert_eq!(matched(&r, "sport/tennis/player1/ranking"), vec![1, 7]);
        assert_eq!(matched(&r, "sport"), vec![6, 7]);
        assert_eq!(matched(&r, "sport/"), vec![3, 4, 7]);
        assert_eq!(matched(&r, "/finance"), vec![4, 5, 7]);
        assert_eq!(matched(&r, "$SYS/monitor/Clients"), vec![8, 10]);
    }

    #[test]
    fn resubscribe_replaces_and_unsubscribe_prunes() {
        let r = Router::new();
        assert!(r.subscribe("a/+", Sub(1)));
        assert!(!r.subscribe("a/+", Sub(1)));
        assert!(r.subscribe("a/b", Sub(1)));
        assert_eq!(r.len(), 2);
        assert!(r.unsubscribe("a/+", &1));
        assert!(!r.unsubscribe("a/+", &1));
        assert!(r.unsubscribe("a/b", &1));
        assert!(r.is_empty());
        assert!(r.shards.is_empty());
        assert!(r.exact.is_empty());
    }

    #[test]
    fn for_each_gives_back_every_filter_as_subscribed() {
        let r = Router::new();
        let filters = [
            "sport/tennis/player1/#",
            "sport/tennis/+",
            "sport/+",
            "+/+",
            "/+",
            "+",
            "#",
            "$SYS/#",
            "+/monitor/Clients",
            "a/b",
            "/",
            "//+/#",
        ];
        for (i, f) in filters.iter().enumerate() {
            r.subscribe(f, Sub(i as u32));
        }
        r.subscribe("a/b", Sub(99));
        let mut seen = Vec::new();
        r.for_each(|filter, sub| seen.push((filter.to_string(), sub.0)));
        seen.sort();
        let mut expected: Vec<(String, u32)> = filters
            .iter()
            .enumerate()
            .map(|(i, f)| (f.to_string(), i as u32))
            .collect();
        expected.push(("a/b".into(), 99));
        expected.sort();
        assert_eq!(seen, expected);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".into()),
            Just("".into()),
            Just("$c".into())
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let lvl = prop_oneof![level(), Just("+".to_string())];
        (prop::collection::vec(lvl, 1..5), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
    }

    proptest! {
        /// The index agrees with the brute-force matcher.
        #[test]
        fn index_agrees_with_brute_force(
            filters in prop::collection::vec(filter(), 1..40),
            topics in prop::collection::vec(topic(), 1..20),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let r = Router::new();
            for (i, f) in filters.iter().enumerate() {
                r.subscribe(f, Sub(i as u32));
            }
            let mut live: Vec<bool> = vec![true; filters.len()];
            for idx in removed {
                let i = idx.index(filters.len());
                r.unsubscribe(&filters[i], &(i as u32));
                live[i] = false;
            }
            for t in &topics {
                let expected: Vec<u32> = filters
                    .iter()
                    .enumerate()
                    .filter(|(i, f)| live[*i] && filter_matches(f, t))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(matched(&r, t), expected, "topic {}", t);
            }
        }
    }
}
