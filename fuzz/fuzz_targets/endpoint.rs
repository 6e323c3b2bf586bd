//! Fuzz target `endpoint`: the check `checks::endpoint` (fuzz/checks.rs says what it asserts).
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::endpoint(data));
