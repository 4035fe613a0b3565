#![no_main]
//! See keyorch::fuzzing::request_validation for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyorch::fuzzing::request_validation(data));
