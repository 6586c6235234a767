#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brume_fuzz::mqtt_packets(data));
