//! ML-KEM (FIPS 203) in the browser: RustCrypto's `ml-kem`, a fraction of
//! the size of `libcrux-ml-kem` in wasm (which the native build uses for
//! its AVX2 code; the native tests check the two agree byte for byte).
//! It lives in `infermesh-wasm-crypto`, which the size-optimised browser
//! build still compiles for speed.

pub(crate) use infermesh_wasm_crypto::{mlkem512, mlkem768, mlkem1024};
