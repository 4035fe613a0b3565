#![no_main]
//! See keyorch::fuzzing::stored_records for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyorch::fuzzing::stored_records(data));
