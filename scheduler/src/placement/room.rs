//! What a node's loaded functions cost its memory budget, as placement
//! sees it: each function's own part, and each component's compiled code
//! once, however many functions load it (the worker shares it).

use super::Want;
use std::collections::BTreeMap;
use tern_protocol::LOADED_FUNCTION_BYTES;

#[derive(Debug, Clone)]
pub(super) struct Room {
    budget: u64,
    functions: u64,
    /// Component digest → (its code's bytes, functions loading it).
    code: BTreeMap<String, (u64, u64)>,
}

impl Room {
    pub(super) fn new(budget: u64) -> Self {
        Room { budget, functions: 0, code: BTreeMap::new() }
    }

    pub(super) fn charged(&self) -> u64 {
        self.functions * LOADED_FUNCTION_BYTES + self.code.values().map(|(bytes, _)| bytes).sum::<u64>()
    }

    pub(super) fn free(&self) -> u64 {
        self.budget.saturating_sub(self.charged())
    }

    /// Whether `w` can be loaded here and one instance of it run.
    pub(super) fn fits(&self, w: &Want) -> bool {
        let code = if self.code.contains_key(&w.digest) { 0 } else { w.code_bytes };
        LOADED_FUNCTION_BYTES + code + ((w.memory_mib as u64) << 20) <= self.free()
    }

    pub(super) fn load(&mut self, w: &Want) {
        self.functions += 1;
        self.code.entry(w.digest.clone()).or_insert((w.code_bytes, 0)).1 += 1;
    }

    pub(super) fn unload(&mut self, w: &Want) {
        self.functions = self.functions.saturating_sub(1);
        if let Some((_, users)) = self.code.get_mut(&w.digest) {
            *users -= 1;
            if *users == 0 {
                self.code.remove(&w.digest);
            }
        }
    }
}
