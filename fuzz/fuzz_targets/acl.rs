//! Fuzz target `acl`: the check `checks::acl` (fuzz/checks.rs says what it asserts).
#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::acl(data));
