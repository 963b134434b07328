//! The deadline clock: ticks the engine's epoch every [`TICK`] while filter calls are in
//! flight and parks when none has run for a while, so an idle gateway does not wake up
//! a thousand times a second.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

/// How often the clock ticks; deadlines are whole ticks.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks without a call in flight before the clock parks. Under load the clock keeps
/// ticking, so calls do not pay for waking it; after a quiet spell it sleeps.
const IDLE_TICKS: u32 = 100;

pub(crate) struct Clock {
    in_flight: AtomicUsize,
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Clock {
    /// Starts the clock thread of `engine`; it ends when the engine or the clock is dropped.
    pub fn start(engine: &wasmtime::Engine) -> std::io::Result<Arc<Clock>> {
        let clock =
            Arc::new(Clock { in_flight: AtomicUsize::new(0), parked: AtomicBool::new(false), thread: OnceLock::new() });
        let (engine, weak) = (engine.weak(), Arc::downgrade(&clock));
        let thread = std::thread::Builder::new().name("sluice-wasm-clock".into()).spawn(move || run(&engine, &weak))?;
        clock.thread.get_or_init(|| thread.thread().clone());
        Ok(clock)
    }

    /// Keeps the clock ticking until the guard is dropped: hold it across every call into a
    /// guest that has a deadline.
    pub fn ticking(&self) -> Ticking<'_> {
        self.in_flight.fetch_add(1, SeqCst);
        if self.parked.load(SeqCst) && self.parked.swap(false, SeqCst) {
            self.unpark();
        }
        Ticking(self)
    }

    fn unpark(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        // A parked clock thread wakes up, finds the clock gone and ends.
        self.unpark();
    }
}

/// A call in flight; see [`Clock::ticking`].
pub(crate) struct Ticking<'a>(&'a Clock);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

fn run(engine: &wasmtime::EngineWeak, clock: &Weak<Clock>) {
    let mut idle = 0;
    loop {
        let Some(strong) = clock.upgrade() else { return };
        if strong.in_flight.load(SeqCst) > 0 {
            idle = 0;
        } else {
            idle += 1;
        }
        if idle > IDLE_TICKS {
            idle = 0;
            strong.parked.store(true, SeqCst);
            // A call that started after the check above sees `parked` and unparks us.
            if strong.in_flight.load(SeqCst) == 0 {
                drop(strong);
                std::thread::park();
            } else {
                strong.parked.store(false, SeqCst);
            }
            continue;
        }
        drop(strong);
        let Some(engine) = engine.upgrade() else { return };
        engine.increment_epoch();
        drop(engine);
        std::thread::sleep(TICK);
    }
}
