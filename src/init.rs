//! `sidewire init`: programs transparent interception in the current network namespace, as
//! Linkerd's proxy-init does, so that the workload's TCP connections reach sidewire without
//! the app knowing:
//!
//! - inbound (`prerouting`): every TCP connection into the namespace is redirected to the
//!   inbound port, except the admin port and the skipped inbound ports;
//! - outbound (`output`): every TCP connection the namespace opens is redirected to the
//!   outbound port, except those of the proxy's own UID (its upstream connections), over
//!   loopback, to skipped ports and to skipped subnets.
//!
//! The rules are nftables rules in a table of their own, `inet sidewire` (both address
//! families at once), applied with one `nft -f` transaction: the table is created, emptied
//! and refilled atomically, so `init` is idempotent, a failure leaves nothing half-done, and
//! `--uninstall` deletes exactly that table and nothing else. The redirect leaves the
//! original destination in conntrack, where the proxy reads it (`SO_ORIGINAL_DST`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use clap::Args;

use crate::config::PortSet;

/// The nftables table `init` owns.
pub const TABLE: &str = "inet sidewire";

/// `sidewire init` arguments.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// UID the proxy runs as: its own (upstream) connections are never redirected.
    #[arg(long, value_name = "UID")]
    pub proxy_uid: u32,
    /// Port of the inbound listener (`upstream = "original-dst"`, `direction = "inbound"`).
    #[arg(long, default_value_t = 4143, value_name = "PORT")]
    pub inbound_port: u16,
    /// Port of the outbound listener (`upstream = "original-dst"`, `direction = "outbound"`).
    #[arg(long, default_value_t = 4140, value_name = "PORT")]
    pub outbound_port: u16,
    /// The admin port: inbound connections to it are not redirected (probes, scrapes).
    #[arg(long, default_value_t = 4191, value_name = "PORT")]
    pub admin_port: u16,
    /// Inbound destination ports that bypass the proxy: ports and ranges, `25,3306,10000-10100`.
    #[arg(long, value_name = "LIST", value_parser = PortSet::parse, default_value = "")]
    pub skip_inbound_ports: PortSet,
    /// Outbound destination ports that bypass the proxy: ports and ranges, `25,3306,10000-10100`.
    #[arg(long, value_name = "LIST", value_parser = PortSet::parse, default_value = "")]
    pub skip_outbound_ports: PortSet,
    /// Outbound destination subnets that bypass the proxy: `10.0.0.0/8,fd00::/8` (IPv4 and
    /// IPv6; a bare address is one host).
    #[arg(long, value_name = "CIDRS", value_parser = Subnets::parse, default_value = "")]
    pub skip_subnets: Subnets,
    /// Print the nftables rules and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the rules `init` added (the whole `inet sidewire` table) and nothing else.
    #[arg(long)]
    pub uninstall: bool,
}

/// A list of subnets, canonical (host bits cleared), split by address family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subnets {
    v4: Vec<String>,
    v6: Vec<String>,
}

impl Subnets {
    /// Parses `CIDRS`: comma-separated `addr/prefix` or bare addresses (a /32 or /128).
    ///
    /// Errors: the offending item and why.
    pub fn parse(s: &str) -> Result<Subnets, String> {
        let mut out = Subnets::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?}: {addr:?} is not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u32 = match len {
                None => max,
                Some(l) => match l.parse::<u32>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{item:?}: the prefix length must be 0-{max}")),
                },
            };
            match ip {
                IpAddr::V4(a) => {
                    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                    let net = std::net::Ipv4Addr::from(u32::from(a) & mask);
                    out.v4.push(format!("{net}/{len}"));
                }
                IpAddr::V6(a) => {
                    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                    let net = std::net::Ipv6Addr::from(u128::from(a) & mask);
                    out.v6.push(format!("{net}/{len}"));
                }
            }
        }
        Ok(out)
    }
}

/// nftables' set syntax for ports: `{ 25, 3306, 10000-10100 }`.
fn port_set(p: &PortSet) -> String {
    let items: Vec<String> = p
        .ranges()
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

/// The nftables script that installs (or replaces) the interception rules. Deterministic:
/// the same arguments give the same text.
pub fn install_script(a: &InitArgs) -> String {
    let mut inbound_skip = a.skip_inbound_ports.ranges().to_vec();
    inbound_skip.push(a.admin_port..=a.admin_port);
    let inbound_skip = PortSet::from_ranges(inbound_skip);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# sidewire init: transparent interception for this network namespace (IPv4 and IPv6).\n\
         # Apply with `nft -f FILE`; remove with `sidewire init --uninstall`.\n\
         # Creating, deleting and refilling the table in one transaction makes this idempotent.\n\
         table {TABLE}\n\
         delete table {TABLE}\n\
         table {TABLE} {{"
    );
    let _ = writeln!(
        s,
        "\tchain inbound {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\ttcp dport {} return\n\
         \t\tmeta l4proto tcp redirect to :{}\n\
         \t}}\n",
        port_set(&inbound_skip),
        a.inbound_port
    );
    let _ = writeln!(
        s,
        "\tchain outbound {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tmeta skuid {} return\n\
         \t\toifname \"lo\" return",
        a.proxy_uid
    );
    if !a.skip_outbound_ports.is_empty() {
        let _ = writeln!(
            s,
            "\t\ttcp dport {} return",
            port_set(&a.skip_outbound_ports)
        );
    }
    if !a.skip_subnets.v4.is_empty() {
        let _ = writeln!(
            s,
            "\t\tip daddr {{ {} }} return",
            a.skip_subnets.v4.join(", ")
        );
    }
    if !a.skip_subnets.v6.is_empty() {
        let _ = writeln!(
            s,
            "\t\tip6 daddr {{ {} }} return",
            a.skip_subnets.v6.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\t\tmeta l4proto tcp redirect to :{}\n\t}}\n}}",
        a.outbound_port
    );
    s
}

/// The nftables script that removes the table (a no-op when it is absent).
pub fn uninstall_script() -> String {
    format!(
        "# sidewire init --uninstall: remove the interception rules (only the {TABLE} table).\n\
         table {TABLE}\n\
         delete table {TABLE}\n"
    )
}

/// Why `init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `nft` is not installed.
    #[error(
        "nft not found in PATH ({0}): install nftables (Debian/Ubuntu: apt-get install nftables)"
    )]
    NoNft(String),
    /// `nft` could not be started.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// `nft` rejected the rules.
    #[error("nft -f failed ({status}): {stderr}")]
    Nft {
        /// Its exit status.
        status: String,
        /// What it printed, on one line.
        stderr: String,
    },
}

/// The `nft` binary in `PATH`.
///
/// Errors: [`InitError::NoNft`] naming the directories searched.
pub fn find_nft() -> Result<PathBuf, InitError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .ok_or_else(|| InitError::NoNft(path.to_string_lossy().into_owned()))
}

/// Applies `script` with `nft -f -` (one transaction).
///
/// Errors: `nft` missing, not startable, or rejecting the script (its message on one line).
pub fn apply(script: &str) -> Result<(), InitError> {
    let nft = find_nft()?;
    let mut child = Command::new(&nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| InitError::Spawn(nft.display().to_string(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| InitError::Spawn(nft.display().to_string(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| InitError::Spawn(nft.display().to_string(), e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(InitError::Nft {
        status: out.status.to_string(),
        stderr,
    })
}

/// Runs `sidewire init`: prints (`--dry-run`) or applies the rules. Exit code 0 on success,
/// 1 with one line on stderr on failure.
pub fn main(a: &InitArgs) -> ExitCode {
    let script = if a.uninstall {
        uninstall_script()
    } else {
        install_script(a)
    };
    if a.dry_run {
        print!("{script}");
        return ExitCode::SUCCESS;
    }
    match apply(&script) {
        Ok(()) => {
            let what = if a.uninstall { "removed" } else { "installed" };
            eprintln!("sidewire init: {what} the nftables table {TABLE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sidewire init: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_canonical_and_split_by_family() {
        let s = Subnets::parse("10.1.2.3/8, fd00::1/8,192.0.2.7,0.0.0.0/0").unwrap();
        assert_eq!(s.v4, ["10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0"]);
        assert_eq!(s.v6, ["fd00::/8"]);
        for bad in ["10.0.0.0/33", "nope/8", "fd00::/129", "1.2.3.4/x"] {
            assert!(Subnets::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn admin_port_joins_the_inbound_skips() {
        let a = InitArgs {
            proxy_uid: 7,
            inbound_port: 1,
            outbound_port: 2,
            admin_port: 4191,
            skip_inbound_ports: PortSet::parse("4190,22").unwrap(),
            skip_outbound_ports: PortSet::default(),
            skip_subnets: Subnets::default(),
            dry_run: true,
            uninstall: false,
        };
        let s = install_script(&a);
        assert!(s.contains("tcp dport { 22, 4190-4191 } return"), "{s}");
        assert!(!s.contains("ip daddr"), "no empty sets: {s}");
    }
}
