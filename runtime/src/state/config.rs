//! `wasi:config/store`: the function's `--env` values and granted secrets.

use super::StateView;
use super::bindings::wasi::config::store::{Error, Host};

impl Host for StateView<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        Ok(Ok(self.state.config.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, Error>> {
        Ok(Ok(self.state.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}
