//! What `sidewire inject` adds, decided once from the command line and shared by every
//! document: the image, the proxy's UID, the port lists given as flags, the sidecar style
//! and the seccomp profile.

use crate::config::PortSet;

/// The proxy's UID unless `--proxy-uid` says otherwise: Linkerd's, so existing policies
/// and dashboards that know it keep working.
pub const DEFAULT_PROXY_UID: u32 = 2102;

/// The image unless `--image` says otherwise: this build's release image.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/sidewire/sidewire:", env!("CARGO_PKG_VERSION"));

/// The inject settings from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The image of both added containers (its entrypoint is `sidewire`).
    pub image: String,
    /// The UID the proxy runs as; `sidewire init` exempts its connections.
    pub proxy_uid: u32,
    /// `--opaque-ports`: merged with each template's (or Service's) own annotations.
    pub opaque_ports: PortSet,
    /// `--skip-inbound-ports`: merged with each template's annotations.
    pub skip_inbound_ports: PortSet,
    /// `--skip-outbound-ports`: merged with each template's annotations.
    pub skip_outbound_ports: PortSet,
    /// `--classic-sidecar`: the proxy as the first regular container instead of a native
    /// sidecar (an init container with `restartPolicy: Always`).
    pub classic_sidecar: bool,
    /// `--seccomp-profile`: a `Localhost` profile for the proxy; `RuntimeDefault` without it.
    pub seccomp_profile: Option<String>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            image: DEFAULT_IMAGE.to_string(),
            proxy_uid: DEFAULT_PROXY_UID,
            opaque_ports: PortSet::default(),
            skip_inbound_ports: PortSet::default(),
            skip_outbound_ports: PortSet::default(),
            classic_sidecar: false,
            seccomp_profile: None,
        }
    }
}

/// The port lists of one pod template: the flags merged with its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPorts {
    /// Ports that skip protocol detection (the proxy's `detect.opaque_ports`).
    pub opaque: PortSet,
    /// Inbound ports that bypass the proxy (`sidewire init --skip-inbound-ports`).
    pub skip_inbound: PortSet,
    /// Outbound ports that bypass the proxy (`sidewire init --skip-outbound-ports`).
    pub skip_outbound: PortSet,
}

/// The union of two port sets.
pub fn union(a: &PortSet, b: &PortSet) -> PortSet {
    PortSet::from_ranges(a.ranges().iter().chain(b.ranges()).cloned().collect())
}
