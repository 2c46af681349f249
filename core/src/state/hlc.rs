//! A hybrid logical clock packed in a `u64`: the high 48 bits are
//! milliseconds since the Unix epoch, the low 16 a counter. It never goes
//! backwards, stays close to wall-clock time, and after seeing a remote
//! timestamp it only issues later ones, so a device that catches up first
//! writes after what the mesh already holds.

/// Bits of the counter part.
const COUNTER_BITS: u32 = 16;

/// A hybrid logical clock.
#[derive(Clone, Debug, Default)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// Packs wall-clock milliseconds into a timestamp with counter 0.
    pub fn from_millis(ms: u64) -> u64 {
        ms << COUNTER_BITS
    }

    /// The wall-clock milliseconds of a timestamp.
    pub fn millis(timestamp: u64) -> u64 {
        timestamp >> COUNTER_BITS
    }

    /// A new timestamp, later than every one issued or observed so far.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        let wall = Self::from_millis(now_ms);
        self.last = if wall > self.last { wall } else { self.last + 1 };
        self.last
    }

    /// Takes a timestamp seen elsewhere into account.
    pub fn observe(&mut self, timestamp: u64) {
        self.last = self.last.max(timestamp);
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn monotonic_even_when_the_wall_clock_stalls_or_goes_back() {
        let mut c = Hlc::default();
        let a = c.tick(1_000);
        let b = c.tick(1_000);
        let d = c.tick(900);
        assert!(a < b && b < d);
        assert_eq!(Hlc::millis(a), 1_000);
        let e = c.tick(2_000);
        assert_eq!(e, Hlc::from_millis(2_000));
    }

    #[test]
    fn observing_a_later_timestamp_moves_the_clock_past_it() {
        let mut c = Hlc::default();
        c.tick(1_000);
        let remote = Hlc::from_millis(5_000) + 3;
        c.observe(remote);
        assert!(c.tick(1_001) > remote);
    }
}
