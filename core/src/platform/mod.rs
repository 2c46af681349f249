//! Everything that differs between the two homes of the core, behind one
//! set of names: native (tokio, TCP/QUIC/WebSocket/WebRTC-direct, mDNS)
//! and the browser (wasm-bindgen executor, WebSocket and WebRTC-direct
//! from `web-sys`). The rest of the crate is target-free.

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

#[cfg(target_arch = "wasm32")]
mod web;
#[cfg(target_arch = "wasm32")]
pub use web::*;

/// ML-KEM, from the implementation that suits the platform.
#[cfg(not(target_arch = "wasm32"))]
#[path = "mlkem_native.rs"]
pub(crate) mod mlkem;
#[cfg(target_arch = "wasm32")]
#[path = "mlkem_web.rs"]
pub(crate) mod mlkem;

/// A monotonic instant that works in browsers too.
pub use web_time::Instant;

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> u64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A future that completes after `duration`, on either platform.
pub fn sleep(duration: std::time::Duration) -> futures_timer::Delay {
    futures_timer::Delay::new(duration)
}
