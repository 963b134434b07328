//! Reads and replaces whole bodies (`sluice:filter/body`), as its configuration says, and
//! tells the upstream (`x-body-read`) and the client (`x-response-body-read`) what reading
//! found: the length, `too-large` or `failed`.
use serde::Deserialize;
use sluice_sdk::{Action, BodyError, Filter, OnRequest, OnResponse, Request, Response, respond};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Answer 403 when the request body holds this text.
    deny: Option<String>,
    /// Upper-case the request body.
    upper: bool,
    /// Replace the request body with this, without reading it.
    replace: Option<String>,
    /// Append this to the response body.
    append: Option<String>,
}

struct Bodies;

impl Filter for Bodies {
    type Config = Config;

    fn parse_config(config: &str) -> Result<Config, String> {
        match config {
            "null" => Ok(Config::default()),
            text => serde_json::from_str(text).map_err(|e| e.to_string()),
        }
    }
}

/// What reading a body found, for a header.
fn outcome(read: &Result<Vec<u8>, BodyError>) -> String {
    match read {
        Ok(body) => body.len().to_string(),
        Err(BodyError::TooLarge) => "too-large".into(),
        Err(BodyError::Failed(_)) => "failed".into(),
    }
}

impl OnRequest for Bodies {
    fn on_request(config: &Config, request: &Request) -> Action {
        if let Some(body) = &config.replace {
            request.set_body(body.as_bytes());
            return Action::Continue;
        }
        if config.deny.is_none() && !config.upper {
            return Action::Continue;
        }
        let read = request.body();
        request.set_header("x-body-read", &outcome(&read)).unwrap();
        let Ok(body) = read else { return Action::Continue };
        if let Some(word) = &config.deny
            && String::from_utf8_lossy(&body).contains(word.as_str())
        {
            return respond(403, &[], "denied by its body");
        }
        if config.upper {
            request.set_body(&body.to_ascii_uppercase());
        }
        Action::Continue
    }
}

impl OnResponse for Bodies {
    fn on_response(config: &Config, response: &Response) {
        let Some(tail) = &config.append else { return };
        let read = response.body();
        response.set_header("x-response-body-read", &outcome(&read)).unwrap();
        if let Ok(mut body) = read {
            body.extend_from_slice(tail.as_bytes());
            response.set_body(&body);
        }
    }
}

sluice_sdk::filter!(Bodies);
