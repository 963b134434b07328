//! Golden tests: each `golden/NAME.yaml` is translated and compiled; the snapshot's JSON
//! description must equal `golden/NAME.json`. Re-bless with `SLUICE_BLESS=1 cargo test`.

use std::path::Path;
use std::sync::Arc;

use sluice_config::{IngressInfo, TranslateOptions, parse_manifests, translate};
use sluice_route::Snapshot;

fn compile(name: &str, text: &str) -> serde_json::Value {
    let origin: Arc<str> = Arc::from(name);
    let parsed = parse_manifests(&origin, text);
    let mut model = translate(&parsed.manifests, &TranslateOptions::new("sluice"));
    model.errors.extend(parsed.errors);
    // Each route shows the filters its Ingress attaches (built-ins compiled from annotations
    // first), or why they are invalid.
    let filters = |ingress: &Arc<IngressInfo>, _: &mut Vec<_>| match &ingress.filters {
        Ok(specs) => serde_json::json!(specs),
        Err(why) => serde_json::json!({ "invalid": why }),
    };
    let mut description = Snapshot::compile_with(model, &Snapshot::default(), filters).describe();
    description.as_object_mut().unwrap().remove("generation");
    description
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    inputs.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    inputs.sort();
    assert!(inputs.len() >= 5, "golden inputs missing from {}", dir.display());
    let mut failures = Vec::new();
    for input in inputs {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let actual =
            serde_json::to_string_pretty(&compile(&name, &std::fs::read_to_string(&input).unwrap())).unwrap() + "\n";
        let expected_path = input.with_extension("json");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!("{name}: differs from {}:\n{actual}", expected_path.display()));
        }
    }
    assert!(failures.is_empty(), "{}\n(re-bless with SLUICE_BLESS=1 if the change is intended)", failures.join("\n"));
}
