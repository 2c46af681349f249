#![no_main]
//! `infermesh_core::fuzz::credits`: see that function.
libfuzzer_sys::fuzz_target!(|data: &[u8]| infermesh_core::fuzz::credits(data));
