//! `sidewire inject`: golden files, idempotence, pass-through, Kubernetes schema validation
//! and error messages, through the real binary.
//!
//! Golden files: `testdata/inject/NAME.in.yaml` is injected with the flags on its first line
//! (`# args: --opaque-ports=4406`) and must give `NAME.out.yaml` byte for byte. After a
//! deliberate change, rewrite them with `UPDATE_GOLDEN=1 cargo test --release --test inject`
//! and review the diff.
//!
//! Schema validation needs the PyPI package `kubernetes-validate` (`.ci/run` installs it);
//! without it the test fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sidewire");

/// The Kubernetes version the outputs are validated against: the newest the pinned
/// `kubernetes-validate` (1.37.0, see .ci/run) knows.
const KUBERNETES_VERSION: &str = "1.37.0";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject")
}

/// Every golden case: (name, input path, flags from its `# args:` line).
fn cases() -> Vec<(String, PathBuf, Vec<String>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".in.yaml")?
                .to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let args = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# args:"))
                .unwrap_or_else(|| panic!("{}: the first line must be `# args: ...`", p.display()))
                .split_whitespace()
                .map(String::from)
                .collect();
            Some((name, p, args))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 13, "golden cases missing: {out:?}");
    out
}

/// `sidewire inject ARGS FILE`: (exit code, stdout, stderr).
fn inject(args: &[String], file: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("inject")
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sidewire inject ARGS -` with `input` on stdin.
fn inject_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused flag exits before reading: a broken pipe then is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp(name: &str, text: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sidewire-inject-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn golden(name: &str) -> PathBuf {
    dir().join(format!("{name}.out.yaml"))
}

#[test]
fn outputs_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failed = Vec::new();
    for (name, input, args) in cases() {
        let (code, out, err) = inject(&args, &input);
        assert_eq!(code, 0, "{name}: {err}");
        if name == "host-network" {
            assert!(
                err.contains("warning") && err.contains("hostNetwork"),
                "{err}"
            );
        } else {
            assert!(err.is_empty(), "{name}: unexpected stderr: {err}");
        }
        let path = golden(&name);
        if update {
            std::fs::write(&path, &out).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if out != want {
            failed.push(format!(
                "{name}: output differs from {}:\n{out}",
                path.display()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{}\n(UPDATE_GOLDEN=1 rewrites the golden files)",
        failed.join("\n")
    );
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    for (name, input, args) in cases() {
        let (_, once, _) = inject(&args, &input);
        let out = temp(&format!("{name}.once.yaml"), &once);
        let (code, twice, err) = inject(&args, &out);
        assert_eq!(code, 0, "{name}: {err}");
        assert_eq!(twice, once, "{name}: a second inject changed the output");
        // The port lists are recorded in annotations: without the port flags, same output.
        let rest: Vec<String> = args
            .iter()
            .filter(|a| !a.contains("-ports"))
            .cloned()
            .collect();
        let (_, again, _) = inject(&rest, &out);
        assert_eq!(again, once, "{name}: without the port flags ({rest:?})");
    }
}

/// Splits a stream into documents at `---` lines.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
        }
    }
    docs
}

#[test]
fn other_documents_pass_through_byte_for_byte() {
    for (name, input, args) in cases() {
        let text = std::fs::read_to_string(&input).unwrap();
        let (_, out, _) = inject(&args, &input);
        let (ins, outs) = (documents(&text), documents(&out));
        assert_eq!(ins.len(), outs.len(), "{name}: document count");
        for (i, (a, b)) in ins.iter().zip(&outs).enumerate() {
            let injected = [
                "kind: Pod",
                "kind: Deployment",
                "kind: StatefulSet",
                "kind: DaemonSet",
                "kind: ReplicaSet",
                "kind: Job",
                "kind: CronJob",
                "kind: Service",
                "kind: List",
            ]
            .iter()
            .any(|k| a.lines().any(|l| l == *k));
            if !injected || name == "host-network" {
                assert_eq!(a, b, "{name}: document {} changed", i + 1);
            } else {
                // Injected: every line of the input is still there, in order.
                let mut rest = b.lines();
                // sidewire's own annotations are rewritten (merged, canonical).
                for line in a.lines().filter(|l| !l.contains("sidewire.io/")) {
                    assert!(
                        rest.any(|l| l == line),
                        "{name}: document {}: input line {line:?} missing or out of order in\n{b}",
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn outputs_validate_against_the_kubernetes_schemas() {
    let probe = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    let version = match probe {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "kubernetes-validate is not installed: `pip install kubernetes-validate==1.37.0` \
             (Debian's system python: in a venv, or with --break-system-packages; .ci/run does it)"
        ),
    };
    eprintln!("kubernetes-validate {version}, Kubernetes {KUBERNETES_VERSION}, strict");
    let files: Vec<PathBuf> = cases().iter().map(|(n, _, _)| golden(n)).collect();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schema validation failed:\n{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

#[test]
fn parse_errors_name_the_document_and_the_line() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b\nspec: {}\n";
    let file = temp("broken.yaml", text);
    let (code, out, err) = inject(&[], &file);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let want = format!("sidewire: inject: {}: document 2, line ", file.display());
    assert!(err.starts_with(&want), "{err}");
    // Bad indentation and duplicate keys, which a lenient parser would take.
    for (text, place) in [
        ("kind: Pod\nspec:\n  a: 1\n b: 2\n", "document 1, line 4:"),
        (
            "a: 1\n---\nkind: Pod\nkind: Service\n",
            "document 2, line 4: duplicate key \"kind\"",
        ),
    ] {
        let (code, _, err) = inject_stdin(&[], text);
        assert_eq!(code, 1, "{text:?}: {err}");
        assert!(
            err.starts_with("sidewire: inject: <stdin>: ") && err.contains(place),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn workloads_without_a_pod_template_are_errors_naming_document_and_kind() {
    let text = "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n";
    let (code, out, err) = inject_stdin(&[], text);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert_eq!(
        err.trim_end(),
        "sidewire: inject: <stdin>: document 2, line 9: Deployment web has no spec.template: no pod template to inject into"
    );
    let (code, _, err) = inject_stdin(
        &[],
        "apiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate: {}\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("document 1") && err.contains("CronJob has no spec.jobTemplate.spec"),
        "{err}"
    );
    let (code, _, err) = inject_stdin(
        &[],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    config.linkerd.io/opaque-ports: \"80,x\"\nspec: {containers: []}\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("document 1")
            && err.contains("config.linkerd.io/opaque-ports")
            && err.contains("\"x\""),
        "{err}"
    );
    let (code, _, err) = inject_stdin(
        &[],
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: w}\n  spec: {}\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("document 1, line 9: item 2: Deployment w has no spec.template"),
        "{err}"
    );
    // A field inject would have to replace, losing what it holds: refused.
    for (text, what) in [
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations: [a]\nspec: {containers: []}\n",
            "Pod: metadata.annotations is not a mapping",
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec:\n  containers: []\n  volumes: {a: 1}\n",
            "Pod: spec.volumes is not a list",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: x\n",
            "Service: metadata is not a mapping",
        ),
    ] {
        let (code, _, err) = inject_stdin(&["--opaque-ports=1"], text);
        assert_eq!(code, 1, "{text:?}: {err}");
        assert!(
            err.contains("document 1, line 1: ") && err.contains(what),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn stdin_dash_or_no_file_and_other_kinds_untouched() {
    let text = "# custom resource\napiVersion: example.com/v1\nkind: Job\nspec:\n  template: {spec: {containers: []}}\n";
    for args in [&["-"][..], &[][..]] {
        let (code, out, err) = inject_stdin(args, text);
        assert_eq!((code, out.as_str(), err.as_str()), (0, text, ""));
    }
}

#[test]
fn bad_flags_are_refused() {
    for (flag, value, what) in [
        ("--opaque-ports", "70000", "70000"),
        ("--skip-inbound-ports", "100-10", "start is after"),
        ("--proxy-uid", "0", "0"),
        ("--seccomp-profile", "/etc/x.json", "relative"),
        ("--image", "", "empty"),
    ] {
        let (code, _, err) = inject_stdin(&[flag, value], "kind: Pod\n");
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(what), "{flag} {value}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let (code, _, err) = inject(&[], Path::new("/nonexistent/deploy.yml"));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("sidewire: inject: /nonexistent/deploy.yml: cannot read"),
        "{err}"
    );
}
