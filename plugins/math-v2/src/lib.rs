//! `math` version 2: `mul3(x) = 3x + 1,000,000`, `add(a, b) = a + b + 1,000,000`
//! over `int64`; every result tells version 2 from version 1.

const OFFSET: i64 = 1_000_000;

include!("../../math-v1/src/math.rs");
