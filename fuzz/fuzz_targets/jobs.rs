#![no_main]
//! `infermesh_core::fuzz::jobs`: see that function.
libfuzzer_sys::fuzz_target!(|data: &[u8]| infermesh_core::fuzz::jobs(data));
