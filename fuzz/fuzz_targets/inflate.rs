#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsloop::fuzzing::inflate(data));
