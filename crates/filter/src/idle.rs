//! Idle instances kept per plugin load on one worker thread, for reuse without a lock.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::engine::Plugin;

/// Idle instances (`T`) of the plugin loads a thread has used, at most a given number per
/// load. Each instance kind keeps its own pool in a `thread_local`.
pub(crate) struct IdlePool<T> {
    loads: HashMap<u64, Idle<T>, foldhash::fast::RandomState>,
}

/// Idle instances of one plugin load.
struct Idle<T> {
    plugin: Weak<Plugin>,
    instances: Vec<T>,
}

impl<T> IdlePool<T> {
    pub fn new() -> Self {
        Self { loads: HashMap::default() }
    }

    /// An idle instance of `plugin`, if there is one.
    pub fn take(&mut self, plugin: &Plugin) -> Option<T> {
        self.loads.get_mut(&plugin.id)?.instances.pop()
    }

    /// Keeps `instance`, whose last call succeeded, unless `max` are kept already.
    pub fn keep(&mut self, plugin: &Arc<Plugin>, instance: T, max: usize) {
        if !self.loads.contains_key(&plugin.id) {
            // A new plugin load: forget the instances of loads no snapshot uses any more.
            self.loads.retain(|_, entry| entry.plugin.strong_count() > 0);
        }
        let entry = self
            .loads
            .entry(plugin.id)
            .or_insert_with(|| Idle { plugin: Arc::downgrade(plugin), instances: Vec::new() });
        if entry.instances.len() < max {
            entry.instances.push(instance);
        }
    }
}
