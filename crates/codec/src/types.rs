//! Validated value types shared by every packet: protocol versions, QoS,
//! packet identifiers, MQTT strings, topic names and topic filters.

use std::fmt;
use std::num::NonZeroU16;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use crate::Error;

/// A packet identifier: never zero on the wire ([MQTT-2.2.1-3]).
pub type PacketId = NonZeroU16;

/// The protocol a connection speaks, chosen by its CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl Protocol {
    pub const fn level(self) -> u8 {
        match self {
            Protocol::V3_1 => 3,
            Protocol::V3_1_1 => 4,
            Protocol::V5 => 5,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::V3_1 => "MQIsdp",
            Protocol::V3_1_1 | Protocol::V5 => "MQTT",
        }
    }

    pub const fn is_v5(self) -> bool {
        matches!(self, Protocol::V5)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V3_1 => "3.1",
            Protocol::V3_1_1 => "3.1.1",
            Protocol::V5 => "5.0",
        })
    }
}

/// Quality of service. QoS 3 does not exist and is rejected when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Result<QoS, Error> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(Error::InvalidQoS),
        }
    }
}

/// A UTF-8 string as MQTT defines it ([MQTT-1.5.4]): well-formed UTF-8
/// (so no surrogates), no U+0000, at most 65,535 bytes. Backed by `Bytes`,
/// so decoding one out of a packet copies nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MqttString(ByteString);

impl MqttString {
    pub fn from_static(s: &'static str) -> Result<MqttString, Error> {
        MqttString::try_from(Bytes::from_static(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// The same string in an allocation of its own. A decoded string is a
    /// slice of the buffer it was read from, and keeps all of it alive: a
    /// value kept long (a queued or retained message) should not.
    pub fn detached(&self) -> MqttString {
        MqttString(ByteString::from(self.as_str()))
    }
}

impl TryFrom<Bytes> for MqttString {
    type Error = Error;

    fn try_from(bytes: Bytes) -> Result<MqttString, Error> {
        if bytes.len() > usize::from(u16::MAX) {
            return Err(Error::StringTooLong(bytes.len()));
        }
        if contains_any(&bytes, [0]) {
            return Err(Error::NullCharacter);
        }
        ByteString::try_from(bytes)
            .map(MqttString)
            .map_err(|_| Error::InvalidUtf8)
    }
}

impl TryFrom<&str> for MqttString {
    type Error = Error;

    fn try_from(s: &str) -> Result<MqttString, Error> {
        MqttString::try_from(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<String> for MqttString {
    type Error = Error;

    fn try_from(s: String) -> Result<MqttString, Error> {
        MqttString::try_from(Bytes::from(s))
    }
}

impl Deref for MqttString {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MqttString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic name as carried by PUBLISH: an MQTT string without `+` or `#`
/// ([MQTT-4.7.0-1]). It may be empty only on the wire of an MQTT 5 PUBLISH
/// that uses a topic alias; the decoder enforces that rule, not this type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicName(MqttString);

impl TopicName {
    pub fn new(s: impl TryInto<MqttString, Error = Error>) -> Result<TopicName, Error> {
        TopicName::from_mqtt_string(s.try_into()?)
    }

    /// The decoder's path: the checks of `MqttString` and then of
    /// `from_mqtt_string`, with one pass for U+0000, the wildcards and the
    /// control characters when none is there (nearly always), and the same
    /// errors when one is.
    pub(crate) fn from_bytes(bytes: Bytes) -> Result<TopicName, Error> {
        if bytes.len() <= usize::from(u16::MAX)
            && !contains_any(&bytes, [b'+', b'#', 0x7F, 0xC2])
            && !any_below(&bytes, 0x20)
        {
            return ByteString::try_from(bytes)
                .map(|s| TopicName(MqttString(s)))
                .map_err(|_| Error::InvalidUtf8);
        }
        TopicName::from_mqtt_string(MqttString::try_from(bytes)?)
    }

    pub fn from_mqtt_string(s: MqttString) -> Result<TopicName, Error> {
        if has_control(s.as_bytes()) {
            return Err(Error::ControlCharacter);
        }
        if contains_any(s.as_bytes(), [b'+', b'#']) {
            return Err(Error::InvalidTopicName(
                "wildcard character in a topic name",
            ));
        }
        Ok(TopicName(s))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_mqtt_string(&self) -> &MqttString {
        &self.0
    }

    /// The same topic in an allocation of its own ([`MqttString::detached`]).
    pub fn detached(&self) -> TopicName {
        TopicName(self.0.detached())
    }

    /// `prefix` followed by this topic (a listener's mount point); an
    /// error if the result is no topic name (too long, or the prefix has
    /// a wildcard).
    pub fn prefixed(&self, prefix: &str) -> Result<TopicName, Error> {
        let mut joined = String::with_capacity(prefix.len() + self.len());
        joined.push_str(prefix);
        joined.push_str(self);
        TopicName::new(joined)
    }

    /// The rest of the topic after `prefix`, sharing its bytes; `None`
    /// unless the topic starts with `prefix` and goes on after it.
    pub fn strip_prefix(&self, prefix: &str) -> Option<TopicName> {
        if self.len() <= prefix.len() || !self.starts_with(prefix) {
            return None;
        }
        // A `str` prefix ends on a character boundary of the topic.
        let rest = self.0.as_bytes().slice(prefix.len()..);
        ByteString::try_from(rest)
            .ok()
            .map(|s| TopicName(MqttString(s)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Topics beginning with `$` are not matched by filters starting with a
    /// wildcard ([MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A topic filter: non-empty, `#` only as the whole last level, `+` only as
/// a whole level ([MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.3-1]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

impl TopicFilter {
    pub fn new(s: impl TryInto<MqttString, Error = Error>) -> Result<TopicFilter, Error> {
        TopicFilter::from_mqtt_string(s.try_into()?)
    }

    pub fn from_mqtt_string(s: MqttString) -> Result<TopicFilter, Error> {
        validate_filter(&s)?;
        Ok(TopicFilter(s))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_mqtt_string(&self) -> &MqttString {
        &self.0
    }

    pub fn has_wildcards(&self) -> bool {
        self.0.as_bytes().iter().any(|&b| b == b'+' || b == b'#')
    }
}

fn validate_filter(s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::InvalidTopicFilter("empty topic filter"));
    }
    let bytes = s.as_bytes();
    if has_control(bytes) {
        return Err(Error::ControlCharacter);
    }
    if !contains_any(bytes, [b'+', b'#']) {
        return Ok(());
    }
    // '/', '+' and '#' are ASCII, which is never part of a multi-byte UTF-8
    // sequence: splitting the bytes splits the characters.
    let mut levels = bytes.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        if level.contains(&b'#') && (level != b"#" || levels.peek().is_some()) {
            return Err(Error::InvalidTopicFilter(
                "'#' must be a whole level and the last one",
            ));
        }
        if level.contains(&b'+') && level != b"+" {
            return Err(Error::InvalidTopicFilter("'+' must be a whole level"));
        }
    }
    Ok(())
}

/// Whether `bytes` (well-formed UTF-8) holds a control character:
/// U+0001..U+001F, U+007F, or U+0080..U+009F (encoded C2 80..C2 9F). The
/// standard says they SHOULD NOT be used ([MQTT-1.5.4]) and lets a
/// receiver close the connection; Mosquitto does so for topics, which
/// keeps them out of logs and file names. Rare, so the exact check runs
/// only behind [`contains_any`] and [`any_below`].
fn has_control(bytes: &[u8]) -> bool {
    if !any_below(bytes, 0x20) && !contains_any(bytes, [0x7F, 0xC2]) {
        return false;
    }
    bytes.iter().enumerate().any(|(i, &b)| {
        (1..0x20).contains(&b)
            || b == 0x7F
            || (b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)))
    })
}

/// Whether any byte of `bytes` is below `limit` (at most 0x80), eight
/// bytes at a time (the "has less" word trick, exact).
#[inline]
fn any_below(bytes: &[u8], limit: u8) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            let x = u64::from_ne_bytes(word);
            if x.wrapping_sub(ONES.wrapping_mul(u64::from(limit))) & !x & HIGHS != 0 {
                return true;
            }
        }
    }
    words.remainder().iter().any(|&b| b < limit)
}

/// Whether `bytes` holds any of `needles`, eight bytes at a time (the
/// "has a zero byte" word trick, exact): on the short strings of MQTT this
/// beats a byte loop and `memchr` alike, and looks for several bytes in
/// one pass.
#[inline]
fn contains_any<const N: usize>(bytes: &[u8], needles: [u8; N]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            let x = u64::from_ne_bytes(word);
            if needles
                .iter()
                .any(|&n| has_zero_byte(x ^ ONES.wrapping_mul(u64::from(n))))
            {
                return true;
            }
        }
    }
    words.remainder().iter().any(|b| needles.contains(b))
}

impl Deref for TopicFilter {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Whether `filter` matches `topic` by the rules of section 4.7 (`+` one
/// level, `#` the rest including the parent, `$` topics not matched by a
/// leading wildcard). Both are assumed valid.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_prefix_and_strip() {
        let t = TopicName::new("sensors/é").unwrap();
        let m = t.prefixed("site-1/").unwrap();
        assert_eq!(m.as_str(), "site-1/sensors/é");
        assert_eq!(m.strip_prefix("site-1/").unwrap().as_str(), "sensors/é");
        assert!(m.strip_prefix("site-2/").is_none());
        assert!(
            m.strip_prefix("site-1/sensors/é").is_none(),
            "nothing after it"
        );
        assert!(t.prefixed("a/+/").is_err());
        assert!(TopicName::new("x".repeat(65_000))
            .unwrap()
            .prefixed(&"y".repeat(600))
            .is_err());
    }

    #[test]
    fn filters_follow_the_wildcard_rules() {
        for ok in [
            "#",
            "+",
            "a",
            "a/b",
            "a/+",
            "a/#",
            "+/+",
            "+/#",
            "/",
            "//",
            "/+/",
            "a//b",
            "$SYS/#",
            "sport/tennis/+/#",
        ] {
            assert!(TopicFilter::new(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["", "a#", "a/#/b", "#/", "a+", "+a", "a/b+/c", "##", "a/++"] {
            assert!(
                matches!(TopicFilter::new(bad), Err(Error::InvalidTopicFilter(_))),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn contains_any_finds_every_byte_at_every_position() {
        for len in 0..40 {
            for pos in 0..len {
                for needle in [0u8, b'+', b'#', 0x80, 0xFF] {
                    let mut bytes = vec![b'a'; len];
                    bytes[pos] = needle;
                    assert!(contains_any(&bytes, [needle]), "{len} {pos} {needle}");
                    assert!(contains_any(&bytes, [b'z', needle]));
                    // Neighbours of the needle must not match.
                    assert!(!contains_any(&bytes, [needle.wrapping_add(1)]));
                    assert!(!contains_any(&bytes, [needle.wrapping_sub(1), b'b']));
                }
            }
            assert!(!contains_any(&vec![0x7F; len], [0, 0xFF, b'+']));
        }
    }

    #[test]
    fn filter_matching_follows_section_4_7() {
        assert!(filter_matches("a/#", "a"));
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(filter_matches("#", "x"));
        assert!(!filter_matches("#", "$SYS/x"));
        assert!(!filter_matches("+/x", "$SYS/x"));
        assert!(filter_matches("$SYS/#", "$SYS/x"));
        assert!(filter_matches("/+", "/x"));
    }

    #[test]
    fn names_reject_wildcards_and_nul() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("").is_ok());
        assert!(matches!(
            TopicName::new("a/+"),
            Err(Error::InvalidTopicName(_))
        ));
        assert!(matches!(
            TopicName::new("a/#"),
            Err(Error::InvalidTopicName(_))
        ));
        assert_eq!(TopicName::new("a\0b"), Err(Error::NullCharacter));
    }

    #[test]
    fn strings_reject_surrogates_and_overlong_forms() {
        // U+D800 encoded as UTF-8 bytes (a surrogate: forbidden by [MQTT-1.5.4-1]).
        assert_eq!(
            MqttString::try_from(Bytes::from_static(b"\xED\xA0\x80")),
            Err(Error::InvalidUtf8)
        );
        // Over-long encoding of '/'.
        assert_eq!(
            MqttString::try_from(Bytes::from_static(b"\xC0\xAF")),
            Err(Error::InvalidUtf8)
        );
        assert!(MqttString::try_from("A\u{2A6D4}").is_ok());
    }

    /// Control characters in topics close the connection, as in
    /// Mosquitto (issue 15); elsewhere in a string they stay allowed.
    #[test]
    fn control_characters_are_refused_in_topics() {
        for bad in [
            "a\u{1}b",
            "\u{1f}",
            "a/\u{7f}",
            "x\u{80}",
            "\u{9f}/y",
            "tab\there",
        ] {
            assert_eq!(
                TopicName::new(bad).err(),
                Some(Error::ControlCharacter),
                "{bad:?}"
            );
            assert_eq!(
                TopicFilter::new(bad).err(),
                Some(Error::ControlCharacter),
                "{bad:?}"
            );
            let decoded = TopicName::from_bytes(Bytes::copy_from_slice(bad.as_bytes()));
            assert_eq!(decoded.err(), Some(Error::ControlCharacter), "{bad:?}");
        }
        for good in [
            "a b",
            "\u{a0}",
            "caf\u{e9}/\u{100}",
            "\u{c2}\u{a9}",
            "\u{ff}/+",
        ] {
            assert!(TopicFilter::new(good).is_ok(), "{good:?}");
        }
        assert!(TopicName::from_bytes(Bytes::from_static("caf\u{e9}".as_bytes())).is_ok());
        assert!(MqttString::try_from("a\u{1}b").is_ok());
    }

    #[test]
    fn the_word_scan_for_small_bytes_is_exact() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 23) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 5) as u8) | if i % 3 == 0 { 0 } else { 0x20 })
                .collect();
            for limit in [1u8, 0x20, 0x80] {
                assert_eq!(
                    any_below(&bytes, limit),
                    bytes.iter().any(|&b| b < limit),
                    "{bytes:?} < {limit}"
                );
            }
        }
    }
}
