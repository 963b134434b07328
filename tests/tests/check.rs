//! `sluice check`: every error printed with file, object and field; exit 1 if there is any.

use std::path::Path;
use std::process::Command;

use sluice_tests::sluice_bin;

fn check(path: &Path) -> (i32, String) {
    let output = Command::new(sluice_bin()).arg("check").arg(path).output().unwrap();
    (output.status.code().unwrap(), String::from_utf8(output.stdout).unwrap())
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn valid_manifests_pass() {
    let (code, out) = check(&repo("examples/quickstart"));
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("objects checked, 0 errors\n"), "{out}");
}

#[test]
fn every_error_is_printed_and_fails_the_check() {
    let (code, out) = check(&repo("crates/route/tests/golden/errors.yaml"));
    assert_eq!(code, 1, "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 13, "{out}");
    assert!(
        out.contains("errors.yaml: Ingress default/mixed: spec.rules[1].http.paths[3].backend.service: Service default/nowhere not found"),
        "{out}"
    );
    assert!(out.ends_with("13 errors\n"), "{out}");
}

#[test]
fn unreadable_paths_fail_the_check() {
    let (code, out) = check(Path::new("/nonexistent/manifests"));
    assert_eq!(code, 1);
    assert!(out.contains("error: /nonexistent/manifests: cannot read"), "{out}");
}
