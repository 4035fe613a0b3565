#![no_main]
//! See keyorch::fuzzing::authority_rewriter for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyorch::fuzzing::authority_rewriter(data));
