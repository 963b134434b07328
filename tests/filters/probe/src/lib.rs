//! A filter whose configuration picks what it does, so that one module covers the tests:
//! change headers and path, answer immediately, choose the endpoint, carry state to the
//! response phase, count the requests an instance served, or misbehave.
use std::cell::Cell;

use serde::Deserialize;
use sluice_sdk::{Action, Filter, LogLevel, OnRequest, OnResponse, Request, Response, log, respond, store};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Appended to the request's `x-chain` header; the response phase appends it to
    /// `x-chain-response` from the state kept in the request phase.
    name: String,
    set: Vec<(String, String)>,
    remove: Vec<String>,
    /// Put in front of the path.
    prefix: Option<String>,
    /// Answer with this status (and `body`) instead of forwarding.
    respond: Option<u16>,
    body: String,
    /// Send the request to the endpoint whose index this header holds.
    pick: Option<String>,
    /// Tell the client which endpoint served it (`x-served-by`).
    served: bool,
    /// Tell the client how many requests this instance has seen (`x-instance-requests`).
    count: bool,
    /// Misbehave: `loop`, `bomb` (allocate without end) or `trap`.
    fail: Option<String>,
    /// Reject this configuration when it is validated.
    reject: bool,
    /// Ask not to be called for the response phase.
    skip_response: bool,
    /// Read this request header (what reading one header costs).
    read: Option<String>,
    /// Read every request header (what reading them all costs).
    read_all: bool,
    /// Print this to stdout and stderr in the request phase.
    print: Option<String>,
    /// Count the requests of every instance in the shared store under this key, with
    /// compare-and-swap, and tell the upstream the count (`x-tally`).
    tally: Option<String>,
}

thread_local! {
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
}

struct Probe;

impl Filter for Probe {
    type Config = Config;

    fn parse_config(config: &str) -> Result<Config, String> {
        let config: Config = match config {
            "null" => Config::default(),
            text => serde_json::from_str(text).map_err(|e| e.to_string())?,
        };
        if config.reject {
            return Err("this configuration is rejected on purpose".into());
        }
        Ok(config)
    }
}

impl OnRequest for Probe {
    fn on_request(config: &Config, request: &Request) -> Action {
        match config.fail.as_deref() {
            Some("loop") =>
            {
                #[allow(clippy::empty_loop)]
                loop {}
            }
            Some("bomb") => {
                // Grows memory without touching it, so the cap trips before the deadline.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(Vec::with_capacity(1 << 20)));
                }
            }
            Some("trap") => panic!("asked to trap"),
            _ => {}
        }
        if let Some(text) = &config.print {
            println!("{text} on stdout");
            eprintln!("{text} on stderr");
        }
        if let Some(name) = &config.read {
            std::hint::black_box(request.header(name));
        }
        if config.read_all {
            std::hint::black_box(request.headers());
        }
        let seen = REQUESTS.with(|r| r.get() + 1);
        REQUESTS.with(|r| r.set(seen));
        if !config.name.is_empty() {
            request.add_header("x-chain", &config.name).unwrap();
            request.set_state(config.name.as_bytes());
        }
        for (name, value) in &config.set {
            request.set_header(name, value).unwrap();
        }
        for name in &config.remove {
            request.remove_header(name);
        }
        if let Some(prefix) = &config.prefix {
            request.set_path(&format!("{prefix}{}", request.path())).unwrap();
        }
        if let Some(header) = &config.pick
            && let Some(index) = request.header(header).and_then(|v| v.parse().ok())
        {
            request.choose_endpoint(index).unwrap();
        }
        if config.count {
            request.set_header("x-instance-requests", &seen.to_string()).unwrap();
        }
        if config.skip_response {
            request.skip_response();
        }
        if let Some(key) = &config.tally {
            request.set_header("x-tally", &tally(key).to_string()).unwrap();
        }
        if let Some(status) = config.respond {
            log(LogLevel::Info, &format!("answering {status} for {}", request.path()));
            let route = request.route();
            return respond(status, &[("x-route", &route.ingress)], &config.body);
        }
        Action::Continue
    }
}

/// Adds one to the count under `key` in the shared store; the new count.
fn tally(key: &str) -> u64 {
    loop {
        let current = store::get(key);
        let count = current.as_ref().map_or(0, |entry| String::from_utf8_lossy(&entry.value).parse().unwrap()) + 1;
        let version = current.map_or(0, |entry| entry.version);
        match store::set(key, count.to_string().as_bytes(), Some(version), None) {
            Ok(_) => return count,
            Err(store::WriteError::Conflict(_)) => continue,
            Err(store::WriteError::TooLarge) => unreachable!("a count is small"),
        }
    }
}

impl OnResponse for Probe {
    fn on_response(config: &Config, response: &Response) {
        response.set_header("x-filter", "probe").unwrap();
        if let Some(state) = response.state() {
            response.add_header("x-chain-response", &String::from_utf8_lossy(&state)).unwrap();
        }
        if config.served {
            let served = response.endpoint().unwrap_or_else(|| "none".into());
            response.set_header("x-served-by", &served).unwrap();
        }
        if config.count {
            let seen = REQUESTS.with(Cell::get);
            response.set_header("x-instance-requests", &seen.to_string()).unwrap();
        }
    }
}

sluice_sdk::filter!(Probe);
