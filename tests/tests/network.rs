//! Network faults on lab hosts, measured from outside with real packets: TCP round trips
//! between a host and the lab's own namespace before, during and after a latency fault;
//! the share of a few thousand UDP probes a loss fault drops; a blackhole that drops one
//! destination while another answers; DNS that stops answering for the faulted host only;
//! a blackhole of everything that still lets the coordinator halt it and SSH through; and
//! an agent killed mid-fault whose packets flow again at once and whose rules are gone at
//! its next start. The rules themselves are read with `nft` and `iptables` inside the host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use troop_tests::lab::{Lab, wait_for};
use troop_tests::net::inside;

const POLICY: &str =
    "allow = [\"network\", \"dns\"]\nnetwork_interfaces = [\"eth0\"]\nmax_latency = \"1s\"";
/// The lab namespace, where the coordinator and this test's servers are.
const GATEWAY: &str = troop_tests::net::GATEWAY;

/// A TCP echo server on `port` of the lab namespace, for the whole test.
fn echo_server(lab_ns: &Path, port: u16) {
    let listener = inside(lab_ns, move || TcpListener::bind((GATEWAY, port)).unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut byte = [0u8; 1];
                while stream.read_exact(&mut byte).is_ok() && stream.write_all(&byte).is_ok() {}
            });
        }
    });
}

/// A UDP server on `port` of the lab namespace that echoes every datagram and counts them.
fn udp_echo(lab_ns: &Path, port: u16) -> Arc<AtomicU64> {
    let socket = inside(lab_ns, move || UdpSocket::bind((GATEWAY, port)).unwrap());
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((size, from)) = socket.recv_from(&mut buffer) {
            counted.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&buffer[..size], from);
        }
    });
    count
}

/// Every datagram that reaches `port` of the lab namespace, as it arrived.
fn udp_collector(lab_ns: &Path, port: u16) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let socket = inside(lab_ns, move || UdpSocket::bind((GATEWAY, port)).unwrap());
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let collected = arrived.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok(size) = socket.recv(&mut buffer) {
            collected.lock().unwrap().push(buffer[..size].to_vec());
        }
    });
    arrived
}

/// A TCP server on `port` of the lab namespace that reads and counts what it is sent.
fn tcp_sink(lab_ns: &Path, port: u16) -> Arc<AtomicU64> {
    let listener = inside(lab_ns, move || TcpListener::bind((GATEWAY, port)).unwrap());
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buffer = vec![0u8; 64 << 10];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    received
}

/// Bytes per second that arrive at the sink while one TCP connection from `host_ns`
/// pushes to the gateway's `port` for `how_long`, after a second to settle.
fn goodput(host_ns: &Path, port: u16, received: &Arc<AtomicU64>, how_long: Duration) -> f64 {
    let received = received.clone();
    inside(host_ns, move || {
        let address: SocketAddr = format!("{GATEWAY}:{port}").parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let chunk = vec![7u8; 16 << 10];
        let push = |until: Duration, stream: &mut TcpStream| {
            let started = Instant::now();
            while started.elapsed() < until {
                let _ = stream.write(&chunk);
            }
        };
        push(Duration::from_secs(1), &mut stream);
        let (before, started) = (received.load(Ordering::Relaxed), Instant::now());
        push(how_long, &mut stream);
        (received.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64()
    })
}

/// Probe `index`: its number, then 192 bytes derived from it, so any flipped bit shows.
fn probe(index: u64) -> Vec<u8> {
    let mut bytes = index.to_be_bytes().to_vec();
    bytes.extend((0..192u64).map(|i| (index.wrapping_mul(31) ^ i) as u8));
    bytes
}

/// Sends `count` probes from `host_ns` to the gateway's `port`, paced.
fn send_probes(host_ns: &Path, port: u16, count: u64) {
    inside(host_ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for index in 0..count {
            let _ = socket.send_to(&probe(index), (GATEWAY, port));
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
}

/// The median of `rounds` one-byte TCP round trips from `host_ns` to the gateway's `port`.
fn median_round_trip(host_ns: &Path, port: u16, rounds: usize) -> Duration {
    inside(host_ns, move || {
        let address: SocketAddr = format!("{GATEWAY}:{port}").parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let started = Instant::now();
                stream.write_all(b"x").unwrap();
                stream.read_exact(&mut [0u8; 1]).unwrap();
                started.elapsed()
            })
            .collect();
        times.sort();
        times[rounds / 2]
    })
}

fn connects(host_ns: &Path, port: u16) -> bool {
    inside(host_ns, move || {
        let address: SocketAddr = format!("{GATEWAY}:{port}").parse().unwrap();
        TcpStream::connect_timeout(&address, Duration::from_millis(700)).is_ok()
    })
}

/// Whether a DNS-style query from `host_ns` to the gateway's port 53 is answered.
fn resolver_answers(host_ns: &Path) -> bool {
    inside(host_ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        (0..3).any(|_| {
            // A dropped datagram may fail at once (EPERM): not answered either way.
            socket.send_to(b"\x12\x34query", (GATEWAY, 53)).is_ok()
                && socket.recv_from(&mut [0u8; 64]).is_ok()
        })
    })
}

/// troop's rules in the host, as `nft` and `iptables` list them there.
fn troop_rules(lab: &Lab, id: &str) -> String {
    let tables = lab.run_inside(id, &["nft", "list", "tables"]);
    let chains = lab.run_inside(id, &["iptables", "-t", "mangle", "-S"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&tables.stdout),
        String::from_utf8_lossy(&chains.stdout)
    );
    text.lines()
        // The lab's own firewall of dial-in hosts is no fault's.
        .filter(|line| line.contains("troop") && !line.contains("troop_lab"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn attack(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["attack", "network", "--select", "role=web"];
    all.extend_from_slice(args);
    let (code, report) = lab.troop_json(&all);
    assert_eq!(code, Some(0), "{report}\n{}", lab.log("web-1"));
    report
}

fn setup(hosts: &[&str]) -> Option<(Lab, PathBuf, Vec<PathBuf>)> {
    let mut lab = Lab::networked("network faults")?;
    for id in hosts {
        lab.add_host(id, &[("role", "web"), ("name", id)], POLICY, vec![]);
    }
    let lab_ns = lab.network_namespace().unwrap();
    let host_ns = hosts
        .iter()
        .map(|id| lab.hosts[*id].network_namespace().unwrap())
        .collect();
    Some((lab, lab_ns, host_ns))
}

/// `troop halt` of `select`, and then no rule of troop's left on `id`.
fn halt(lab: &Lab, select: &str, id: &str) {
    let (code, report) = lab.troop_json(&["halt", "--select", select]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(troop_rules(lab, id), "", "{}", lab.log(id));
}

fn effect(lab: &Lab, id: &str) -> String {
    lab.status(id)["active_faults"][0]["effect"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn latency_is_added_and_gone_after_halt_and_after_the_agent_is_killed() {
    let Some((lab, lab_ns, hosts)) = setup(&["web-1"]) else {
        return;
    };
    let host = &hosts[0];
    echo_server(&lab_ns, 7100);
    let before = median_round_trip(host, 7100, 21);

    let report = attack(
        &lab,
        &["--latency", "100ms", "--to", GATEWAY, "--for", "1m"],
    );
    let during = median_round_trip(host, 7100, 21);
    let added = during.saturating_sub(before);
    eprintln!("latency: before {before:?}, during {during:?}: added {added:?}");
    assert!(
        (Duration::from_millis(90)..=Duration::from_millis(110)).contains(&added),
        "added {added:?} of 100ms\n{report}"
    );
    // The agent's own answers are spared: Status through the coordinator stays quick.
    let asked = Instant::now();
    let shown = effect(&lab, "web-1");
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert!(shown.contains("packets delayed, mean 10"), "{shown}");
    assert!(troop_rules(&lab, "web-1").contains("troop-"));

    let (code, halted) = lab.troop_json(&["halt", "--select", "role=web"]);
    assert_eq!(code, Some(0), "{halted}");
    let after = median_round_trip(host, 7100, 21);
    assert!(
        after < before + Duration::from_millis(10),
        "after halt: {after:?}"
    );
    assert_eq!(troop_rules(&lab, "web-1"), "");

    // Killed mid-fault: with nobody bound to the queue, packets pass at once...
    attack(
        &lab,
        &["--latency", "200ms", "--to", GATEWAY, "--for", "5m"],
    );
    assert!(median_round_trip(host, 7100, 5) > Duration::from_millis(180));
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    assert!(wait_for(Duration::from_secs(10), || lab.hosts["web-1"]
        .agent_pid()
        .is_none()));
    let killed = median_round_trip(host, 7100, 11);
    assert!(
        killed < before + Duration::from_millis(10),
        "after SIGKILL: {killed:?}"
    );
    // ...and the next start removes what the dead agent left.
    let mut restarted = lab.restart_agent("web-1");
    assert_eq!(troop_rules(&lab, "web-1"), "", "{}", lab.log("web-1"));
    assert!(
        lab.log("web-1")
            .contains("removed network rules left by the previous agent")
    );
    let _ = restarted.kill();
    let _ = restarted.wait();
}

#[test]
fn loss_drops_its_share_and_a_blackhole_only_its_destination() {
    let Some((lab, lab_ns, hosts)) = setup(&["web-1"]) else {
        return;
    };
    let host = &hosts[0];
    let received = udp_echo(&lab_ns, 7200);
    echo_server(&lab_ns, 7201);
    echo_server(&lab_ns, 7202);

    attack(
        &lab,
        &[
            "--loss",
            "30%",
            "--to",
            &format!("{GATEWAY}:7200"),
            "--for",
            "1m",
        ],
    );
    let probes = 5000u64;
    inside(host, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        for index in 0..probes {
            let _ = socket.send_to(&index.to_be_bytes(), (GATEWAY, 7200));
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let arrived = received.load(Ordering::Relaxed);
    let lost = 100.0 * (probes - arrived) as f64 / probes as f64;
    eprintln!("loss: {arrived} of {probes} probes arrived: {lost:.1}% lost of 30%");
    assert!((28.0..=32.0).contains(&lost), "{lost:.1}% lost");
    let shown = effect(&lab, "web-1");
    eprintln!("loss as the agent counts it: {shown}");
    assert!(
        shown.contains(&format!("of {probes} packets dropped")),
        "{shown}"
    );
    // TCP to another port of the same host is not touched.
    assert!(median_round_trip(host, 7201, 5) < Duration::from_millis(20));
    halt(&lab, "role=web", "web-1");

    attack(
        &lab,
        &[
            "--blackhole",
            "--to",
            &format!("{GATEWAY}:7201"),
            "--for",
            "1m",
        ],
    );
    assert!(!connects(host, 7201), "the blackholed port still answers");
    assert!(
        connects(host, 7202),
        "another destination stopped answering"
    );
    halt(&lab, "role=web", "web-1");
    assert!(connects(host, 7201), "the blackhole outlived its halt");
}

#[test]
fn a_blackhole_of_everything_spares_the_coordinator_and_ssh_and_dns_fails_for_one_host() {
    let Some((lab, lab_ns, hosts)) = setup(&["web-1", "web-2"]) else {
        return;
    };
    echo_server(&lab_ns, 7300);
    echo_server(&lab_ns, 22);
    udp_echo(&lab_ns, 53);

    let (code, report) = lab.troop_json(&[
        "attack",
        "network",
        "--select",
        "name=web-1",
        "--blackhole",
        "--for",
        "1m",
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert!(!connects(&hosts[0], 7300), "everything is blackholed");
    assert!(connects(&hosts[0], 22), "SSH is spared");
    assert!(connects(&hosts[1], 7300), "the other host is untouched");
    // The coordinator still reaches the agent, and halt reverts the blackhole.
    let (code, halted) = lab.troop_json(&["halt", "--select", "name=web-1"]);
    assert_eq!(code, Some(0), "{halted}");
    assert!(
        connects(&hosts[0], 7300),
        "halt did not revert the blackhole"
    );

    assert!(resolver_answers(&hosts[0]) && resolver_answers(&hosts[1]));
    let (code, report) =
        lab.troop_json(&["attack", "dns", "--select", "name=web-1", "--for", "1m"]);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        !resolver_answers(&hosts[0]),
        "DNS still answers the faulted host"
    );
    assert!(
        resolver_answers(&hosts[1]),
        "DNS stopped for the other host too"
    );
    assert!(effect(&lab, "web-1").contains("packets dropped"));
    halt(&lab, "name=web-1", "web-1");
    assert!(resolver_answers(&hosts[0]));
}

/// `troop agents` through serve, as `operator`: the entry of `id`.
fn seen_by_serve(lab: &Lab, operator: &Path, id: &str) -> Value {
    let output = lab.troop_as(operator, &["agents", "--output", "json"]);
    let agents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    agents["agents"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["agent"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_dial_in_agent_keeps_its_stream_through_a_blackhole_and_sigterm_reverts() {
    let Some(mut lab) = Lab::networked("network faults: dial-in") else {
        return;
    };
    let alice = lab.add_operator("alice", Some("operator"));
    let _serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], POLICY, vec![]);
    let on_stream = |lab: &Lab| {
        let entry = seen_by_serve(lab, &alice, "nat-1");
        entry["reachable"] == true && entry["via"] == "stream"
    };
    assert!(
        wait_for(Duration::from_secs(30), || on_stream(&lab)),
        "{}",
        lab.serve_log()
    );
    let lab_ns = lab.network_namespace().unwrap();
    let host = lab.hosts["nat-1"].network_namespace().unwrap();
    echo_server(&lab_ns, 7500);

    let as_alice = |lab: &Lab, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let output = lab.troop_as(&alice, &all);
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {report}
{}",
            lab.log("nat-1")
        );
    };
    as_alice(
        &lab,
        &[
            "attack",
            "network",
            "--select",
            "role=web",
            "--blackhole",
            "--for",
            "1m",
        ],
    );
    assert!(!connects(&host, 7500), "everything is blackholed");
    // Longer than serve takes to call a silent agent unreachable (6 s): the stream and
    // its heartbeats are spared.
    std::thread::sleep(Duration::from_secs(8));
    let entry = seen_by_serve(&lab, &alice, "nat-1");
    let seen_ago =
        troop_common::clock::now_unix_ms() - entry["last_seen_unix_ms"].as_i64().unwrap_or(0);
    assert!(on_stream(&lab) && seen_ago < 4000, "{entry}");
    as_alice(&lab, &["halt", "--select", "role=web"]);
    assert!(
        connects(&host, 7500),
        "halt through serve did not revert the blackhole"
    );
    assert_eq!(troop_rules(&lab, "nat-1"), "");

    // SIGTERM: the agent reverts what it holds before it exits.
    as_alice(
        &lab,
        &[
            "attack",
            "network",
            "--select",
            "role=web",
            "--latency",
            "100ms",
            "--loss",
            "5%",
            "--for",
            "5m",
        ],
    );
    assert!(troop_rules(&lab, "nat-1").contains("troop"));
    let agent = lab.hosts["nat-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    assert!(wait_for(Duration::from_secs(10), || lab.hosts["nat-1"]
        .agent_pid()
        .is_none()));
    assert_eq!(troop_rules(&lab, "nat-1"), "", "{}", lab.log("nat-1"));
    assert!(median_round_trip(&host, 7500, 5) < Duration::from_millis(20));
}

#[test]
fn a_rate_limit_caps_what_a_tcp_connection_gets_through() {
    let Some((lab, lab_ns, hosts)) = setup(&["web-1"]) else {
        return;
    };
    let host = &hosts[0];
    let sink = tcp_sink(&lab_ns, 7600);
    let free = goodput(host, 7600, &sink, Duration::from_secs(1));
    attack(
        &lab,
        &[
            "--rate",
            "8mbit",
            "--to",
            &format!("{GATEWAY}:7600"),
            "--for",
            "1m",
        ],
    );
    let limited = goodput(host, 7600, &sink, Duration::from_secs(3));
    let shown = effect(&lab, "web-1");
    eprintln!(
        "rate: {:.1} Mbit/s free, {:.2} Mbit/s under an 8mbit limit; {shown}",
        free * 8e-6,
        limited * 8e-6
    );
    // A policer, not a shaper: TCP backs off from its drops, so it gets at most the
    // rate, and well below what it gets without the limit.
    assert!(
        limited * 8.0 < 8e6 * 1.25,
        "{limited} B/s through an 8mbit limit"
    );
    assert!(
        limited * 8.0 > 8e6 * 0.2,
        "{limited} B/s: the limit starves the flow"
    );
    assert!(
        free > limited * 5.0,
        "free {free} B/s, limited {limited} B/s"
    );
    assert!(shown.contains("packets dropped"), "{shown}");
    halt(&lab, "role=web", "web-1");
}

#[test]
fn duplication_and_corruption_hit_their_share_of_packets() {
    let Some((lab, lab_ns, hosts)) = setup(&["web-1"]) else {
        return;
    };
    let host = &hosts[0];
    let duplicated = udp_collector(&lab_ns, 7400);
    let corrupted = udp_collector(&lab_ns, 7401);
    let probes = 4000u64;

    attack(
        &lab,
        &[
            "--duplicate",
            "20%",
            "--to",
            &format!("{GATEWAY}:7400"),
            "--for",
            "1m",
        ],
    );
    send_probes(host, 7400, probes);
    let arrived = duplicated.lock().unwrap().len() as u64;
    let extra = 100.0 * arrived.saturating_sub(probes) as f64 / probes as f64;
    eprintln!("duplicate: {arrived} datagrams for {probes} probes: {extra:.1}% extra of 20%");
    assert!((17.0..=23.0).contains(&extra), "{extra:.1}% duplicated");
    assert!(effect(&lab, "web-1").contains("packets duplicated"));
    halt(&lab, "role=web", "web-1");

    attack(
        &lab,
        &[
            "--corrupt",
            "10%",
            "--to",
            &format!("{GATEWAY}:7401"),
            "--for",
            "1m",
        ],
    );
    send_probes(host, 7401, probes);
    // A corrupted probe either arrives with a flipped bit or is dropped by a checksum.
    let intact = corrupted
        .lock()
        .unwrap()
        .iter()
        .filter(|bytes| {
            bytes.len() >= 8 && **bytes == probe(u64::from_be_bytes(bytes[..8].try_into().unwrap()))
        })
        .count() as u64;
    let hit = 100.0 * (probes - intact) as f64 / probes as f64;
    let shown = effect(&lab, "web-1");
    eprintln!("corrupt: {intact} of {probes} probes intact: {hit:.1}% corrupted of 10%; {shown}");
    assert!((8.0..=12.0).contains(&hit), "{hit:.1}% corrupted");
    assert!(shown.contains("packets corrupted"), "{shown}");
    halt(&lab, "role=web", "web-1");
}

#[test]
fn network_faults_past_the_policy_or_the_kernel_are_refused_and_leave_nothing() {
    let Some((lab, _lab_ns, _hosts)) = setup(&["web-1"]) else {
        return;
    };
    for (args, code, says) in [
        (
            vec!["--loss", "10%", "--interface", "lo"],
            "PERMISSION_DENIED",
            "policy.network_interfaces",
        ),
        (
            vec!["--latency", "2s", "--interface", "eth0"],
            "PERMISSION_DENIED",
            "policy.max_latency",
        ),
        (
            vec!["--latency", "10ms", "--jitter", "20ms"],
            "INVALID_ARGUMENT",
            "more than the latency",
        ),
        (
            vec!["--loss", "10%", "--to", "10.0.0.0/40"],
            "INVALID_ARGUMENT",
            "prefix length",
        ),
    ] {
        let mut all = vec!["attack", "network", "--select", "role=web", "--for", "1m"];
        all.extend_from_slice(&args);
        let (exit, report) = lab.troop_json(&all);
        assert_eq!(exit, Some(1), "{report}");
        assert_eq!(report["results"][0]["code"], code, "{args:?}: {report}");
        let message = report["results"][0]["error"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{args:?}: {message}");
    }
    assert_eq!(troop_rules(&lab, "web-1"), "");
    let network = &lab.status("web-1")["inventory"]["network"];
    let effects = network["effects"].to_string();
    assert!(
        effects.contains("latency") && effects.contains("dns"),
        "{network}"
    );
    assert!(
        effects.contains("corrupt") && effects.contains("duplicate"),
        "{network}"
    );
    assert_eq!(network["unavailable"], serde_json::json!([]), "{network}");
    // A second queue (latency, corruption) on the same interface is refused while the
    // first holds.
    attack(&lab, &["--latency", "50ms", "--for", "1m"]);
    let (exit, report) = lab.troop_json(&[
        "attack",
        "network",
        "--select",
        "role=web",
        "--corrupt",
        "1%",
        "--for",
        "1m",
    ]);
    assert_eq!(exit, Some(1), "{report}");
    let message = report["results"][0]["error"].as_str().unwrap_or_default();
    assert!(message.contains("already active on eth0"), "{message}");
    halt(&lab, "role=web", "web-1");
}
