;; An event function whose component holds three core modules, each with
;; its own linear memory. On every event it grows each memory by 100 MiB:
;; 300 MiB in all, under a `--memory` of 128 MiB that each memory alone
;; would fit. Tern must count the three together and refuse the growth.
(component
  ;; One memory that grows on request.
  (core module $Grower
    (memory (export "memory") 1)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0))))
  (core instance $a (instantiate $Grower))
  (core instance $b (instantiate $Grower))

  (core module $Main
    (import "a" "grow" (func $a_grow (param i32) (result i32)))
    (import "b" "grow" (func $b_grow (param i32) (result i32)))
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    ;; A bump allocator, for the event the host copies in.
    (func (export "realloc") (param i32 i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and
          (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $ptr) (local.get $size)))
      (block $fits
        (br_if $fits (i32.le_u (global.get $next) (i32.mul (memory.size) (i32.const 65536))))
        (br_if $fits
          (i32.ge_s
            (memory.grow (i32.add (i32.shr_u (global.get $next) (i32.const 16)) (i32.const 1)))
            (i32.const 0)))
        unreachable)
      (local.get $ptr))
    ;; handle(event) -> result<_, string>: the nine flat words of the event
    ;; record in, a pointer to the result out.
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (if (i32.lt_s (call $a_grow (i32.const 1600)) (i32.const 0)) (then unreachable))
      (if (i32.lt_s (call $b_grow (i32.const 1600)) (i32.const 0)) (then unreachable))
      (if (i32.lt_s (memory.grow (i32.const 1600)) (i32.const 0)) (then unreachable))
      ;; ok: discriminant 0 at address 0.
      (i32.store8 (i32.const 0) (i32.const 0))
      (i32.const 0)))
  (core instance $main (instantiate $Main (with "a" (instance $a)) (with "b" (instance $b))))

  (type $event (record
    (field "id" string)
    (field "subject" string)
    (field "data" (list u8))
    (field "headers" (list (tuple string string)))
    (field "attempt" u32)))
  (export $event-out "event" (type $event))
  (func $handle (param "event" $event-out) (result (result (error string)))
    (canon lift (core func $main "handle") (memory (core memory $main "memory")) (realloc (core func $main "realloc"))))
  (instance $handler
    (export "event" (type $event-out))
    (export "handle" (func $handle)))
  (export "tern:function/event-handler@0.1.0" (instance $handler))
)
