//! What more than one part of the control plane uses: the catalog they share, the labels that
//! mark ConfigMaps for Sluice, and the stamp that tells a file changed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_config::Catalog;

/// The label that marks a ConfigMap holding a plugin module (`sluice.dev/plugin=NAME`).
pub const PLUGIN_LABEL: &str = "sluice.dev/plugin";
/// The label that marks a ConfigMap an Ingress's `custom-headers` annotation may name.
pub const CUSTOM_HEADERS_LABEL: &str = "sluice.dev/custom-headers";

/// What tells a file changed without reading it: an atomic replace changes the inode, an
/// in-place write the modification time or length.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct Stamp {
    inode: u64,
    modified_ns: i128,
    len: u64,
}

impl Stamp {
    /// The stamp of the file at `path`, `None` if it cannot be read.
    pub(crate) fn read(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|meta| Stamp::of(&meta))
    }

    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            inode: meta.ino(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        }
    }
}

/// The one [`Catalog`]: the sources change it, publishing translates it, the admission webhook
/// reads it. Held only for as long as one of them takes.
#[derive(Clone, Default)]
pub struct SharedCatalog(Arc<Mutex<Catalog>>);

impl SharedCatalog {
    /// The catalog, locked. A panic while it was held (reported where it happened) leaves
    /// whatever it had done, which the next change and translation build on.
    pub fn lock(&self) -> MutexGuard<'_, Catalog> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
