//! Compiled ACL topic filters: matching a topic without allocating, and the
//! two set operations SUBSCRIBE needs (intersection, inclusion).
//!
//! A filter is a list of levels. In a `pattern` entry a level may be a
//! template mixing text with `%c`/`%u`; the values substituted never hold
//! `/`, `+` or `#` (the caller refuses such clients), so a template stays
//! one plain level and matching goes level by level.
//!
//! The `$` rule (MQTT 4.7.2, and Mosquitto's ACL check): a topic that
//! starts with `$` is matched only by a filter whose text starts with `$`,
//! so `#` and `+/...` never match `$SYS/...`.

/// One level of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Level {
    Lit(Box<str>),
    Plus,
    Hash,
    /// Text with `%c`/`%u` (only in `pattern` entries).
    Template(Box<[Part]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Lit(Box<str>),
    ClientId,
    Username,
}

/// Who is asking: the values `%c` and `%u` stand for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

/// Validates a filter as MQTT does: `+` and `#` fill whole levels, `#`
/// only last, not empty. Returns a message on error.
pub(crate) fn validate(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty topic");
    }
    if filter.len() > 65535 {
        return Err("topic longer than 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("topic contains NUL");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// Compiles a validated filter. With `substitute`, `%c` and `%u` become
/// template parts (Mosquitto substitutes them anywhere in the text).
pub(crate) fn compile(filter: &str, substitute: bool) -> Box<[Level]> {
    filter
        .split('/')
        .map(|level| match level {
            "+" => Level::Plus,
            "#" => Level::Hash,
            _ if substitute && (level.contains("%c") || level.contains("%u")) => {
                Level::Template(template(level))
            }
            _ => Level::Lit(level.into()),
        })
        .collect()
}

fn template(level: &str) -> Box<[Part]> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let var = match (c, chars.peek()) {
            ('%', Some('c')) => Some(Part::ClientId),
            ('%', Some('u')) => Some(Part::Username),
            _ => None,
        };
        match var {
            Some(var) => {
                chars.next();
                if !text.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut text).into()));
                }
                parts.push(var);
            }
            None => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Lit(text.into()));
    }
    parts.into()
}

/// Whether the filter uses `%u` / `%c`.
pub(crate) fn uses(levels: &[Level], var: &Part) -> bool {
    levels.iter().any(|l| match l {
        Level::Template(parts) => parts.contains(var),
        _ => false,
    })
}

fn part_text<'a>(part: &'a Part, who: &Subject<'a>) -> &'a str {
    match part {
        Part::Lit(s) => s,
        Part::ClientId => who.client_id,
        // Entries with %u are skipped for clients without a username.
        Part::Username => who.username.unwrap_or_default(),
    }
}

/// Whether the filter's text (after substitution) starts with `$`.
fn starts_with_dollar(levels: &[Level], who: &Subject<'_>) -> bool {
    match levels.first() {
        Some(Level::Lit(s)) => s.starts_with('$'),
        Some(Level::Template(parts)) => parts
            .iter()
            .map(|p| part_text(p, who))
            .find(|s| !s.is_empty())
            .is_some_and(|s| s.starts_with('$')),
        _ => false,
    }
}

fn template_eq(parts: &[Part], level: &str, who: &Subject<'_>) -> bool {
    let mut rest = level;
    for part in parts {
        match rest.strip_prefix(part_text(part, who)) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `topic` (a topic name) matches the filter. No allocation.
pub(crate) fn matches(levels: &[Level], topic: &str, who: &Subject<'_>) -> bool {
    if topic.starts_with('$') != starts_with_dollar(levels, who) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in levels {
        if *level == Level::Hash {
            return true;
        }
        let Some(t) = topic_levels.next() else {
            return false;
        };
        let ok = match level {
            Level::Plus | Level::Hash => true,
            Level::Lit(s) => **s == *t,
            Level::Template(parts) => template_eq(parts, t, who),
        };
        if !ok {
            return false;
        }
    }
    topic_levels.next().is_none()
}

/// A filter with every template substituted: literal levels only.
pub(crate) fn substitute(levels: &[Level], who: &Subject<'_>) -> Vec<Level> {
    levels
        .iter()
        .map(|l| match l {
            Level::Template(parts) => {
                let text: String = parts.iter().map(|p| part_text(p, who)).collect();
                Level::Lit(text.into())
            }
            other => other.clone(),
        })
        .collect()
}

fn is_dollar_lit(level: Option<&Level>) -> bool {
    matches!(level, Some(Level::Lit(s)) if s.starts_with('$'))
}

/// The filter matching exactly the topics both `a` and `b` match, or
/// `None` when no topic matches both. Neither may hold templates. A loop,
/// not a recursion: filters come from clients and may be deep.
pub(crate) fn intersect(a: &[Level], b: &[Level]) -> Option<Vec<Level>> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a, b);
    let mut first = true;
    loop {
        match (a.split_first(), b.split_first()) {
            (None, None) => return Some(out),
            (Some((Level::Hash, _)), _) | (_, Some((Level::Hash, _))) => {
                // `#` matches the rest of the other, except `$` topics at
                // the start.
                let rest = if matches!(a.first(), Some(Level::Hash)) {
                    b
                } else {
                    a
                };
                if first && is_dollar_lit(rest.first()) {
                    return None;
                }
                out.extend_from_slice(rest);
                return Some(out);
            }
            (None, Some(_)) | (Some(_), None) => return None,
            (Some((x, a_rest)), Some((y, b_rest))) => {
                let level = match (x, y) {
                    (Level::Plus, Level::Plus) => Level::Plus,
                    (Level::Plus, Level::Lit(s)) | (Level::Lit(s), Level::Plus) => {
                        if first && s.starts_with('$') {
                            return None;
                        }
                        Level::Lit(s.clone())
                    }
                    (Level::Lit(s), Level::Lit(t)) if s == t => Level::Lit(s.clone()),
                    _ => return None,
                };
                out.push(level);
                (a, b, first) = (a_rest, b_rest, false);
            }
        }
    }
}

/// Whether every topic `inner` matches is also matched by `outer`.
/// Neither may hold templates.
pub(crate) fn covers(outer: &[Level], inner: &[Level]) -> bool {
    let (mut outer, mut inner) = (outer, inner);
    let mut first = true;
    loop {
        match (outer.split_first(), inner.split_first()) {
            (Some((Level::Hash, _)), _) => return !(first && is_dollar_lit(inner.first())),
            (None, None) => return true,
            (_, Some((Level::Hash, _))) => return false,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some((x, o_rest)), Some((y, i_rest))) => {
                let ok = match (x, y) {
                    (Level::Plus, Level::Plus) => true,
                    (Level::Plus, Level::Lit(s)) => !(first && s.starts_with('$')),
                    (Level::Lit(s), Level::Lit(t)) => s == t,
                    _ => false,
                };
                if !ok {
                    return false;
                }
                (outer, inner, first) = (o_rest, i_rest, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: Subject<'static> = Subject {
        client_id: "c1",
        username: Some("u1"),
    };

    fn m(filter: &str, topic: &str) -> bool {
        matches(&compile(filter, true), topic, &NOBODY)
    }

    #[test]
    fn validation() {
        for ok in ["a", "#", "+", "a/+/b/#", "/", "a//b", "$SYS/#", "%c/x"] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "+a", "##", "a\0"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching_table() {
        let table = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("$SYS/#", "SYS/x", false),
            ("dev/%c/#", "dev/c1/temp", true),
            ("dev/%c/#", "dev/c2/temp", false),
            ("dev/x%cy%u", "dev/xc1yu1", true),
            ("dev/x%cy%u", "dev/xc1yu2", false),
            ("%u", "u1", true),
            ("%%c", "%c1", true),
        ];
        for (filter, topic, want) in table {
            assert_eq!(m(filter, topic), want, "{filter} ~ {topic}");
        }
        let dollar = Subject {
            client_id: "$me",
            username: None,
        };
        assert!(matches(&compile("%c/#", true), "$me/x", &dollar));
        assert!(!matches(&compile("%c/#", true), "me/x", &dollar));
    }

    #[test]
    fn intersections() {
        let f = |s: &str| compile(s, false).into_vec();
        let table = [
            ("a/+/#", "+/b/c", Some("a/b/c")),
            ("a/#", "+/b/#", Some("a/b/#")),
            ("a/#", "a", Some("a")),
            ("#", "$SYS/#", None),
            ("+/#", "$SYS/x", None),
            ("$SYS/#", "$SYS/+", Some("$SYS/+")),
            ("a/b", "a/c", None),
            ("a/+", "a/+/c", None),
            ("#", "#", Some("#")),
            ("+", "+", Some("+")),
        ];
        for (a, b, want) in table {
            assert_eq!(intersect(&f(a), &f(b)), want.map(f), "{a} ∩ {b}");
            assert_eq!(intersect(&f(b), &f(a)), want.map(f), "{b} ∩ {a}");
        }
    }

    #[test]
    fn inclusions() {
        let f = |s: &str| compile(s, false).into_vec();
        let table = [
            ("#", "a/b", true),
            ("#", "$SYS/a", false),
            ("$SYS/#", "$SYS/a", true),
            ("a/#", "a", true),
            ("a/#", "a/+/#", true),
            ("a/+/#", "a/#", false),
            ("a/+", "a/b", true),
            ("a/b", "a/+", false),
            ("+", "$x", false),
            ("+/+", "a/b", true),
            ("a", "a/#", false),
        ];
        for (outer, inner, want) in table {
            assert_eq!(covers(&f(outer), &f(inner)), want, "{inner} ⊆ {outer}");
        }
    }

    /// Issue 20, item 0: filters as deep as a packet allows are compared
    /// in a loop (a recursion per level overflowed a worker's stack).
    #[test]
    fn deep_filters_are_compared_without_recursion() {
        let deep = format!("{}#", "a/".repeat(32_767));
        let topic = format!("{}a", "a/".repeat(32_767));
        let f = |s: &str| compile(s, false).into_vec();
        let (d, grant) = (f(&deep), f("a/#"));
        assert_eq!(intersect(&d, &grant).map(|i| i.len()), Some(32_768));
        assert!(covers(&grant, &d));
        assert!(!covers(&d, &grant));
        assert!(m(&deep, &topic));
    }
}
