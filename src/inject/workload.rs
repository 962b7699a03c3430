//! One document at a time: which kinds get what, and the edits to a pod template.
//!
//! Workloads (`Pod`, `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`, `Job`,
//! `CronJob` of the built-in API groups) get the sidecar in their pod template; a `Service`
//! gets the opaque-ports annotation; the items of a `List` are handled the same way; every
//! other document, and every field not named here, is left exactly as it was (the editor is
//! lossless: bytes, comments and key order included).
//!
//! Injecting is idempotent: sidewire's containers (`sidewire-init`, `sidewire-proxy`), its
//! volume and its annotations are removed or overwritten first, and the port lists it wrote
//! are read back and merged, so the output of `inject` injected again is the same bytes.

use yaml_edit::{Mapping, Sequence, SequenceBuilder};

use super::annotations::{self, PortList, PROXY_CONFIG, PROXY_VERSION};
use super::plan::{Plan, PodPorts};
use super::sidecar::{self, CONFIG_VOLUME, INIT_NAME, PROXY_NAME};

/// A document that cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    /// The line (1-based) of the node at fault.
    pub line: usize,
    /// What is wrong, naming the kind and the object.
    pub problem: String,
}

/// Where a document is, for messages: the original text (positions are computed in it, so
/// documents are edited last to first) and the document's label (`document 2`).
pub struct Place<'a> {
    /// The input text, unedited before this document.
    pub text: &'a str,
    /// Warnings for stderr, one line each (without the `sidewire: inject: FILE: ` prefix).
    pub warnings: &'a mut Vec<String>,
    /// `document N`, or `document N, item M` inside a `List`.
    pub label: String,
}

impl Place<'_> {
    fn line(&self, m: &Mapping) -> usize {
        m.start_position(self.text).line
    }
}

/// How the kinds `inject` knows reach their pod template.
enum Target {
    /// The pod template at this path of mapping keys (empty: the object itself, a Pod).
    Template(&'static [&'static str]),
    /// A Service: annotation only.
    Service,
    /// A list of objects under `items`.
    List,
    /// Anything else: left alone.
    Other,
}

/// The target for an object of `api_version` and `kind`. Only the built-in API groups
/// count: a custom resource that happens to be called `Job` is left alone.
fn target(api_version: &str, kind: &str) -> Target {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Target::Template(&[]),
        ("", "Service") => Target::Service,
        ("", "List") => Target::List,
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Target::Template(&["spec", "template"]),
        ("batch", "CronJob") => Target::Template(&["spec", "jobTemplate", "spec", "template"]),
        (_, k) if k.ends_with("List") => Target::List,
        _ => Target::Other,
    }
}

/// A scalar field as a string (`None` when absent or not a scalar).
fn field(m: &Mapping, key: &str) -> Option<String> {
    m.get(key)?.as_scalar().map(|s| s.as_string())
}

/// `Kind name` for messages (`Deployment web`, or just the kind without a name).
fn describe(m: &Mapping, kind: &str) -> String {
    match m.get_mapping("metadata").and_then(|md| field(&md, "name")) {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    }
}

/// Injects one object (a document or a `List` item).
///
/// Errors: a workload without a pod template, or an annotation that is not a port list.
pub fn object(m: &Mapping, plan: &Plan, place: &mut Place<'_>) -> Result<(), DocError> {
    let kind = field(m, "kind").unwrap_or_default();
    let api_version = field(m, "apiVersion").unwrap_or_default();
    match target(&api_version, &kind) {
        Target::Other => Ok(()),
        Target::Service => service(m, plan, place),
        Target::List => {
            let Some(items) = m.get_sequence("items") else {
                return Ok(());
            };
            let label = place.label.clone();
            // Last to first, like documents: positions before the edit stay right.
            for i in (0..items.len()).rev() {
                if let Some(item) = items.get(i).and_then(|n| n.as_mapping().cloned()) {
                    place.label = format!("{label}, item {}", i + 1);
                    let r = object(&item, plan, place);
                    place.label = label.clone();
                    r.map_err(|e| DocError {
                        line: e.line,
                        problem: format!("item {}: {}", i + 1, e.problem),
                    })?;
                }
            }
            Ok(())
        }
        Target::Template(path) => {
            let what = describe(m, &kind);
            let mut tpl = m.clone();
            for (i, key) in path.iter().enumerate() {
                tpl = tpl.get_mapping(key).ok_or_else(|| DocError {
                    line: place.line(&tpl),
                    problem: format!(
                        "{what} has no {}: no pod template to inject into",
                        path[..=i].join(".")
                    ),
                })?;
            }
            let at = if path.is_empty() {
                String::new()
            } else {
                format!("{}.", path.join("."))
            };
            template(&tpl, &what, &at, plan, place)
        }
    }
}

/// What a field `inject` edits must hold, when present and not null.
#[derive(Clone, Copy)]
enum Shape {
    Mapping,
    List,
}

/// Checks that `m.key` is absent, null or of `shape`: `inject` would otherwise replace
/// something it does not understand (`annotations: [a]`) and lose it.
fn check_shape(m: &Mapping, key: &str, shape: Shape) -> Result<(), String> {
    let Some(node) = m.get(key) else {
        return Ok(());
    };
    let ok = match shape {
        Shape::Mapping => node.is_mapping(),
        Shape::List => node.is_sequence(),
    } || node.as_scalar().is_some_and(|s| {
        !s.is_quoted() && matches!(s.as_string().as_str(), "" | "~" | "null" | "Null" | "NULL")
    });
    if ok {
        return Ok(());
    }
    Err(match shape {
        Shape::Mapping => format!("{key} is not a mapping"),
        Shape::List => format!("{key} is not a list"),
    })
}

/// Checks the shapes of the object's `metadata` and `metadata.annotations`.
fn check_metadata(m: &Mapping) -> Result<(), String> {
    check_shape(m, "metadata", Shape::Mapping)?;
    match m.get_mapping("metadata") {
        Some(md) => {
            check_shape(&md, "annotations", Shape::Mapping).map_err(|e| format!("metadata.{e}"))
        }
        None => Ok(()),
    }
}

/// A Service: `config.sidewire.io/opaque-ports` when the merged set is not empty.
fn service(m: &Mapping, plan: &Plan, place: &mut Place<'_>) -> Result<(), DocError> {
    check_metadata(m).map_err(|problem| DocError {
        line: place.line(m),
        problem: format!("{}: {problem}", describe(m, "Service")),
    })?;
    let meta = m.get_mapping("metadata");
    let ann = meta.as_ref().and_then(|md| md.get_mapping("annotations"));
    let opaque = annotations::merged(&plan.opaque_ports, ann.as_ref(), PortList::Opaque).map_err(
        |problem| DocError {
            line: place.line(ann.as_ref().unwrap_or(m)),
            problem: format!("{}: {problem}", describe(m, "Service")),
        },
    )?;
    if opaque.is_empty() {
        return Ok(());
    }
    let ann = child_mapping(&child_mapping(m, "metadata"), "annotations");
    ann.set(PortList::Opaque.name(), opaque.to_string());
    Ok(())
}

/// Injects the pod template `tpl` (`at` is its path with a trailing dot, for messages).
fn template(
    tpl: &Mapping,
    what: &str,
    at: &str,
    plan: &Plan,
    place: &mut Place<'_>,
) -> Result<(), DocError> {
    let Some(spec) = tpl.get_mapping("spec") else {
        return Err(DocError {
            line: place.line(tpl),
            problem: format!("{what} has no {at}spec: no pod spec to inject into"),
        });
    };
    if spec
        .get("hostNetwork")
        .and_then(|n| n.as_scalar().and_then(|s| s.as_bool()))
        == Some(true)
    {
        place.warnings.push(format!(
            "{}: {what}: hostNetwork is true, left as it was (interception would apply to \
             the node's network namespace)",
            place.label
        ));
        return Ok(());
    }
    if plan.classic_sidecar && (what.starts_with("Job") || what.starts_with("CronJob")) {
        place.warnings.push(format!(
            "{}: {what}: with --classic-sidecar the proxy keeps running after the job's \
             containers finish, so the job never completes; use the native sidecar (the \
             default, Kubernetes 1.29+)",
            place.label
        ));
    }
    // Everything that can fail is read before the first edit.
    let shapes = check_metadata(tpl).and_then(|()| {
        ["initContainers", "containers", "volumes"]
            .iter()
            .try_for_each(|k| check_shape(&spec, k, Shape::List).map_err(|e| format!("spec.{e}")))
    });
    shapes.map_err(|problem| DocError {
        line: place.line(tpl),
        problem: format!("{what}: {at}{problem}"),
    })?;
    let ann = tpl
        .get_mapping("metadata")
        .and_then(|md| md.get_mapping("annotations"));
    let list = |flag, l| {
        annotations::merged(flag, ann.as_ref(), l).map_err(|problem| DocError {
            line: place.line(ann.as_ref().unwrap_or(tpl)),
            problem: format!("{what}: {at}metadata: {problem}"),
        })
    };
    let ports = PodPorts {
        opaque: list(&plan.opaque_ports, PortList::Opaque)?,
        skip_inbound: list(&plan.skip_inbound_ports, PortList::SkipInbound)?,
        skip_outbound: list(&plan.skip_outbound_ports, PortList::SkipOutbound)?,
    };
    let internal = |problem: String| DocError {
        line: place.line(tpl),
        problem: format!("internal error, please report: {problem}"),
    };
    let config = sidecar::proxy_config(&ports.opaque).map_err(internal)?;
    let built = (
        sidecar::init_container(plan, &ports),
        sidecar::proxy_container(plan, !plan.classic_sidecar),
        sidecar::config_volume(),
    );
    let (Some(init), Some(proxy), Some(volume)) = built else {
        return Err(internal("a container could not be built".into()));
    };

    // Annotations first: they are what the proxy reads, and what the next inject reads back.
    let ann = child_mapping(&child_mapping(tpl, "metadata"), "annotations");
    for (l, set) in [
        (PortList::Opaque, &ports.opaque),
        (PortList::SkipInbound, &ports.skip_inbound),
        (PortList::SkipOutbound, &ports.skip_outbound),
    ] {
        if !set.is_empty() {
            ann.set(l.name(), set.to_string());
        }
    }
    ann.set(PROXY_VERSION, env!("CARGO_PKG_VERSION"));
    ann.set(PROXY_CONFIG, config);

    remove_named(&spec, "initContainers", &[INIT_NAME, PROXY_NAME]);
    remove_named(&spec, "containers", &[PROXY_NAME]);
    remove_named(&spec, "volumes", &[CONFIG_VOLUME]);
    if plan.classic_sidecar {
        insert_first(&spec, "initContainers", &[init]);
        insert_first(&spec, "containers", &[proxy]);
    } else {
        insert_first(&spec, "initContainers", &[init, proxy]);
    }
    append(&spec, "volumes", volume);
    Ok(())
}

/// The mapping under `key`, created (block style) when absent, null or an empty `{}`.
fn child_mapping(parent: &Mapping, key: &str) -> Mapping {
    if let Some(m) = parent.get_mapping(key) {
        if !(m.is_empty() && m.is_flow_style()) {
            return m;
        }
    }
    parent.set(key, Mapping::new_pending_block());
    parent
        .get_mapping(key)
        .unwrap_or_else(Mapping::new_pending_block)
}

/// The name of a list item that is a mapping with a `name`.
fn item_name(seq: &Sequence, i: usize) -> Option<String> {
    seq.get(i)?.as_mapping().and_then(|m| field(m, "name"))
}

/// Removes the items of the list under `key` named one of `names`.
fn remove_named(spec: &Mapping, key: &str, names: &[&str]) {
    let Some(seq) = spec.get_sequence(key) else {
        return;
    };
    let mut i = 0;
    while i < seq.len() {
        if item_name(&seq, i).is_some_and(|n| names.contains(&n.as_str())) {
            seq.remove(i);
        } else {
            i += 1;
        }
    }
}

/// The list under `key` when it can take items in block style: absent, null or an empty
/// `[]` become a new block list.
fn block_list(spec: &Mapping, key: &str) -> Option<Sequence> {
    spec.get_sequence(key)
        .filter(|s| !(s.is_empty() && s.is_flow_style()))
}

/// Puts `items` first in the list under `key` (created when needed, before `containers`
/// for `initContainers`, as people write them).
fn insert_first(spec: &Mapping, key: &str, items: &[Mapping]) {
    match block_list(spec, key) {
        Some(seq) => {
            for (i, item) in items.iter().enumerate() {
                seq.insert(i, item);
            }
        }
        None => {
            let mut b = SequenceBuilder::new();
            for item in items {
                b = b.item(item);
            }
            let Some(seq) = b.build_document().as_sequence() else {
                return;
            };
            if key == "initContainers" && spec.get(key).is_none() && spec.contains_key("containers")
            {
                spec.insert_before("containers", key, seq);
            } else {
                spec.set(key, seq);
            }
        }
    }
}

/// Appends `item` to the list under `key` (created when needed).
fn append(spec: &Mapping, key: &str, item: Mapping) {
    match block_list(spec, key) {
        Some(seq) => seq.push(item),
        None => {
            if let Some(seq) = SequenceBuilder::new()
                .item(item)
                .build_document()
                .as_sequence()
            {
                spec.set(key, seq);
            }
        }
    }
}
