;; An example cutover WebAssembly plugin. Loaded from this file its id is
;; `math`, so it provides the scalar functions `math.mul3` and `math.add`.
;;
;; Every export of shape (i32|i64|f32|f64)* -> (i32|i64|f32|f64) is a scalar
;; function applied row by row; `init` (optional, () -> i32) runs when a
;; generation initializes, and a non-zero result fails the load (the old
;; generation keeps serving).
(module
  ;; init: nothing to set up; 0 = success.
  (func (export "init") (result i32)
    i32.const 0)

  ;; mul3(x) = 3x
  (func (export "mul3") (param $x i64) (result i64)
    local.get $x
    i64.const 3
    i64.mul)

  ;; add(a, b) = a + b
  (func (export "add") (param $a i64) (param $b i64) (result i64)
    local.get $a
    local.get $b
    i64.add))
