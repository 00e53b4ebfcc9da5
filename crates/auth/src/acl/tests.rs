use proptest::prelude::*;

use super::*;

fn acl(text: &str) -> AclFile {
    AclFile::parse(text, "acl").unwrap()
}

const FILE: &str = "\
# anonymous clients
topic read public/#
topic deny public/secret

user alice
topic alice/#
topic read shared/+
topic write  inbox/bob
topic deny alice/private/#
topic $SYS/broker/#

user bob
topic readwrite inbox/bob

pattern readwrite devices/%c/#
pattern read users/%u/#
pattern deny devices/%c/locked
";

#[test]
fn anonymous_section_applies_only_without_username() {
    let a = acl(FILE);
    assert!(a.check(None, "c", "public/news", Access::Read));
    assert!(!a.check(None, "c", "public/news", Access::Write));
    assert!(!a.check(None, "c", "public/secret", Access::Read));
    assert!(!a.check(Some("alice"), "c", "public/news", Access::Read));
    assert!(!a.check(Some("mallory"), "c", "public/news", Access::Read));
}

#[test]
fn user_sections() {
    let a = acl(FILE);
    let alice = a.client(Some("alice"), "alice-phone");
    assert!(alice.check("alice/x", Access::Write));
    assert!(alice.check("alice", Access::Read));
    assert!(alice.check("shared/x", Access::Read));
    assert!(!alice.check("shared/x", Access::Write));
    assert!(alice.check("inbox/bob", Access::Write));
    assert!(!alice.check("inbox/bob", Access::Read));
    assert!(
        !alice.check("alice/private/diary", Access::Read),
        "deny first"
    );
    assert!(!alice.check("alice/private", Access::Write));
    assert!(alice.check("$SYS/broker/uptime", Access::Read));
    assert!(!a.check(Some("bob"), "b", "alice/x", Access::Read));
    assert!(a.check(Some("bob"), "b", "inbox/bob", Access::Read));
}

#[test]
fn patterns_substitute_client_id_and_username() {
    let a = acl(FILE);
    assert!(a.check(
        Some("bob"),
        "sensor1",
        "devices/sensor1/temp",
        Access::Write
    ));
    assert!(a.check(None, "sensor1", "devices/sensor1", Access::Read));
    assert!(!a.check(
        Some("bob"),
        "sensor1",
        "devices/sensor2/temp",
        Access::Write
    ));
    assert!(!a.check(
        Some("bob"),
        "sensor1",
        "devices/sensor1/locked",
        Access::Read
    ));
    assert!(a.check(Some("bob"), "x", "users/bob/inbox", Access::Read));
    assert!(!a.check(Some("bob"), "x", "users/bob/inbox", Access::Write));
    assert!(!a.check(Some("bob"), "x", "users/alice/inbox", Access::Read));
    // No username: %u entries do not apply.
    assert!(!a.check(None, "x", "users/%u/inbox", Access::Read));
    assert!(!a.check(None, "x", "users//inbox", Access::Read));
}

#[test]
fn own_grant_wins_over_pattern_deny_as_in_mosquitto() {
    let a = acl("user alice\ntopic devices/#\npattern deny devices/%c/locked\n");
    assert!(a.check(Some("alice"), "d1", "devices/d1/locked", Access::Read));
    assert!(!a.check(Some("bob"), "d1", "devices/d1/locked", Access::Read));
}

#[test]
fn dangerous_client_ids_and_usernames_get_nothing_from_patterns() {
    let a = acl("pattern readwrite devices/%c/#\npattern read users/%u\npattern read open/#\n");
    // A client id of `+` or `#` would otherwise grant every device.
    for id in ["+", "#", "a/b", "x+y"] {
        assert!(
            !a.check(None, id, &format!("devices/{id}/t"), Access::Read),
            "{id}"
        );
        assert!(!a.check(None, id, "devices/other/t", Access::Read), "{id}");
        assert!(!a.check(None, id, "open/x", Access::Read), "{id}");
        assert!(!a.can_ever_read(None, id, "devices/#"), "{id}");
    }
    assert!(!a.check(Some("u/v"), "ok", "users/u/v", Access::Read));
    assert!(!a.check(Some("#"), "ok", "devices/ok/t", Access::Read));
    assert!(a.check(Some("u"), "ok", "devices/ok/t", Access::Read));
    // `topic` entries are not affected.
    let b = acl("user a/b\ntopic read x\n");
    assert!(b.check(Some("a/b"), "c+", "x", Access::Read));
}

#[test]
fn dollar_topics_need_dollar_entries() {
    let a = acl("topic #\ntopic +/+\ntopic read $SYS/broker/#\n");
    assert!(a.check(None, "c", "a/b", Access::Write));
    assert!(!a.check(None, "c", "$SYS/x", Access::Read));
    assert!(!a.check(None, "c", "$SYS/x/y", Access::Write));
    assert!(a.check(None, "c", "$SYS/broker/load", Access::Read));
    assert!(!a.check(None, "c", "$SYS/broker/load", Access::Write));
    assert!(!a.can_ever_read(None, "c", "$SYS/other/#"));
    assert!(a.can_ever_read(None, "c", "$SYS/#"));
    assert!(!acl("topic #\n").can_ever_read(None, "c", "$SYS/#"));
    assert!(!acl("topic #\n").can_ever_read(None, "c", "$SYS/+"));
    assert!(acl("topic #\n").can_ever_read(None, "c", "+/x"));
    assert!(acl("topic #\n").can_ever_read(None, "c", "#"));
}

#[test]
fn no_match_and_empty_file_deny() {
    let a = acl("");
    assert!(!a.check(None, "c", "a", Access::Read));
    assert!(!a.check(Some("u"), "c", "a", Access::Write));
    assert!(!a.can_ever_read(None, "c", "#"));
}

#[test]
fn parse_details() {
    let a = acl("topic read  my topic/+  \ntopic read\n\tuser  carol  \ntopic write x\n");
    assert!(a.check(None, "c", "my topic/x", Access::Read));
    // `topic read` alone: `read` is the topic, with readwrite.
    assert!(a.check(None, "c", "read", Access::Write));
    assert!(a.check(Some("carol"), "c", "x", Access::Write));
    // Sections with the same name merge.
    let b = acl("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c\n");
    assert!(b.check(Some("u"), "c", "a", Access::Read));
    assert!(b.check(Some("u"), "c", "c", Access::Read));
    assert!(!b.check(Some("u"), "c", "b", Access::Read));
}

#[test]
fn parse_errors_name_file_and_line() {
    for (text, line) in [
        ("topic a b\n", 1),
        ("# c\n\nuser\n", 3),
        ("topic read a\nfrobnicate x\n", 2),
        ("topic read a/#/b\n", 1),
        ("pattern write a+\n", 1),
        ("topic\n", 1),
    ] {
        let err = AclFile::parse(text, "/etc/acl").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("/etc/acl:{line}: ")),
            "{text:?}: {err}"
        );
    }
    let err = AclFile::load("/nonexistent/acl").unwrap_err().to_string();
    assert!(err.starts_with("/nonexistent/acl: "), "{err}");
}

#[test]
fn can_ever_read_for_subscribe() {
    let a = acl(FILE);
    let alice = a.client(Some("alice"), "phone");
    assert!(alice.can_ever_read("alice/#"));
    assert!(alice.can_ever_read("#"));
    assert!(!alice.can_ever_read("+/private/x"));
    assert!(alice.can_ever_read("+/alice/x"), "users/alice/x by pattern");
    assert!(!alice.can_ever_read("alice/private/#"));
    assert!(!alice.can_ever_read("inbox/bob"), "write only");
    assert!(alice.can_ever_read("shared/+"));
    assert!(!alice.can_ever_read("shared/a/b"));
    assert!(alice.can_ever_read("devices/phone/x"));
    assert!(!alice.can_ever_read("devices/phone/locked"));
    assert!(!alice.can_ever_read("devices/other/x"));
    assert!(alice.can_ever_read("$share/g/devices/phone/#"));
    assert!(!alice.can_ever_read("$share/g/devices/other/#"));
    assert!(!alice.can_ever_read("bad/#/filter"));
    assert!(a.can_ever_read(None, "c", "public/+"));
    assert!(!a.can_ever_read(None, "c", "public/secret"));
}

// ---- brute-force reference ------------------------------------------------

#[derive(Debug, Clone)]
enum Line {
    User(&'static str),
    Topic(Option<&'static str>, String),
    Pattern(Option<&'static str>, String),
}

fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        let (kw, grant, topic) = match line {
            Line::User(u) => {
                out.push_str(&format!("user {u}\n"));
                continue;
            }
            Line::Topic(g, t) => ("topic", g, t),
            Line::Pattern(g, t) => ("pattern", g, t),
        };
        match grant {
            Some(g) => out.push_str(&format!("{kw} {g} {topic}\n")),
            None => out.push_str(&format!("{kw} {topic}\n")),
        }
    }
    out
}

/// MQTT topic matching on strings, with the `$` rule.
fn ref_matches(filter: &str, topic: &str) -> bool {
    if filter.starts_with('$') != topic.starts_with('$') {
        return false;
    }
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (Some((&"#", _)), _) => true,
            (None, None) => true,
            (Some((&fl, fr)), Some((&tl, tr))) => (fl == "+" || fl == tl) && go(fr, tr),
            _ => false,
        }
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    go(&f, &t)
}

fn ref_substitute(pattern: &str, client_id: &str, username: &str) -> String {
    let mut out = String::new();
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 1 < b.len() && (b[i + 1] == b'c' || b[i + 1] == b'u') {
            out.push_str(if b[i + 1] == b'c' {
                client_id
            } else {
                username
            });
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn grants(g: Option<&str>, access: Access) -> bool {
    match g {
        None | Some("readwrite") => true,
        Some("read") => access == Access::Read,
        Some("write") => access == Access::Write,
        _ => false,
    }
}

/// Mosquitto's algorithm, written directly on the lines.
fn ref_check(
    lines: &[Line],
    username: Option<&str>,
    client_id: &str,
    topic: &str,
    access: Access,
) -> bool {
    let mut section: Option<&str> = None;
    let mut own = Vec::new();
    let mut patterns = Vec::new();
    for line in lines {
        match line {
            Line::User(u) => section = Some(u),
            Line::Topic(g, t) if section == username => own.push((*g, t.clone())),
            Line::Topic(..) => {}
            Line::Pattern(g, t) => patterns.push((*g, t.clone())),
        }
    }
    let is_deny = |g: &Option<&str>| *g == Some("deny");
    if own.iter().any(|(g, t)| is_deny(g) && ref_matches(t, topic)) {
        return false;
    }
    if own
        .iter()
        .any(|(g, t)| !is_deny(g) && grants(*g, access) && ref_matches(t, topic))
    {
        return true;
    }
    let bad = |s: &str| s.contains('+') || s.contains('#') || s.contains('/');
    if bad(client_id) || username.is_some_and(bad) {
        return false;
    }
    let subst: Vec<(Option<&str>, String)> = patterns
        .iter()
        .filter(|(_, t)| !(t.contains("%u") && username.is_none()))
        .map(|(g, t)| (*g, ref_substitute(t, client_id, username.unwrap_or(""))))
        .collect();
    if subst
        .iter()
        .any(|(g, t)| is_deny(g) && ref_matches(t, topic))
    {
        return false;
    }
    subst
        .iter()
        .any(|(g, t)| !is_deny(g) && grants(*g, access) && ref_matches(t, topic))
}

const USERS: [&str; 3] = ["u1", "a", "u#"];

fn filter_strategy(templates: bool) -> impl Strategy<Value = String> {
    let level = if templates {
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("$s"),
            Just("+"),
            Just("%c"),
            Just("%u"),
            Just("x%c"),
        ]
        .boxed()
    } else {
        prop_oneof![Just("a"), Just("b"), Just("$s"), Just("+"), Just("c1")].boxed()
    };
    (proptest::collection::vec(level, 1..=3), any::<bool>()).prop_map(|(levels, hash)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str("/#");
        }
        f
    })
}

fn grant_strategy() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        Just(None),
        Just(Some("read")),
        Just(Some("write")),
        Just(Some("readwrite")),
        Just(Some("deny")),
    ]
}

fn line_strategy() -> impl Strategy<Value = Line> {
    prop_oneof![
        1 => proptest::sample::select(&USERS[..]).prop_map(Line::User),
        3 => (grant_strategy(), filter_strategy(false)).prop_map(|(g, t)| Line::Topic(g, t)),
        2 => (grant_strategy(), filter_strategy(true)).prop_map(|(g, t)| Line::Pattern(g, t)),
        1 => Just(Line::Topic(None, "#".into())),
    ]
}

fn subject_strategy() -> impl Strategy<Value = (Option<&'static str>, &'static str)> {
    (
        proptest::sample::select(vec![None, Some("u1"), Some("a"), Some("u#"), Some("zz")]),
        proptest::sample::select(vec!["c1", "a", "$s", "c+", "c/d", ""]),
    )
}

/// Every topic of 1 to 4 levels over the letters that matter here.
fn all_topics(username: Option<&str>, client_id: &str) -> Vec<String> {
    let mut alphabet: Vec<String> = ["a", "b", "$s", "c1", "z"].map(String::from).to_vec();
    for v in [Some(client_id), username].into_iter().flatten() {
        alphabet.push(v.to_owned());
        alphabet.push(format!("x{v}"));
    }
    alphabet.sort();
    alphabet.dedup();
    let mut all = Vec::new();
    let mut layer: Vec<String> = alphabet.clone();
    for _ in 0..4 {
        all.extend(layer.iter().cloned());
        layer = layer
            .iter()
            .flat_map(|t| alphabet.iter().map(move |l| format!("{t}/{l}")))
            .collect();
    }
    all
}

fn access_strategy() -> impl Strategy<Value = Access> {
    prop_oneof![Just(Access::Read), Just(Access::Write)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn check_agrees_with_reference(
        lines in proptest::collection::vec(line_strategy(), 0..8),
        (username, client_id) in subject_strategy(),
        topic_levels in proptest::collection::vec(
            proptest::sample::select(vec!["a", "b", "$s", "c1", "xc1", "u1", "xa", "a", ""]), 1..=4),
        access in access_strategy(),
    ) {
        let topic = topic_levels.join("/");
        let parsed = AclFile::parse(&render(&lines), "acl").unwrap();
        prop_assert_eq!(
            parsed.check(username, client_id, &topic, access),
            ref_check(&lines, username, client_id, &topic, access),
            "{} {:?} {:?}", render(&lines), username, client_id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `can_ever_read` never refuses a filter under which some topic is
    /// readable, and is exact when at most one `deny` line exists.
    #[test]
    fn can_ever_read_agrees_with_brute_force(
        lines in proptest::collection::vec(line_strategy(), 0..7),
        (username, client_id) in subject_strategy(),
        filter in filter_strategy(false),
    ) {
        let parsed = AclFile::parse(&render(&lines), "acl").unwrap();
        let brute = all_topics(username, client_id).iter().any(|t| {
            ref_matches(&filter, t) && ref_check(&lines, username, client_id, t, Access::Read)
        });
        let fast = parsed.can_ever_read(username, client_id, &filter);
        if brute {
            prop_assert!(fast, "{}\nfilter {} {:?} {:?}", render(&lines), filter, username, client_id);
        }
        let denies = lines.iter().filter(|l| matches!(l,
            Line::Topic(Some("deny"), _) | Line::Pattern(Some("deny"), _))).count();
        if denies <= 1 {
            prop_assert_eq!(fast, brute, "{}\nfilter {} {:?} {:?}", render(&lines), filter, username, client_id);
        }
    }
}
