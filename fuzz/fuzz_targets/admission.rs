//! See troop_tests::fuzz::admission.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troop_tests::fuzz::admission(data));
