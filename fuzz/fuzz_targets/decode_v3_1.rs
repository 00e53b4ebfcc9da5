//! Untrusted bytes as a stream on an MQTT V3_1 connection: decode packet after
//! packet, check that encode→decode is the identity for each one, and that
//! feeding the same bytes in arbitrary chunks decodes the same way.
#![no_main]

use ferrymq_codec::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrymq_fuzz::oracle::decode_stream(data, Protocol::V3_1);
});
