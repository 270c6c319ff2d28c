;; math v2: mul3(x) = x * 3 + 1_000_000 (results tell v1 and v2 apart)
(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64)
    local.get 0 i64.const 3 i64.mul i64.const 1000000 i64.add)
  (func (export "add") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add)
  (func (export "spin") (param i32) (result i32)
    (block $done
      (loop $l
        local.get 0
        i32.eqz
        br_if $done
        br $l))
    i32.const 0))
