//! See troop_tests::fuzz::coordinator_config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troop_tests::fuzz::coordinator_config(data));
