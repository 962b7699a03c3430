//! Before any peek: what a connection's port says about it. A listener that forces a
//! protocol, a `[[detect.port]]` declaration (Kubernetes' `appProtocol`), or an opaque port
//! skips detection; everything else is detected, with the port's own timeout if it declares
//! one. Each outcome carries its reason, exported as the `reason` label of
//! `tcp_detect_total` and logged at debug level.
//!
//! The port is the destination's: the upstream's port on a listener with fixed endpoints, the
//! original destination's on an original-destination listener (which, inbound, is the
//! workload's own port).

use std::collections::BTreeSet;
use std::time::Duration;

use super::verdict::{DetectReason, DetectResult};
use crate::config::{DetectConfig, ListenerConfig, ListenerProtocol, PortRule};

/// What to do with one connection before peeking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No detection: the verdict and why.
    Skip(DetectResult, DetectReason),
    /// Detect, giving up after `timeout`.
    Detect {
        /// The detect timeout for this port.
        timeout: Duration,
    },
}

/// One listener's port table: its forced protocol, the `[[detect.port]]` rules and the
/// opaque ports, resolved once per worker.
#[derive(Debug, Clone)]
pub struct PortPlan {
    protocol: ListenerProtocol,
    timeout: Duration,
    rules: Vec<PortRule>,
    opaque: BTreeSet<u16>,
    user_opaque: BTreeSet<u16>,
}

fn forced(p: ListenerProtocol) -> Option<DetectResult> {
    match p {
        ListenerProtocol::Detect => None,
        ListenerProtocol::Opaque => Some(DetectResult::OpaquePort),
        ListenerProtocol::Http1 => Some(DetectResult::Http1),
        ListenerProtocol::Http2 => Some(DetectResult::Http2),
    }
}

impl PortPlan {
    /// The table for listener `l` under `[detect]` `d`.
    pub fn new(l: &ListenerConfig, d: &DetectConfig) -> PortPlan {
        PortPlan {
            protocol: l.protocol,
            timeout: l.detect_timeout,
            rules: d.port_rules.clone(),
            opaque: d.opaque_ports.clone(),
            user_opaque: d.user_opaque_ports.clone(),
        }
    }

    /// The plan for a connection to `port`. Precedence: the listener's forced protocol, then
    /// a `[[detect.port]]` rule, then the user's opaque ports, then the built-in ones.
    pub fn plan(&self, port: u16) -> Plan {
        if let Some(r) = forced(self.protocol) {
            return Plan::Skip(r, DetectReason::ListenerProtocol);
        }
        if let Some(rule) = self.rules.iter().find(|r| r.ports.contains(port)) {
            return match forced(rule.protocol) {
                Some(r) => Plan::Skip(r, DetectReason::PortProtocol),
                None => Plan::Detect {
                    timeout: rule.timeout.unwrap_or(self.timeout),
                },
            };
        }
        if self.user_opaque.contains(&port) {
            return Plan::Skip(DetectResult::OpaquePort, DetectReason::OpaquePorts);
        }
        if self.opaque.contains(&port) {
            return Plan::Skip(DetectResult::OpaquePort, DetectReason::BuiltinOpaquePorts);
        }
        Plan::Detect {
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn plan_of(top: &str, extra: &str) -> PortPlan {
        let text = format!(
            "{top}\n[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nupstream = \"original-dst\"\n\
             detect_timeout_ms = 700\n{extra}\n"
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        PortPlan::new(&c.listeners[0], &c.detect)
    }

    #[test]
    fn precedence_and_reasons() {
        let p = plan_of(
            "[detect]\nopaque_ports = [9092, 5432]\n\
             [[detect.port]]\nports = 25\nprotocol = \"detect\"\ntimeout_ms = 50\n\
             [[detect.port]]\nports = \"8080-8081\"\nprotocol = \"http1\"\n\
             [[detect.port]]\nports = \"7000\"\nprotocol = \"opaque\"\n",
            "",
        );
        let ms = Duration::from_millis;
        // A declared "detect" beats the built-in list (SMTP on 25), with its own timeout.
        assert_eq!(p.plan(25), Plan::Detect { timeout: ms(50) });
        assert_eq!(
            p.plan(8081),
            Plan::Skip(DetectResult::Http1, DetectReason::PortProtocol)
        );
        assert_eq!(
            p.plan(7000),
            Plan::Skip(DetectResult::OpaquePort, DetectReason::PortProtocol)
        );
        // 5432 is built in and listed by the user: the user's list is the reason.
        assert_eq!(
            p.plan(5432),
            Plan::Skip(DetectResult::OpaquePort, DetectReason::OpaquePorts)
        );
        assert_eq!(
            p.plan(3306),
            Plan::Skip(DetectResult::OpaquePort, DetectReason::BuiltinOpaquePorts)
        );
        assert_eq!(p.plan(80), Plan::Detect { timeout: ms(700) });
        // A listener that forces a protocol beats everything.
        let forced = plan_of("", "protocol = \"http2\"");
        assert_eq!(
            forced.plan(3306),
            Plan::Skip(DetectResult::Http2, DetectReason::ListenerProtocol)
        );
    }

    #[test]
    fn every_outcome_is_a_rendered_series() {
        for r in DetectReason::ALL {
            assert!(!r.results().is_empty());
        }
        assert!(DetectReason::PortProtocol
            .results()
            .contains(&DetectResult::OpaquePort));
    }
}
