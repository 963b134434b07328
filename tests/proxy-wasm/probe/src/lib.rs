//! A proxy-wasm filter built with the official Rust SDK, whose JSON configuration says what it
//! does, so one module covers the gateway's tests of the ABI.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Refuse this configuration (`proxy_on_configure` returns false).
    reject: bool,
    /// Request headers to set, then to remove.
    set_request: Vec<(String, String)>,
    remove_request: Vec<String>,
    /// Response headers to set.
    set_response: Vec<(String, String)>,
    /// Answer 403 to requests whose path starts with this.
    deny: Option<String>,
    /// Copy properties into `x-prop-*` request headers (and the status into a response header).
    properties: bool,
    /// Count requests in shared data (with compare-and-swap), into `x-count`.
    count: bool,
    /// Misbehave in the request phase: `loop`, `memory` or `trap`.
    hostile: Option<String>,
    /// Count requests in a counter of this name.
    metric: Option<String>,
    /// Replace the first string with the second in the whole request body (buffered: Pause
    /// until the end of the stream).
    rewrite_request: Option<(String, String)>,
    /// The same in the whole response body.
    rewrite_response: Option<(String, String)>,
    /// Upper-case every chunk of the request body as it streams (no Pause).
    upper_request: bool,
    /// Answer 403 from the request body phase if the whole body contains this.
    deny_body: Option<String>,
    /// Ask this Service (`SERVICE:PORT` or Istio's cluster name) with the request's path before
    /// letting a request go on: 200 lets it go on with `x-auth-pod` set from the answer,
    /// anything else (or no answer) is answered 403.
    auth: Option<String>,
    /// Replace upstream responses of this status with a 502 of the filter's own.
    replace_status: Option<u16>,
    /// Every this many milliseconds, count a tick in shared data under this key (in the root
    /// context's `proxy_on_tick`); responses carry the count in `x-ticks`.
    ticks: Option<(u64, String)>,
    /// Spin forever in every tick, after counting it.
    hostile_tick: bool,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: Rc::default() }) });
}}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else { return true };
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) if config.reject => {
                let _ = hostcalls::log(LogLevel::Warn, "configuration rejected as asked");
                false
            }
            Ok(config) => {
                if let Some((period, _)) = &config.ticks {
                    self.set_tick_period(Duration::from_millis(*period));
                }
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("invalid configuration: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some((_, key)) = &self.config.ticks {
            count(key);
        }
        if self.config.hostile_tick {
            spin();
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe { config: self.config.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    config: Rc<Config>,
}

impl Context for Probe {
    fn on_http_call_response(&mut self, _: u32, _: usize, body_size: usize, _: usize) {
        let status = self.get_http_call_response_header(":status");
        if status.as_deref() != Some("200") {
            let status = status.unwrap_or_else(|| "none".into());
            let body = format!("auth said {status}");
            self.send_http_response(403, vec![("x-denied-by", "pw-probe")], Some(body.as_bytes()));
            return;
        }
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let pod = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|answer| answer["pod"].as_str().map(str::to_owned))
            .unwrap_or_default();
        self.set_http_request_header("x-auth-pod", Some(&pod));
        self.resume_http_request();
    }
}

/// Spins until the host stops the call.
fn spin() -> ! {
    let mut spins = 0u64;
    loop {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }
}

/// Adds one to the number in shared data under `key`, with compare-and-swap; the new count.
fn count(key: &str) -> u64 {
    loop {
        let (value, cas) = hostcalls::get_shared_data(key).expect("shared data");
        let count = value.map_or(0, |v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0)) + 1;
        if hostcalls::set_shared_data(key, Some(count.to_string().as_bytes()), cas).is_ok() {
            return count;
        }
    }
}

fn text(property: Option<Vec<u8>>) -> String {
    property.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

fn number(property: Option<Vec<u8>>) -> String {
    match property.and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
        Some(bytes) => u64::from_le_bytes(bytes).to_string(),
        None => String::new(),
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.config.hostile.as_deref() {
            Some("loop") => spin(),
            Some("memory") => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            Some("trap") => panic!("a hostile filter"),
            _ => {}
        }
        if let Some(name) = &self.config.metric {
            let id = hostcalls::define_metric(MetricType::Counter, name).expect("a counter");
            hostcalls::increment_metric(id, 1).expect("counting");
        }
        let path = self.get_http_request_header(":path").unwrap_or_default();
        if let Some(auth) = &self.config.auth {
            let headers = vec![(":method", "GET"), (":path", path.as_str()), (":authority", "auth")];
            return match self.dispatch_http_call(auth, headers, None, vec![], Duration::from_secs(2)) {
                Ok(_) => Action::Pause,
                Err(status) => {
                    let body = format!("auth call refused: {status:?}");
                    self.send_http_response(500, vec![], Some(body.as_bytes()));
                    Action::Pause
                }
            };
        }
        if let Some(prefix) = &self.config.deny
            && path.starts_with(prefix.as_str())
        {
            self.send_http_response(403, vec![("x-denied-by", "pw-probe")], Some(b"denied by proxy-wasm"));
            return Action::Pause;
        }
        for (name, value) in &self.config.set_request {
            self.set_http_request_header(name, Some(value));
        }
        for name in &self.config.remove_request {
            self.set_http_request_header(name, None);
        }
        if self.config.properties {
            let headers = self.get_http_request_headers().len().to_string();
            self.add_http_request_header("x-header-count", &headers);
            self.add_http_request_header("x-pseudo-path", &path);
            for (header, property) in [
                ("x-prop-path", ["request", "path"]),
                ("x-prop-method", ["request", "method"]),
                ("x-prop-host", ["request", "host"]),
                ("x-prop-scheme", ["request", "scheme"]),
                ("x-prop-protocol", ["request", "protocol"]),
                ("x-prop-id", ["request", "id"]),
                ("x-prop-source", ["source", "address"]),
                ("x-prop-destination", ["destination", "address"]),
            ] {
                let value = text(self.get_property(property.to_vec()));
                self.add_http_request_header(header, &value);
            }
            let port = number(self.get_property(vec!["source", "port"]));
            self.add_http_request_header("x-prop-source-port", &port);
            let port = number(self.get_property(vec!["destination", "port"]));
            self.add_http_request_header("x-prop-destination-port", &port);
            let plugin = text(self.get_property(vec!["plugin_name"]));
            self.add_http_request_header("x-prop-plugin", &plugin);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let status = self.get_http_response_header(":status").and_then(|s| s.parse::<u16>().ok());
        if status.is_some() && status == self.config.replace_status {
            self.send_http_response(502, vec![("x-replaced-by", "pw-probe")], Some(b"replaced by proxy-wasm"));
            return Action::Pause;
        }
        for (name, value) in &self.config.set_response {
            self.set_http_response_header(name, Some(value));
        }
        if self.config.properties {
            let code = number(self.get_property(vec!["response", "code"]));
            self.set_http_response_header("x-prop-code", Some(&code));
            let path = text(self.get_property(vec!["request", "path"]));
            self.set_http_response_header("x-prop-request-path", Some(&path));
        }
        if self.config.count {
            self.set_http_response_header("x-count", Some(&count("count").to_string()));
        }
        if let Some((_, key)) = &self.config.ticks {
            let ticks = text(self.get_shared_data(key).0);
            self.set_http_response_header("x-ticks", Some(&ticks));
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if self.config.upper_request {
            let chunk = self.get_http_request_body(0, size).unwrap_or_default();
            self.set_http_request_body(0, size, &chunk.to_ascii_uppercase());
        }
        if self.config.rewrite_request.is_none() && self.config.deny_body.is_none() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = String::from_utf8_lossy(&self.get_http_request_body(0, size).unwrap_or_default()).into_owned();
        if let Some(denied) = &self.config.deny_body
            && body.contains(denied.as_str())
        {
            self.send_http_response(403, vec![("x-denied-by", "pw-probe")], Some(b"body denied by proxy-wasm"));
            return Action::Pause;
        }
        if let Some((from, to)) = &self.config.rewrite_request {
            self.set_http_request_body(0, size, body.replace(from.as_str(), to).as_bytes());
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Some((from, to)) = &self.config.rewrite_response else { return Action::Continue };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = String::from_utf8_lossy(&self.get_http_response_body(0, size).unwrap_or_default()).into_owned();
        self.set_http_response_body(0, size, body.replace(from.as_str(), to).as_bytes());
        Action::Continue
    }

    fn on_log(&mut self) {
        let code = number(self.get_property(vec!["response", "code"]));
        let path = text(self.get_property(vec!["request", "path"]));
        let _ = hostcalls::log(LogLevel::Warn, &format!("pw-probe log phase: {path} answered {code}"));
    }
}
