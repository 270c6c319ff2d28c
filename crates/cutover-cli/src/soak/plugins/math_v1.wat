;; The soak's default plugin, version 1: mul3(x) = 3x.
(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param $x i64) (result i64)
    local.get $x
    i64.const 3
    i64.mul))
