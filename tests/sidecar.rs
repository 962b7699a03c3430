//! Transparent sidecar mode on a real kernel, in network namespaces each test creates: a
//! "pod" namespace (sidewire, `sidewire init`'s nftables rules, an app running as a non-proxy
//! UID) and a "peer" namespace joined to it by a veth pair, with addresses from
//! 198.18.0.0/15 and 2001:2::/48 (benchmarking ranges) on that veth only: nothing is routed
//! anywhere else. The namespaces are deleted when a test ends, also when it fails. One test
//! runs what `sidewire inject` writes for a Deployment (its init container, then its proxy
//! with the annotation's config) as the kubelet would.
//!
//! Needs root (`ip netns add`, nftables). Where the machine forbids namespaces every test is
//! reported ignored, with the reason on stderr. `nft` missing is a failure, not a skip:
//! `.ci/run` installs it.
//!
//! This binary (`harness = false`) is also the helper that runs inside the namespaces:
//! `sidecar helper ROLE ARGS...` serves HTTP/1, a server-speaks-first greeter or an echo, or
//! runs a client and prints what it measured, so clients and servers are real sockets in the
//! right namespace and under the right UID (`setpriv`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};

/// The UID sidewire runs as (Linkerd's); `init` exempts its connections.
const PROXY_UID: u32 = 2102;
/// The app's UID: its connections are intercepted.
const APP_UID: u32 = 2103;
const POD: &str = "198.18.0.1";
const PEER: &str = "198.18.0.2";
/// A second address of the peer, for `--skip-subnets`.
const PEER_B: &str = "198.18.0.3";
const POD6: &str = "2001:2::1";
const PEER6: &str = "2001:2::2";

type TestFn = fn() -> Result<(), Failed>;

const TESTS: &[(&str, TestFn)] = &[
    (
        "outbound_http_and_server_first_go_through_the_proxy",
        outbound_http_and_server_first_go_through_the_proxy,
    ),
    (
        "inbound_connections_pass_the_inbound_listener",
        inbound_connections_pass_the_inbound_listener,
    ),
    (
        "skipped_ports_bypass_the_proxy",
        skipped_ports_bypass_the_proxy,
    ),
    ("opaque_ports_skip_detection", opaque_ports_skip_detection),
    (
        "no_loop_proxy_traffic_is_exempt_and_direct_connections_are_refused",
        no_loop_proxy_traffic_is_exempt_and_direct_connections_are_refused,
    ),
    (
        "routes_still_apply_on_original_destination_listeners",
        routes_still_apply_on_original_destination_listeners,
    ),
    (
        "init_is_idempotent_and_uninstall_restores_the_tables",
        init_is_idempotent_and_uninstall_restores_the_tables,
    ),
    (
        "ipv6_original_destination_both_ways",
        ipv6_original_destination_both_ways,
    ),
    (
        "injected_deployment_runs_and_passes_traffic",
        injected_deployment_runs_and_passes_traffic,
    ),
];

/// Tests that also run with the proxy on `runtime.driver = "epoll"`.
const EPOLL_TOO: &[&str] = &[
    "outbound_http_and_server_first_go_through_the_proxy",
    "inbound_connections_pass_the_inbound_listener",
    "opaque_ports_skip_detection",
];

thread_local! {
    /// Set by the `*_on_epoll` trials: `Pod::start_proxy` then runs the proxy on epoll.
    static ON_EPOLL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("helper") {
        std::process::exit(helper::run(&argv[2..]));
    }
    let args = Arguments::from_args();
    let skip = namespaces_forbidden();
    if let Some(why) = &skip {
        eprintln!("sidecar tests SKIPPED (reported as ignored): {why}");
    }
    let no_ipv6 = !Path::new("/proc/net/if_inet6").exists();
    let mut trials: Vec<Trial> = TESTS
        .iter()
        .map(|&(name, f)| {
            let ignored = skip.is_some() || (name.starts_with("ipv6") && no_ipv6);
            if name.starts_with("ipv6") && no_ipv6 && skip.is_none() {
                eprintln!("{name} SKIPPED (reported as ignored): this kernel has no IPv6");
            }
            Trial::test(name, f).with_ignored_flag(ignored)
        })
        .collect();
    // The original-destination data path again on the epoll driver (the fallback where a
    // seccomp profile refuses io_uring).
    for &(name, f) in TESTS.iter().filter(|(n, _)| EPOLL_TOO.contains(n)) {
        trials.push(
            Trial::test(format!("{name}_on_epoll"), move || {
                ON_EPOLL.set(true);
                f()
            })
            .with_ignored_flag(skip.is_some()),
        );
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(b) = BINS.get() {
        let _ = std::fs::remove_dir_all(&b.dir);
    }
    conclusion.exit();
}

// === The tests ===

fn outbound_http_and_server_first_go_through_the_proxy() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    pod.start_proxy("")?;
    pod.serve(Ns::Peer, None, &["serve-http", &format!("{PEER}:8080")])?;
    pod.serve(Ns::Peer, None, &["serve-greeter", &format!("{PEER}:2525")])?;

    // HTTP/1 keep-alive from the app: every body checked byte for byte by the client.
    let n = 200;
    let proxied = pod.client_latencies(
        Some(APP_UID),
        &["http-get", &format!("{PEER}:8080"), &n.to_string()],
    )?;
    pod.wait_metric(
        &format!("request_total{{listener=\"outbound\",direction=\"outbound\",route=\"default\",target_addr=\"{PEER}:8080\",protocol=\"http/1\"}}"),
        n as f64,
    )?;
    pod.wait_metric(
        &format!("response_total{{listener=\"outbound\",direction=\"outbound\",target_addr=\"{PEER}:8080\",status_code=\"200\"}}"),
        n as f64,
    )?;
    // The same client as the proxy's UID is not intercepted: the direct baseline.
    let direct = pod.client_latencies(
        Some(PROXY_UID),
        &["http-get", &format!("{PEER}:8080"), &n.to_string()],
    )?;
    pod.wait_metric(
        "request_total{listener=\"outbound\",protocol=\"http/1\"}",
        n as f64,
    )?;

    // Server speaks first: the greeting through the proxy, then an echo checked byte for byte.
    let g = 100;
    let greet_proxied = pod.client_latencies(
        Some(APP_UID),
        &["greet", &format!("{PEER}:2525"), &g.to_string()],
    )?;
    pod.wait_metric(
        "tcp_detect_total{listener=\"outbound\",result=\"server_first\",reason=\"detected\"}",
        g as f64,
    )?;
    let greet_direct = pod.client_latencies(
        Some(PROXY_UID),
        &["greet", &format!("{PEER}:2525"), &g.to_string()],
    )?;
    pod.wait_metric(
        "tcp_open_total{listener=\"outbound\",peer=\"src\"}",
        (1 + g) as f64,
    )?;

    let (p50, p99) = (pct(&proxied, 50.0), pct(&proxied, 99.0));
    let (d50, d99) = (pct(&direct, 50.0), pct(&direct, 99.0));
    let (gp50, gp99) = (pct(&greet_proxied, 50.0), pct(&greet_proxied, 99.0));
    let (gd50, gd99) = (pct(&greet_direct, 50.0), pct(&greet_direct, 99.0));
    eprintln!(
        "one outbound hop, HTTP/1 keep-alive ({n} requests): direct p50 {d50} µs p99 {d99} µs; \
         through sidewire p50 {p50} µs p99 {p99} µs; added p50 {} µs p99 {} µs",
        p50 as i64 - d50 as i64,
        p99 as i64 - d99 as i64
    );
    eprintln!(
        "one outbound hop, server-first greeting ({g} connects): direct p50 {gd50} µs p99 {gd99} µs; \
         through sidewire p50 {gp50} µs p99 {gp99} µs; added p50 {} µs p99 {} µs",
        gp50 as i64 - gd50 as i64,
        gp99 as i64 - gd99 as i64
    );
    // No timing goal here (the added latency is measured by scripts/bench-sidecar.sh and
    // bench-greeting.sh; a shared CI machine makes any bound on it flaky). What this checks is
    // that no greeting waited for the client to speak: the verdicts above are all "detected"
    // (the upstream spoke first), and none of the greetings took anywhere near the preset's
    // 10 s detect timeout, which a proxy that dialled only after detection would have waited.
    let slowest = greet_proxied.iter().copied().max().unwrap_or(0);
    if slowest >= 5_000_000 {
        return Err(format!(
            "a greeting through sidewire took {slowest} µs: it waited for the detect timeout"
        )
        .into());
    }
    Ok(())
}

fn inbound_connections_pass_the_inbound_listener() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    pod.start_proxy("")?;
    pod.serve(
        Ns::Pod,
        Some(APP_UID),
        &["serve-http", &format!("{POD}:8080")],
    )?;
    pod.run_client(Ns::Peer, None, &["http-get", &format!("{POD}:8080"), "20"])?;
    pod.wait_metric(
        &format!("request_total{{listener=\"inbound\",direction=\"inbound\",route=\"default\",target_addr=\"{POD}:8080\",protocol=\"http/1\"}}"),
        20.0,
    )?;
    pod.wait_metric(
        "tcp_detect_total{listener=\"inbound\",direction=\"inbound\",result=\"http/1\"}",
        1.0,
    )?;
    // The proxy's connection to the app (its own UID) was not redirected outbound.
    pod.wait_metric("tcp_open_total{listener=\"outbound\",peer=\"src\"}", 0.0)?;
    Ok(())
}

fn skipped_ports_bypass_the_proxy() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[
        "--skip-outbound-ports",
        "9000,9100-9200",
        "--skip-inbound-ports",
        "8081",
        "--skip-subnets",
        &format!("{PEER_B}/32"),
    ])?;
    pod.start_proxy("")?;
    for port in [9000, 9150, 9001] {
        pod.serve(Ns::Peer, None, &["serve-echo", &format!("{PEER}:{port}")])?;
    }
    pod.serve(Ns::Peer, None, &["serve-echo", &format!("{PEER_B}:9001")])?;
    for port in [8081, 8082] {
        pod.serve(
            Ns::Pod,
            Some(APP_UID),
            &["serve-echo", &format!("{POD}:{port}")],
        )?;
    }
    // Skipped: they work, and sidewire's counters do not move.
    for dst in [
        format!("{PEER}:9000"),
        format!("{PEER}:9150"),
        format!("{PEER_B}:9001"),
    ] {
        pod.run_client(Ns::Pod, Some(APP_UID), &["echo", &dst, "65536"])?;
    }
    pod.run_client(Ns::Peer, None, &["echo", &format!("{POD}:8081"), "65536"])?;
    let m = pod.metrics()?;
    for l in ["outbound", "inbound"] {
        let opened = metric(
            &m,
            &format!("tcp_open_total{{listener=\"{l}\",peer=\"src\"}}"),
        );
        if opened.unwrap_or(0.0) != 0.0 {
            return Err(format!("{l}: skipped ports reached sidewire ({opened:?})\n{m}").into());
        }
    }
    // Not skipped: the same kind of connection does reach it (the counters work).
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["echo", &format!("{PEER}:9001"), "65536"],
    )?;
    pod.run_client(Ns::Peer, None, &["echo", &format!("{POD}:8082"), "65536"])?;
    pod.wait_metric("tcp_open_total{listener=\"outbound\",peer=\"src\"}", 1.0)?;
    pod.wait_metric("tcp_open_total{listener=\"inbound\",peer=\"src\"}", 1.0)?;
    Ok(())
}

fn opaque_ports_skip_detection() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    // 5432 (PostgreSQL) is built in; 7000 is declared opaque, as appProtocol would.
    pod.start_proxy("[[detect.port]]\nports = 7000\nprotocol = \"opaque\"\n")?;
    for port in [5432, 7000] {
        pod.serve(Ns::Peer, None, &["serve-echo", &format!("{PEER}:{port}")])?;
        pod.run_client(
            Ns::Pod,
            Some(APP_UID),
            &["echo", &format!("{PEER}:{port}"), "262144"],
        )?;
    }
    pod.wait_metric(
        "tcp_detect_total{listener=\"outbound\",result=\"opaque_port\",reason=\"builtin_opaque_ports\"}",
        1.0,
    )?;
    pod.wait_metric(
        "tcp_detect_total{listener=\"outbound\",result=\"opaque_port\",reason=\"port_protocol\"}",
        1.0,
    )?;
    // No detection ran for either (nothing was peeked or timed).
    pod.wait_metric(
        "tcp_detect_duration_seconds_count{listener=\"outbound\"}",
        0.0,
    )?;
    pod.wait_metric(
        "tcp_write_bytes_total{listener=\"outbound\",peer=\"dst\"}",
        2.0 * 262144.0,
    )?;
    Ok(())
}

fn no_loop_proxy_traffic_is_exempt_and_direct_connections_are_refused() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    pod.start_proxy("")?;
    pod.serve(Ns::Peer, None, &["serve-http", &format!("{PEER}:8080")])?;
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["http-get", &format!("{PEER}:8080"), "5"],
    )?;
    pod.wait_metric("request_total{listener=\"outbound\"}", 5.0)?;
    // Exactly one client connection and one upstream connection: the proxy's own dial to the
    // peer was not redirected back to it.
    let m = pod.metrics()?;
    for (series, want) in [
        ("tcp_open_total{listener=\"outbound\",peer=\"src\"}", 1.0),
        ("tcp_open_total{listener=\"outbound\",peer=\"dst\"}", 1.0),
        ("tcp_refused_total{}", 0.0),
    ] {
        if metric(&m, series) != Some(want) {
            return Err(format!("{series}: want {want}\n{m}").into());
        }
    }
    // Dialling the proxy's ports directly (from the app over loopback, from the peer after
    // the inbound redirect): refused, not proxied to itself.
    pod.run_client(Ns::Pod, Some(APP_UID), &["refused", "127.0.0.1:4140"])?;
    pod.wait_metric(
        "tcp_refused_total{listener=\"outbound\",direction=\"outbound\",reason=\"loop\"}",
        1.0,
    )?;
    pod.run_client(Ns::Peer, None, &["refused", &format!("{POD}:4143")])?;
    pod.wait_metric(
        "tcp_refused_total{listener=\"inbound\",direction=\"inbound\",reason=\"loop\"}",
        1.0,
    )?;
    pod.wait_metric("tcp_open_total{listener=\"outbound\",peer=\"dst\"}", 1.0)?;
    pod.wait_metric("tcp_open_total{listener=\"inbound\",peer=\"dst\"}", 0.0)?;
    Ok(())
}

fn routes_still_apply_on_original_destination_listeners() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    // A route on the outbound listener: /routed/ goes to port 8081, whatever was dialled.
    let route = format!(
        "[[listener.route]]\nname = \"routed\"\npath_prefix = \"/routed/\"\nupstream = [\"{PEER}:8081\"]\n\n"
    );
    pod.start_proxy_with(|preset| {
        preset.replacen(
            "[[listener]]\nname = \"outbound-ipv6\"",
            &format!("{route}[[listener]]\nname = \"outbound-ipv6\""),
            1,
        )
    })?;
    pod.serve(Ns::Peer, None, &["serve-http", &format!("{PEER}:8080")])?;
    pod.serve(Ns::Peer, None, &["serve-http", &format!("{PEER}:8081")])?;
    // The helper checks which server answered (each puts its port in the body).
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["http-get", &format!("{PEER}:8080"), "4", "/routed/", "8081"],
    )?;
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["http-get", &format!("{PEER}:8080"), "3", "/other/", "8080"],
    )?;
    pod.wait_metric(
        "request_total{listener=\"outbound\",route=\"routed\",protocol=\"http/1\"}",
        4.0,
    )?;
    pod.wait_metric(
        &format!("request_total{{listener=\"outbound\",route=\"default\",target_addr=\"{PEER}:8080\",protocol=\"http/1\"}}"),
        3.0,
    )?;
    Ok(())
}

fn init_is_idempotent_and_uninstall_restores_the_tables() -> Result<(), Failed> {
    let pod = Pod::new()?;
    // Someone else's rules, which init must leave alone.
    pod.nft_apply(
        "table inet other {\n\tchain c {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 22 counter accept\n\t}\n}\n",
    )?;
    let before = pod.nft(&["list", "ruleset"])?;
    let flags = [
        "--skip-inbound-ports",
        "25,3306,10000-10100",
        "--skip-outbound-ports",
        "4567,4568",
        "--skip-subnets",
        "10.0.0.0/8,fd00::/8",
    ];
    pod.init(&flags)?;
    let once = pod.nft(&["list", "table", "inet", "sidewire"])?;
    pod.init(&flags)?;
    let twice = pod.nft(&["list", "table", "inet", "sidewire"])?;
    if once != twice {
        return Err(format!("init twice changed the rules:\n{once}\n---\n{twice}").into());
    }
    let all = pod.nft(&["list", "ruleset"])?;
    if all.matches("table inet sidewire").count() != 1 || !all.contains("table inet other") {
        return Err(format!("unexpected ruleset after init:\n{all}").into());
    }
    for want in [
        "tcp dport { 25, 3306, 4191, 10000-10100 } return",
        "meta skuid 2102 return",
        "oifname \"lo\" return",
        "tcp dport 4567-4568 return",
        "ip daddr 10.0.0.0/8 return",
        "ip6 daddr fd00::/8 return",
        "redirect to :4143",
        "redirect to :4140",
    ] {
        if !once.contains(want) {
            return Err(format!("missing {want:?} in\n{once}").into());
        }
    }
    // The dry run prints exactly what init installs: applied by hand, it lists the same.
    let mut cmd = Command::new(&bins().sidewire);
    cmd.args(["init", "--dry-run", "--proxy-uid", "2102"])
        .args(flags);
    let dry = output(&mut cmd)?;
    pod.nft_apply(&dry)?;
    let by_hand = pod.nft(&["list", "table", "inet", "sidewire"])?;
    if by_hand != once {
        return Err(format!("dry-run output differs from init:\n{by_hand}\n---\n{once}").into());
    }
    pod.sidewire(Ns::Pod, &["init", "--uninstall", "--proxy-uid", "2102"])?;
    let after = pod.nft(&["list", "ruleset"])?;
    if after != before {
        return Err(
            format!("uninstall did not restore the ruleset:\n{before}\n---\n{after}").into(),
        );
    }
    // Uninstalling again is harmless.
    pod.sidewire(Ns::Pod, &["init", "--uninstall", "--proxy-uid", "2102"])?;
    Ok(())
}

fn ipv6_original_destination_both_ways() -> Result<(), Failed> {
    let pod = Pod::new()?;
    pod.init(&[])?;
    pod.start_proxy("")?;
    pod.serve(Ns::Peer, None, &["serve-http", &format!("[{PEER6}]:8080")])?;
    pod.serve(
        Ns::Pod,
        Some(APP_UID),
        &["serve-http", &format!("[{POD6}]:8080")],
    )?;
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["http-get", &format!("[{PEER6}]:8080"), "10"],
    )?;
    pod.run_client(
        Ns::Peer,
        None,
        &["http-get", &format!("[{POD6}]:8080"), "7"],
    )?;
    pod.wait_metric(
        &format!("request_total{{listener=\"outbound-ipv6\",direction=\"outbound\",target_addr=\"[{PEER6}]:8080\"}}"),
        10.0,
    )?;
    pod.wait_metric(
        &format!("request_total{{listener=\"inbound-ipv6\",direction=\"inbound\",target_addr=\"[{POD6}]:8080\"}}"),
        7.0,
    )?;
    Ok(())
}

/// What `sidewire inject` writes, run as the kubelet would: the init container's args as
/// root, then the proxy's args as its `runAsUser`, with the proxy-config annotation as the
/// file its downwardAPI volume would hold. Traffic then goes through it both ways, an opaque
/// port skips detection and a skipped port bypasses it.
fn injected_deployment_runs_and_passes_traffic() -> Result<(), Failed> {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject/deployment.in.yaml");
    let yaml = output(
        Command::new(&bins().sidewire)
            .args([
                "inject",
                "--opaque-ports=7000",
                "--skip-outbound-ports=9000",
            ])
            .arg(&input),
    )?;
    let pod = Pod::new()?;
    let inj = Injected::read(&yaml)?;
    if inj.proxy_uid != PROXY_UID || inj.init_args.first().map(String::as_str) != Some("init") {
        return Err(format!("unexpected injection: {inj:?}").into());
    }
    let config = bins().dir.join(format!("{}-injected.toml", pod.pod));
    std::fs::write(&config, &inj.config).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
    }
    // The proxy reads the volume's file; here, the file just written.
    let args: Vec<String> = inj
        .proxy_args
        .iter()
        .map(|a| {
            if *a == inj.config_path {
                config.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    if !args.contains(&config.display().to_string()) {
        return Err(format!(
            "the proxy args {:?} do not name {}",
            inj.proxy_args, inj.config_path
        )
        .into());
    }
    let init: Vec<&str> = inj.init_args.iter().map(String::as_str).collect();
    pod.sidewire(Ns::Pod, &init)?;
    pod.run_proxy_as(inj.proxy_uid, &args)?;

    pod.serve(Ns::Peer, None, &["serve-http", &format!("{PEER}:8080")])?;
    for port in [7000, 9000] {
        pod.serve(Ns::Peer, None, &["serve-echo", &format!("{PEER}:{port}")])?;
    }
    pod.serve(
        Ns::Pod,
        Some(APP_UID),
        &["serve-http", &format!("{POD}:8080")],
    )?;
    // Outbound HTTP/1 from the app, through the proxy.
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["http-get", &format!("{PEER}:8080"), "10"],
    )?;
    pod.wait_metric(
        &format!("request_total{{listener=\"outbound\",direction=\"outbound\",target_addr=\"{PEER}:8080\",protocol=\"http/1\"}}"),
        10.0,
    )?;
    // The opaque port from --opaque-ports: proxied without detection.
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["echo", &format!("{PEER}:7000"), "65536"],
    )?;
    pod.wait_metric(
        "tcp_detect_total{listener=\"outbound\",result=\"opaque_port\",reason=\"opaque_ports\"}",
        1.0,
    )?;
    // The skipped port from --skip-outbound-ports: not through the proxy at all.
    pod.run_client(
        Ns::Pod,
        Some(APP_UID),
        &["echo", &format!("{PEER}:9000"), "65536"],
    )?;
    pod.wait_metric("tcp_open_total{listener=\"outbound\",peer=\"src\"}", 2.0)?;
    // Inbound, from the peer to the app, through the proxy.
    pod.run_client(Ns::Peer, None, &["http-get", &format!("{POD}:8080"), "5"])?;
    pod.wait_metric(
        &format!("request_total{{listener=\"inbound\",direction=\"inbound\",target_addr=\"{POD}:8080\"}}"),
        5.0,
    )?;
    // The kubelet's probes reach the admin port from outside the pod (not redirected).
    for path in inj.probe_paths.iter() {
        pod.run_client(
            Ns::Peer,
            None,
            &["get", &format!("{POD}:{}", inj.admin_port), path],
        )?;
    }
    pod.wait_metric("tcp_open_total{listener=\"inbound\",peer=\"src\"}", 1.0)?;
    Ok(())
}

/// The parts of an injected Deployment the end-to-end test runs.
#[derive(Debug)]
struct Injected {
    init_args: Vec<String>,
    proxy_args: Vec<String>,
    proxy_uid: u32,
    /// The proxy-config annotation.
    config: String,
    /// Where the proxy container sees that annotation as a file.
    config_path: String,
    admin_port: u16,
    probe_paths: Vec<String>,
}

impl Injected {
    fn read(yaml: &str) -> Result<Injected, String> {
        use std::str::FromStr;
        use yaml_edit::{Mapping, YamlFile};
        fn map(m: &Mapping, key: &str) -> Result<Mapping, String> {
            m.get_mapping(key).ok_or(format!("no {key}"))
        }
        fn string(m: &Mapping, key: &str) -> Result<String, String> {
            m.get(key)
                .and_then(|n| n.as_scalar().map(|s| s.as_string()))
                .ok_or(format!("no {key}"))
        }
        fn strings(m: &Mapping, key: &str) -> Result<Vec<String>, String> {
            let s = m.get_sequence(key).ok_or(format!("no {key}"))?;
            (0..s.len())
                .map(|i| {
                    s.get(i)
                        .and_then(|n| n.as_scalar().map(|s| s.as_string()))
                        .ok_or(format!("{key}[{i}] is not a string"))
                })
                .collect()
        }
        fn named(m: &Mapping, key: &str, name: &str) -> Result<Mapping, String> {
            let s = m.get_sequence(key).ok_or(format!("no {key}"))?;
            (0..s.len())
                .filter_map(|i| s.get(i).and_then(|n| n.as_mapping().cloned()))
                .find(|c| string(c, "name").as_deref() == Ok(name))
                .ok_or(format!("no {name} in {key}"))
        }
        let file = YamlFile::from_str(yaml).map_err(|e| e.to_string())?;
        let doc = file.documents().next().ok_or("no document")?;
        let tpl = map(
            &map(&doc.as_mapping().ok_or("not a mapping")?, "spec")?,
            "template",
        )?;
        let spec = map(&tpl, "spec")?;
        let config = string(
            &map(&map(&tpl, "metadata")?, "annotations")?,
            "config.sidewire.io/proxy-config",
        )?;
        let init = named(&spec, "initContainers", "sidewire-init")?;
        let proxy = named(&spec, "initContainers", "sidewire-proxy")?;
        if string(&proxy, "restartPolicy")? != "Always" {
            return Err("sidewire-proxy is not a native sidecar".into());
        }
        let volume = named(&spec, "volumes", "sidewire-config")?;
        let item = map(&volume, "downwardAPI")?
            .get_sequence("items")
            .and_then(|s| s.get(0))
            .and_then(|n| n.as_mapping().cloned())
            .ok_or("no downwardAPI item")?;
        if string(&map(&item, "fieldRef")?, "fieldPath")?
            != "metadata.annotations['config.sidewire.io/proxy-config']"
        {
            return Err("the volume does not hold the proxy-config annotation".into());
        }
        let mount = named(&proxy, "volumeMounts", "sidewire-config")?;
        let config_path = format!(
            "{}/{}",
            string(&mount, "mountPath")?,
            string(&item, "path")?
        );
        let mut probe_paths = Vec::new();
        let mut admin_port = 0;
        for p in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let get = map(&map(&proxy, p)?, "httpGet")?;
            probe_paths.push(string(&get, "path")?);
            admin_port = string(&get, "port")?
                .parse()
                .map_err(|e| format!("{p}: {e}"))?;
        }
        Ok(Injected {
            init_args: strings(&init, "args")?,
            proxy_args: strings(&proxy, "args")?,
            proxy_uid: string(&map(&proxy, "securityContext")?, "runAsUser")?
                .parse()
                .map_err(|e| format!("runAsUser: {e}"))?,
            config,
            config_path,
            admin_port,
            probe_paths,
        })
    }
}

// === Fixture: two namespaces, sidewire, helpers ===

/// The binaries, copied where the proxy's and the app's UIDs can run them.
struct Bins {
    dir: PathBuf,
    sidewire: PathBuf,
    helper: PathBuf,
    config: PathBuf,
}

static BINS: OnceLock<Bins> = OnceLock::new();

fn bins() -> &'static Bins {
    BINS.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("sidewire-sidecar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = |from: &Path, name: &str| {
            let to = dir.join(name);
            std::fs::copy(from, &to).expect("copy binary");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
            to
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sidewire = copy(Path::new(env!("CARGO_BIN_EXE_sidewire")), "sidewire");
        let helper = copy(&std::env::current_exe().unwrap(), "helper");
        let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sidecar.toml");
        let config = copy(&preset, "sidecar.toml");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        Bins {
            dir,
            sidewire,
            helper,
            config,
        }
    })
}

/// Why namespace tests cannot run here, if they cannot.
fn namespaces_forbidden() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "not root (euid {euid}): network namespaces need CAP_SYS_ADMIN"
        ));
    }
    let name = format!("sw-probe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).output() {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            None
        }
        Ok(o) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run `ip` (iproute2): {e}")),
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy)]
enum Ns {
    Pod,
    Peer,
}

/// A "pod" namespace and a "peer" namespace joined by a veth pair, and the processes the
/// test started in them. Dropping it kills the processes and deletes both namespaces.
struct Pod {
    pod: String,
    peer: String,
    children: Mutex<Vec<Child>>,
    proxy_log: Arc<Mutex<Vec<String>>>,
}

/// Runs `cmd` and returns its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Pod {
    fn new() -> Result<Pod, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("sw{}t{n}", std::process::id());
        let p = Pod {
            pod: format!("{base}pod"),
            peer: format!("{base}peer"),
            children: Mutex::new(Vec::new()),
            proxy_log: Arc::default(),
        };
        output(Command::new("ip").args(["netns", "add", &p.pod]))?;
        output(Command::new("ip").args(["netns", "add", &p.peer]))?;
        let ip = |ns: &str, args: &[&str]| output(Command::new("ip").arg("-n").arg(ns).args(args));
        if Path::new("/proc/net/if_inet6").exists() {
            // No duplicate address detection: a tentative link-local address would hold back
            // neighbour discovery (and the first IPv6 connects) for a second or two.
            for ns in [&p.pod, &p.peer] {
                for k in ["all", "default"] {
                    output(
                        Command::new("ip")
                            .args(["netns", "exec", ns, "sysctl", "-qw"])
                            .arg(format!("net.ipv6.conf.{k}.accept_dad=0")),
                    )?;
                }
            }
        }
        ip(
            &p.pod,
            &[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p.peer,
            ],
        )?;
        // Links up first, then addresses: an IPv6 address added to a link that is down has
        // its first neighbour solicitation lost, which delays the first IPv6 connect by the
        // retransmit timer (1 s, the proxy's connect timeout).
        for ns in [&p.pod, &p.peer] {
            ip(ns, &["link", "set", "lo", "up"])?;
            ip(ns, &["link", "set", "eth0", "up"])?;
        }
        ip(
            &p.peer,
            &["addr", "add", &format!("{PEER_B}/24"), "dev", "eth0"],
        )?;
        for (ns, v4, v6) in [(&p.pod, POD, POD6), (&p.peer, PEER, PEER6)] {
            ip(ns, &["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            if Path::new("/proc/net/if_inet6").exists() {
                ip(
                    ns,
                    &["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"],
                )?;
            }
        }
        Ok(p)
    }

    fn ns(&self, ns: Ns) -> &str {
        match ns {
            Ns::Pod => &self.pod,
            Ns::Peer => &self.peer,
        }
    }

    /// `program args` inside `ns`, as `uid` if given (else root).
    fn command(&self, ns: Ns, uid: Option<u32>, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(ns)]);
        if let Some(u) = uid {
            c.args([
                "setpriv",
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
            ]);
        }
        c.arg(program).args(args);
        c
    }

    /// `sidewire args` as root in `ns`.
    fn sidewire(&self, ns: Ns, args: &[&str]) -> Result<String, String> {
        output(&mut self.command(ns, None, &bins().sidewire, args))
    }

    /// `sidewire init --proxy-uid 2102 flags` in the pod.
    fn init(&self, flags: &[&str]) -> Result<(), String> {
        let mut args = vec!["init", "--proxy-uid", "2102"];
        args.extend_from_slice(flags);
        self.sidewire(Ns::Pod, &args).map(drop)
    }

    fn nft(&self, args: &[&str]) -> Result<String, String> {
        output(
            Command::new("ip")
                .args(["netns", "exec", &self.pod, "nft"])
                .args(args),
        )
    }

    fn nft_apply(&self, script: &str) -> Result<(), String> {
        let path = bins().dir.join(format!("{}.nft", self.pod));
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let r = self.nft(&["-f", path.to_str().unwrap()]).map(drop);
        let _ = std::fs::remove_file(path);
        r
    }

    /// Starts sidewire in the pod as the proxy UID with config/sidecar.toml plus `extra`,
    /// and waits until it says its admin server listens.
    fn start_proxy(&self, extra: &str) -> Result<(), String> {
        if extra.is_empty() && !ON_EPOLL.get() {
            return self.run_proxy(bins().config.clone());
        }
        self.start_proxy_with(|preset| format!("{preset}\n{extra}"))
    }

    /// Like [`Pod::start_proxy`] with config/sidecar.toml rewritten by `edit`.
    fn start_proxy_with(&self, edit: impl FnOnce(&str) -> String) -> Result<(), String> {
        let b = bins();
        let path = b.dir.join(format!("{}.toml", self.pod));
        let text = std::fs::read_to_string(&b.config).map_err(|e| e.to_string())?;
        let mut text = edit(&text);
        if ON_EPOLL.get() {
            text = text.replacen("[runtime]\n", "[runtime]\ndriver = \"epoll\"\n", 1);
        }
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
        self.run_proxy(path)?;
        if ON_EPOLL.get() {
            let m = self.metrics()?;
            if metric(&m, "sidewire_runtime_driver{driver=\"epoll\"}") != Some(1.0) {
                return Err(format!("the proxy should run on epoll:\n{m}"));
            }
        }
        Ok(())
    }

    fn run_proxy(&self, config: PathBuf) -> Result<(), String> {
        self.run_proxy_as(
            PROXY_UID,
            &["--config".to_string(), config.display().to_string()],
        )
    }

    /// Starts `sidewire args` in the pod as `uid` and waits until its admin server listens.
    fn run_proxy_as(&self, uid: u32, args: &[String]) -> Result<(), String> {
        let b = bins();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .command(Ns::Pod, Some(uid), &b.sidewire, &args)
            .env(
                "RUST_LOG",
                std::env::var("SIDECAR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start sidewire: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        self.children.lock().unwrap().push(child);
        let (tx, rx) = mpsc::channel();
        let log = self.proxy_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("admin listening") {
                    let _ = tx.send(());
                }
                log.lock().unwrap().push(line);
            }
        });
        rx.recv_timeout(Duration::from_secs(20)).map_err(|_| {
            format!(
                "sidewire did not start:\n{}",
                self.proxy_log.lock().unwrap().join("\n")
            )
        })
    }

    /// Starts a helper server and waits for its "ready" line.
    fn serve(&self, ns: Ns, uid: Option<u32>, args: &[&str]) -> Result<(), String> {
        let mut child = self
            .command(ns, uid, &bins().helper, &[&["helper"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {args:?}: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        self.children.lock().unwrap().push(child);
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("{args:?} did not start: {line:?}"));
        }
        Ok(())
    }

    /// Runs a helper client to its end; returns what it printed.
    fn run_client(&self, ns: Ns, uid: Option<u32>, args: &[&str]) -> Result<String, String> {
        output(&mut self.command(ns, uid, &bins().helper, &[&["helper"], args].concat())).map_err(
            |e| {
                format!(
                    "{e}\nsidewire log:\n{}",
                    self.proxy_log.lock().unwrap().join("\n")
                )
            },
        )
    }

    /// Runs a measuring helper client in the pod; returns its latencies (µs), sorted.
    fn client_latencies(&self, uid: Option<u32>, args: &[&str]) -> Result<Vec<u64>, String> {
        let out = self.run_client(Ns::Pod, uid, args)?;
        let mut v: Vec<u64> = out
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("bad output {out:?}")))
            .collect::<Result<_, _>>()?;
        v.sort_unstable();
        Ok(v)
    }

    /// The proxy's `/metrics`, fetched from inside the pod.
    fn metrics(&self) -> Result<String, String> {
        self.run_client(Ns::Pod, None, &["get", "127.0.0.1:4191", "/metrics"])
    }

    /// Scrapes until `series` (summed over the labels it does not name) equals `want`.
    fn wait_metric(&self, series: &str, want: f64) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.metrics()?;
            let got = metric(&m, series);
            // A counter with no series yet (an original-destination listener that has seen no
            // destination) is zero.
            if got.unwrap_or(0.0) == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{series}: want {want}, last saw {got:?}\n{m}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The sum of the samples named like `series` whose labels include all of its labels (as
/// PromQL's `sum(name{...})`; `name{}` matches every sample of that name).
fn metric(text: &str, series: &str) -> Option<f64> {
    fn parse(s: &str) -> (&str, Vec<&str>) {
        match s.split_once('{') {
            None => (s, Vec::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or(rest);
                (n, body.split(',').filter(|kv| !kv.is_empty()).collect())
            }
        }
    }
    let (want_name, want) = parse(series);
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((s, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = parse(s);
        if name == want_name && want.iter().all(|w| labels.contains(w)) {
            if let Ok(v) = v.parse::<f64>() {
                sum = Some(sum.unwrap_or(0.0) + v);
            }
        }
    }
    sum
}

/// The `p`th percentile of sorted values.
fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// === The helper: servers and clients inside the namespaces ===

mod helper {
    use super::*;

    const GREETING: &[u8] = b"220 greeter ready\r\n";

    pub fn run(args: &[String]) -> i32 {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = match a.as_slice() {
            ["serve-http", addr] => serve(addr, http_conn),
            ["serve-greeter", addr] => serve(addr, |mut c| {
                if c.write_all(GREETING).is_ok() {
                    echo_conn(c)
                }
            }),
            ["serve-echo", addr] => serve(addr, echo_conn),
            ["http-get", addr, n] => http_get(addr, n.parse().unwrap(), "/req/", None),
            ["http-get", addr, n, prefix, port] => {
                http_get(addr, n.parse().unwrap(), prefix, port.parse().ok())
            }
            ["greet", addr, n] => greet(addr, n.parse().unwrap()),
            ["echo", addr, n] => echo(addr, n.parse().unwrap()),
            ["get", addr, path] => get(addr, path),
            ["refused", addr] => refused(addr),
            _ => Err(format!("unknown helper command {a:?}")),
        };
        match r {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("helper {a:?}: {e}");
                1
            }
        }
    }

    fn serve(addr: &str, f: fn(TcpStream)) -> Result<(), String> {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        println!("ready");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || f(c));
        }
        Ok(())
    }

    /// The body the HTTP server on `port` sends for `path` (the client expects it byte for
    /// byte).
    fn body(path: &str, port: u16) -> Vec<u8> {
        let mut b = format!("port {port} got {path}\n").into_bytes();
        b.extend((0..1024u32).map(|i| b'a' + (i % 26) as u8));
        b
    }

    fn http_conn(mut c: TcpStream) {
        let _ = c.set_nodelay(true);
        let port = c.local_addr().map_or(0, |a| a.port());
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let b = body(&path, port);
            let mut resp =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", b.len()).into_bytes();
            resp.extend_from_slice(&b);
            if c.write_all(&resp).is_err() {
                return;
            }
        }
    }

    fn echo_conn(mut c: TcpStream) {
        let mut buf = [0u8; 65536];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = c.shutdown(Shutdown::Write);
    }

    fn connect(addr: &str) -> Result<TcpStream, String> {
        let c = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        c.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// `n` keep-alive requests for `prefix<i>` on one connection, each body checked (served
    /// by port `port`, default the one dialled); prints each latency (µs).
    fn http_get(addr: &str, n: usize, prefix: &str, port: Option<u16>) -> Result<(), String> {
        let port = match port {
            Some(p) => p,
            None => addr
                .parse::<SocketAddr>()
                .map_err(|e| format!("{addr}: {e}"))?
                .port(),
        };
        let mut c = connect(addr)?;
        let mut lat = Vec::with_capacity(n);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        for i in 0..n {
            let path = format!("{prefix}{i}");
            let t0 = Instant::now();
            c.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
                .map_err(|e| format!("request {i}: {e}"))?;
            let want = body(&path, port);
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", want.len());
            while buf.len() < head.len() + want.len() {
                match c.read(&mut chunk) {
                    Ok(0) => return Err(format!("request {i}: connection closed")),
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    Err(e) => return Err(format!("request {i}: {e}")),
                }
            }
            lat.push(t0.elapsed().as_micros());
            let (h, rest) = buf.split_at(head.len());
            if !h.eq_ignore_ascii_case(head.as_bytes()) || &rest[..want.len()] != want.as_slice() {
                return Err(format!(
                    "request {i}: unexpected response {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.drain(..head.len() + want.len());
        }
        print_all(&lat);
        Ok(())
    }

    /// `n` connects, each timed to the greeting's first byte; the first then echoes 256 KiB
    /// checked byte for byte. Prints each latency (µs).
    fn greet(addr: &str, n: usize) -> Result<(), String> {
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t0 = Instant::now();
            let mut c = connect(addr)?;
            let mut got = vec![0u8; GREETING.len()];
            let k = c.read(&mut got).map_err(|e| format!("greeting {i}: {e}"))?;
            lat.push(t0.elapsed().as_micros());
            c.read_exact(&mut got[k..])
                .map_err(|e| format!("greeting {i}: {e}"))?;
            if got != GREETING {
                return Err(format!("greeting {i}: {:?}", String::from_utf8_lossy(&got)));
            }
            if i == 0 {
                check_echo(c, 256 * 1024)?;
            }
        }
        print_all(&lat);
        Ok(())
    }

    fn pattern(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn check_echo(mut c: TcpStream, n: usize) -> Result<(), String> {
        let data = pattern(n);
        let mut w = c.try_clone().map_err(|e| e.to_string())?;
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            let r = w.write_all(&sent);
            let _ = w.shutdown(Shutdown::Write);
            r
        });
        let mut back = Vec::with_capacity(n);
        c.read_to_end(&mut back).map_err(|e| format!("echo: {e}"))?;
        writer
            .join()
            .map_err(|_| "writer panicked".to_string())?
            .map_err(|e| format!("echo write: {e}"))?;
        if back != data {
            return Err(format!(
                "echo: {} bytes back of {n}, or different bytes",
                back.len()
            ));
        }
        Ok(())
    }

    fn echo(addr: &str, n: usize) -> Result<(), String> {
        check_echo(connect(addr)?, n)
    }

    /// `GET path`; prints the body.
    fn get(addr: &str, path: &str) -> Result<(), String> {
        let mut c = connect(addr)?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut resp = String::new();
        c.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or("no response")?;
        print!("{body}");
        Ok(())
    }

    /// Connects and speaks; the proxy must close without sending a byte.
    fn refused(addr: &str) -> Result<(), String> {
        let mut c = connect(addr)?;
        let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!(
                "the proxy answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) => Err(format!("no close: {e}")),
        }
    }

    fn print_all(lat: &[u128]) {
        let s: Vec<String> = lat.iter().map(u128::to_string).collect();
        println!("{}", s.join(" "));
    }
}
