//! Event functions: `tern:function/event-handler` from `wit/`.
//!
//! The generated bindings are public so a function can name any of them;
//! most only need [`Event`] and [`crate::event_function!`].

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "event-function",
        pub_export_macro: true,
        default_bindings_module: "::tern_sdk::event::bindings",
    });
}

/// One delivery of an event: id, subject, data, headers, and which attempt
/// this is (1 first, 2 on the first retry, …).
pub use bindings::tern::function::types::Event;

impl Event {
    /// The data as UTF-8 text (lossy).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }

    /// The data parsed as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.data).map_err(|e| format!("event data is not the expected JSON: {e}"))
    }

    /// A header's value, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What an event handler may return: `()` (always acknowledged) or a
/// `Result` whose error asks for a retry.
pub trait IntoEventResult {
    fn into_event_result(self) -> Result<(), String>;
}

impl IntoEventResult for () {
    fn into_event_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> IntoEventResult for Result<(), E> {
    fn into_event_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Exports `handler` (a `fn(Event) -> Result<(), E>` or `fn(Event)`) as the
/// component's `tern:function/event-handler`.
#[macro_export]
macro_rules! event_function {
    ($handler:path) => {
        struct __TernEventFunction;

        impl $crate::event::bindings::exports::tern::function::event_handler::Guest for __TernEventFunction {
            fn handle(event: $crate::Event) -> ::core::result::Result<(), ::std::string::String> {
                $crate::event::IntoEventResult::into_event_result($handler(event))
            }
        }

        $crate::event::bindings::export!(__TernEventFunction with_types_in $crate::event::bindings);
    };
}
