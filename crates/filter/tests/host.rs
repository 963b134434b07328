//! The host against a real component (`tests/filters/probe`): what filters can read and
//! change, and how failures are contained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{BackendKey, FailurePolicy, FilterSpec, Isolation, PortRef, Target};
use sluice_filter::{Attachment, Chain, Engine, Exchange, FailureKind, Limits, Phases, Plugin, RequestContext};
use sluice_route::{Backend, RouteName};

fn probe(engine: &Engine, limits: Limits) -> Arc<Plugin> {
    let bytes = std::fs::read(sluice_tests::test_filters().join("probe.wasm")).unwrap();
    Arc::new(engine.load("probe", &bytes, limits).unwrap())
}

fn attach(plugin: &Arc<Plugin>, config: &str, failure: FailurePolicy, isolation: Isolation) -> Attachment {
    let spec = FilterSpec { plugin: "probe".into(), config: config.into(), failure, isolation, field: String::new() };
    Attachment::new(spec, Ok(plugin.clone()))
}

fn chain(attachments: Vec<Attachment>) -> Chain {
    Chain { filters: attachments.into(), namespace: "default".into() }
}

fn context() -> RequestContext {
    let endpoints: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
    let key =
        BackendKey { namespace: "default".into(), service: "web".into(), port: PortRef::Number(80), cluster_ip: false };
    RequestContext {
        client: "192.0.2.7:4000".parse().unwrap(),
        namespace: "default".into(),
        local: "198.51.100.1:8443".parse().unwrap(),
        scheme: "http",
        host: "example.com".into(),
        route: RouteName { ingress: "default/web".into(), host: "example.com".into(), path: "Prefix /".into() },
        regex: None,
        matched_path: "/hello".into(),
        backend: Arc::new(Backend::new(key, Arc::new(Target::Pods { endpoints, unready: Vec::new() }))),
        chosen: None,
        served: None,
        snapshot: None,
    }
}

fn request(path: &str) -> http::request::Parts {
    http::Request::get(path).header("x-endpoint", "1").header("x-drop", "1").body(()).unwrap().into_parts().0
}

#[tokio::test]
async fn filters_change_requests_in_order_and_see_responses_in_reverse() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    let chain = chain(vec![
        attach(
            &plugin,
            r#"{"name":"a","set":[["x-a","1"]],"remove":["x-drop"],"prefix":"/v2"}"#,
            FailurePolicy::Closed,
            Isolation::Instance,
        ),
        attach(&plugin, r#"{"name":"b","pick":"x-endpoint","served":true}"#, FailurePolicy::Closed, Isolation::Request),
    ]);
    let mut exchange = Exchange::new(context(), &chain);
    let mut parts = request("/hello?x=1");
    assert!(chain.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
    assert_eq!(parts.uri, "/v2/hello?x=1");
    assert_eq!(parts.headers["x-a"], "1");
    assert!(parts.headers.get("x-drop").is_none());
    let chain_header: Vec<_> = parts.headers.get_all("x-chain").iter().collect();
    assert_eq!(chain_header, ["a", "b"]);
    assert_eq!(exchange.chosen_endpoint(), Some(1));

    exchange.set_served(Some("10.0.0.2:80".parse().unwrap()));
    let mut response = http::Response::new(()).into_parts().0;
    chain.on_response(&mut exchange, &mut response).await.unwrap();
    let order: Vec<_> = response.headers.get_all("x-chain-response").iter().collect();
    assert_eq!(order, ["b", "a"], "response phases run in reverse, each with its own state");
    assert_eq!(response.headers["x-served-by"], "10.0.0.2:80");
}

#[tokio::test]
async fn a_filter_can_answer_and_later_filters_are_skipped() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    let chain = chain(vec![
        attach(&plugin, r#"{"respond":403,"body":"denied"}"#, FailurePolicy::Closed, Isolation::Instance),
        attach(&plugin, r#"{"name":"never"}"#, FailurePolicy::Closed, Isolation::Instance),
    ]);
    let mut exchange = Exchange::new(context(), &chain);
    let mut parts = request("/");
    let answer = chain.on_request(&mut exchange, &mut parts).await.unwrap().expect("an immediate answer");
    assert_eq!(answer.status(), 403);
    assert_eq!(answer.headers()["x-route"], "default/web");
    assert_eq!(answer.body(), b"denied");
    assert!(parts.headers.get("x-chain").is_none());
}

#[tokio::test]
async fn reused_instances_keep_state_and_fresh_ones_do_not() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    for (isolation, expected) in [(Isolation::Instance, 3), (Isolation::Request, 1)] {
        let chain = chain(vec![attach(&plugin, r#"{"count":true}"#, FailurePolicy::Closed, isolation)]);
        let mut last = String::new();
        for _ in 0..3 {
            let mut exchange = Exchange::new(context(), &chain);
            let mut parts = request("/");
            chain.on_request(&mut exchange, &mut parts).await.unwrap();
            let mut response = http::Response::new(()).into_parts().0;
            chain.on_response(&mut exchange, &mut response).await.unwrap();
            last = response.headers["x-instance-requests"].to_str().unwrap().to_owned();
        }
        let seen: u32 = last.parse().unwrap();
        assert!(seen >= expected, "{isolation:?}: {seen}");
        if isolation == Isolation::Request {
            assert_eq!(seen, 1);
        }
    }
}

#[tokio::test]
async fn hostile_filters_fail_their_request_within_limits() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let limits = Limits { deadline: Duration::from_millis(20), memory: 32 << 20 };
    let plugin = probe(&engine, limits);
    let cases = [("loop", FailureKind::Timeout), ("bomb", FailureKind::Memory), ("trap", FailureKind::Trap)];
    for ((fail, kind), isolation) in
        cases.into_iter().flat_map(|case| [Isolation::Instance, Isolation::Request].map(|i| (case, i)))
    {
        let config = format!(r#"{{"fail":"{fail}"}}"#);
        let closed = chain(vec![attach(&plugin, &config, FailurePolicy::Closed, isolation)]);
        let started = Instant::now();
        let failure = closed.on_request(&mut Exchange::new(context(), &closed), &mut request("/")).await.unwrap_err();
        assert_eq!(failure.kind, kind, "{fail}, {isolation:?}: {failure}");
        assert!(started.elapsed() < Duration::from_secs(2), "{fail}, {isolation:?} took {:?}", started.elapsed());

        let open = chain(vec![
            attach(&plugin, &config, FailurePolicy::Open, isolation),
            attach(&plugin, r#"{"name":"after"}"#, FailurePolicy::Closed, isolation),
        ]);
        let mut exchange = Exchange::new(context(), &open);
        let mut parts = request("/");
        assert!(open.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
        assert_eq!(exchange.failures.len(), 1);
        assert_eq!(exchange.failures[0].kind, kind, "{fail}, {isolation:?}");
        assert_eq!(parts.headers["x-chain"], "after", "the next filter still runs");
    }
    // The same plugin keeps serving well-behaved attachments.
    let fine = chain(vec![attach(&plugin, r#"{"name":"ok"}"#, FailurePolicy::Closed, Isolation::Instance)]);
    let mut parts = request("/");
    fine.on_request(&mut Exchange::new(context(), &fine), &mut parts).await.unwrap();
    assert_eq!(parts.headers["x-chain"], "ok");
}

#[tokio::test]
async fn guest_output_goes_to_the_log_and_calls_are_synchronous() {
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    assert!(plugin.calls_synchronously(), "a Rust filter needs no more WASI than the synchronous host offers");
    let chain = chain(vec![attach(&plugin, r#"{"print":"hello"}"#, FailurePolicy::Closed, Isolation::Instance)]);
    chain.on_request(&mut Exchange::new(context(), &chain), &mut request("/")).await.unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = |text: &str| {
        log.lines().find(|l| l.contains(text)).unwrap_or_else(|| panic!("{text:?} not in {log}")).to_owned()
    };
    let (stdout, stderr) = (line("hello on stdout"), line("hello on stderr"));
    assert!(
        stdout.contains("INFO") && stdout.contains("plugin=\"probe\"") && stdout.contains("stream=\"stdout\""),
        "{stdout}"
    );
    assert!(stderr.contains("WARN") && stderr.contains("stream=\"stderr\""), "{stderr}");
}

#[tokio::test]
async fn only_the_phases_a_filter_has_are_called() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let probe = probe(&engine, Limits::default());
    assert_eq!(probe.phases, Phases { request: true, response: true });
    let bytes = std::fs::read(sluice_tests::test_filters().join("tag.wasm")).unwrap();
    let tag = Arc::new(engine.load("tag", &bytes, Limits::default()).unwrap());
    assert_eq!(tag.phases, Phases { request: false, response: true }, "tag has only a response phase");

    for isolation in [Isolation::Instance, Isolation::Request] {
        let spec = FilterSpec {
            plugin: "tag".into(),
            config: "null".into(),
            failure: FailurePolicy::Closed,
            isolation,
            field: String::new(),
        };
        let chain = chain(vec![
            Attachment::new(spec, Ok(tag.clone())),
            attach(&probe, r#"{"name":"a"}"#, FailurePolicy::Closed, isolation),
        ]);
        let mut exchange = Exchange::new(context(), &chain);
        let mut parts = request("/");
        chain.on_request(&mut exchange, &mut parts).await.unwrap();
        let mut response = http::Response::new(()).into_parts().0;
        chain.on_response(&mut exchange, &mut response).await.unwrap();
        assert_eq!(parts.headers["x-chain"], "a", "{isolation:?}");
        // Response phases run in reverse: probe, then tag overwrites `x-filter`.
        assert_eq!(response.headers["x-filter"], "tag", "{isolation:?}");
        assert_eq!(response.headers["x-chain-response"], "a", "{isolation:?}");
    }
}

#[tokio::test]
async fn configuration_is_validated_by_the_plugin() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    plugin.validate_config(r#"{"name":"x"}"#).await.unwrap();
    let error = plugin.validate_config(r#"{"reject":true}"#).await.unwrap_err();
    assert!(error.contains("rejected on purpose"), "{error}");
    let error = plugin.validate_config(r#"{"nmae":"x"}"#).await.unwrap_err();
    assert!(error.contains("unknown field"), "{error}");
}

#[tokio::test]
async fn broken_modules_do_not_load_and_compiled_code_is_cached() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    assert!(engine.load("junk", b"\0asm junk", Limits::default()).unwrap_err().contains("not a loadable component"));

    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sluice_tests::test_filters().join("probe.wasm")).unwrap();
    let cached = Engine::new(Some(cache.path().to_owned())).unwrap();
    let first = cached.load("probe", &bytes, Limits::default()).unwrap();
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    let again = cached.load("probe", &bytes, Limits::default()).unwrap();
    assert_eq!(first.hash, again.hash);
    again.validate_config("null").await.unwrap();
}
