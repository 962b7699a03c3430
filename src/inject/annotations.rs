//! The annotations `inject` reads and writes, and how port lists in them merge with the
//! flags. Linkerd's `config.linkerd.io/*` names are read as aliases of sidewire's (never
//! written, never removed), so manifests written for `linkerd inject` keep their meaning.

use yaml_edit::Mapping;

use super::plan::union;
use crate::config::PortSet;

/// Ports that skip protocol detection, on a pod template or a Service.
pub const OPAQUE_PORTS: &str = "config.sidewire.io/opaque-ports";
/// Inbound ports that bypass the proxy, on a pod template.
pub const SKIP_INBOUND_PORTS: &str = "config.sidewire.io/skip-inbound-ports";
/// Outbound ports that bypass the proxy, on a pod template.
pub const SKIP_OUTBOUND_PORTS: &str = "config.sidewire.io/skip-outbound-ports";
/// The proxy's whole configuration (TOML), read by the proxy through a downwardAPI volume.
pub const PROXY_CONFIG: &str = "config.sidewire.io/proxy-config";
/// The sidewire version that injected the template.
pub const PROXY_VERSION: &str = "sidewire.io/proxy-version";

/// Linkerd's name for [`OPAQUE_PORTS`], read as an alias.
pub const LINKERD_OPAQUE_PORTS: &str = "config.linkerd.io/opaque-ports";
/// Linkerd's name for [`SKIP_INBOUND_PORTS`], read as an alias.
pub const LINKERD_SKIP_INBOUND_PORTS: &str = "config.linkerd.io/skip-inbound-ports";
/// Linkerd's name for [`SKIP_OUTBOUND_PORTS`], read as an alias.
pub const LINKERD_SKIP_OUTBOUND_PORTS: &str = "config.linkerd.io/skip-outbound-ports";

/// One of the three port-list annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortList {
    /// `opaque-ports`.
    Opaque,
    /// `skip-inbound-ports`.
    SkipInbound,
    /// `skip-outbound-ports`.
    SkipOutbound,
}

impl PortList {
    /// sidewire's annotation name.
    pub fn name(self) -> &'static str {
        match self {
            PortList::Opaque => OPAQUE_PORTS,
            PortList::SkipInbound => SKIP_INBOUND_PORTS,
            PortList::SkipOutbound => SKIP_OUTBOUND_PORTS,
        }
    }

    /// Linkerd's annotation name, read as an alias.
    pub fn linkerd_name(self) -> &'static str {
        match self {
            PortList::Opaque => LINKERD_OPAQUE_PORTS,
            PortList::SkipInbound => LINKERD_SKIP_INBOUND_PORTS,
            PortList::SkipOutbound => LINKERD_SKIP_OUTBOUND_PORTS,
        }
    }
}

/// The annotation `name`'s value as a string, if present: `None` when absent or null.
///
/// Errors: a value that is a mapping or a list.
pub fn string(annotations: &Mapping, name: &str) -> Result<Option<String>, String> {
    let Some(node) = annotations.get(name) else {
        return Ok(None);
    };
    match node.as_scalar() {
        Some(s) if s.is_quoted() => Ok(Some(s.as_string())),
        Some(s) => {
            let v = s.as_string();
            Ok((!matches!(v.as_str(), "" | "~" | "null" | "Null" | "NULL")).then_some(v))
        }
        None => Err(format!("annotation {name}: must be a string")),
    }
}

/// `flag` merged with the list's sidewire annotation and its Linkerd alias (either may be
/// absent): sorted, overlaps and neighbours joined.
///
/// Errors: an annotation that is not a port list, naming it, in `PortSet::parse`'s words.
pub fn merged(
    flag: &PortSet,
    annotations: Option<&Mapping>,
    list: PortList,
) -> Result<PortSet, String> {
    let mut out = flag.clone();
    let Some(a) = annotations else {
        return Ok(out);
    };
    for name in [list.name(), list.linkerd_name()] {
        if let Some(v) = string(a, name)? {
            let set = PortSet::parse(&v).map_err(|e| format!("annotation {name}: {e}"))?;
            out = union(&out, &set);
        }
    }
    Ok(out)
}
