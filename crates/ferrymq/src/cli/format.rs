//! How `ferrymq sub` prints a message: plain, `-v`, Mosquitto's `-F`
//! format codes, or `--json` (one object a line).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ferrymq_client::{Message, Property};
use serde_json::{json, Map, Value};

/// Plain output: the payload (nothing for an empty one), or with `-v`
/// "topic payload" ("topic (null)" for an empty one), as mosquitto_sub.
pub fn plain(m: &Message, verbose: bool, eol: bool, out: &mut Vec<u8>) {
    if verbose {
        if m.payload.is_empty() {
            if eol {
                let _ = writeln!(out, "{} (null)", m.topic);
            }
            return;
        }
        let _ = write!(out, "{} ", m.topic);
    } else if m.payload.is_empty() {
        return;
    }
    out.extend_from_slice(&m.payload);
    if eol {
        out.push(b'\n');
    }
}

/// `--json`: topic, payload (text if UTF-8, else base64), qos, retain and
/// the MQTT 5 properties.
pub fn json_line(m: &Message, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, &json_value(m));
    out.push(b'\n');
}

fn json_value(m: &Message) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), json!(m.topic.as_str()));
    match std::str::from_utf8(&m.payload) {
        Ok(text) => {
            object.insert("payload".into(), json!(text));
        }
        Err(_) => {
            object.insert("payload_base64".into(), json!(base64(&m.payload)));
        }
    }
    object.insert("qos".into(), json!(m.qos as u8));
    object.insert("retain".into(), json!(m.retain));
    if !m.properties.is_empty() {
        object.insert("properties".into(), properties(m));
    }
    Value::Object(object)
}

fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn properties(m: &Message) -> Value {
    let mut p = Map::new();
    let mut user = Vec::new();
    let mut ids = Vec::new();
    for property in m.properties.iter() {
        match property {
            Property::PayloadFormatIndicator(v) => {
                p.insert("payload_format_indicator".into(), json!(v));
            }
            Property::MessageExpiryInterval(v) => {
                p.insert("message_expiry_interval".into(), json!(v));
            }
            Property::ContentType(v) => {
                p.insert("content_type".into(), json!(v.as_str()));
            }
            Property::ResponseTopic(v) => {
                p.insert("response_topic".into(), json!(v.as_str()));
            }
            Property::CorrelationData(v) => {
                let value = match std::str::from_utf8(v) {
                    Ok(s) => json!(s),
                    Err(_) => json!({ "base64": base64(v) }),
                };
                p.insert("correlation_data".into(), value);
            }
            Property::SubscriptionIdentifier(v) => ids.push(json!(v)),
            Property::TopicAlias(v) => {
                p.insert("topic_alias".into(), json!(v));
            }
            Property::UserProperty(k, v) => user.push(json!([k.as_str(), v.as_str()])),
            _ => {}
        }
    }
    if !ids.is_empty() {
        p.insert("subscription_identifiers".into(), Value::Array(ids));
    }
    if !user.is_empty() {
        p.insert("user_properties".into(), Value::Array(user));
    }
    Value::Object(p)
}

/// Field options of one `%` code: `-` (left align), `0` (zero pad), width,
/// `.precision`.
#[derive(Debug, Default, Clone, Copy)]
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

impl Spec {
    fn pad(&self, s: &[u8], numeric: bool, out: &mut Vec<u8>) {
        let s = match self.precision {
            Some(p) if !numeric && p < s.len() => s.get(..p).unwrap_or(s),
            _ => s,
        };
        let fill = self.width.saturating_sub(s.len());
        if self.left {
            out.extend_from_slice(s);
            out.extend(std::iter::repeat_n(b' ', fill));
        } else {
            let c = if self.zero && numeric { b'0' } else { b' ' };
            out.extend(std::iter::repeat_n(c, fill));
            out.extend_from_slice(s);
        }
    }

    fn int(&self, v: impl std::fmt::Display, out: &mut Vec<u8>) {
        self.pad(v.to_string().as_bytes(), true, out);
    }

    fn str(&self, v: &str, out: &mut Vec<u8>) {
        self.pad(v.as_bytes(), false, out);
    }

    fn blank(&self, out: &mut Vec<u8>) {
        self.pad(b"", true, out);
    }
}

/// A wall-clock instant broken down in UTC.
struct Time {
    secs: i64,
    nanos: u32,
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Time {
        secs,
        nanos: d.subsec_nanos(),
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
    }
}

/// strftime for the codes people use with `@` (UTC).
fn strftime(code: char, t: &Time, out: &mut Vec<u8>) {
    let s = match code {
        'Y' => format!("{}", t.year),
        'm' => format!("{:02}", t.month),
        'd' => format!("{:02}", t.day),
        'H' => format!("{:02}", t.hour),
        'M' => format!("{:02}", t.minute),
        'S' => format!("{:02}", t.second),
        's' => format!("{}", t.secs),
        'F' => format!("{}-{:02}-{:02}", t.year, t.month, t.day),
        'T' => format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second),
        'z' => "+0000".to_string(),
        'Z' => "UTC".to_string(),
        'N' => format!("{:09}", t.nanos),
        other => format!("@{other}"),
    };
    out.extend_from_slice(s.as_bytes());
}

/// Renders mosquitto_sub's `-F` format for one message (`eol` appends a
/// newline, as mosquitto_sub does unless -N).
pub fn formatted(format: &str, m: &Message, eol: bool, out: &mut Vec<u8>) {
    let mut chars = format.chars().peekable();
    let mut time: Option<Time> = None;
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let mut spec = Spec::default();
                if chars.peek() == Some(&'-') {
                    spec.left = true;
                    chars.next();
                }
                if chars.peek() == Some(&'0') {
                    spec.zero = true;
                    chars.next();
                }
                while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                    spec.width = spec.width * 10 + d as usize;
                    chars.next();
                }
                if chars.peek() == Some(&'.') {
                    chars.next();
                    let mut p = 0;
                    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                        p = p * 10 + d as usize;
                        chars.next();
                    }
                    spec.precision = Some(p);
                }
                let Some(code) = chars.next() else { break };
                percent(code, spec, m, &mut time, out);
            }
            '@' => match chars.next() {
                Some('@') => out.push(b'@'),
                Some(code) => strftime(code, time.get_or_insert_with(now), out),
                None => {}
            },
            '\\' => match chars.next() {
                Some('\\') => out.push(b'\\'),
                Some('0') => out.push(0),
                Some('a') => out.push(7),
                Some('e') => out.push(0x1b),
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('v') => out.push(0x0b),
                _ => {}
            },
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    if eol {
        out.push(b'\n');
    }
}

fn hex(data: &[u8], upper: bool) -> String {
    data.iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn percent(code: char, spec: Spec, m: &Message, time: &mut Option<Time>, out: &mut Vec<u8>) {
    let p = &m.properties;
    match code {
        '%' => out.push(b'%'),
        'A' => match p.topic_alias() {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        'C' => {
            if let Some(v) = p.content_type() {
                spec.str(&v, out);
            }
        }
        'D' => {
            if let Some(v) = p.correlation_data() {
                out.extend_from_slice(&v);
            }
        }
        'E' => match p.message_expiry_interval() {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        'F' => match p.payload_format_indicator() {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        'I' => {
            let t = time.get_or_insert_with(now);
            let s = format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
                t.year, t.month, t.day, t.hour, t.minute, t.second
            );
            spec.str(&s, out);
        }
        'j' | 'J' => {
            let _ = serde_json::to_writer(&mut *out, &json_value(m));
        }
        'l' => spec.int(m.payload.len(), out),
        'm' => spec.int(m.packet_id.map_or(0, |id| id.get()), out),
        'P' => {
            let pairs: Vec<String> = p
                .user_properties()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect();
            out.extend_from_slice(pairs.join(" ").as_bytes());
        }
        // mosquitto_sub 2.0 (Debian 12) ignores a precision on the payload.
        'p' => Spec {
            precision: None,
            ..spec
        }
        .pad(&m.payload, false, out),
        'q' => out.push(b'0' + m.qos as u8),
        'R' => {
            if let Some(v) = p.response_topic() {
                spec.str(&v, out);
            }
        }
        'r' => out.push(if m.retain { b'1' } else { b'0' }),
        'S' => match p.subscription_identifiers().next() {
            Some(v) => spec.int(v, out),
            None => spec.blank(out),
        },
        't' => spec.str(&m.topic, out),
        'U' => {
            let t = time.get_or_insert_with(now);
            let s = format!("{}.{:09}", t.secs, t.nanos);
            out.extend_from_slice(s.as_bytes());
        }
        'x' => spec.pad(hex(&m.payload, false).as_bytes(), false, out),
        'X' => spec.pad(hex(&m.payload, true).as_bytes(), false, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ferrymq_client::{Properties, QoS};

    fn message(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: ferrymq_codec::TopicName::new(topic).unwrap(),
            payload: Bytes::copy_from_slice(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            dup: false,
            packet_id: ferrymq_client::PacketId::new(7),
            properties: Properties::from(vec![
                Property::ContentType("text/plain".try_into().unwrap()),
                Property::UserProperty("a".try_into().unwrap(), "b".try_into().unwrap()),
            ]),
        }
    }

    fn render(format: &str, m: &Message) -> String {
        let mut out = Vec::new();
        formatted(format, m, false, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn percent_codes() {
        let m = message("a/b", b"hi!");
        assert_eq!(render("%t %p q%q r%r l%l m%m", &m), "a/b hi! q1 r1 l3 m7");
        assert_eq!(render("%x %X", &m), "686921 686921");
        assert_eq!(render("%C|%P|%%", &m), "text/plain|a:b|%");
        assert_eq!(
            render("[%5t][%-5t][%05l][%.1p][%.1t]", &m),
            "[  a/b][a/b  ][00003][hi!][a]"
        );
        assert_eq!(render("\\t@@\\\\", &m), "\t@\\");
        assert!(render("%I", &m).ends_with("+0000"));
    }

    #[test]
    fn plain_and_verbose_like_mosquitto_sub() {
        let mut out = Vec::new();
        plain(&message("t", b"x"), true, true, &mut out);
        plain(&message("t", b""), true, true, &mut out);
        plain(&message("t", b""), false, true, &mut out);
        plain(&message("t", b"y"), false, false, &mut out);
        assert_eq!(out, b"t x\nt (null)\ny");
    }

    #[test]
    fn json_has_text_or_base64_payload() {
        let mut out = Vec::new();
        json_line(&message("t", b"hi"), &mut out);
        json_line(&message("t", b"\xff\x00"), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["payload"], "hi");
        assert_eq!(lines[0]["qos"], 1);
        assert_eq!(lines[0]["retain"], true);
        assert_eq!(lines[0]["properties"]["content_type"], "text/plain");
        assert_eq!(lines[0]["properties"]["user_properties"][0][1], "b");
        assert_eq!(lines[1]["payload_base64"], "/wA=");
    }
}
