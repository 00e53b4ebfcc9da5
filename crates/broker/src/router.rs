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
use std::hash::{BuildHasherDefault, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;

/// What a subscriber list holds: anything that knows which subscriber it
/// belongs to, so a re-subscription replaces instead of adding.
pub trait Subscriber: Clone {
    type Key: Eq + Hash + Clone;
    fn key(&self) -> &Self::Key;
}

type Hasher = BuildHasherDefault<ahash::AHasher>;

/// A filter's subscribers, as readers get them: cloned under a short read
/// guard, iterated with no lock held.
pub type List<T> = Arc<Vec<T>>;

/// Lists longer than this keep a key → position index, so that a
/// subscription or removal costs O(1) instead of a scan of the list.
const INDEXED: usize = 16;

/// The subscribers of one filter. An empty list holds no allocation, and
/// telling it is empty reads no other cache line: a match visits many
/// nodes whose lists are empty.
struct SubList<T: Subscriber> {
    items: Option<List<T>>,
    index: Option<HashMap<T::Key, usize, Hasher>>,
}

impl<T: Subscriber> Default for SubList<T> {
    fn default() -> Self {
        SubList {
            items: None,
            index: None,
        }
    }
}

impl<T: Subscriber> SubList<T> {
    fn is_empty(&self) -> bool {
        self.items.is_none()
    }

    /// The list for readers, if it has anyone.
    fn get(&self) -> Option<&List<T>> {
        self.items.as_ref()
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flat_map(|l| l.iter())
    }

    fn position(&self, key: &T::Key) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.iter().position(|s| s.key() == key),
        }
    }

    /// Adds `sub`, or replaces the subscription with its key. Changes the
    /// list in place unless a reader still holds it (a fan-out under way),
    /// which costs one copy: N subscribers on one filter cost O(N), not
    /// the O(N²) of a copy per change.
    fn insert(&mut self, sub: T) -> bool {
        let found = self.position(sub.key());
        // Most filters have one subscriber (a device's own topics): room
        // for one, not the four a first push would make.
        let items = Arc::make_mut(
            self.items
                .get_or_insert_with(|| Arc::new(Vec::with_capacity(1))),
        );
        if let Some(existing) = found.and_then(|i| items.get_mut(i)) {
            *existing = sub;
            return false;
        }
        if let Some(index) = &mut self.index {
            index.insert(sub.key().clone(), items.len());
        }
        items.push(sub);
        if self.index.is_none() && items.len() > INDEXED {
            let index = items
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key().clone(), i))
                .collect();
            self.index = Some(index);
        }
        true
    }

    fn remove(&mut self, key: &T::Key) -> bool {
        let Some(i) = self.position(key) else {
            return false;
        };
        let Some(list) = self.items.as_mut() else {
            return false;
        };
        let items = Arc::make_mut(list);
        if i >= items.len() {
            return false;
        }
        // Order within a list carries no meaning.
        items.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(key);
            if let Some(moved) = items.get(i) {
                index.insert(moved.key().clone(), i);
            }
        }
        if items.len() <= INDEXED / 2 {
            self.index = None;
        }
        if items.is_empty() {
            self.items = None;
        }
        true
    }
}

/// A level trie of wildcard filters. Every walk over it is a loop, never a
/// recursion: a filter's depth is the client's choice.
struct Node<T: Subscriber> {
    children: HashMap<Box<str>, Node<T>, Hasher>,
    plus: Option<Box<Node<T>>>,
    /// Subscribers whose filter ends at this node.
    here: SubList<T>,
    /// Subscribers whose filter ends with `#` after this node.
    hash: SubList<T>,
}

impl<T: Subscriber> Default for Node<T> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            plus: None,
            here: SubList::default(),
            hash: SubList::default(),
        }
    }
}

impl<T: Subscriber> Drop for Node<T> {
    /// Frees the subtree node by node: the derived drop would recurse once
    /// per level.
    fn drop(&mut self) {
        let mut stack: Vec<Node<T>> = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut node) = stack.pop() {
            take_children(&mut node, &mut stack);
        }
    }
}

fn take_children<T: Subscriber>(node: &mut Node<T>, into: &mut Vec<Node<T>>) {
    if !node.children.is_empty() {
        into.extend(std::mem::take(&mut node.children).into_values());
    }
    if let Some(plus) = node.plus.take() {
        into.push(*plus);
    }
}

impl<T: Subscriber> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }

    fn child(&self, level: &str) -> Option<&Node<T>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<T>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    /// Walks `levels` and returns the list at the end of the filter,
    /// creating nodes on the way.
    fn slot<'a>(&mut self, levels: impl Iterator<Item = &'a str>) -> &mut SubList<T> {
        let mut node = self;
        for level in levels {
            node = match level {
                // Valid filters have `#` last.
                "#" => return &mut node.hash,
                "+" => node.plus.get_or_insert_with(Box::default),
                level => node.children.entry(level.into()).or_default(),
            };
        }
        &mut node.here
    }

    /// Removes `key` under the filter `levels`, pruning the nodes left
    /// empty. Returns whether something was removed.
    fn remove(&mut self, levels: &[&str], key: &T::Key) -> bool {
        let (path, hash) = match levels.split_last() {
            Some((&"#", rest)) => (rest, true),
            _ => (levels, false),
        };
        let mut node = &mut *self;
        for level in path {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return false,
            }
        }
        let list = if hash { &mut node.hash } else { &mut node.here };
        if !list.remove(key) {
            return false;
        }
        self.prune(path);
        true
    }

    /// Cuts off the deepest run of nodes along `path` that hold nothing
    /// but the path itself, down to an empty last node.
    fn prune(&mut self, path: &[&str]) {
        // `cut`: the depth whose node loses its child on the path.
        let mut cut = None;
        let mut node = &*self;
        for (depth, level) in path.iter().enumerate() {
            let Some(child) = node.child(level) else {
                return;
            };
            let lists_empty = child.here.is_empty() && child.hash.is_empty();
            let only_path = lists_empty
                && match path.get(depth + 1) {
                    None => child.children.is_empty() && child.plus.is_none(),
                    Some(&"+") => child.children.is_empty(),
                    Some(next) => {
                        child.plus.is_none()
                            && child.children.len() == 1
                            && child.children.contains_key(*next)
                    }
                };
            if only_path {
                cut.get_or_insert(depth);
            } else {
                cut = None;
            }
            node = child;
        }
        let Some(depth) = cut else {
            return;
        };
        let mut node = self;
        for level in path.iter().take(depth) {
            match node.child_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        match path.get(depth) {
            Some(&"+") => node.plus = None,
            Some(level) => {
                node.children.remove(*level);
            }
            None => {}
        }
    }

    /// Calls `f` with every (filter, subscriber) pair under this node, whose
    /// filter so far is `prefix`.
    fn visit<'a>(&'a self, prefix: &mut Vec<&'a str>, f: &mut impl FnMut(&str, &T)) {
        let mut stack: Vec<(&'a Node<T>, usize, Option<&'a str>)> =
            vec![(self, prefix.len(), None)];
        while let Some((node, depth, label)) = stack.pop() {
            prefix.truncate(depth);
            prefix.extend(label);
            if !node.here.is_empty() {
                let filter = prefix.join("/");
                node.here.iter().for_each(|s| f(&filter, s));
            }
            if !node.hash.is_empty() {
                prefix.push("#");
                let filter = prefix.join("/");
                prefix.pop();
                node.hash.iter().for_each(|s| f(&filter, s));
            }
            for (level, child) in &node.children {
                stack.push((child, prefix.len(), Some(&**level)));
            }
            if let Some(plus) = &node.plus {
                stack.push((plus, prefix.len(), Some("+")));
            }
        }
    }

    /// Collects the lists of every filter under this node that matches the
    /// topic `levels`. Walks down one branch in a loop; a node with both a
    /// literal child and a `+` child leaves the `+` branch on a stack for
    /// later, so the common walk (no such fork) allocates nothing.
    fn collect(&self, levels: &[&str], out: &mut Vec<List<T>>) {
        let mut forks = Forks::new();
        let (mut node, mut i) = (self, 0);
        loop {
            if let Some(list) = node.hash.get() {
                // `a/#` matches `a` itself too ([MQTT-4.7.1-2]).
                out.push(list.clone());
            }
            let next = match levels.get(i) {
                None => {
                    out.extend(node.here.get().cloned());
                    None
                }
                Some(level) => match (node.children.get(*level), node.plus.as_deref()) {
                    (Some(child), Some(plus)) => {
                        forks.push((plus, i + 1));
                        Some(child)
                    }
                    (child, plus) => child.or(plus),
                },
            };
            match next {
                Some(child) => (node, i) = (child, i + 1),
                None => match forks.pop() {
                    Some(fork) => (node, i) = fork,
                    None => return,
                },
            }
        }
    }
}

/// The forks a match walk left for later: the last one in place (a walk
/// that forks once allocates nothing), the others on the heap, however
/// deep the topic.
struct Forks<'a, T: Subscriber> {
    last: Option<(&'a Node<T>, usize)>,
    more: Vec<(&'a Node<T>, usize)>,
}

impl<'a, T: Subscriber> Forks<'a, T> {
    fn new() -> Self {
        Forks {
            last: None,
            more: Vec::new(),
        }
    }

    fn push(&mut self, fork: (&'a Node<T>, usize)) {
        if let Some(earlier) = self.last.replace(fork) {
            self.more.push(earlier);
        }
    }

    fn pop(&mut self) -> Option<(&'a Node<T>, usize)> {
        self.last.take().or_else(|| self.more.pop())
    }
}

/// A trie of wildcard filters sharing a first level.
type Shard<T> = Arc<RwLock<Node<T>>>;

/// The topic index.
pub struct Router<T: Subscriber> {
    exact: DashMap<Box<str>, SubList<T>, Hasher>,
    /// Wildcard filters whose first level is a plain word, keyed by it.
    shards: DashMap<Box<str>, Shard<T>, Hasher>,
    /// Wildcard filters that begin with `+` or `#`.
    root: RwLock<Node<T>>,
    count: AtomicUsize,
}

impl<T: Subscriber> std::fmt::Debug for Router<T> {
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
            let mut list = self.exact.entry(filter.into()).or_default();
            list.insert(sub)
        } else {
            let mut levels = filter.split('/');
            let first = levels.next().unwrap_or_default();
            if is_wild_level(first) {
                let mut root = self.root.write();
                root.slot(filter.split('/')).insert(sub)
            } else {
                // The map's entry stays locked while the shard is written:
                // an unsubscribe emptying the shard cannot remove it from
                // the map in between, which would leave this subscription
                // in a detached shard that no publish reaches.
                let entry = self
                    .shards
                    .entry(first.into())
                    .or_insert_with(|| Arc::new(RwLock::new(Node::default())));
                let mut node = entry.write();
                node.slot(levels).insert(sub)
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
                Some(mut list) => list.remove(key),
                None => false,
            };
            self.exact.remove_if(filter, |_, list| list.is_empty());
            removed
        } else {
            let levels: Vec<&str> = filter.split('/').collect();
            let Some((first, rest)) = levels.split_first() else {
                return false;
            };
            if is_wild_level(first) {
                self.root.write().remove(&levels, key)
            } else {
                let Some(shard) = self.shards.get(*first).map(|s| s.clone()) else {
                    return false;
                };
                let removed = shard.write().remove(rest, key);
                self.shards
                    .remove_if(*first, |_, shard| shard.read().is_empty());
                removed
            }
        };
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// The subscribers of exactly `filter` (a valid topic filter), if any.
    pub fn list(&self, filter: &str) -> Option<List<T>> {
        if !filter.contains(['+', '#']) {
            return self.exact.get(filter).and_then(|l| l.get().cloned());
        }
        let levels: Vec<&str> = filter.split('/').collect();
        let (first, rest) = levels.split_first()?;
        let find = |node: &Node<T>, levels: &[&str]| -> Option<List<T>> {
            let (path, hash) = match levels.split_last() {
                Some((&"#", rest)) => (rest, true),
                _ => (levels, false),
            };
            let mut node = node;
            for level in path {
                node = node.child(level)?;
            }
            if hash { &node.hash } else { &node.here }.get().cloned()
        };
        if is_wild_level(first) {
            find(&self.root.read(), &levels)
        } else {
            let shard = self.shards.get(*first).map(|s| s.clone())?;
            let node = shard.read();
            find(&node, rest)
        }
    }

    /// Calls `f` with every (filter, subscriber) pair. For the admin API and
    /// statistics, not the publish path: it takes each shard's read lock in
    /// turn (never two at once), so writers wait at most for one shard.
    pub fn for_each(&self, mut f: impl FnMut(&str, &T)) {
        let exact: Vec<(Box<str>, List<T>)> = self
            .exact
            .iter()
            .filter_map(|e| Some((e.key().clone(), e.value().get()?.clone())))
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
    pub fn matches(&self, topic: &str, out: &mut Vec<List<T>>) {
        if let Some(list) = self.exact.get(topic) {
            out.extend(list.get().cloned());
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

/// The number of levels of a topic name or filter.
pub fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
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

    /// A filter of `n` levels.
    fn deep(n: usize, last: &str) -> String {
        let mut f = "a/".repeat(n - 1);
        f.push_str(last);
        f
    }

    /// Issue 20, item 0: every walk over levels is a loop. 32,768 levels
    /// (the most a 65,535-byte filter holds) on a test thread's 2 MiB
    /// stack: subscribe, match, list, unsubscribe and drop.
    #[test]
    fn filters_of_32768_levels_are_walked_without_recursion() {
        let r = Router::new();
        let filter = deep(32_768, "#");
        let plus = deep(32_768, "+");
        let topic = deep(32_768, "a");
        assert!(r.subscribe(&filter, Sub(1)));
        assert!(r.subscribe(&plus, Sub(2)));
        assert!(r.subscribe(&deep(32_768, "b"), Sub(3)));
        assert_eq!(matched(&r, &topic), vec![1, 2]);
        let mut n = 0;
        r.for_each(|_, _| n += 1);
        assert_eq!(n, 3);
        assert!(r.unsubscribe(&filter, &1));
        assert!(r.unsubscribe(&plus, &2));
        assert_eq!(matched(&r, &topic), Vec::<u32>::new());
        // The third is freed with the router, node by node.
        let root = Router::new();
        root.subscribe(&format!("+/{filter}"), Sub(4));
        drop(root);
        drop(r);
    }

    #[test]
    fn long_lists_stay_consistent_through_the_index() {
        let r = Router::new();
        for i in 0..100 {
            assert!(r.subscribe("a/+", Sub(i)));
            assert!(r.subscribe("a/b", Sub(i)));
        }
        assert!(!r.subscribe("a/+", Sub(50)));
        for i in (0..100).step_by(3) {
            assert!(r.unsubscribe("a/+", &i));
            assert!(!r.unsubscribe("a/+", &i));
        }
        let expected: Vec<u32> = (0..100).filter(|i| i % 3 != 0).collect();
        let mut both: Vec<u32> = (0..100).chain(expected.iter().copied()).collect();
        both.sort_unstable();
        assert_eq!(matched(&r, "a/b"), both);
        for i in 0..100 {
            r.unsubscribe("a/b", &i);
            r.unsubscribe("a/+", &i);
        }
        assert!(r.is_empty());
        assert!(r.shards.is_empty());
    }

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

    /// A subscription made while another client removes the last filter of
    /// the same first level must land in the live index (issue 20, item 6:
    /// it used to land in a shard already detached from the map).
    #[test]
    fn subscribe_racing_the_last_unsubscribe_of_its_shard_stays_matched() {
        let r = Arc::new(Router::new());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    r.subscribe("x/#", Sub(2));
                    r.unsubscribe("x/#", &2);
                }
            })
        };
        let mut lost = 0;
        for _ in 0..20_000 {
            r.subscribe("x/+/y", Sub(1));
            if !matched(&r, "x/a/y").contains(&1) {
                lost += 1;
            }
            r.unsubscribe("x/+/y", &1);
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(lost, 0, "subscriptions that never matched");
    }
}
