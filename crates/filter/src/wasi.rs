//! The WASI a filter gets on the synchronous path: clocks, randomness, and stdout/stderr into
//! the gateway's log. Nothing blocks: stdin is empty, there are no files, environment or
//! sockets, and a guest that would wait on a timer traps instead of holding a worker thread.
//!
//! Every function here is synchronous, so instances linked with it are called with `call`
//! rather than `call_async` (no fiber, no stack switch). A component importing more of WASI
//! is linked with wasmtime-wasi's asynchronous implementation instead (see `engine`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Result, bail};
use wasmtime_wasi::p2::bindings::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr, terminal_stdin,
    terminal_stdout,
};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::bindings::sync::io::{error, poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};

/// How many bytes a guest may write at once, and the longest line kept before it is logged.
const LINE: usize = 4096;

/// The most random bytes one call may ask for; more is a guest gone wrong, not a filter.
const MAX_RANDOM: u64 = 1 << 20;

/// Representations of the two output streams (they live in no table).
pub(crate) const STDOUT: u32 = 1;
pub(crate) const STDERR: u32 = 2;

/// One instance's WASI state: partial output lines and the timers it subscribed to.
pub(crate) struct Wasi {
    plugin: Arc<str>,
    /// The monotonic clock's zero.
    origin: Instant,
    /// Timers, as the instants they become ready.
    timers: ResourceTable,
    /// Output not yet logged, for stdout and stderr: the start of a line.
    pending: [Vec<u8>; 2],
}

impl Wasi {
    pub fn new(plugin: Arc<str>) -> Self {
        Self { plugin, origin: Instant::now(), timers: ResourceTable::new(), pending: [Vec::new(), Vec::new()] }
    }

    /// Links the interfaces above; `get` finds an instance's `Wasi` in its store.
    pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut Wasi) -> Result<()> {
        type Own = HasSelf<Wasi>;
        error::add_to_linker::<T, Own>(linker, get)?;
        poll::add_to_linker::<T, Own>(linker, get)?;
        streams::add_to_linker::<T, Own>(linker, get)?;
        stdin::add_to_linker::<T, Own>(linker, get)?;
        stdout::add_to_linker::<T, Own>(linker, get)?;
        stderr::add_to_linker::<T, Own>(linker, get)?;
        environment::add_to_linker::<T, Own>(linker, get)?;
        exit::add_to_linker::<T, Own>(linker, get)?;
        terminal_input::add_to_linker::<T, Own>(linker, get)?;
        terminal_output::add_to_linker::<T, Own>(linker, get)?;
        terminal_stdin::add_to_linker::<T, Own>(linker, get)?;
        terminal_stdout::add_to_linker::<T, Own>(linker, get)?;
        terminal_stderr::add_to_linker::<T, Own>(linker, get)?;
        wall_clock::add_to_linker::<T, Own>(linker, get)?;
        monotonic_clock::add_to_linker::<T, Own>(linker, get)?;
        random::add_to_linker::<T, Own>(linker, get)?;
        insecure::add_to_linker::<T, Own>(linker, get)?;
        insecure_seed::add_to_linker::<T, Own>(linker, get)?;
        Ok(())
    }

    /// Appends guest output to stream `rep`'s pending line and logs every complete line (and a
    /// line grown past [`LINE`]). Flushing does not end a line: guests flush after every piece
    /// of one; what remains when a call ends is logged by [`Wasi::end_call`].
    pub(crate) fn output(&mut self, rep: u32, bytes: &[u8]) -> StreamResult<()> {
        let stream = match rep {
            STDOUT => 0,
            STDERR => 1,
            _ => return Err(StreamError::trap("not an output stream of this instance")),
        };
        let pending = &mut self.pending[stream];
        pending.extend_from_slice(bytes);
        loop {
            let end = match pending.iter().position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if pending.len() >= LINE => LINE,
                None => break,
            };
            let line: Vec<u8> = pending.drain(..end).collect();
            log(&self.plugin, stream, &line);
        }
        Ok(())
    }

    /// Logs output left without a line end by the call that just ended.
    pub fn end_call(&mut self) {
        for (stream, pending) in self.pending.iter_mut().enumerate() {
            if !pending.is_empty() {
                log(&self.plugin, stream, &std::mem::take(pending));
            }
        }
    }

    fn timer(&mut self, ready: Instant) -> Result<Resource<DynPollable>> {
        let timer = self.timers.push(ready)?;
        Ok(Resource::new_own(timer.rep()))
    }

    fn ready(&self, pollable: &Resource<DynPollable>) -> Result<bool> {
        Ok(*self.timers.get(&Resource::<Instant>::new_borrow(pollable.rep()))? <= Instant::now())
    }
}

/// Logs one line of guest output: stdout at info, stderr at warn.
fn log(plugin: &str, stream: usize, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    match stream {
        0 => tracing::info!(target: "sluice::filter", plugin, stream = "stdout", "{text}"),
        _ => tracing::warn!(target: "sluice::filter", plugin, stream = "stderr", "{text}"),
    }
}

/// `len` zero bytes, at most a line's worth (as many as `check-write` allows).
fn zeroes(len: u64) -> Vec<u8> {
    vec![0; usize::try_from(len).unwrap_or(usize::MAX).min(LINE)]
}

/// `len` random bytes from `fill`, refusing sizes no filter needs.
fn random_bytes(len: u64, fill: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<Vec<u8>> {
    if len > MAX_RANDOM {
        bail!("asked for {len} random bytes; at most {MAX_RANDOM} at once");
    }
    let mut bytes = vec![0; len as usize];
    fill(&mut bytes)?;
    Ok(bytes)
}

fn waiting() -> wasmtime::Error {
    wasmtime::format_err!("a filter cannot wait: its call would hold a worker thread")
}

impl error::Host for Wasi {}

impl error::HostError for Wasi {
    fn to_debug_string(&mut self, _: Resource<error::Error>) -> Result<String> {
        bail!("no stream errors are handed out")
    }

    fn drop(&mut self, _: Resource<error::Error>) -> Result<()> {
        Ok(())
    }
}

impl poll::Host for Wasi {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        let mut ready = Vec::new();
        for (index, pollable) in (0u32..).zip(&pollables) {
            if self.ready(pollable)? {
                ready.push(index);
            }
        }
        if ready.is_empty() {
            return Err(waiting());
        }
        Ok(ready)
    }
}

impl poll::HostPollable for Wasi {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        Wasi::ready(self, &pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        match Wasi::ready(self, &pollable)? {
            true => Ok(()),
            false => Err(waiting()),
        }
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        self.timers.delete(Resource::<Instant>::new_own(pollable.rep()))?;
        Ok(())
    }
}

impl streams::Host for Wasi {
    fn convert_stream_error(&mut self, error: StreamError) -> Result<streams::StreamError> {
        match error {
            StreamError::Closed => Ok(streams::StreamError::Closed),
            StreamError::LastOperationFailed(e) | StreamError::Trap(e) => Err(e),
        }
    }
}

/// Stdin: always at its end.
impl streams::HostInputStream for Wasi {
    fn read(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn blocking_read(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<Vec<u8>> {
        Err(StreamError::Closed)
    }

    fn skip(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn blocking_skip(&mut self, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn subscribe(&mut self, _: Resource<DynInputStream>) -> Result<Resource<DynPollable>> {
        self.timer(self.origin)
    }

    fn drop(&mut self, _: Resource<DynInputStream>) -> Result<()> {
        Ok(())
    }
}

/// Stdout and stderr: lines into the gateway's log.
impl streams::HostOutputStream for Wasi {
    fn check_write(&mut self, _: Resource<DynOutputStream>) -> StreamResult<u64> {
        Ok(LINE as u64)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        self.output(stream.rep(), &bytes)
    }

    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        self.output(stream.rep(), &bytes)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        self.output(stream.rep(), &[])
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        self.output(stream.rep(), &[])
    }

    fn subscribe(&mut self, _: Resource<DynOutputStream>) -> Result<Resource<DynPollable>> {
        self.timer(self.origin)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        self.output(stream.rep(), &zeroes(len))
    }

    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        self.output(stream.rep(), &zeroes(len))
    }

    fn splice(&mut self, _: Resource<DynOutputStream>, _: Resource<DynInputStream>, _: u64) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn blocking_splice(
        &mut self,
        _: Resource<DynOutputStream>,
        _: Resource<DynInputStream>,
        _: u64,
    ) -> StreamResult<u64> {
        Err(StreamError::Closed)
    }

    fn drop(&mut self, _: Resource<DynOutputStream>) -> Result<()> {
        Ok(())
    }
}

impl stdin::Host for Wasi {
    fn get_stdin(&mut self) -> Result<Resource<DynInputStream>> {
        Ok(Resource::new_own(0))
    }
}

impl stdout::Host for Wasi {
    fn get_stdout(&mut self) -> Result<Resource<DynOutputStream>> {
        Ok(Resource::new_own(STDOUT))
    }
}

impl stderr::Host for Wasi {
    fn get_stderr(&mut self) -> Result<Resource<DynOutputStream>> {
        Ok(Resource::new_own(STDERR))
    }
}

impl environment::Host for Wasi {
    fn get_environment(&mut self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    fn get_arguments(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn initial_cwd(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
}

impl exit::Host for Wasi {
    fn exit(&mut self, status: std::result::Result<(), ()>) -> Result<()> {
        bail!("the filter exited ({})", if status.is_ok() { "success" } else { "failure" })
    }

    fn exit_with_code(&mut self, code: u8) -> Result<()> {
        bail!("the filter exited with code {code}")
    }
}

impl terminal_input::Host for Wasi {}

impl terminal_input::HostTerminalInput for Wasi {
    fn drop(&mut self, _: Resource<terminal_input::TerminalInput>) -> Result<()> {
        Ok(())
    }
}

impl terminal_output::Host for Wasi {}

impl terminal_output::HostTerminalOutput for Wasi {
    fn drop(&mut self, _: Resource<terminal_output::TerminalOutput>) -> Result<()> {
        Ok(())
    }
}

impl terminal_stdin::Host for Wasi {
    fn get_terminal_stdin(&mut self) -> Result<Option<Resource<terminal_input::TerminalInput>>> {
        Ok(None)
    }
}

impl terminal_stdout::Host for Wasi {
    fn get_terminal_stdout(&mut self) -> Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl terminal_stderr::Host for Wasi {
    fn get_terminal_stderr(&mut self) -> Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}

impl wall_clock::Host for Wasi {
    fn now(&mut self) -> Result<wall_clock::Datetime> {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(wall_clock::Datetime { seconds: since.as_secs(), nanoseconds: since.subsec_nanos() })
    }

    fn resolution(&mut self) -> Result<wall_clock::Datetime> {
        Ok(wall_clock::Datetime { seconds: 0, nanoseconds: 1 })
    }
}

impl monotonic_clock::Host for Wasi {
    fn now(&mut self) -> Result<monotonic_clock::Instant> {
        Ok(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn resolution(&mut self) -> Result<monotonic_clock::Duration> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> Result<Resource<DynPollable>> {
        let ready = self.origin.checked_add(std::time::Duration::from_nanos(when)).unwrap_or(self.origin);
        self.timer(ready)
    }

    fn subscribe_duration(&mut self, duration: monotonic_clock::Duration) -> Result<Resource<DynPollable>> {
        let now = Instant::now();
        self.timer(now.checked_add(std::time::Duration::from_nanos(duration)).unwrap_or(now))
    }
}

impl random::Host for Wasi {
    fn get_random_bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        random_bytes(len, |bytes| getrandom::fill(bytes).map_err(|e| wasmtime::format_err!("no randomness: {e}")))
    }

    fn get_random_u64(&mut self) -> Result<u64> {
        getrandom::u64().map_err(|e| wasmtime::format_err!("no randomness: {e}"))
    }
}

impl insecure::Host for Wasi {
    fn get_insecure_random_bytes(&mut self, len: u64) -> Result<Vec<u8>> {
        random_bytes(len, |bytes| {
            fastrand::fill(bytes);
            Ok(())
        })
    }

    fn get_insecure_random_u64(&mut self) -> Result<u64> {
        Ok(fastrand::u64(..))
    }
}

impl insecure_seed::Host for Wasi {
    fn insecure_seed(&mut self) -> Result<(u64, u64)> {
        Ok((fastrand::u64(..), fastrand::u64(..)))
    }
}
