;; A component importing an interface Tern does not provide
;; (wasi:blobstore), beside one it does (wasi:keyvalue/store): deploy must
;; refuse it and name what is missing.
(component
  (import "wasi:blobstore/blobstore@0.2.0-draft" (instance
    (export "container-exists" (func (param "name" string) (result bool)))
  ))
)
