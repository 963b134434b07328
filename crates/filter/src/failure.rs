//! Why a filter did not run to completion, classified from what the store recorded rather than
//! from error text.

use std::fmt;
use std::sync::Arc;

use wasmtime::ResourceLimiter;

/// Why a filter did not run to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The call ran past its deadline.
    Timeout,
    /// The instance tried to grow its memory past the cap.
    Memory,
    /// The guest trapped (a panic, an unreachable, a bad memory access).
    Trap,
    /// The plugin is missing, failed to load, or the configuration was rejected.
    Unavailable,
    /// The filter answered with an invalid status or header.
    InvalidResponse,
}

impl FailureKind {
    /// Classifies an error from a call into a guest whose store's limiter is `limiter`.
    pub(crate) fn of(error: &wasmtime::Error, limiter: &MemoryCap) -> Self {
        if limiter.refused {
            FailureKind::Memory
        } else if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            FailureKind::Timeout
        } else {
            FailureKind::Trap
        }
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Trap => "trap",
            FailureKind::Unavailable => "unavailable",
            FailureKind::InvalidResponse => "invalid_response",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Timeout => "exceeded its deadline",
            FailureKind::Memory => "exceeded its memory cap",
            FailureKind::Trap => "trapped",
            FailureKind::Unavailable => "is unavailable",
            FailureKind::InvalidResponse => "answered with an invalid response",
        })
    }
}

/// A filter that failed for one request.
#[derive(Debug, Clone)]
pub struct FilterFailure {
    pub plugin: Arc<str>,
    pub kind: FailureKind,
    pub detail: String,
}

impl FilterFailure {
    pub(crate) fn new(plugin: &Arc<str>, kind: FailureKind, detail: impl Into<String>) -> Self {
        Self { plugin: plugin.clone(), kind, detail: detail.into() }
    }

    /// A failed call into a guest whose store's limiter is `limiter`.
    pub(crate) fn of(plugin: &Arc<str>, error: &wasmtime::Error, limiter: &MemoryCap) -> Self {
        // The root cause alone: wasmtime's context adds a backtrace of guest frames.
        Self::new(plugin, FailureKind::of(error, limiter), error.root_cause().to_string())
    }
}

impl fmt::Display for FilterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter {} {}: {}", self.plugin, self.kind, self.detail)
    }
}

/// A store's resource limiter: caps linear memory and remembers that it refused, so a failure
/// is classified as a memory overrun from that fact.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    cap: usize,
    refused: bool,
}

impl MemoryCap {
    pub fn new(cap: usize) -> Self {
        Self { cap, refused: false }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = true;
            // Trapping at once stops the guest where it asked; a refused `memory.grow` would
            // only make most guests abort a little later.
            wasmtime::bail!("memory cap of {} bytes reached (asked for {desired})", self.cap);
        }
        // Past the module's own maximum, `memory.grow` fails as the guest declared it would.
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Below the cap, but the host could not provide it: a memory failure all the same.
        self.refused = true;
        Err(error.context("growing memory failed"))
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}
