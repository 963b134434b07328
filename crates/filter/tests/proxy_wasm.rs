//! The proxy-wasm host against a real module built with the official Rust SDK
//! (`tests/proxy-wasm/probe`): what such filters can read and change, and how their failures
//! are contained.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{BackendKey, FailurePolicy, FilterSpec, Isolation, PortRef, Target};
use sluice_filter::{Attachment, Chain, Engine, Exchange, FailureKind, Limits, Plugin, RequestContext};
use sluice_route::{Backend, RouteName};

fn probe(engine: &Engine, limits: Limits) -> Arc<Plugin> {
    let bytes = std::fs::read(sluice_tests::proxy_wasm_filters().join("pw_probe.wasm")).unwrap();
    Arc::new(engine.load("pw-probe", &bytes, limits).unwrap())
}

fn attach(plugin: &Arc<Plugin>, config: &str, failure: FailurePolicy, isolation: Isolation) -> Attachment {
    let spec =
        FilterSpec { plugin: "pw-probe".into(), config: config.into(), failure, isolation, field: String::new() };
    Attachment::new(spec, Ok(plugin.clone()))
}

fn context() -> RequestContext {
    let endpoints: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap()];
    let key =
        BackendKey { namespace: "default".into(), service: "web".into(), port: PortRef::Number(80), cluster_ip: false };
    RequestContext {
        client: "192.0.2.7:4000".parse().unwrap(),
        namespace: "default".into(),
        local: "198.51.100.1:8443".parse().unwrap(),
        scheme: "https",
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
    http::Request::get(path)
        .header("host", "example.com")
        .header("x-request-id", "req-1")
        .header("x-drop", "1")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn response(status: u16) -> http::response::Parts {
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = http::StatusCode::from_u16(status).unwrap();
    parts
}

#[test]
fn proxy_wasm_modules_are_recognised_and_components_are_not() {
    let engine = Engine::new(None).unwrap();
    assert!(probe(&engine, Limits::default()).is_proxy_wasm());
    assert!(probe(&engine, Limits::default()).calls_synchronously());
    let component = std::fs::read(sluice_tests::test_filters().join("probe.wasm")).unwrap();
    assert!(!engine.load("probe", &component, Limits::default()).unwrap().is_proxy_wasm());
}

#[tokio::test]
async fn headers_change_both_ways_and_properties_are_read() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    let config =
        r#"{"set_request":[["x-a","1"]],"remove_request":["x-drop"],"set_response":[["x-b","2"]],"properties":true}"#;
    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, config, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    for round in 0..3 {
        let mut exchange = Exchange::new(context(), &chain);
        let mut parts = request("/hello?x=1");
        assert!(chain.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
        let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert_eq!(header("x-a"), "1", "round {round}");
        assert!(parts.headers.get("x-drop").is_none());
        assert_eq!(header("x-pseudo-path"), "/hello?x=1");
        assert_eq!(header("x-prop-path"), "/hello?x=1");
        assert_eq!(header("x-prop-method"), "GET");
        assert_eq!(header("x-prop-host"), "example.com");
        assert_eq!(header("x-prop-scheme"), "https");
        assert_eq!(header("x-prop-protocol"), "HTTP/1.1");
        assert_eq!(header("x-prop-id"), "req-1");
        assert_eq!(header("x-prop-source"), "192.0.2.7:4000");
        assert_eq!(header("x-prop-source-port"), "4000");
        assert_eq!(header("x-prop-destination"), "198.51.100.1:8443");
        assert_eq!(header("x-prop-destination-port"), "8443");
        assert_eq!(header("x-prop-plugin"), "pw-probe");
        // Four pseudo-headers and the three real ones the request had.
        assert_eq!(header("x-header-count"), "7");

        let mut answer = response(201);
        chain.on_response(&mut exchange, &mut answer).await.unwrap();
        assert_eq!(answer.headers["x-b"], "2");
        assert_eq!(answer.headers["x-prop-code"], "201");
        assert_eq!(answer.headers["x-prop-request-path"], "/hello?x=1", "the request is remembered");
    }
}

#[tokio::test]
async fn a_local_response_answers_the_request() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, r#"{"deny":"/admin"}"#, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    let mut exchange = Exchange::new(context(), &chain);
    let answer = chain.on_request(&mut exchange, &mut request("/admin/x")).await.unwrap().expect("an answer");
    assert_eq!(answer.status(), 403);
    assert_eq!(answer.headers()["x-denied-by"], "pw-probe");
    assert_eq!(answer.body(), b"denied by proxy-wasm");
    let mut exchange = Exchange::new(context(), &chain);
    assert!(chain.on_request(&mut exchange, &mut request("/public")).await.unwrap().is_none());
}

#[tokio::test]
async fn configuration_is_checked_by_on_configure() {
    let engine = Engine::new(None).unwrap();
    let plugin = probe(&engine, Limits::default());
    assert_eq!(plugin.validate_config(r#"{"deny":"/x"}"#).await, Ok(()));
    assert_eq!(plugin.validate_config("null").await, Ok(()));
    let rejected = plugin.validate_config(r#"{"reject":true}"#).await.unwrap_err();
    assert!(rejected.contains("proxy_on_configure returned false"), "{rejected}");
    // A string is handed over as it is: this one is not JSON, so the probe rejects it.
    assert!(plugin.validate_config(r#""not json""#).await.is_err());
}

#[tokio::test]
async fn shared_data_counts_across_requests_and_instances() {
    let engine = Engine::new(None).unwrap();
    let plugin = probe(&engine, Limits::default());
    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, r#"{"count":true}"#, FailurePolicy::Closed, Isolation::Request)].into(),
    };
    let mut counts = Vec::new();
    for _ in 0..3 {
        let mut exchange = Exchange::new(context(), &chain);
        chain.on_request(&mut exchange, &mut request("/")).await.unwrap();
        let mut answer = response(200);
        chain.on_response(&mut exchange, &mut answer).await.unwrap();
        counts.push(answer.headers["x-count"].to_str().unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(counts[1], counts[0] + 1);
    assert_eq!(counts[2], counts[0] + 2);
}

#[tokio::test]
async fn hostile_modules_fail_their_request_within_limits() {
    let engine = Engine::new(None).unwrap();
    let limits = Limits { deadline: Duration::from_millis(100), memory: 16 << 20 };
    let plugin = probe(&engine, limits);
    for (hostile, kind) in
        [("loop", FailureKind::Timeout), ("memory", FailureKind::Memory), ("trap", FailureKind::Trap)]
    {
        let config = format!(r#"{{"hostile":"{hostile}"}}"#);
        let closed = Chain {
            namespace: "default".into(),
            filters: [attach(&plugin, &config, FailurePolicy::Closed, Isolation::Instance)].into(),
        };
        let started = Instant::now();
        let mut exchange = Exchange::new(context(), &closed);
        let failure = chain_failure(&closed, &mut exchange).await;
        assert_eq!(failure.kind, kind, "{hostile}: {failure}");
        assert!(started.elapsed() < Duration::from_secs(1), "{hostile} took {:?}", started.elapsed());

        let open = Chain {
            namespace: "default".into(),
            filters: [
                attach(&plugin, &config, FailurePolicy::Open, Isolation::Instance),
                attach(&plugin, r#"{"set_request":[["x-after","1"]]}"#, FailurePolicy::Closed, Isolation::Instance),
            ]
            .into(),
        };
        let mut exchange = Exchange::new(context(), &open);
        let mut parts = request("/");
        assert!(open.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
        assert_eq!(parts.headers["x-after"], "1", "{hostile}: the next filter runs");
        assert_eq!(exchange.failures.len(), 1);
        assert_eq!(exchange.failures[0].kind, kind);
        // The failed filter has no context for the response; the other one runs.
        open.on_response(&mut exchange, &mut response(200)).await.unwrap();
    }
    // The engine serves normally afterwards.
    let fine = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, r#"{"set_request":[["x-a","1"]]}"#, FailurePolicy::Closed, Isolation::Instance)]
            .into(),
    };
    let mut exchange = Exchange::new(context(), &fine);
    let mut parts = request("/");
    assert!(fine.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
    assert_eq!(parts.headers["x-a"], "1");
}

async fn chain_failure(chain: &Chain, exchange: &mut Exchange) -> sluice_filter::FilterFailure {
    chain.on_request(exchange, &mut request("/")).await.expect_err("the filter fails")
}

#[tokio::test]
async fn a_go_filter_from_the_sdk_template_runs() {
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let bytes = std::fs::read(sluice_tests::go_filter()).unwrap();
    let plugin = Arc::new(engine.load("add-tenant", &bytes, Limits::default()).unwrap());
    assert!(plugin.is_proxy_wasm());
    let rejected = plugin.validate_config("{}").await.unwrap_err();
    assert!(rejected.contains("proxy_on_configure returned false"), "{rejected}");
    let config = r#"{"header":"x-tenant","value":"acme"}"#;
    assert_eq!(plugin.validate_config(config).await, Ok(()));
    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, config, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    for _ in 0..3 {
        let mut exchange = Exchange::new(context(), &chain);
        let mut parts = request("/");
        assert!(chain.on_request(&mut exchange, &mut parts).await.unwrap().is_none());
        assert_eq!(parts.headers["x-tenant"], "acme");
        let mut answer = response(200);
        chain.on_response(&mut exchange, &mut answer).await.unwrap();
        assert_eq!(answer.headers["x-served-for"], "acme");
    }
}

#[tokio::test]
async fn body_phases_buffer_when_a_filter_pauses_and_stream_otherwise() {
    use sluice_filter::{BodyError, BodyStep};
    let engine = Engine::new(Some(sluice_tests::plugin_cache())).unwrap();
    let plugin = probe(&engine, Limits::default());
    let pass = |step: Result<BodyStep, BodyError>| match step.unwrap() {
        BodyStep::Pass(bytes) => String::from_utf8(bytes).unwrap(),
        BodyStep::Respond(answer) => panic!("answered {answer:?}"),
    };
    // The first filter upper-cases chunks as they come; the second rewrites the whole body.
    let chain = Chain {
        namespace: "default".into(),
        filters: [
            attach(&plugin, r#"{"upper_request":true}"#, FailurePolicy::Closed, Isolation::Instance),
            attach(&plugin, r#"{"rewrite_request":["AB","x"]}"#, FailurePolicy::Closed, Isolation::Instance),
        ]
        .into(),
    };
    let mut exchange = Exchange::new(context(), &chain);
    assert!(chain.on_request(&mut exchange, &mut request("/")).await.unwrap().is_none());
    assert!(chain.has_body_phase(&exchange, true));
    // "a" then "b": the second filter holds both until the end, so "AB" across chunks is seen whole.
    assert_eq!(pass(chain.on_body(&mut exchange, true, b"a".to_vec(), false, 100)), "");
    assert_eq!(pass(chain.on_body(&mut exchange, true, b"b".to_vec(), false, 100)), "");
    assert_eq!(pass(chain.on_body(&mut exchange, true, b"cd".to_vec(), true, 100)), "xCD");
    // Response bodies pass through filters that only continue.
    assert_eq!(pass(chain.on_body(&mut exchange, false, b"same".to_vec(), false, 100)), "same");

    // Held back past the cap: too large.
    let mut exchange = Exchange::new(context(), &chain);
    chain.on_request(&mut exchange, &mut request("/")).await.unwrap();
    assert_eq!(pass(chain.on_body(&mut exchange, true, vec![b'a'; 60], false, 100)), "");
    assert!(matches!(chain.on_body(&mut exchange, true, vec![b'a'; 60], false, 100), Err(BodyError::TooLarge)));

    // A body-phase answer replaces the upstream's.
    let deny = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, r#"{"deny_body":"evil"}"#, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    let mut exchange = Exchange::new(context(), &deny);
    deny.on_request(&mut exchange, &mut request("/")).await.unwrap();
    match deny.on_body(&mut exchange, true, b"so evil".to_vec(), true, 100).unwrap() {
        BodyStep::Respond(answer) => assert_eq!(answer.status(), 403),
        BodyStep::Pass(bytes) => panic!("passed {bytes:?}"),
    }
}

#[tokio::test]
async fn ticks_run_while_an_attachment_holds_their_configuration() {
    let engine = Engine::new(None).unwrap();
    let plugin = probe(&engine, Limits::default());
    let ticking = r#"{"ticks":[20,"held"]}"#;
    // Reads the count without ticking: a zero period.
    let reader = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, r#"{"ticks":[0,"held"]}"#, FailurePolicy::Closed, Isolation::Request)].into(),
    };
    let count = || {
        let reader = &reader;
        async move {
            let mut exchange = Exchange::new(context(), reader);
            reader.on_request(&mut exchange, &mut request("/")).await.unwrap();
            let mut answer = response(200);
            reader.on_response(&mut exchange, &mut answer).await.unwrap();
            answer.headers["x-ticks"].to_str().unwrap().parse::<u64>().unwrap_or(0)
        }
    };

    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, ticking, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = count().await;
    assert!(first >= 3, "{first} ticks in 300 ms");
    // A new attachment of the same configuration (the next snapshot's) takes the ticks over:
    // they go on, in the same instance.
    let next = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, ticking, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    drop(chain);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = count().await;
    assert!(later >= first + 3, "{first} ticks, then {later}");
    // No attachment holds the configuration any more: the ticks stop.
    drop(next);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = count().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count().await, stopped);
}

#[tokio::test]
async fn a_tick_that_spins_is_stopped_by_the_deadline_and_the_next_starts_afresh() {
    let engine = Engine::new(None).unwrap();
    let plugin = probe(&engine, Limits { deadline: Duration::from_millis(50), memory: 16 << 20 });
    let hostile = r#"{"ticks":[20,"spun"],"hostile_tick":true}"#;
    let chain = Chain {
        namespace: "default".into(),
        filters: [attach(&plugin, hostile, FailurePolicy::Closed, Isolation::Instance)].into(),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Each tick counted, then spun until its deadline; a new instance took the next one. The
    // request runs in an instance of its own.
    let mut exchange = Exchange::new(context(), &chain);
    chain.on_request(&mut exchange, &mut request("/")).await.unwrap();
    let mut answer = response(200);
    chain.on_response(&mut exchange, &mut answer).await.unwrap();
    let ticks: u64 = answer.headers["x-ticks"].to_str().unwrap().parse().unwrap();
    assert!(ticks >= 3, "{ticks} ticks in a second");
}
