;; math v1: mul3(x) = x * 3
(module
  (func (export "init") (result i32) i32.const 0)
  (func (export "mul3") (param i64) (result i64)
    local.get 0 i64.const 3 i64.mul)
  (func (export "add") (param i64 i64) (result i64)
    local.get 0 local.get 1 i64.add)
  ;; spin(n): loops forever when n != 0 (for interruption tests)
  (func (export "spin") (param i32) (result i32)
    (block $done
      (loop $l
        local.get 0
        i32.eqz
        br_if $done
        br $l))
    i32.const 0)
  (func (export "boom") (param i32) (result i32)
    local.get 0 i32.eqz
    if unreachable end
    local.get 0)
  (memory (export "memory") 1)
  (func (export "peek") (param i32) (result i32)
    local.get 0 i32.load)
  (func (export "fdiv") (param f64 f64) (result f64)
    local.get 0 local.get 1 f64.div)
  (func (export "sum3") (param i32 i32 i32) (result i32)
    local.get 0 local.get 1 i32.add local.get 2 i32.add)
  (func (export "pair") (param i32) (result i32 i32)
    local.get 0 local.get 0))
