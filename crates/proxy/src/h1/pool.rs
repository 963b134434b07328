//! This thread's idle upstream connections, by endpoint. Requests and their connections never
//! leave the thread that accepted them, so the pool needs no lock.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Connection;

/// Idle connections kept per endpoint and thread (ingress-nginx keeps 320 per worker).
const MAX_IDLE: usize = 128;
/// Every this many check-ins, connections idle too long are closed on every endpoint, so that
/// endpoints no longer used do not keep theirs.
const SWEEP_EVERY: u32 = 1024;

struct Idle {
    conn: Connection,
    since: Instant,
}

type Pool = HashMap<SocketAddr, VecDeque<Idle>, foldhash::fast::RandomState>;

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    static CHECKINS: Cell<u32> = const { Cell::new(0) };
}

/// The most recently used idle connection to `endpoint` that is still usable.
pub fn checkout(endpoint: SocketAddr, idle: Duration) -> Option<Connection> {
    POOL.with_borrow_mut(|pool| {
        let conns = pool.get_mut(&endpoint)?;
        while let Some(Idle { conn, since }) = conns.pop_back() {
            if since.elapsed() >= idle {
                // The others have waited longer still.
                conns.clear();
                return None;
            }
            if conn.usable() {
                return Some(conn);
            }
        }
        None
    })
}

/// Keeps a connection whose response is complete for the next request to its endpoint.
pub fn checkin(conn: Connection, idle: Duration) {
    let now = Instant::now();
    let sweep = CHECKINS.with(|n| {
        n.set(n.get().wrapping_add(1));
        n.get() % SWEEP_EVERY == 0
    });
    POOL.with_borrow_mut(|pool| {
        if sweep {
            pool.retain(|_, conns| {
                conns.retain(|c| now.duration_since(c.since) < idle);
                !conns.is_empty()
            });
        }
        let conns = pool.entry(conn.endpoint).or_default();
        while conns.front().is_some_and(|oldest| now.duration_since(oldest.since) >= idle) || conns.len() >= MAX_IDLE {
            conns.pop_front();
        }
        conns.push_back(Idle { conn, since: now });
    });
}
