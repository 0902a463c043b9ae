//! A map bounded by the bytes of what it holds: the least recently used
//! entries go first when a new one would pass the budget.

use std::collections::HashMap;

pub(crate) struct ByteLru<V> {
    budget: usize,
    used: usize,
    clock: u64,
    entries: HashMap<String, Entry<V>>,
}

struct Entry<V> {
    value: V,
    bytes: usize,
    used_at: u64,
}

impl<V: Clone> ByteLru<V> {
    pub(crate) fn new(budget: usize) -> Self {
        ByteLru { budget, used: 0, clock: 0, entries: HashMap::new() }
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<V> {
        self.clock += 1;
        let e = self.entries.get_mut(key)?;
        e.used_at = self.clock;
        Some(e.value.clone())
    }

    /// Keeps `value` (of `bytes`), evicting the least recently used until it
    /// fits. One entry larger than the whole budget is still kept, alone.
    pub(crate) fn insert(&mut self, key: String, value: V, bytes: usize) {
        self.remove(&key);
        while self.used + bytes > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.used_at).map(|(k, _)| k.clone())
            else {
                break;
            };
            tracing::debug!(digest = %oldest, "evicting a compiled component from memory");
            self.remove(&oldest);
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.insert(key, Entry { value, bytes, used_at: self.clock });
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.used -= e.bytes;
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first() {
        let mut c = ByteLru::new(10);
        c.insert("a".into(), 1, 4);
        c.insert("b".into(), 2, 4);
        assert_eq!(c.get("a"), Some(1));
        c.insert("c".into(), 3, 4);
        assert_eq!((c.get("a"), c.get("b"), c.get("c")), (Some(1), None, Some(3)));
        c.insert("big".into(), 4, 50);
        assert_eq!(c.keys().collect::<Vec<_>>(), vec!["big"]);
        assert_eq!(c.used, 50);
    }
}
