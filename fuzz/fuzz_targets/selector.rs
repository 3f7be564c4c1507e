//! See troop_tests::fuzz::selector.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troop_tests::fuzz::selector(data));
