//! The two containers, the volume and the proxy configuration `inject` adds to a pod
//! template, built from the [`Plan`] and the template's merged port lists.
//!
//! - `sidewire-init` (an init container, first): `sidewire init --proxy-uid UID
//!   [--skip-inbound-ports LIST] [--skip-outbound-ports LIST]`, as root with `NET_ADMIN` and
//!   `NET_RAW` (it programs nftables in the pod's network namespace), nothing else.
//! - `sidewire-proxy`: a native sidecar (init container with `restartPolicy: Always`, right
//!   after `sidewire-init`) or, classic, the first regular container. It runs as the proxy
//!   UID, non-root, read-only root filesystem, no privilege escalation, every capability
//!   dropped, seccomp `RuntimeDefault` or the `Localhost` profile given. Its startup probe on
//!   `/ready` holds the app containers back until the proxy listens (native sidecars only:
//!   the kubelet starts the next container once a sidecar has started).
//! - `sidewire-config`: a downwardAPI volume that turns the template's
//!   `config.sidewire.io/proxy-config` annotation into the file the proxy reads.

use std::fmt::Write as _;

use yaml_edit::{Mapping, MappingBuilder};

use super::annotations::PROXY_CONFIG;
use super::plan::{Plan, PodPorts};
use crate::config::{Config, PortSet};

/// The init container that programs the interception rules.
pub const INIT_NAME: &str = "sidewire-init";
/// The proxy container.
pub const PROXY_NAME: &str = "sidewire-proxy";
/// The volume holding the proxy's configuration file.
pub const CONFIG_VOLUME: &str = "sidewire-config";
/// Where that volume is mounted in the proxy container.
pub const CONFIG_DIR: &str = "/var/run/sidewire";
/// The configuration file's name in that directory.
pub const CONFIG_FILE: &str = "sidewire.toml";
/// The inbound listener's port in the preset (`sidewire init`'s `--inbound-port` default).
pub const INBOUND_PORT: u16 = 4143;
/// The admin port in the preset (`sidewire init`'s `--admin-port` default): probes, metrics.
pub const ADMIN_PORT: u16 = 4191;

/// The sidecar preset, the base of every injected proxy's configuration.
pub const SIDECAR_PRESET: &str = include_str!("../../config/sidecar.toml");

/// The line of the preset that gets the opaque ports.
const OPAQUE_PORTS_LINE: &str = "opaque_ports = []";

/// The proxy's configuration for a pod with these opaque ports: the sidecar preset without
/// its comments, with `detect.opaque_ports` set to the single ports and one
/// `[[detect.port]]` (`protocol = "opaque"`) per range, so a range stays one line however
/// wide it is (an annotation holds at most 256 KiB). Deterministic.
///
/// Errors (internal: the preset changed under this code): the preset has no
/// `opaque_ports = []` line, or the result does not validate.
pub fn proxy_config(opaque: &PortSet) -> Result<String, String> {
    let mut singles = Vec::new();
    let mut ranges = Vec::new();
    for r in opaque.ranges() {
        if r.start() == r.end() {
            singles.push(r.start().to_string());
        } else {
            ranges.push(format!("{}-{}", r.start(), r.end()));
        }
    }
    let mut out = format!(
        "# Written by sidewire inject {}: config/sidecar.toml (comments left out) with this\n\
         # pod's opaque ports. See README, \"Deploy on Kubernetes\".\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut replaced = false;
    let mut blank = true;
    for line in SIDECAR_PRESET.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if t.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        if t == OPAQUE_PORTS_LINE && !replaced {
            replaced = true;
            let _ = writeln!(out, "opaque_ports = [{}]", singles.join(", "));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        return Err(format!(
            "config/sidecar.toml has no `{OPAQUE_PORTS_LINE}` line for the opaque ports"
        ));
    }
    for r in &ranges {
        let _ = write!(
            out,
            "\n[[detect.port]]\nports = \"{r}\"\nprotocol = \"opaque\"\n"
        );
    }
    let cfg = Config::parse(&out, "<generated proxy config>").map_err(|e| e.to_string())?;
    let want: std::collections::BTreeSet<u16> =
        singles.iter().filter_map(|p| p.parse().ok()).collect();
    if cfg.detect.user_opaque_ports != want || cfg.detect.port_rules.len() != ranges.len() {
        return Err("the generated proxy config does not carry the opaque ports".into());
    }
    Ok(out)
}

/// `sidewire init`'s arguments for this plan and pod.
pub fn init_args(plan: &Plan, ports: &PodPorts) -> Vec<String> {
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".to_string(),
        plan.proxy_uid.to_string(),
    ];
    for (flag, set) in [
        ("--skip-inbound-ports", &ports.skip_inbound),
        ("--skip-outbound-ports", &ports.skip_outbound),
    ] {
        if !set.is_empty() {
            args.push(flag.to_string());
            args.push(set.to_string());
        }
    }
    args
}

/// The proxy's arguments: its configuration file.
pub fn proxy_args() -> Vec<String> {
    vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]
}

/// A mapping built by `f`, to be an item of a list: added with `item`, it is written
/// `- key: value` (a list's `mapping` would put the dash on a line of its own).
fn entry(f: impl FnOnce(MappingBuilder) -> MappingBuilder) -> Mapping {
    f(MappingBuilder::new())
        .build_document()
        .as_mapping()
        .unwrap_or_default()
}

/// A block sequence of strings under `key`.
fn strings(m: MappingBuilder, key: &str, items: &[String]) -> MappingBuilder {
    m.sequence(key, |mut s| {
        for i in items {
            s = s.item(i.as_str());
        }
        s
    })
}

/// The `sidewire-init` container.
pub fn init_container(plan: &Plan, ports: &PodPorts) -> Option<Mapping> {
    let m = MappingBuilder::new()
        .pair("name", INIT_NAME)
        .pair("image", plan.image.as_str());
    strings(m, "args", &init_args(plan, ports))
        .mapping("securityContext", |s| {
            s.pair("runAsUser", 0)
                .pair("runAsNonRoot", false)
                .pair("allowPrivilegeEscalation", false)
                .pair("readOnlyRootFilesystem", true)
                .mapping("capabilities", |c| {
                    c.sequence("add", |l| l.item("NET_ADMIN").item("NET_RAW"))
                        .sequence("drop", |l| l.item("ALL"))
                })
                .mapping("seccompProfile", |p| p.pair("type", "RuntimeDefault"))
        })
        .build_document()
        .as_mapping()
}

/// An HTTP GET probe on the admin port.
fn probe(m: MappingBuilder, path: &str, period: u32, failures: u32) -> MappingBuilder {
    m.mapping("httpGet", |h| h.pair("path", path).pair("port", ADMIN_PORT))
        .pair("periodSeconds", period)
        .pair("failureThreshold", failures)
}

/// The `sidewire-proxy` container; `native` adds `restartPolicy: Always` (a native
/// sidecar, to go among the init containers).
pub fn proxy_container(plan: &Plan, native: bool) -> Option<Mapping> {
    let mut m = MappingBuilder::new()
        .pair("name", PROXY_NAME)
        .pair("image", plan.image.as_str());
    m = strings(m, "args", &proxy_args());
    if native {
        m = m.pair("restartPolicy", "Always");
    }
    m.sequence("ports", |s| {
        s.item(entry(|p| {
            p.pair("name", "sidewire-proxy")
                .pair("containerPort", INBOUND_PORT)
        }))
        .item(entry(|p| {
            p.pair("name", "sidewire-admin")
                .pair("containerPort", ADMIN_PORT)
        }))
    })
    // Up to 2 minutes to start, checked every second: the app waits for it.
    .mapping("startupProbe", |p| probe(p, "/ready", 1, 120))
    .mapping("readinessProbe", |p| probe(p, "/ready", 10, 3))
    .mapping("livenessProbe", |p| probe(p, "/live", 10, 3))
    .mapping("securityContext", |s| {
        let s = s
            .pair("runAsUser", plan.proxy_uid)
            .pair("runAsGroup", plan.proxy_uid)
            .pair("runAsNonRoot", true)
            .pair("allowPrivilegeEscalation", false)
            .pair("readOnlyRootFilesystem", true)
            .mapping("capabilities", |c| c.sequence("drop", |l| l.item("ALL")));
        match &plan.seccomp_profile {
            Some(name) => s.mapping("seccompProfile", |p| {
                p.pair("type", "Localhost")
                    .pair("localhostProfile", name.as_str())
            }),
            None => s.mapping("seccompProfile", |p| p.pair("type", "RuntimeDefault")),
        }
    })
    .sequence("volumeMounts", |s| {
        s.item(entry(|v| {
            v.pair("name", CONFIG_VOLUME)
                .pair("mountPath", CONFIG_DIR)
                .pair("readOnly", true)
        }))
    })
    .build_document()
    .as_mapping()
}

/// The `sidewire-config` volume: the proxy-config annotation as a file.
pub fn config_volume() -> Option<Mapping> {
    let field = format!("metadata.annotations['{PROXY_CONFIG}']");
    MappingBuilder::new()
        .pair("name", CONFIG_VOLUME)
        .mapping("downwardAPI", |d| {
            d.sequence("items", |s| {
                s.item(entry(|i| {
                    i.pair("path", CONFIG_FILE)
                        .mapping("fieldRef", |f| f.pair("fieldPath", field.as_str()))
                }))
            })
        })
        .build_document()
        .as_mapping()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_config_validates_with_single_ports_and_ranges() {
        for list in ["", "4406", "25,4406,10000-10100", "1-65535"] {
            let ports = PortSet::parse(list).unwrap();
            let text = proxy_config(&ports).unwrap();
            let cfg = Config::parse(&text, "t").unwrap();
            for r in ports.ranges() {
                for p in [*r.start(), *r.end()] {
                    assert!(
                        cfg.detect.user_opaque_ports.contains(&p)
                            || cfg.detect.port_rules.iter().any(|x| x.ports.contains(p)),
                        "{list}: {p} not opaque in\n{text}"
                    );
                }
            }
            assert!(!text.contains("\n\n\n"), "{text}");
            assert_eq!(cfg.listeners.len(), 4, "{text}");
        }
    }

    #[test]
    fn init_args_carry_only_nonempty_lists() {
        let plan = Plan::default();
        let mut ports = PodPorts::default();
        assert_eq!(init_args(&plan, &ports), ["init", "--proxy-uid", "2102"]);
        ports.skip_outbound = PortSet::parse("4567,4568").unwrap();
        assert_eq!(
            init_args(&plan, &ports),
            [
                "init",
                "--proxy-uid",
                "2102",
                "--skip-outbound-ports",
                "4567-4568"
            ]
        );
    }
}
