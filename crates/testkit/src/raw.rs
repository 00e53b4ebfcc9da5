//! Hand-built packet bytes, written from the specification's field tables
//! without touching our encoder.

/// A whole packet: first byte, Remaining Length, body.
pub fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
pub fn string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// CONNECT for MQTT 3.1.1 with a client id, flags and keep-alive.
pub fn connect_v311(client_id: &str, flags: u8, keep_alive: u16) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(&string(client_id.as_bytes()));
    packet(0x10, &body)
}

/// CONNECT for MQTT 5 with a client id, flags, keep-alive and no properties.
pub fn connect_v5(client_id: &str, flags: u8, keep_alive: u16) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.push(5);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&string(client_id.as_bytes()));
    packet(0x10, &body)
}

/// PUBLISH for MQTT 3.1.1.
pub fn publish_v311(flags: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | flags, &body)
}

/// SUBSCRIBE for MQTT 3.1.1 with one filter.
pub fn subscribe_v311(packet_id: u16, filter: &[u8], options: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&string(filter));
    body.push(options);
    packet(0x82, &body)
}
