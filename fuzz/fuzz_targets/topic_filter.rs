//! Arbitrary bytes as topic names and filters: never a panic, and what is
//! accepted obeys the level rules of [MQTT-4.7.1].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferrymq_fuzz::oracle::topic(data);
});
