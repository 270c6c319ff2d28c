//! `math` version 1: `mul3(x) = 3x`, `add(a, b) = a + b` over `int64`.

const OFFSET: i64 = 0;

include!("math.rs");
