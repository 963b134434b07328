//! `sluice:filter@0.1.0` (`sdk/wit/v0.1`): the request and response are resources, and the
//! component exports its functions at the root.

use super::*;

wasmtime::component::bindgen!({
    path: "../../sdk/wit/v0.1",
    world: "filter",
    imports: { default: trappable },
    with: {
        "sluice:filter/types.request": RequestHandle,
        "sluice:filter/types.response": ResponseHandle,
    },
});

use sluice::filter::types;

/// The `request` resource: always the request of the call in progress.
pub struct RequestHandle;
/// The `response` resource: always the response of the call in progress.
pub struct ResponseHandle;

impl types::Host for State {}

impl types::HostRequest for State {
    request_accessors!(RequestHandle);

    fn drop(&mut self, _: Resource<RequestHandle>) -> Outcome<()> {
        Ok(())
    }
}

impl types::HostResponse for State {
    response_accessors!(ResponseHandle);

    fn drop(&mut self, _: Resource<ResponseHandle>) -> Outcome<()> {
        Ok(())
    }
}

impl sluice::filter::host::Host for State {
    host_functions!();
}
