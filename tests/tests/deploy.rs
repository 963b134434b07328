//! The cluster manifests: every object `kubectl kustomize` and `helm template` render from
//! `deploy/` parses into its typed Kubernetes object with no field left over, and what the
//! Deployment runs agrees with the binary's own command line.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{IngressClass, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_tests::{k8s_tool, sluice_bin};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Runs a rendering tool in the repository and returns what it printed.
fn render(tool: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(k8s_tool(tool)).args(args).current_dir(root()).output().unwrap();
    assert!(output.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Parses `value` as `T` and checks nothing was dropped or changed on the way: a misspelt or
/// misplaced field does not survive the round trip.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let object: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value:#}"));
    let back = serde_json::to_value(&object).unwrap();
    if let Some(difference) = difference("", value, &back) {
        panic!("{} {}: {difference}", value["kind"], value["metadata"]["name"]);
    }
    object
}

/// Where `a` and `b` differ, as a path, if they do.
fn difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(key, value)| match b.get(key) {
            Some(other) => difference(&format!("{path}.{key}"), value, other),
            None => Some(format!("{path}.{key} is not a field of this kind")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (a, b))| difference(&format!("{path}[{i}]"), a, b))
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: {a} reads back as {b}")),
    }
}

/// Every rendered object, typed, by kind.
#[derive(Default)]
struct Rendered {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    classes: Vec<IngressClass>,
    cluster_roles: Vec<ClusterRole>,
    roles: Vec<Role>,
    secrets: Vec<Secret>,
    webhooks: Vec<ValidatingWebhookConfiguration>,
    network_policies: Vec<NetworkPolicy>,
    /// Objects of kinds Kubernetes does not define (cert-manager's), untyped.
    others: Vec<Value>,
    kinds: BTreeMap<String, usize>,
}

fn parse(yaml: &str) -> Rendered {
    let mut rendered = Rendered::default();
    let mut reader = yaml.as_bytes();
    for document in serde_saphyr::read::<_, Value>(&mut reader) {
        let document = document.unwrap();
        if document.is_null() {
            continue;
        }
        let kind = document["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(&document)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&document)),
            "ClusterRole" => rendered.cluster_roles.push(typed(&document)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&document)),
            "Role" => rendered.roles.push(typed(&document)),
            "RoleBinding" => drop(typed::<RoleBinding>(&document)),
            "IngressClass" => rendered.classes.push(typed(&document)),
            "Deployment" => rendered.deployments.push(typed(&document)),
            "Service" => rendered.services.push(typed(&document)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(&document)),
            "Secret" => rendered.secrets.push(typed(&document)),
            "ValidatingWebhookConfiguration" => rendered.webhooks.push(typed(&document)),
            "NetworkPolicy" => rendered.network_policies.push(typed(&document)),
            "Certificate" | "Issuer" if document["apiVersion"] == "cert-manager.io/v1" => {
                rendered.others.push(document.clone());
            }
            other => panic!("unexpected kind {other}"),
        }
        *rendered.kinds.entry(kind).or_default() += 1;
    }
    rendered
}

/// What every rendering must hold: one of each object, least-privilege RBAC, and a Deployment
/// whose arguments the binary accepts and whose probes and grace period fit them.
fn check(rendered: &Rendered, what: &str) {
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "IngressClass"] {
        assert_eq!(rendered.kinds.get(kind), Some(&1), "{what}: one {kind}");
    }
    assert_eq!(rendered.classes[0].spec.as_ref().unwrap().controller.as_deref(), Some("sluice.dev/ingress-controller"));
    for rule in rendered.cluster_roles[0].rules.iter().flatten().chain(rendered.roles[0].rules.iter().flatten()) {
        let everything = |list: &Option<Vec<String>>| list.iter().flatten().any(|s| s == "*");
        assert!(!everything(&Some(rule.verbs.clone())) && !everything(&rule.resources), "{what}: a wildcard rule");
        assert!(!rule.verbs.iter().any(|v| v == "delete" || v == "deletecollection"), "{what}: deletes");
    }
    let status_rule = rendered.cluster_roles[0]
        .rules
        .iter()
        .flatten()
        .any(|rule| rule.resources.iter().flatten().any(|r| r == "ingresses/status") && rule.verbs == ["patch"]);
    assert!(status_rule, "{what}: may patch ingresses/status and nothing else there");

    let [deployment] = rendered.deployments.as_slice() else { panic!("{what}: one Deployment") };
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "{what}");
    let pod = spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    let flag = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(str::to_owned);
    let seconds = |name: &str| humantime::parse_duration(&flag(name).unwrap()).unwrap().as_secs();
    let grace = pod.termination_grace_period_seconds.unwrap() as u64;
    assert!(grace > seconds("shutdown-delay") + seconds("drain-timeout"), "{what}: the grace period is too short");
    let probe = |probe: &Option<k8s_openapi::api::core::v1::Probe>| probe.as_ref().unwrap().http_get.clone().unwrap();
    assert_eq!(probe(&container.readiness_probe).path.as_deref(), Some("/readyz"));
    assert_eq!(probe(&container.liveness_probe).path.as_deref(), Some("/healthz"));
    assert!(flag("admin").unwrap().starts_with("0.0.0.0:"), "{what}: probes reach the admin listener");
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
    assert!(container.resources.as_ref().unwrap().requests.is_some(), "{what}: resource requests");

    // The binary accepts the arguments exactly as written (parsed, not run: `--help` after them).
    let output = std::process::Command::new(sluice_bin()).args(&args).arg("--help").output().unwrap();
    assert!(output.status.success(), "{what}: {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn kustomize_renders_typed_objects_for_every_variant() {
    for dir in ["deploy", "deploy/variants/nodeport", "deploy/variants/host-network"] {
        let rendered = parse(&render("kubectl", &["kustomize", dir]));
        check(&rendered, dir);
        let service = rendered.services[0].spec.clone().unwrap();
        let expected = match dir {
            "deploy" => "LoadBalancer",
            "deploy/variants/nodeport" => "NodePort",
            _ => "ClusterIP",
        };
        assert_eq!(service.type_.as_deref(), Some(expected), "{dir}");
        let pod = rendered.deployments[0].spec.clone().unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, (dir == "deploy/variants/host-network").then_some(true), "{dir}");
    }
}

#[test]
fn the_helm_chart_renders_typed_objects_for_its_options() {
    let chart = ["template", "sluice", "deploy/helm/sluice", "--namespace", "sluice-system"];
    let options: [&[&str]; 3] = [
        &[],
        &["--set", "service.type=NodePort", "--set", "service.nodePorts.http=30080"],
        &["--set", "hostNetwork=true", "--set", "service.type=ClusterIP", "--set", "publishAddresses={192.0.2.10}"],
    ];
    for extra in options {
        let rendered = parse(&render("helm", &[&chart[..], extra].concat()));
        check(&rendered, &format!("helm {extra:?}"));
        assert_eq!(rendered.kinds.get("PodDisruptionBudget"), Some(&1));
    }
}

/// The webhook: the API server calls a Service that reaches the port the gateway serves it on,
/// trusting the CA that issued the certificate the pods read, for Ingresses of our class only,
/// failing closed within 5 s.
#[test]
fn the_helm_chart_wires_the_admission_webhook() {
    let chart = ["template", "sluice", "deploy/helm/sluice", "--namespace", "sluice-system"];
    let rendered = parse(&render("helm", &chart));
    let [webhook] = rendered.webhooks.as_slice() else { panic!("one ValidatingWebhookConfiguration") };
    let [hook] = webhook.webhooks.as_deref().unwrap() else { panic!("one webhook") };
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.timeout_seconds, Some(5));
    assert_eq!(hook.side_effects, "None");
    let condition = &hook.match_conditions.as_ref().unwrap()[0].expression;
    assert!(condition.ends_with("== 'sluice'"), "{condition}");
    let rules = hook.rules.as_ref().unwrap();
    assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..]));
    let service = hook.client_config.service.as_ref().unwrap();
    assert_eq!((service.name.as_str(), service.path.as_deref()), ("sluice-webhook", Some("/validate")));

    let [secret] = rendered.secrets.as_slice() else { panic!("one Secret") };
    let data = secret.data.as_ref().unwrap();
    assert_eq!(hook.client_config.ca_bundle.as_ref(), data.get("ca.crt"), "the caBundle is the Secret's CA");
    let ca = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    let cert = String::from_utf8(data["tls.crt"].0.clone()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----") && cert.starts_with("-----BEGIN CERTIFICATE-----"));

    let webhook_service = rendered.services.iter().find(|s| s.metadata.name.as_deref() == Some("sluice-webhook"));
    let port = &webhook_service.expect("the webhook's Service").spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    let target = port.target_port.clone().unwrap();
    let pod = rendered.deployments[0].spec.clone().unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let named = container.ports.iter().flatten().find(|p| p.name.as_deref() == Some("webhook")).unwrap();
    assert_eq!(target, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("webhook".into()));
    let args = container.args.clone().unwrap();
    assert!(args.contains(&format!("--webhook=0.0.0.0:{}", named.container_port)), "{args:?}");
    let mounted = container.volume_mounts.iter().flatten().find(|m| m.name == "webhook-tls").unwrap();
    assert!(args.contains(&format!("--webhook-tls-cert={}/tls.crt", mounted.mount_path)), "{args:?}");
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "webhook-tls").unwrap();
    assert_eq!(volume.secret.as_ref().unwrap().secret_name, secret.metadata.name);
    assert!(rendered.network_policies.is_empty(), "no NetworkPolicy unless asked for");

    // cert-manager instead: it issues the Secret and injects the caBundle.
    let options =
        ["--set", "webhook.certManager.enabled=true", "--set", "webhook.networkPolicy.apiServerCIDRs={192.0.2.0/24}"];
    let rendered = parse(&render("helm", &[&chart[..], &options[..]].concat()));
    check(&rendered, "helm with cert-manager");
    let hook = &rendered.webhooks[0];
    let inject = hook.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"].clone();
    assert_eq!(inject, "sluice-system/sluice-webhook");
    let certificate = rendered.others.iter().find(|o| o["kind"] == "Certificate").unwrap();
    assert_eq!(certificate["spec"]["secretName"], "sluice-webhook");
    assert_eq!(certificate["spec"]["dnsNames"][0], "sluice-webhook.sluice-system.svc");
    let [policy] = rendered.network_policies.as_slice() else { panic!("one NetworkPolicy") };
    let rules = policy.spec.as_ref().unwrap().ingress.clone().unwrap();
    assert!(rules[0].from.is_none(), "http, https and admin stay open");
    assert_eq!(rules[1].from.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "192.0.2.0/24");
}
