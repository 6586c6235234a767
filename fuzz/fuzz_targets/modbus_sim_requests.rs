#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| brume_fuzz::modbus_sim_requests(data));
