//! Small builders for the manifests tests write.

use std::net::SocketAddr;

/// A Service with one unnamed port 80, and its EndpointSlice with `ready` and not-ready pods.
pub fn service(name: &str, ready: &[SocketAddr], not_ready: &[SocketAddr]) -> String {
    let port = ready.iter().chain(not_ready).next().map_or(80, SocketAddr::port);
    let endpoint = |addr: &SocketAddr, ready: bool| {
        format!("- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n", addr.ip())
    };
    let endpoints: String =
        ready.iter().map(|a| endpoint(a, true)).chain(not_ready.iter().map(|a| endpoint(a, false))).collect();
    let endpoints = if endpoints.is_empty() { "[]\n".to_owned() } else { format!("\n{endpoints}") };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  \
         labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{port: {port}}}]\n\
         endpoints: {endpoints}"
    )
}

/// An Ingress of class `sluice` with one rule: `host` (empty for any), and `paths` as
/// `(path, pathType, service)`.
pub fn ingress(name: &str, host: &str, paths: &[(&str, &str, &str)]) -> String {
    let host = if host.is_empty() { String::new() } else { format!("    host: \"{host}\"\n") };
    let paths: String = paths
        .iter()
        .map(|(path, path_type, service)| {
            format!(
                "      - path: \"{path}\"\n        pathType: {path_type}\n        \
                 backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  \
         ingressClassName: sluice\n  rules:\n  -\n{host}    http:\n      paths:\n{paths}"
    )
}

/// [`ingress`] with the `sluice.dev/filters` annotation set to `filters` (a YAML list).
pub fn filtered_ingress(name: &str, host: &str, paths: &[(&str, &str, &str)], filters: &str) -> String {
    annotated_ingress(name, host, paths, &[("sluice.dev/filters", filters)])
}

/// A YAML mapping of `entries`, each value a block scalar (so it may span lines), its keys
/// indented by `indent` spaces.
fn block_map(entries: &[(&str, &str)], indent: usize) -> String {
    let pad = " ".repeat(indent);
    entries
        .iter()
        .map(|(key, value)| {
            let value: String = value.lines().map(|line| format!("{pad}  {line}\n")).collect();
            format!("{pad}{key}: |-\n{value}")
        })
        .collect()
}

/// [`ingress`] with `annotations` (values may span lines).
pub fn annotated_ingress(name: &str, host: &str, paths: &[(&str, &str, &str)], annotations: &[(&str, &str)]) -> String {
    let annotations = block_map(annotations, 4);
    let annotated = format!("metadata:\n  name: {name}\n  annotations:\n{annotations}");
    ingress(name, host, paths).replacen(&format!("metadata: {{name: {name}}}\n"), &annotated, 1)
}

/// A Secret of users for basic authentication (`stringData`: an htpasswd file in `auth`, or a
/// user per key), labelled so the gateway reads it.
pub fn basic_auth_secret(name: &str, entries: &[(&str, &str)]) -> String {
    opaque_secret(name, &[("sluice.dev/basic-auth", "true")], entries)
}

/// An `Opaque` Secret with these labels and `stringData` entries (values may span lines).
pub fn opaque_secret(name: &str, labels: &[(&str, &str)], entries: &[(&str, &str)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(key, value)| format!("{key}: {value:?}")).collect();
    let entries = block_map(entries, 2);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{{}}}\ntype: Opaque\nstringData:\n{entries}",
        labels.join(", ")
    )
}
