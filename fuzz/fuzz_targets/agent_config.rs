//! See troop_tests::fuzz::agent_config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troop_tests::fuzz::agent_config(data));
