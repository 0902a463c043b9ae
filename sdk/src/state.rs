//! Bindings for the `state` world in `wit/` (key-value, config, Tern's
//! revisions). Public so a function can reach any of them directly;
//! [`crate::kv`] and [`crate::config`] are the usual way in.

wit_bindgen::generate!({
    path: "wit",
    world: "state",
    default_bindings_module: "::tern_sdk::state",
    // The interfaces come from other packages (wasi:keyvalue, wasi:config,
    // tern:kv); generate them all here.
    generate_all,
});
