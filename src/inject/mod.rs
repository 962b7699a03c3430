//! `sidewire inject`: adds the sidecar to Kubernetes manifests, as `linkerd inject` does.
//! YAML in (a file or stdin; one or many documents; `List`s), YAML out (stdout), for
//! `sidewire inject deployment.yml | kubectl apply -f -`.
//!
//! What is added, and to what: [`workload`] (which kinds, idempotence), [`sidecar`] (the
//! containers, the volume, the proxy's configuration), [`annotations`] (names, Linkerd
//! aliases, merging with the flags).
//!
//! # The YAML libraries, and why these
//!
//! `serde_yaml` is archived (its last release, 0.9.34+deprecated, 2024-03-25). Compared in
//! November 2026 from crates.io (`cargo info`, the index's publish times) and a prototype:
//!
//! | crate | latest | model | key order | comments | untouched documents |
//! |---|---|---|---|---|---|
//! | `serde_yaml_ng` | 0.10.0, 2024-05-26 | serde over libyaml (`unsafe-libyaml`, C translated to unsafe Rust) | kept | lost | re-emitted |
//! | `serde_norway` | 0.9.42, 2024-12-21 | the same, another fork | kept | lost | re-emitted |
//! | `serde_yml` | 0.0.13, 2026-05 | deprecated shim over `noyalib` (0.0.58, 0.0.x releases weekly); `serde_yml` itself has a RustSec advisory (unsound) | – | – | – |
//! | `yaml-rust2` | 0.13.2, 2026-11-21 | pure Rust, YAML 1.2, value tree + emitter | kept | lost | re-emitted |
//! | `saphyr` | 0.3.4, 2026-11-11 | yaml-rust2's successor; value tree + emitter | kept | lost | re-emitted: its emitter drops aliases and panics (`todo!()`) on block scalars kept as written |
//! | `yaml-edit` | 0.3.6, 2026-10-31 | lossless syntax tree (rowan) with an editing API | kept | **kept** | **byte for byte** |
//!
//! The two serde forks have had no release for two years and parse through translated C.
//! The maintained value-tree libraries (`yaml-rust2`, `saphyr`) lose comments and re-format
//! every document, so a ConfigMap passing through would come out changed. `yaml-edit` is
//! lossless: what `inject` does not edit stays byte for byte (comments, quoting, key order,
//! flow or block style), and what it adds is formatted like its surroundings. Its parser
//! recovers from errors by design, though: it accepts `a: b: c` or a key indented one column
//! off. So the input is first checked with `saphyr-parser` (the saphyr project's strict YAML
//! 1.2 parser, [`strict`]), which names the document and line of any syntax error and refuses
//! duplicate keys; only well-formed input reaches the editor.
//!
//! # Errors
//!
//! One line on stderr and exit code 1: `sidewire: inject: FILE: document N, line L: problem`
//! (`<stdin>` for standard input). Bad flags are clap's errors (exit code 2). Warnings (a
//! pod with `hostNetwork: true` is left alone) go to stderr and do not change the exit code.

pub mod annotations;
pub mod plan;
pub mod sidecar;
pub mod strict;
pub mod workload;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::Args;
use yaml_edit::YamlFile;

use crate::config::PortSet;
use plan::{Plan, DEFAULT_IMAGE, DEFAULT_PROXY_UID};
use workload::Place;

/// `sidewire inject` arguments.
#[derive(Args, Debug, Clone)]
pub struct InjectArgs {
    /// Kubernetes YAML to inject (one or many documents); `-` or none: standard input.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Ports that skip protocol detection (server-speaks-first protocols): ports and ranges,
    /// `25,3306,10000-10100`. Written on pod templates and Services, merged with their
    /// `config.sidewire.io/opaque-ports` (or Linkerd's `config.linkerd.io/opaque-ports`).
    #[arg(long, value_name = "LIST", value_parser = PortSet::parse, default_value = "")]
    pub opaque_ports: PortSet,
    /// Inbound ports that bypass the proxy: ports and ranges, `25,3306,10000-10100`.
    #[arg(long, value_name = "LIST", value_parser = PortSet::parse, default_value = "")]
    pub skip_inbound_ports: PortSet,
    /// Outbound ports that bypass the proxy: ports and ranges, `25,3306,10000-10100`.
    #[arg(long, value_name = "LIST", value_parser = PortSet::parse, default_value = "")]
    pub skip_outbound_ports: PortSet,
    /// Image of the init container and the proxy (its entrypoint must be `sidewire`).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE, value_parser = non_empty)]
    pub image: String,
    /// UID the proxy runs as (1 to 2147483647, Kubernetes' `runAsUser` range; not 0);
    /// `sidewire init` exempts its connections.
    #[arg(long, value_name = "UID", default_value_t = DEFAULT_PROXY_UID,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub proxy_uid: u32,
    /// Add the proxy as the first regular container instead of a native sidecar (an init
    /// container with `restartPolicy: Always`, Kubernetes 1.29+).
    #[arg(long)]
    pub classic_sidecar: bool,
    /// Run the proxy under this `Localhost` seccomp profile (a path relative to the
    /// kubelet's seccomp directory, e.g. `sidewire.json` from deploy/seccomp/) instead of
    /// `RuntimeDefault`.
    #[arg(long, value_name = "NAME", value_parser = seccomp_name)]
    pub seccomp_profile: Option<String>,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("{s:?}: an image reference has no whitespace"));
    }
    Ok(s.to_string())
}

/// A `localhostProfile` as Kubernetes accepts it: a relative path without `..`.
fn seccomp_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with('/') || s.split('/').any(|p| p == "..") {
        return Err(format!(
            "{s:?}: must be a path relative to the kubelet's seccomp directory, without `..`"
        ));
    }
    Ok(s.to_string())
}

impl InjectArgs {
    /// The plan these arguments describe.
    pub fn plan(&self) -> Plan {
        Plan {
            image: self.image.clone(),
            proxy_uid: self.proxy_uid,
            opaque_ports: self.opaque_ports.clone(),
            skip_inbound_ports: self.skip_inbound_ports.clone(),
            skip_outbound_ports: self.skip_outbound_ports.clone(),
            classic_sidecar: self.classic_sidecar,
            seccomp_profile: self.seccomp_profile.clone(),
        }
    }
}

/// Why a manifest could not be injected: `document N, line L: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {doc}, line {line}: {problem}")]
pub struct InjectError {
    /// The document (1-based).
    pub doc: usize,
    /// The line (1-based) in the input.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The result of a successful injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The YAML to apply.
    pub yaml: String,
    /// Warnings, one line each, in document order.
    pub warnings: Vec<String>,
}

/// Injects every document of `text` according to `plan`.
///
/// Errors: malformed YAML, a workload without a pod template, an annotation that is not a
/// port list; nothing is written then.
pub fn inject(text: &str, plan: &Plan) -> Result<Injected, InjectError> {
    let checked = strict::check(text).map_err(|e| InjectError {
        doc: e.doc,
        line: e.line,
        problem: e.problem,
    })?;
    let file = YamlFile::from_str(text).map_err(|e| {
        let line = match &e {
            yaml_edit::YamlError::Parse { line, .. } => line.unwrap_or(1),
            _ => 1,
        };
        InjectError {
            doc: checked
                .doc_lines
                .iter()
                .filter(|&&l| l <= line)
                .count()
                .max(1),
            line,
            problem: e.to_string(),
        }
    })?;
    let docs: Vec<_> = file.documents().collect();
    let mut warnings = Vec::new();
    // Last to first: an edit moves the text after it, and messages give lines of the input.
    for (i, doc) in docs.iter().enumerate().rev() {
        let Some(m) = doc.as_mapping() else {
            continue;
        };
        let mut doc_warnings = Vec::new();
        let mut place = Place {
            text,
            warnings: &mut doc_warnings,
            label: format!("document {}", i + 1),
        };
        workload::object(&m, plan, &mut place).map_err(|e| InjectError {
            doc: i + 1,
            line: e.line,
            problem: e.problem,
        })?;
        doc_warnings.reverse();
        warnings.extend(doc_warnings);
    }
    warnings.reverse();
    let mut yaml = file.to_string();
    if !yaml.is_empty() && !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    Ok(Injected { yaml, warnings })
}

/// Runs `sidewire inject`: the result on stdout, warnings and errors on stderr. Exit code 0,
/// or 1 with one line on stderr.
pub fn main(a: &InjectArgs) -> ExitCode {
    let (name, read) = match &a.file {
        Some(p) if p.as_os_str() != "-" => (p.display().to_string(), std::fs::read_to_string(p)),
        _ => {
            let mut s = String::new();
            let r = std::io::stdin().read_to_string(&mut s).map(|_| s);
            ("<stdin>".to_string(), r)
        }
    };
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sidewire: inject: {name}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    match inject(&text, &a.plan()) {
        Ok(out) => {
            for w in &out.warnings {
                eprintln!("sidewire: inject: {name}: warning: {w}");
            }
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout
                .write_all(out.yaml.as_bytes())
                .and_then(|()| stdout.flush())
            {
                eprintln!("sidewire: inject: cannot write the output: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidewire: inject: {name}: {e}");
            ExitCode::FAILURE
        }
    }
}
