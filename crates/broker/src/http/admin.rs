//! The admin API under `/api/v1/` (authentication is checked before these
//! run, in [`super::handle`]): JSON views of clients, subscriptions and
//! retained messages, and disconnecting a client.
//!
//! Connected sessions belong to their connection tasks, which keep no lock;
//! what is shown comes from the registry's record written at CONNECT, the
//! session's shared mailbox and the topic index. A disconnect goes through
//! the registry: it marks the slot and cancels the connection's `kick`
//! token, and the task closes with "administrative action" (MQTT 5: a
//! DISCONNECT with 0x98).

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{error, json, Reply};
use crate::broker::Broker;
use crate::census::subscriptions_by_session;
use crate::registry::SessionView;

/// Items a list returns unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 1000;
/// The most a list returns in one response.
const MAX_LIMIT: usize = 100_000;

/// Dispatches `route` (the path after `/api/v1/`).
pub fn route(broker: &Broker, method: &Method, route: &str, query: &str) -> Reply {
    let limit = match limit(query) {
        Ok(limit) => limit,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let segments: Vec<&str> = route.split('/').collect();
    match segments.as_slice() {
        ["clients"] => get_only(method, || clients(broker, limit)),
        ["clients", id] => {
            let Some(id) = percent_decode(id) else {
                return error(StatusCode::BAD_REQUEST, "bad percent-encoding in client id");
            };
            match *method {
                Method::GET | Method::HEAD => client(broker, &id),
                Method::DELETE => disconnect(broker, &id),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
            }
        }
        ["clients", id, "disconnect"] => {
            let Some(id) = percent_decode(id) else {
                return error(StatusCode::BAD_REQUEST, "bad percent-encoding in client id");
            };
            if method == Method::POST {
                disconnect(broker, &id)
            } else {
                error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
            }
        }
        ["subscriptions"] => get_only(method, || subscriptions(broker, limit)),
        ["retained"] => get_only(method, || retained(broker, limit)),
        _ => error(StatusCode::NOT_FOUND, "no such resource"),
    }
}

fn get_only(method: &Method, f: impl FnOnce() -> Reply) -> Reply {
    if method == Method::GET || method == Method::HEAD {
        f()
    } else {
        error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
    }
}

/// `limit=N` from the query string.
fn limit(query: &str) -> Result<usize, String> {
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("limit=") {
            return value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("limit must be a number from 1 to {MAX_LIMIT}"));
        }
    }
    Ok(DEFAULT_LIMIT)
}

/// Decodes `%XX` escapes (a client id may hold `/`, spaces, anything).
/// `None` if an escape is malformed or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One session as JSON.
fn client_json(view: &SessionView, subscriptions: Option<&Vec<(String, u8)>>) -> Value {
    let (queued, queued_bytes) = view.session.as_ref().map_or((0, 0), |s| s.mailbox.depth());
    let high_water = view.session.as_ref().map_or(0, |s| s.mailbox.high_water());
    let subscriptions: Vec<Value> = subscriptions
        .map(|subs| {
            subs.iter()
                .map(|(filter, qos)| json!({ "filter": filter, "qos": qos }))
                .collect()
        })
        .unwrap_or_default();
    let mut value = json!({
        "client_id": &*view.client_id,
        "connected": view.connection.is_some(),
        "subscriptions": subscriptions,
        "queued": queued,
        "queued_bytes": queued_bytes,
        "queued_high_water": high_water,
    });
    if let (Some(c), Some(object)) = (&view.connection, value.as_object_mut()) {
        object.insert(
            "address".into(),
            c.peer.map_or(Value::Null, |p| p.to_string().into()),
        );
        object.insert("protocol".into(), c.protocol.to_string().into());
        object.insert("keep_alive".into(), c.keep_alive.into());
        object.insert(
            "username".into(),
            c.username.as_deref().map_or(Value::Null, Value::from),
        );
        object.insert("connected_at".into(), c.connected_at.into());
    }
    if let Some(object) = value.as_object_mut() {
        if let Some(expiry) = view.expiry_interval {
            // u32::MAX: a 3.x persistent session, which never expires.
            let expiry = (expiry != u32::MAX).then_some(expiry);
            object.insert("session_expiry_interval".into(), expiry.into());
        }
        if let Some(inflight) = view.inflight {
            object.insert("inflight".into(), inflight.into());
        }
    }
    value
}

fn clients(broker: &Broker, limit: usize) -> Reply {
    let mut views = broker.registry.snapshot();
    views.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let total = views.len();
    let subs = subscriptions_by_session(broker);
    let list: Vec<Value> = views
        .iter()
        .take(limit)
        .map(|v| client_json(v, v.session.as_ref().and_then(|s| subs.get(&s.id))))
        .collect();
    json(StatusCode::OK, &json!({ "total": total, "clients": list }))
}

fn client(broker: &Broker, id: &str) -> Reply {
    let Some(view) = broker.registry.view(id) else {
        return error(StatusCode::NOT_FOUND, "no such client");
    };
    let subs = subscriptions_by_session(broker);
    let subs = view.session.as_ref().and_then(|s| subs.get(&s.id));
    json(StatusCode::OK, &client_json(&view, subs))
}

fn disconnect(broker: &Broker, id: &str) -> Reply {
    if broker.registry.kick_admin(id) {
        tracing::info!(
            client_id = id,
            "disconnecting a client at an administrator's request"
        );
        json(
            StatusCode::OK,
            &json!({ "client_id": id, "disconnected": true }),
        )
    } else if broker.registry.contains(id) {
        error(
            StatusCode::CONFLICT,
            "the client is not connected (its session is parked)",
        )
    } else {
        error(StatusCode::NOT_FOUND, "no such client")
    }
}

fn subscriptions(broker: &Broker, limit: usize) -> Reply {
    let mut all: Vec<(String, String, u8, Option<String>)> = Vec::new();
    broker.router.for_each(|filter, sub| {
        all.push((
            sub.session.client_id.to_string(),
            filter.to_string(),
            sub.options.qos as u8,
            sub.share.as_ref().map(|g| g.name.to_string()),
        ));
    });
    all.sort();
    let total = all.len();
    let list: Vec<Value> = all
        .into_iter()
        .take(limit)
        .map(|(client_id, filter, qos, group)| {
            json!({ "client_id": client_id, "filter": filter, "qos": qos, "share_group": group })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({ "total": total, "subscriptions": list }),
    )
}

fn retained(broker: &Broker, limit: usize) -> Reply {
    let all = broker.retained.all();
    let total = all.len();
    let list: Vec<Value> = all
        .iter()
        .take(limit)
        .map(|m| {
            json!({
                "topic": m.topic.to_string(),
                "qos": m.qos as u8,
                "payload_bytes": m.payload.len(),
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "total": total, "retained": list }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn limits() {
        assert_eq!(limit(""), Ok(DEFAULT_LIMIT));
        assert_eq!(limit("limit=5"), Ok(5));
        assert!(limit("limit=0").is_err());
        assert!(limit("limit=x").is_err());
    }
}
