//! `sluice:filter@0.2.0` (`sdk/wit`): the request and response are the call's, reached
//! through plain functions; the component exports the `handler` interface; filters count
//! across requests (`limits`) and share values (`store`).

use std::time::Instant;

use super::*;
use crate::shared::{self, WriteError};

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "filter",
    imports: { default: trappable },
});

use sluice::filter::{limits, request, response, store, types};

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
    fn take(&mut self, key: String, per_second: f64, capacity: u32) -> Outcome<bool> {
        let key = self.shared_key(&key)?;
        Ok(self.shared.take(&key, per_second, capacity, Instant::now()))
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
        Ok(self.shared.get(&key).map(Into::into))
    }

    fn set(&mut self, key: String, value: Vec<u8>, expected: Option<u64>) -> Outcome<Result<u64, store::WriteError>> {
        let key = self.shared_key(&key)?;
        Ok(self.shared.write(key, Some(value), expected).map_err(Into::into))
    }

    fn delete(&mut self, key: String, expected: Option<u64>) -> Outcome<Result<(), store::WriteError>> {
        let key = self.shared_key(&key)?;
        Ok(self.shared.write(key, None, expected).map(drop).map_err(Into::into))
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
