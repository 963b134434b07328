//! `sluice:filter@0.2.0` (`sdk/wit`): the request and response are the call's, reached
//! through plain functions; the component exports the `handler` interface; filters count
//! across requests (`limits`), share values (`store`), call Services (`http`) and read and
//! replace whole bodies (`body`).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::outbound;
use crate::payload::ReadError;
use crate::shared::{self, Write, WriteError};

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "filter",
    imports: {
        "sluice:filter/http.call": async | trappable,
        "sluice:filter/body.request-body": async | trappable,
        "sluice:filter/body.response-body": async | trappable,
        default: trappable,
    },
});

use sluice::filter::{body, http as outbound_http, limits, request, response, store, types};

/// The most calls to Services and body reads the filters of one namespace may have waiting at
/// once: each holds an instance from the pool every namespace shares.
const MAX_WAITING: u32 = 256;

/// The exported interface whose presence makes a component one of this version.
pub const HANDLER: &str = "sluice:filter/handler@0.2.0";

impl types::Host for State {}

impl request::Host for State {
    request_accessors!();
}

impl response::Host for State {
    response_accessors!();
}

impl sluice::filter::host::Host for State {
    host_functions!();
}

impl limits::Host for State {
    fn take(&mut self, buckets: Vec<limits::Bucket>) -> Outcome<bool> {
        let buckets = buckets
            .into_iter()
            .map(|bucket| {
                let key = self.shared_key(&bucket.key)?;
                Ok(shared::BucketSpec { key, per_second: bucket.per_second, capacity: bucket.capacity })
            })
            .collect::<Outcome<Vec<_>>>()?;
        Ok(self.shared.take(&buckets, Instant::now()))
    }

    fn hold(&mut self, key: String, limit: u32) -> Outcome<bool> {
        let key = self.shared_key(&key)?;
        let Some(hold) = self.shared.hold(key, limit) else { return Ok(false) };
        self.call()?.holds.push(hold);
        Ok(true)
    }
}

impl From<shared::Entry> for store::Entry {
    fn from(entry: shared::Entry) -> Self {
        Self { value: entry.value, version: entry.version }
    }
}

impl From<WriteError> for store::WriteError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Conflict(entry) => Self::Conflict(entry.map(Into::into)),
            WriteError::TooLarge => Self::TooLarge,
        }
    }
}

impl store::Host for State {
    fn get(&mut self, key: String) -> Outcome<Option<store::Entry>> {
        let key = self.shared_key(&key)?;
        Ok(self.shared.get(&key, Instant::now()).map(Into::into))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
        ttl_ms: Option<u64>,
    ) -> Outcome<Result<u64, store::WriteError>> {
        let key = self.shared_key(&key)?;
        let now = Instant::now();
        let expires = ttl_ms.map(|ttl| now + Duration::from_millis(ttl));
        let write = Write { value: Some(value), expected, expires };
        Ok(self.shared.write(key, write, now).map_err(Into::into))
    }

    fn delete(&mut self, key: String, expected: Option<u64>) -> Outcome<Result<(), store::WriteError>> {
        let key = self.shared_key(&key)?;
        let write = Write { expected, ..Write::default() };
        Ok(self.shared.write(key, write, Instant::now()).map(drop).map_err(Into::into))
    }
}

/// Adds every interface but `http` and `body` to `linker`: what a component that neither
/// calls Services nor reads bodies needs, all of it synchronous.
pub fn add_sync_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    fn get(state: &mut State) -> &mut State {
        state
    }
    types::add_to_linker::<_, HasSelf<State>>(linker, get)?;
    request::add_to_linker::<_, HasSelf<State>>(linker, get)?;
    response::add_to_linker::<_, HasSelf<State>>(linker, get)?;
    sluice::filter::host::add_to_linker::<_, HasSelf<State>>(linker, get)?;
    limits::add_to_linker::<_, HasSelf<State>>(linker, get)?;
    store::add_to_linker::<_, HasSelf<State>>(linker, get)
}

impl outbound_http::Host for State {
    async fn call(
        &mut self,
        request: outbound_http::OutboundRequest,
    ) -> Outcome<Result<outbound_http::Answer, String>> {
        let outbound_http::OutboundRequest { service, method, path, headers, body, timeout_ms } = request;
        let mut built = http::Request::builder().method(method.as_str()).uri(path.as_str());
        for (name, value) in &headers {
            built = built.header(name.as_str(), value.as_str());
        }
        let request = match built.body(Bytes::from(body)) {
            Ok(request) => request,
            Err(e) => return Ok(Err(format!("invalid request: {e}"))),
        };
        let timeout = Duration::from_millis(timeout_ms.into());
        let _waiting = match self.wait()? {
            Ok(waiting) => waiting,
            Err(why) => return Ok(Err(why)),
        };
        let pending = match outbound::start(&self.call()?.context, &service, request, timeout) {
            Ok(pending) => pending,
            Err(why) => return Ok(Err(why)),
        };
        let started = Instant::now();
        let answer = pending.answer().await;
        self.add_wait(started.elapsed());
        let Some(status) = answer.status else {
            let why =
                "no answer: no ready endpoint, the connection failed, the timeout passed or the body was over 1 MiB";
            return Ok(Err(format!("{service}: {why}")));
        };
        Ok(Ok(outbound_http::Answer {
            status: status.as_u16(),
            headers: headers::all(&answer.headers),
            body: answer.body.into(),
        }))
    }
}

impl State {
    /// A place among the namespace's waiting calls and body reads, or why there is none.
    fn wait(&mut self) -> Outcome<Result<shared::Hold, String>> {
        let namespace = self.call()?.context.namespace.clone();
        // No plugin's key starts with a NUL.
        Ok(self.shared.hold(format!("\0wait\0{namespace}"), MAX_WAITING).ok_or_else(|| {
            format!("{MAX_WAITING} calls and body reads of namespace {namespace:?} are waiting already")
        }))
    }

    /// The body of the call's request or response, read whole if no filter read it before.
    async fn read_body(&mut self) -> Outcome<Result<Vec<u8>, body::BodyError>> {
        let Some(mut payload) = self.call()?.body.take() else {
            return Ok(Err(body::BodyError::Failed("the gateway does not lend this body to filters".into())));
        };
        let _waiting = match payload.is_unread() {
            true => match self.wait()? {
                Ok(waiting) => Some(waiting),
                Err(why) => {
                    self.call()?.body = Some(payload);
                    return Ok(Err(body::BodyError::Failed(why)));
                }
            },
            false => None,
        };
        let started = Instant::now();
        let read = payload.read(MAX_WAITED.saturating_sub(self.waited)).await;
        self.add_wait(started.elapsed());
        self.call()?.body = Some(payload);
        Ok(read.map(Vec::from).map_err(|error| match error {
            ReadError::TooLarge => body::BodyError::TooLarge,
            ReadError::Failed(why) => body::BodyError::Failed(why),
        }))
    }

    /// Replaces the body of the call's request or response.
    fn replace_body(&mut self, data: Vec<u8>) -> Outcome<()> {
        if let Some(payload) = &mut self.call()?.body {
            payload.replace(data);
        }
        Ok(())
    }
}

impl body::Host for State {
    async fn request_body(&mut self) -> Outcome<Result<Vec<u8>, body::BodyError>> {
        self.request()?;
        self.read_body().await
    }

    fn set_request_body(&mut self, body: Vec<u8>) -> Outcome<()> {
        self.request()?;
        self.replace_body(body)
    }

    async fn response_body(&mut self) -> Outcome<Result<Vec<u8>, body::BodyError>> {
        self.response()?;
        self.read_body().await
    }

    fn set_response_body(&mut self, body: Vec<u8>) -> Outcome<()> {
        self.response()?;
        self.replace_body(body)
    }
}

impl From<types::Action> for Action {
    fn from(action: types::Action) -> Self {
        match action {
            types::Action::Continue => Action::Continue,
            types::Action::Respond(types::ImmediateResponse { status, headers, body }) => {
                Action::Respond(ImmediateResponse { status, headers, body })
            }
        }
    }
}
