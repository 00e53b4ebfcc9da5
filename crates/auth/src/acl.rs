//! Mosquitto ACL files, precompiled for cheap checks.
//!
//! Syntax (`mosquitto.conf(5)`, `acl_file`):
//!
//! ```text
//! # entries before the first `user` line apply to anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#          # `readwrite` when the word is absent
//! topic deny alice/secret
//! pattern write devices/%c/status  # every client; %c client id, %u username
//! ```
//!
//! Decision, in Mosquitto 2's order:
//! 1. the client's own `topic` entries (its `user` section, or the
//!    anonymous section when it has no username): a matching `deny`
//!    refuses; else an entry that matches and grants the access allows;
//! 2. `pattern` entries, for everyone: a client whose username or client
//!    id contains `+`, `#` or `/` gets nothing from them (otherwise it
//!    could widen `%c`/`%u` into a wildcard or into another client's
//!    subtree); entries with `%u` are skipped for clients without a
//!    username; then a matching `deny` refuses, and a matching grant
//!    allows;
//! 3. nothing matched: refused.
//!
//! So a user's own grant wins over a `pattern ... deny`, as in Mosquitto.
//! Topics starting with `$` are only matched by entries starting with `$`.
//! `%c`/`%u` are substituted anywhere in a `pattern` line, as Mosquitto
//! does; in `topic` lines they are literal text.
//!
//! When no ACL file is configured the broker allows everything; that
//! choice belongs to the caller, not to this module.

mod filter;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use filter::{Level, Part, Subject};

use crate::Error;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Receive messages published to the topic.
    Read,
    /// Publish to the topic.
    Write,
}

/// The access word of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Grant::ReadWrite, _) | (Grant::Read, Access::Read) | (Grant::Write, Access::Write)
        )
    }
}

#[derive(Debug, Clone)]
struct Entry {
    grant: Grant,
    levels: Box<[Level]>,
    uses_username: bool,
}

/// Entries of one section: denials apart, so they are checked first.
#[derive(Debug, Clone, Default)]
struct Rules {
    deny: Vec<Entry>,
    allow: Vec<Entry>,
}

impl Rules {
    fn push(&mut self, entry: Entry) {
        match entry.grant {
            Grant::Deny => self.deny.push(entry),
            _ => self.allow.push(entry),
        }
    }
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    anonymous: Rules,
    users: HashMap<Box<str>, Rules>,
    patterns: Rules,
}

/// Checks for one client, with its section looked up once.
#[derive(Debug, Clone, Copy)]
pub struct ClientAcl<'a> {
    own: Option<&'a Rules>,
    patterns: &'a Rules,
    who: Subject<'a>,
    /// Username or client id holds `+`, `#` or `/`: patterns give nothing.
    unsafe_for_patterns: bool,
}

impl AclFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<AclFile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        AclFile::parse(&text, path)
    }

    /// Parses an ACL file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<AclFile, Error> {
        let mut acl = AclFile::default();
        let mut user: Option<Box<str>> = None;
        for (index, raw) in text.lines().enumerate() {
            let syntax = |message: String| Error::Syntax {
                path: PathBuf::from(origin.as_ref()),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(syntax("`user` without a username".into()));
                    }
                    acl.users.entry(rest.into()).or_default();
                    user = Some(rest.into());
                }
                "topic" | "pattern" => {
                    let (word, after) = split_word(rest);
                    let (grant, topic) = if after.is_empty() {
                        (Grant::ReadWrite, word)
                    } else {
                        let grant = match word {
                            "read" => Grant::Read,
                            "write" => Grant::Write,
                            "readwrite" => Grant::ReadWrite,
                            "deny" => Grant::Deny,
                            other => {
                                return Err(syntax(format!(
                                    "unknown access {other:?} (expected read, write, readwrite or deny)"
                                )))
                            }
                        };
                        (grant, after)
                    };
                    if topic.is_empty() {
                        return Err(syntax(format!("`{keyword}` without a topic")));
                    }
                    filter::validate(topic)
                        .map_err(|m| syntax(format!("invalid topic {topic:?}: {m}")))?;
                    let pattern = keyword == "pattern";
                    let levels = filter::compile(topic, pattern);
                    let entry = Entry {
                        grant,
                        uses_username: filter::uses(&levels, &Part::Username),
                        levels,
                    };
                    if pattern {
                        acl.patterns.push(entry);
                    } else {
                        match &user {
                            Some(name) => acl.users.entry(name.clone()).or_default().push(entry),
                            None => acl.anonymous.push(entry),
                        }
                    }
                }
                other => {
                    return Err(syntax(format!(
                        "unknown keyword {other:?} (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// The checks for one client; look it up once per packet (or keep it
    /// for the connection while the file is not reloaded).
    pub fn client<'a>(&'a self, username: Option<&'a str>, client_id: &'a str) -> ClientAcl<'a> {
        let own = match username {
            Some(name) => self.users.get(name),
            None => Some(&self.anonymous),
        };
        let dangerous = |s: &str| s.contains(['+', '#', '/']);
        ClientAcl {
            own,
            patterns: &self.patterns,
            who: Subject {
                client_id,
                username,
            },
            unsafe_for_patterns: dangerous(client_id) || username.is_some_and(dangerous),
        }
    }

    /// Whether the client may `access` the topic name `topic`.
    pub fn check(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        self.client(username, client_id).check(topic, access)
    }

    /// Whether some topic that `filter` matches could be readable by the
    /// client: `false` means a SUBSCRIBE to it can only fail.
    pub fn can_ever_read(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        self.client(username, client_id).can_ever_read(filter)
    }
}

impl ClientAcl<'_> {
    /// Whether the client may `access` the topic name `topic`. Allocates
    /// nothing.
    pub fn check(&self, topic: &str, access: Access) -> bool {
        let who = &self.who;
        let hit = |e: &Entry| filter::matches(&e.levels, topic, who);
        if let Some(own) = self.own {
            if own.deny.iter().any(hit) {
                return false;
            }
            if own.allow.iter().any(|e| e.grant.allows(access) && hit(e)) {
                return true;
            }
        }
        if self.unsafe_for_patterns {
            return false;
        }
        let applies = |e: &&Entry| !(e.uses_username && who.username.is_none());
        if self.patterns.deny.iter().filter(applies).any(hit) {
            return false;
        }
        self.patterns
            .allow
            .iter()
            .filter(applies)
            .any(|e| e.grant.allows(access) && hit(e))
    }

    /// Whether some topic matched by `filter` (a topic filter, optionally
    /// `$share/<group>/...`) could be readable by the client. Exact when
    /// at most one `deny` entry applies to the candidate topics; with
    /// several it may answer `true` for a filter whose topics are all
    /// denied by their union (the per-message [`check`](Self::check) still
    /// refuses them), never `false` for a filter that can receive.
    pub fn can_ever_read(&self, filter: &str) -> bool {
        let filter = strip_share(filter);
        if filter::validate(filter).is_err() {
            return false;
        }
        let wanted = filter::compile(filter, false);
        let who = &self.who;
        let own_deny: Vec<Vec<Level>> = self
            .own
            .map(|r| r.deny.iter().map(|e| e.levels.to_vec()).collect())
            .unwrap_or_default();
        let survives = |candidate: &[Level], denials: &[Vec<Level>]| {
            !denials.iter().any(|d| filter::covers(d, candidate))
        };
        if let Some(own) = self.own {
            for entry in own.allow.iter().filter(|e| e.grant.allows(Access::Read)) {
                if let Some(i) = filter::intersect(&wanted, &entry.levels) {
                    if survives(&i, &own_deny) {
                        return true;
                    }
                }
            }
        }
        if self.unsafe_for_patterns {
            return false;
        }
        let applies = |e: &&Entry| !(e.uses_username && who.username.is_none());
        let mut denials = own_deny;
        denials.extend(
            self.patterns
                .deny
                .iter()
                .filter(applies)
                .map(|e| filter::substitute(&e.levels, who)),
        );
        self.patterns
            .allow
            .iter()
            .filter(applies)
            .filter(|e| e.grant.allows(Access::Read))
            .any(|e| {
                let grant = filter::substitute(&e.levels, who);
                filter::intersect(&wanted, &grant).is_some_and(|i| survives(&i, &denials))
            })
    }
}

/// `$share/<group>/<filter>` → `<filter>`; other filters unchanged.
fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, f)| f)
}

/// The first blank-separated word and the trimmed rest.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests;
