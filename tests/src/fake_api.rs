//! A Kubernetes API server stand-in that speaks the list/watch protocol: JSON lists with a
//! `resourceVersion`, chunked watch streams of ADDED/MODIFIED/DELETED/BOOKMARK events, `410
//! Gone` for a resourceVersion it no longer holds, label and field selectors; plus what a
//! controller writes (status patches, Leases, Events), recorded for assertions.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;

/// A change as a watch stream sends it: resourceVersion, resource, type, object.
#[derive(Clone, Debug)]
struct Change {
    version: u64,
    resource: String,
    kind: &'static str,
    object: Value,
}

/// A write the gateway made (anything but GET).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The client's User-Agent.
    pub agent: String,
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    version: u64,
    /// (resource, namespace, name) -> object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    /// Watches from before this resourceVersion are answered `410 Gone`.
    oldest: u64,
    writes: Vec<Recorded>,
    /// Resources whose lists and watches answer 503.
    unavailable: HashSet<String>,
}

/// The fake API server; it stops when dropped.
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// What the server's connections share with the test.
struct Shared {
    state: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

impl FakeApi {
    /// Starts on a free loopback port, with no objects.
    pub async fn start() -> anyhow::Result<FakeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let (changes, _) = broadcast::channel(100_000);
        let shared = Arc::new(Shared { state: Mutex::default(), changes });
        let mut api = FakeApi { addr: listener.local_addr()?, shared, server: None };
        api.serve(listener);
        Ok(api)
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = self.shared.clone();
        self.server = Some(tokio::spawn(async move {
            // Connections live in the set: stopping the server cuts every watch mid-stream.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let service = service_fn(move |request| handle(shared.clone(), request));
                connections.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
    }

    /// Stops serving: every connection is cut, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }

    /// Serves again on the same address, with the same objects, like a restarted API server:
    /// its watch cache starts empty, so watches resuming from any earlier resourceVersion get
    /// `410 Gone` (as an ERROR event) and must list again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        {
            let mut state = self.shared.state.lock().unwrap();
            state.history.clear();
            state.version += 1;
            state.oldest = state.version;
        }
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// A kubeconfig file in `dir` pointing at this server; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// Creates or replaces every object of a multi-document YAML text.
    pub fn apply_yaml(&self, yaml: &str) {
        let mut reader = yaml.as_bytes();
        for document in serde_saphyr::read::<_, Value>(&mut reader) {
            self.apply(document.expect("valid YAML"));
        }
    }

    /// Creates or replaces `object` (ADDED or MODIFIED), stamping a new resourceVersion.
    pub fn apply(&self, object: Value) {
        self.shared.apply(object);
    }

    /// Deletes the object of `kind` `namespace/name` (DELETED), if there is one.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let key = key(kind, namespace, name);
        let mut state = self.shared.state.lock().unwrap();
        let Some(mut object) = state.objects.remove(&key) else { return };
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        self.shared.record(&mut state, Change { version, resource: key.0, kind: "DELETED", object });
    }

    /// The object of `kind` `namespace/name` as stored now.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.state.lock().unwrap().objects.get(&key(kind, namespace, name)).cloned()
    }

    /// Makes lists and watches of `kind` answer 503 (or serve again).
    pub fn set_unavailable(&self, kind: &str, unavailable: bool) {
        let mut state = self.shared.state.lock().unwrap();
        match unavailable {
            true => state.unavailable.insert(resource_of(kind).to_owned()),
            false => state.unavailable.remove(resource_of(kind)),
        };
    }

    /// Every write received so far.
    pub fn writes(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().writes.clone()
    }
}

impl Shared {
    /// Creates or replaces `object`, stamping a new resourceVersion; returns it as stored.
    fn apply(&self, mut object: Value) -> Value {
        let key = key_of(&object);
        // Like the real API server: `stringData` is write-only, merged into `data`.
        if let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
            use base64::Engine as _;
            for (name, value) in strings {
                let encoded = base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
                object["data"][name] = json!(encoded);
            }
        }
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if object["metadata"]["namespace"].is_null() && !key.1.is_empty() {
            object["metadata"]["namespace"] = json!(key.1);
        }
        let kind = if state.objects.insert(key.clone(), object.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        self.record(&mut state, Change { version, resource: key.0, kind, object: object.clone() });
        object
    }

    fn record(&self, state: &mut State, change: Change) {
        state.history.push(change.clone());
        let _ = self.changes.send(change);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The plural resource name of `kind`, as in API paths.
fn resource_of(kind: &str) -> &'static str {
    match kind {
        "Ingress" => "ingresses",
        "IngressClass" => "ingressclasses",
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "Secret" => "secrets",
        "ConfigMap" => "configmaps",
        "Lease" => "leases",
        "Event" => "events",
        other => panic!("the fake API server does not serve {other}"),
    }
}

/// The store key of `kind` `namespace/name` (no namespace for cluster-wide kinds).
fn key(kind: &str, namespace: &str, name: &str) -> (String, String, String) {
    let resource = resource_of(kind);
    let namespace = if resource == "ingressclasses" { "" } else { namespace };
    (resource.to_owned(), namespace.to_owned(), name.to_owned())
}

fn key_of(object: &Value) -> (String, String, String) {
    let kind = object["kind"].as_str().expect("objects have a kind");
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default");
    key(kind, namespace, object["metadata"]["name"].as_str().expect("objects have a name"))
}

/// What a request path names: `/api/v1/...` or `/apis/GROUP/VERSION/...`, then optionally
/// `namespaces/NS/`, the resource, a name and a subresource.
#[derive(Debug)]
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match *segments.first()? {
        "api" => segments.get(2..)?,
        "apis" => segments.get(3..)?,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some((*namespace).to_owned()), rest),
        rest => (None, rest),
    };
    let (resource, rest) = rest.split_first()?;
    Some(Target {
        resource: (*resource).to_owned(),
        namespace,
        name: rest.first().map(|s| (*s).to_owned()),
        subresource: rest.get(1).map(|s| (*s).to_owned()),
    })
}

/// Whether `object` passes the `labelSelector` (`key`, `!key`, `key=value` or `key!=value`,
/// comma-separated) and `fieldSelector` (`type=...`, `type!=...`, `metadata.name=...`,
/// `metadata.namespace=...`) of `query`.
fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    let labels = query.get("labelSelector").into_iter().flat_map(|s| s.split(','));
    let labels_match = labels.filter(|s| !s.is_empty()).all(|term| {
        let label = |key: &str| object["metadata"]["labels"][key].as_str();
        match (term.strip_prefix('!'), term.split_once("!="), term.split_once('=')) {
            (Some(key), ..) => label(key).is_none(),
            (None, Some((key, value)), _) => label(key) != Some(value),
            (None, None, Some((key, value))) => label(key) == Some(value),
            (None, None, None) => label(term).is_some(),
        }
    });
    let fields = query.get("fieldSelector").into_iter().flat_map(|s| s.split(','));
    let fields_match = fields.filter(|s| !s.is_empty()).all(|term| {
        let field = |name: &str| object.pointer(&format!("/{}", name.replace('.', "/"))).and_then(Value::as_str);
        match term.split_once("!=") {
            Some((name, value)) => field(name) != Some(value),
            None => {
                let (name, value) = term.split_once('=').unwrap_or((term, ""));
                field(name) == Some(value)
            }
        }
    });
    labels_match && fields_match
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, body: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(body.to_string())).boxed();
    Response::builder().status(status).header("content-type", "application/json").body(body).unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
        "reason": reason, "code": code.as_u16()});
    reply(code, &body)
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let Some(target) = parse_path(parts.uri.path()) else {
        return Ok(status(StatusCode::NOT_FOUND, "NotFound", "no such path"));
    };
    if parts.method == Method::GET {
        if shared.state.lock().unwrap().unavailable.contains(&target.resource) {
            return Ok(status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "unavailable"));
        }
        return Ok(match (&target.name, query.get("watch").map(String::as_str)) {
            (None, Some("true" | "1")) => watch(&shared, &target, query),
            (None, _) => list(&shared.state, &target, &query),
            (Some(name), _) => {
                let state = shared.state.lock().unwrap();
                let key = (target.resource.clone(), target.namespace.clone().unwrap_or_default(), name.clone());
                match state.objects.get(&key) {
                    Some(object) => reply(StatusCode::OK, object),
                    None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{} {name} not found", target.resource)),
                }
            }
        });
    }
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let agent = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut locked = shared.state.lock().unwrap();
    locked.writes.push(Recorded {
        agent,
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        body: body.clone(),
    });
    let namespace = target.namespace.clone().unwrap_or_default();
    let response = match (&parts.method, &target.name, target.subresource.as_deref()) {
        (&Method::PATCH, Some(name), Some("status")) => {
            let key = (target.resource.clone(), namespace, name.clone());
            match locked.objects.get(&key).cloned() {
                Some(mut object) => {
                    object["status"] = body["status"].clone();
                    drop(locked);
                    reply(StatusCode::OK, &shared.apply(object))
                }
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            }
        }
        (&Method::POST, None, None) => {
            let mut object = body;
            object["metadata"]["namespace"] = json!(namespace);
            if object["metadata"]["name"].is_null() {
                let prefix = object["metadata"]["generateName"].as_str().unwrap_or("generated-").to_owned();
                object["metadata"]["name"] = json!(format!("{prefix}{}", locked.version + 1));
            }
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let key = (target.resource.clone(), namespace, name);
            if locked.objects.contains_key(&key) {
                status(StatusCode::CONFLICT, "AlreadyExists", "already exists")
            } else {
                drop(locked);
                reply(StatusCode::CREATED, &shared.apply(object))
            }
        }
        (&Method::PUT, Some(name), None) => {
            let key = (target.resource.clone(), namespace, name.clone());
            let current = locked.objects.get(&key).map(|o| o["metadata"]["resourceVersion"].clone());
            if current.is_some_and(|v| v != body["metadata"]["resourceVersion"]) {
                status(StatusCode::CONFLICT, "Conflict", "the object has been modified")
            } else {
                drop(locked);
                reply(StatusCode::OK, &shared.apply(body))
            }
        }
        (&Method::PATCH, Some(_), None) => reply(StatusCode::OK, &body),
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the fake"),
    };
    Ok(response)
}

fn list(state: &Mutex<State>, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
    let state = state.lock().unwrap();
    let items: Vec<&Value> = state
        .objects
        .iter()
        .filter(|((resource, namespace, _), object)| {
            *resource == target.resource
                && target.namespace.as_ref().is_none_or(|ns| ns == namespace)
                && selected(object, query)
        })
        .map(|(_, object)| object)
        .collect();
    let body = json!({"kind": "List", "apiVersion": "v1",
        "metadata": {"resourceVersion": state.version.to_string()}, "items": items});
    reply(StatusCode::OK, &body)
}

fn watch(shared: &Shared, target: &Target, query: BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    let matches = {
        let (resource, namespace) = (target.resource.clone(), target.namespace.clone());
        move |change: &Change| {
            change.resource == resource
                && namespace.as_ref().is_none_or(|ns| change.object["metadata"]["namespace"].as_str() == Some(ns))
        }
    };
    let event = |change: &Change| json!({"type": change.kind, "object": change.object});
    {
        let state = shared.state.lock().unwrap();
        if from < state.oldest || from > state.version {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            let _ = tx.send(gone);
            return stream(rx);
        }
        let mut live = shared.changes.subscribe();
        let mut sent = from;
        for change in state.history.iter().filter(|c| c.version > from && matches(c)) {
            if selected(&change.object, &query) {
                let _ = tx.send(event(change));
            }
            sent = change.version;
        }
        sent = sent.max(state.version);
        tokio::spawn(async move {
            let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tokio::select! {
                    change = live.recv() => match change {
                        Ok(change) if change.version > sent && matches(&change) => {
                            sent = change.version;
                            if selected(&change.object, &query) && tx.send(event(&change)).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Bookmark",
                            "apiVersion": "v1", "metadata": {"resourceVersion": sent.to_string()}}});
                        if tx.send(bookmark).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    stream(rx)
}

/// A chunked response of one JSON event per line.
fn stream(rx: mpsc::UnboundedReceiver<Value>) -> Response<Body> {
    let frames = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .map(|event| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{event}\n")))));
    let body = BodyExt::boxed(StreamBody::new(frames));
    Response::builder().header("content-type", "application/json").body(body).unwrap()
}
