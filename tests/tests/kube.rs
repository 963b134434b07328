//! Cluster mode end to end: the real binary with `--kube`, watching a fake API server that
//! speaks the list/watch protocol, in front of real echo pods.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::fake_api::FakeApi;
use sluice_tests::manifests::{
    annotated_ingress, basic_auth_secret, filtered_ingress, ingress, opaque_secret, service,
};
use sluice_tests::tls::{Certificate, Connection};
use sluice_tests::{Client, Gateway, Pods, basic_authorization};

/// Polls `check` every 20 ms until it holds; fails after 15 s saying `what`.
async fn eventually<F: Future<Output = bool>>(what: &str, check: impl FnMut() -> F) {
    within(Duration::from_secs(15), what, check).await;
}

/// The bound for what should take at most 2-3 s: room for a busy machine, and still well below
/// the tens of seconds a slow recovery takes.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Polls `check` every 20 ms until it holds; fails after `bound` saying `what`.
async fn within<F: Future<Output = bool>>(bound: Duration, what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + bound;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An echo pod on `ip`, and a fake API server holding the Service `app` with that pod ready.
async fn one_pod_cluster(ip: &str) -> (Pods, FakeApi) {
    let pods = Pods::start(&[ip]).await.unwrap();
    let api = FakeApi::start().await.unwrap();
    api.apply_yaml(&service("app", &pods.addrs, &[]));
    (pods, api)
}

/// Two replicas of the gateway, `replica-a` and `replica-b`, watching `api` and writing
/// `addresses` into our Ingresses' status.
async fn two_replicas(api: &FakeApi, dir: &std::path::Path, addresses: &str) -> (Gateway, Gateway) {
    let kubeconfig = api.kubeconfig(dir).unwrap();
    let args = ["--publish-address", addresses];
    let a = Gateway::start_kube_as("replica-a", &kubeconfig, &args).await.unwrap();
    let b = Gateway::start_kube_as("replica-b", &kubeconfig, &args).await.unwrap();
    (a, b)
}

/// The `.status.loadBalancer.ingress` of the Ingress `default/NAME`.
fn load_balancer(api: &FakeApi, name: &str) -> serde_json::Value {
    api.get("Ingress", "default", name).unwrap()["status"]["loadBalancer"]["ingress"].clone()
}

async fn status(client: &Client, gateway: &Gateway, host: &str, path: &str) -> u16 {
    client.get(&gateway.url(path), host).await.map_or(0, |r| r.status)
}

#[tokio::test]
async fn ingresses_go_live_change_and_go_away_once_every_kind_is_listed() {
    let (_pods, api) = one_pod_cluster("127.0.0.60").await;
    api.apply_yaml(&ingress("web", "web.test", &[("/", "Prefix", "app")]));
    // Not ready while one kind cannot be listed: a snapshot without endpoints would answer 503s.
    api.set_unavailable("EndpointSlice", true);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path()).unwrap();
    let mut gateway = Gateway::spawn(&Gateway::kube(&kubeconfig), &[], &[], false).unwrap();
    let client = Client::new();
    let readyz = format!("http://{}/readyz", gateway.admin);
    eventually("the admin listener answers", || async { client.get(&readyz, "admin").await.is_ok() }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get(&readyz, "admin").await.unwrap().status, 503);
    api.set_unavailable("EndpointSlice", false);
    assert!(gateway.ready().await.unwrap());
    assert_eq!(status(&client, &gateway, "web.test", "/").await, 200);

    // Added, edited, deleted.
    api.apply_yaml(&ingress("api", "api.test", &[("/v1", "Prefix", "app")]));
    eventually("the new Ingress serves", || async { status(&client, &gateway, "api.test", "/v1/x").await == 200 })
        .await;
    api.apply_yaml(&ingress("api", "api.test", &[("/v2", "Prefix", "app")]));
    eventually("the edit applies", || async { status(&client, &gateway, "api.test", "/v2/x").await == 200 }).await;
    assert_eq!(status(&client, &gateway, "api.test", "/v1/x").await, 404);
    api.delete("Ingress", "default", "api");
    eventually("the deleted Ingress goes away", || async {
        status(&client, &gateway, "api.test", "/v2/x").await == 404
    })
    .await;
    assert_eq!(status(&client, &gateway, "web.test", "/").await, 200);

    // An Ingress of another class is not ours.
    let other = ingress("other", "other.test", &[("/", "Prefix", "app")])
        .replace("ingressClassName: sluice", "ingressClassName: nginx");
    api.apply_yaml(&other);
    api.apply_yaml(&ingress("late", "late.test", &[("/", "Prefix", "app")]));
    eventually("a later Ingress serves", || async { status(&client, &gateway, "late.test", "/").await == 200 }).await;
    assert_eq!(status(&client, &gateway, "other.test", "/").await, 404);
}

#[tokio::test]
async fn endpoint_slices_steer_a_rolling_update_with_no_failed_request() {
    let mut pods = Pods::start(&["127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"]).await.unwrap();
    let [old_a, old_b, new_a, new_b] = [pods.addrs[0], pods.addrs[1], pods.addrs[2], pods.addrs[3]];
    let api = FakeApi::start().await.unwrap();
    api.apply_yaml(&service("app", &[old_a, old_b], &[]));
    api.apply_yaml(&ingress("web", "web.test", &[("/", "Prefix", "app")]));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_kube(&api.kubeconfig(dir.path()).unwrap(), &[]).await.unwrap();
    let url = gateway.url("/");

    // Clients keep asking throughout; every answer must be a 200.
    let (stop, sent, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, stop, sent, failed) =
                (Client::new(), url.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = client.get(&url, "web.test").await.is_ok_and(|r| r.status == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let client = Client::new();
    let served_by = |pod: std::net::SocketAddr| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut pods = std::collections::HashSet::new();
            for _ in 0..40 {
                pods.insert(client.get(&url, "web.test").await.map(|r| r.pod()).unwrap_or_default());
            }
            pods.contains(&pod.to_string())
        }
    };
    // One old pod at a time: its replacement starts not ready, turns ready; the old one turns not
    // ready (terminating), and only once the gateway has stopped using it does it exit.
    let mut ready = vec![old_a, old_b];
    for (old, new) in [(0, new_a), (1, new_b)] {
        api.apply_yaml(&service("app", &ready, &[new]));
        tokio::time::sleep(Duration::from_millis(200)).await;
        ready.push(new);
        api.apply_yaml(&service("app", &ready, &[]));
        eventually("the new pod gets traffic", || served_by(new)).await;
        let leaving = pods.addrs[old];
        ready.retain(|addr| *addr != leaving);
        api.apply_yaml(&service("app", &ready, &[leaving]));
        eventually("the old pod gets no traffic", || async { !served_by(leaving).await }).await;
        pods.kill(old);
        api.apply_yaml(&service("app", &ready, &[]));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 100, "only {sent} requests were sent");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the rolling update");
}

#[tokio::test]
async fn a_rotated_secret_serves_new_handshakes() {
    let (_pods, api) = one_pod_cluster("127.0.0.65").await;
    let (first, second) = (Certificate::new(&["secure.test"]), Certificate::new(&["secure.test"]));
    api.apply_yaml(&first.secret("cert"));
    let tls = ingress("secure", "secure.test", &[("/", "Prefix", "app")])
        .replace("  rules:\n", "  tls: [{hosts: [secure.test], secretName: cert}]\n  rules:\n");
    api.apply_yaml(&tls);
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_kube(&api.kubeconfig(dir.path()).unwrap(), &[]).await.unwrap();
    let mut open = Connection::open(gateway.https, Some("secure.test"), false).await.unwrap();
    assert_eq!(open.peer.as_ref(), Some(&first.der));
    assert_eq!(open.get("secure.test", "/").await.unwrap().0.status, 200);

    api.apply_yaml(&second.secret("cert"));
    eventually("the rotated certificate is served", || async {
        let fresh = Connection::open(gateway.https, Some("secure.test"), false).await.unwrap();
        fresh.peer.as_ref() == Some(&second.der)
    })
    .await;
    assert_eq!(open.get("secure.test", "/").await.unwrap().0.status, 200, "the open connection was disturbed");
}

#[tokio::test]
async fn basic_auth_reads_the_labelled_secret_an_ingress_names() {
    let (_pods, api) = one_pod_cluster("127.0.0.76").await;
    let users = [("auth", "ann:{PLAIN}one")];
    api.apply_yaml(&basic_auth_secret("staff", &users));
    api.apply_yaml(&opaque_secret("unlabelled", &[], &users));
    let guarded = |name: &str, secret: &str| {
        let annotations =
            [("nginx.ingress.kubernetes.io/auth-type", "basic"), ("nginx.ingress.kubernetes.io/auth-secret", secret)];
        annotated_ingress(name, &format!("{name}.test"), &[("/", "Prefix", "app")], &annotations)
    };
    api.apply_yaml(&guarded("staff", "staff"));
    api.apply_yaml(&guarded("unlabelled", "unlabelled"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_kube(&api.kubeconfig(dir.path()).unwrap(), &[]).await.unwrap();
    let client = Client::new();
    let as_ann = |password: &str| [("authorization", basic_authorization("ann", password))];
    let get = async |host: &str, credentials: &[(&str, String)]| {
        let headers: Vec<(&str, &str)> = credentials.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let url = gateway.url("/");
        client.request(http::Method::GET, &url, host, &headers, Default::default()).await.unwrap().status
    };
    assert_eq!(get("staff.test", &as_ann("one")).await, 200);
    assert_eq!(get("staff.test", &as_ann("two")).await, 401);
    // Unlabelled Secrets are never read: the route fails closed.
    assert_eq!(get("unlabelled.test", &as_ann("one")).await, 500);

    // A changed Secret applies to the next request.
    api.apply_yaml(&basic_auth_secret("staff", &[("auth", "ann:{PLAIN}two")]));
    eventually("the changed Secret's password is asked for", || async {
        get("staff.test", &as_ann("two")).await == 200
    })
    .await;
    assert_eq!(get("staff.test", &as_ann("one")).await, 401);
}

#[tokio::test]
async fn after_an_api_server_outage_and_restart_changes_apply_within_seconds() {
    let pods = Pods::start(&["127.0.0.66", "127.0.0.69"]).await.unwrap();
    let (kept, leaving) = (pods.addrs[0], pods.addrs[1]);
    let mut api = FakeApi::start().await.unwrap();
    api.apply_yaml(&service("app", &[kept, leaving], &[]));
    api.apply_yaml(&ingress("stays", "stays.test", &[("/", "Prefix", "app")]));
    api.apply_yaml(&ingress("goes", "goes.test", &[("/", "Prefix", "app")]));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_kube(&api.kubeconfig(dir.path()).unwrap(), &[]).await.unwrap();
    let client = Client::new();
    let admin = |path: &str| format!("http://{}{path}", gateway.admin);
    assert_eq!(status(&client, &gateway, "goes.test", "/").await, 200);
    let served_by = |pod: std::net::SocketAddr| {
        let (client, url) = (client.clone(), gateway.url("/"));
        async move {
            let mut pods = std::collections::HashSet::new();
            for _ in 0..20 {
                pods.insert(client.get(&url, "stays.test").await.map(|r| r.pod()).unwrap_or_default());
            }
            pods.contains(&pod.to_string())
        }
    };
    assert!(served_by(leaving).await);

    // The API server goes away mid-watch, long enough for the watchers' retries to reach their
    // longest wait: nothing about it fails a request, and the gateway stays ready.
    api.stop();
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(4) {
        assert_eq!(status(&client, &gateway, "stays.test", "/").await, 200);
        assert_eq!(client.get(&admin("/readyz"), "admin").await.unwrap().status, 200, "not ready in an API outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Meanwhile an Ingress is deleted and another added. The API server comes back with an
    // empty watch cache, so every watch gets 410 Gone and must list again; right after, an
    // Ingress is added and an endpoint turns not ready.
    api.delete("Ingress", "default", "goes");
    api.apply_yaml(&ingress("new", "new.test", &[("/", "Prefix", "app")]));
    api.restart().await.unwrap();
    let restarted = Instant::now();
    api.apply_yaml(&ingress("after", "after.test", &[("/", "Prefix", "app")]));
    api.apply_yaml(&service("app", &[kept], &[leaving]));
    within(PROMPTLY, "the Ingress added after the restart serves", || async {
        status(&client, &gateway, "after.test", "/").await == 200
    })
    .await;
    let served = restarted.elapsed();
    within(PROMPTLY, "the endpoint that turned not ready gets no traffic", || async { !served_by(leaving).await })
        .await;
    let flipped = restarted.elapsed();
    assert_eq!(status(&client, &gateway, "new.test", "/").await, 200, "the Ingress added during the outage");
    assert_eq!(status(&client, &gateway, "goes.test", "/").await, 404, "the Ingress deleted during the outage");
    assert_eq!(status(&client, &gateway, "stays.test", "/").await, 200);
    assert!(gateway.config().await.unwrap()["errors"].as_array().unwrap().is_empty());
    // Every watch reports its reconnect once.
    let kinds = ["IngressClass", "Ingress", "Service", "EndpointSlice", "Secret"];
    let kinds = kinds.into_iter().chain(["plugin ConfigMap", "custom-headers ConfigMap"]);
    let reconnects: Vec<String> =
        kinds.map(|kind| format!("sluice_watch_reconnect_seconds_count{{kind=\"{kind}\"}} 1\n")).collect();
    within(PROMPTLY, "every watch reports its reconnect", || async {
        let metrics = client.get(&admin("/metrics"), "admin").await.unwrap().body;
        reconnects.iter().all(|line| metrics.contains(line))
    })
    .await;
    let all = restarted.elapsed();
    eprintln!(
        "after the API server restart: a new Ingress served in {served:?}, an endpoint flip in {flipped:?}, \
         every watch back in {all:?}"
    );
}

#[tokio::test]
async fn only_the_lease_holder_writes_ingress_status_and_events() {
    let (_pods, api) = one_pod_cluster("127.0.0.67").await;
    api.apply_yaml(&ingress("web", "web.test", &[("/", "Prefix", "app")]));
    let broken = annotated_ingress(
        "broken",
        "broken.test",
        &[("/", "Prefix", "app")],
        &[("nginx.ingress.kubernetes.io/app-root", "relative")],
    );
    api.apply_yaml(&broken);
    // Carries our address from when it was ours; now another controller's.
    let ours_before = ingress("moved", "moved.test", &[("/", "Prefix", "app")])
        .replace("ingressClassName: sluice", "ingressClassName: nginx")
        + "status: {loadBalancer: {ingress: [{ip: 127.0.0.70}, {hostname: lb.sluice.test}]}}\n";
    api.apply_yaml(&ours_before);
    let theirs = ingress("theirs", "theirs.test", &[("/", "Prefix", "app")])
        .replace("ingressClassName: sluice", "ingressClassName: nginx")
        + "status: {loadBalancer: {ingress: [{ip: 127.0.0.99}]}}\n";
    api.apply_yaml(&theirs);

    let dir = tempfile::tempdir().unwrap();
    let _replicas = two_replicas(&api, dir.path(), "127.0.0.70,lb.sluice.test").await;
    let addresses = |name: &str| load_balancer(&api, name);
    let published = serde_json::json!([{"ip": "127.0.0.70"}, {"hostname": "lb.sluice.test"}]);
    eventually("our Ingress shows the address", || async { addresses("web") == published }).await;
    eventually("the Ingress that is no longer ours is cleared", || async {
        addresses("moved").as_array().is_some_and(Vec::is_empty)
    })
    .await;
    let event_about = |name: &str| {
        api.writes().into_iter().any(|w| w.path.ends_with("/events") && w.body["regarding"]["name"] == name)
    };
    eventually("the broken Ingress gets an Event", || async { event_about("broken") }).await;
    let event = api.writes().into_iter().find(|w| w.path.ends_with("/events")).unwrap().body;
    assert_eq!(event["type"], "Warning");
    assert!(event["note"].as_str().unwrap().contains("app-root"), "{event}");
    assert_eq!(addresses("theirs"), serde_json::json!([{"ip": "127.0.0.99"}]), "another controller's status is kept");

    // Let both replicas run a few election rounds, then check who wrote what.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lease = api.get("Lease", "default", "sluice-sluice-leader").unwrap();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    let writes = api.writes();
    let status_writes: Vec<_> =
        writes.iter().filter(|w| w.path.ends_with("/status") || w.path.ends_with("/events")).collect();
    assert!(status_writes.len() >= 3, "{status_writes:?}");
    for write in &status_writes {
        assert!(
            write.agent.ends_with(&format!("({holder})")),
            "{} {} by {}, not the holder {holder}",
            write.method,
            write.path,
            write.agent
        );
    }
    let patches = |name: &str| writes.iter().filter(|w| w.path.ends_with(&format!("/ingresses/{name}/status"))).count();
    assert_eq!((patches("web"), patches("moved"), patches("theirs")), (1, 1, 0), "each status written once");
    assert!(!event_about("web"), "no Event for a valid Ingress");
}

#[tokio::test]
async fn plugin_modules_published_as_config_maps_hot_load() {
    use base64::Engine as _;
    let (_pods, api) = one_pod_cluster("127.0.0.68").await;
    let filters = "- plugin: add-tenant\n  config: {header: x-tenant, value: acme}\n";
    api.apply_yaml(&filtered_ingress("shop", "shop.test", &[("/", "Prefix", "app")], filters));
    let module = |bytes: &[u8]| {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "add-tenant", "namespace": "platform", "labels": {"sluice.dev/plugin": "add-tenant"}},
            "binaryData": {"add-tenant.wasm": base64::engine::general_purpose::STANDARD.encode(bytes)},
            "data": {"limits.yaml": "deadline: 20ms\n"}})
    };
    // First a broken module: the Ingress that uses it fails closed, with the reason in /config.
    api.apply(module(b"not a component"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start_kube(&api.kubeconfig(dir.path()).unwrap(), &[]).await.unwrap();
    let client = Client::new();
    assert_eq!(status(&client, &gateway, "shop.test", "/").await, 500);
    let errors = gateway.config().await.unwrap()["errors"].to_string();
    assert!(errors.contains("ConfigMap platform/add-tenant") && errors.contains("plugin not loaded"), "{errors}");

    // The fixed module is compiled and swapped in while the gateway runs.
    let wasm = std::fs::read(sluice_tests::test_filters().join("add_tenant.wasm")).unwrap();
    api.apply(module(&wasm));
    eventually("the published module runs", || async { status(&client, &gateway, "shop.test", "/").await == 200 })
        .await;
    let reply = client.get(&gateway.url("/"), "shop.test").await.unwrap();
    assert_eq!(reply.json()["headers"]["x-tenant"], "acme");
    let plugins = gateway.config().await.unwrap()["plugins"].to_string();
    assert!(plugins.contains("\"add-tenant\""), "{plugins}");

    // Gone again: the Ingress fails closed rather than running without its filter.
    api.delete("ConfigMap", "platform", "add-tenant");
    eventually("the removed module is gone", || async { status(&client, &gateway, "shop.test", "/").await == 500 })
        .await;
}

#[tokio::test]
async fn a_leader_told_to_stop_hands_the_lease_over_at_once() {
    let (_pods, api) = one_pod_cluster("127.0.0.71").await;
    api.apply_yaml(&ingress("web", "web.test", &[("/", "Prefix", "app")]));
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(&api, dir.path(), "127.0.0.71").await;
    let addresses = |name: &str| load_balancer(&api, name);
    let published = serde_json::json!([{"ip": "127.0.0.71"}]);
    eventually("our Ingress shows the address", || async { addresses("web") == published }).await;
    let holder = || api.get("Lease", "default", "sluice-sluice-leader").unwrap()["spec"]["holderIdentity"].clone();
    let (leader, name, successor) =
        if holder() == "replica-a" { (a, "replica-a", "replica-b") } else { (b, "replica-b", "replica-a") };

    // SIGTERM: the leader keeps serving for its shutdown delay, but gives the Lease up at once.
    let pid = leader.child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    within(PROMPTLY, "the leader releases the Lease", || async { holder() != name }).await;
    let released = stopped.elapsed();
    api.apply_yaml(&ingress("later", "later.test", &[("/", "Prefix", "app")]));
    within(PROMPTLY, "the other replica writes status", || async { addresses("later") == published }).await;
    let written = stopped.elapsed();
    eprintln!("after SIGTERM to the leader: Lease released in {released:?}, status written by the next in {written:?}");
    assert_eq!(holder(), successor);
    let writers: Vec<_> =
        (api.writes().into_iter()).filter(|w| w.path.ends_with("/ingresses/later/status")).map(|w| w.agent).collect();
    assert!(writers.iter().all(|agent| agent.ends_with(&format!("({successor})"))), "{writers:?}");
}
