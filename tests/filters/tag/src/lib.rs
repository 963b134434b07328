//! Marks responses with `x-filter: tag`; with `probe` (which marks `x-filter: probe`) it shows
//! which module version served a request while modules are swapped.
use sluice_sdk::{Filter, OnResponse, Response};

struct Tag;

impl Filter for Tag {
    type Config = ();

    fn parse_config(_: &str) -> Result<(), String> {
        Ok(())
    }
}

impl OnResponse for Tag {
    fn on_response(_: &(), response: &Response) {
        response.set_header("x-filter", "tag").unwrap();
    }
}

sluice_sdk::filter!(Tag);
