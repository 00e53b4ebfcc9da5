//! Shared subscriptions ([MQTT-4.8.2]): `$share/{ShareName}/{filter}`.
//! Each message matching a group's filter goes to one member, round robin,
//! preferring members that are connected. The same mechanism serves MQTT 5
//! and 3.1.1 clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::session::Subscription;

/// One share group on one filter.
#[derive(Debug)]
pub struct SharedGroup {
    pub name: Arc<str>,
    /// The filter after the share name.
    pub filter: Box<str>,
    cursor: AtomicUsize,
}

impl SharedGroup {
    /// Picks the member for the next message: the next connected member in
    /// round-robin order, or any member if none is connected.
    pub fn pick<'a>(&self, members: &[&'a Subscription]) -> Option<&'a Subscription> {
        let n = members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|i| members.get((start + i) % n).copied())
            .find(|m| m.session.mailbox.is_online())
            .or_else(|| members.get(start % n).copied())
    }
}

/// Splits `$share/{name}/{filter}`; `Err` if the share name is empty or
/// holds a wildcard, or the filter is missing ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
pub fn parse(filter: &str) -> Option<Result<(&str, &str), ()>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((name, filter))
            if !name.is_empty() && !name.contains(['+', '#']) && !filter.is_empty() =>
        {
            Ok((name, filter))
        }
        _ => Err(()),
    })
}

/// The groups in use, so that members of one group share one cursor.
/// (share name, filter) → group.
type GroupMap = HashMap<(Box<str>, Box<str>), Weak<SharedGroup>>;

#[derive(Debug, Default)]
pub struct SharedGroups {
    groups: Mutex<GroupMap>,
}

impl SharedGroups {
    pub fn get(&self, name: &str, filter: &str) -> Arc<SharedGroup> {
        let mut groups = self.groups.lock();
        let key = (Box::from(name), Box::from(filter));
        if let Some(group) = groups.get(&key).and_then(Weak::upgrade) {
            return group;
        }
        groups.retain(|_, g| g.strong_count() > 0);
        let group = Arc::new(SharedGroup {
            name: name.into(),
            filter: filter.into(),
            cursor: AtomicUsize::new(0),
        });
        groups.insert(key, Arc::downgrade(&group));
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_names() {
        assert_eq!(parse("a/b"), None);
        assert_eq!(parse("$share/g/a/#"), Some(Ok(("g", "a/#"))));
        assert_eq!(parse("$share//a"), Some(Err(())));
        assert_eq!(parse("$share/g"), Some(Err(())));
        assert_eq!(parse("$share/g/"), Some(Err(())));
        assert_eq!(parse("$share/+/a"), Some(Err(())));
    }
}
