//! Properties (`proxy_get_property`): Envoy's attribute names for what the gateway knows of a
//! request. Strings are their bytes, numbers 64-bit little-endian, maps serialized.

use super::Seen;
use super::abi::Call;
use super::maps;
use crate::host::Head;

/// The value of the property at `path` (its segments), if there is one in this call.
pub(crate) fn get(plugin: &str, call: Option<&Call>, path: &[&[u8]]) -> Option<Vec<u8>> {
    let text = |s: &str| Some(s.as_bytes().to_vec());
    let number = |n: u64| Some(n.to_le_bytes().to_vec());
    match path {
        [b"plugin_name"] | [b"plugin_root_id"] => return text(plugin),
        _ => {}
    }
    let call = call?;
    let context = &call.context;
    let request = match &call.head {
        Some(Head::Request(parts)) => Some(parts),
        _ => None,
    };
    let seen = call.seen.as_ref();
    let (method, uri, version) = match (request, seen) {
        (Some(parts), _) => (&parts.method, &parts.uri, parts.version),
        (None, Some(Seen { method, uri, version, .. })) => (method, uri, *version),
        (None, None) => return None,
    };
    match path {
        [b"request", b"path"] => text(uri.path_and_query().map_or("/", |p| p.as_str())),
        [b"request", b"url_path"] => text(uri.path()),
        [b"request", b"query"] => text(uri.query().unwrap_or_default()),
        [b"request", b"method"] => text(method.as_str()),
        [b"request", b"host"] => text(&context.host),
        [b"request", b"scheme"] => text(context.scheme),
        [b"request", b"protocol"] => text(&format!("{version:?}")),
        [b"request", b"id"] => match (request, seen) {
            (Some(parts), _) => parts.headers.get("x-request-id").map(|v| v.as_bytes().to_vec()),
            (None, seen) => seen?.id.as_ref().map(|v| v.as_bytes().to_vec()),
        },
        [b"request", b"headers"] => {
            let headers = &request?.headers;
            let pairs: Vec<_> =
                headers.iter().map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())).collect();
            Some(maps::serialize(&pairs))
        }
        [b"source", b"address"] => text(&context.client.to_string()),
        [b"source", b"port"] => number(context.client.port().into()),
        [b"destination", b"address"] => text(&context.local.to_string()),
        [b"destination", b"port"] => number(context.local.port().into()),
        [b"upstream", b"address"] => text(&context.served?.to_string()),
        [b"upstream", b"port"] => number(context.served?.port().into()),
        [b"response", b"code"] => {
            let status = match &call.head {
                Some(Head::Response(parts)) => parts.status,
                _ => seen?.status?,
            };
            number(status.as_u16().into())
        }
        [b"route_name"] => text(&context.route.ingress),
        _ => None,
    }
}
