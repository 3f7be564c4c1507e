//! See troop_tests::fuzz::campaign_file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| troop_tests::fuzz::campaign_file(data));
