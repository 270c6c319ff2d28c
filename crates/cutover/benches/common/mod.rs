//! What the benchmarks (and the `spread_lookups` example) share: the plugin
//! value every candidate serves, and the shuffle of their lookup keys.

use std::sync::Arc;

/// The value behind every pointer: the deref reads `id` (32 bytes behind an
/// `Arc`).
pub struct Plugin {
    pub id: u64,
    _payload: [u64; 3],
}

pub fn plugin(id: u64) -> Arc<Plugin> {
    Arc::new(Plugin { id, _payload: [id; 3] })
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Shuffle `items` in place (Fisher–Yates), the same way every run: every
/// benchmark that looks keys up in "a shuffled order" uses this one.
pub fn shuffle<T>(items: &mut [T]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}
