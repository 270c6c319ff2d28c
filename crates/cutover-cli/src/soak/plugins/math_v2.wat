;; The soak's default plugin, version 2: mul3(x) = 3x + 1000000, so every
;; result tells which version computed it.
(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param $x i64) (result i64)
    local.get $x
    i64.const 3
    i64.mul
    i64.const 1000000
    i64.add))
