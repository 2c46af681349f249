#![no_main]
//! `infermesh_core::fuzz::direct_frames`: see that function.
libfuzzer_sys::fuzz_target!(|data: &[u8]| infermesh_core::fuzz::direct_frames(data));
