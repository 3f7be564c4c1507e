//! `troop serve` as the fleet's control plane, measured (as root; release binaries):
//!
//! 1. Kill on 30 lab hosts, CLI start to every victim gone: 30 dial-in hosts through
//!    serve (an operator's CLI, no signing key), and 30 static hosts dialled directly by
//!    the CLI, side by side. The CLI starts inside the lab's network, as on an operator's
//!    machine there; when it exits is reported too, and the CPU each kill cost serve, the
//!    agents and the CLI.
//! 2. 1,000 real `troop-agent` processes, each in its own PID namespace, dialled in to one
//!    serve on loopback: one signed command to all until every agent has answered; serve's
//!    resident memory; every agent back after serve is killed with SIGKILL and restarted;
//!    idle CPU of serve and of an agent. `SERVE_BENCH_STATE=/dev/shm` puts the agents'
//!    journals on tmpfs.
//! 3. Emergency stop on 30 dial-in lab hosts, each running a cpu, a memory and a disk
//!    fault: `troop emergency-stop` through serve, timed from the CLI's start until the
//!    last fault is gone as seen from outside (burner threads in /proc, the memory
//!    holder process, statvfs of the host's tmpfs).
//!
//! Results and what they mean: BENCHMARKS.md.
//!
//! `cargo build --release --bins && cargo bench -p troop-tests --bench serve`
//! (`-- kill`, `-- thousand` or `-- stop` runs one part).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{Id, WaitPidFlag, waitid};
use serde_json::Value;
use troop_lab::host::ending_with_this_thread;
use troop_tests::bench_wants;
use troop_tests::lab::{Lab, Reaped, burner_threads, wait_for};

const POLICY: &str = "allow = [\"kill\"]";
const HOSTS: usize = 30;
const ROUNDS: usize = 15;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the serve benchmarks need root (network namespaces)");
        return;
    }
    let wants = bench_wants();
    if wants("kill") {
        kill_on_thirty_hosts();
    }
    if wants("thousand") {
        thousand_agents();
    }
    if wants("stop") {
        emergency_stop_on_thirty_hosts();
    }
}

fn start_serve(lab: &Lab) -> Reaped {
    Reaped(
        lab.troop_command_ending_with_this_thread()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn kill_on_thirty_hosts() {
    let mut lab = Lab::networked("serve bench: kill").expect("a networked lab");
    let alice = lab.add_operator("alice", Some("operator"));
    let direct: Vec<String> = (1..=HOSTS).map(|n| format!("direct-{n}")).collect();
    let dial_in: Vec<String> = (1..=HOSTS).map(|n| format!("nat-{n}")).collect();
    for id in &direct {
        lab.add_host(id, &[("role", "direct")], POLICY, vec![]);
    }
    let serve = start_serve(&lab);
    let serve_pid = serve.0.id() as i32;
    for id in &dial_in {
        lab.start_dial_in_host(id, &[("role", "nat"), ("host", id)], POLICY, vec![]);
    }
    let attached = wait_for(Duration::from_secs(60), || {
        lab.agents_as(&alice)["agents"]
            .as_array()
            .is_some_and(|all| {
                all.iter()
                    .filter(|a| a["via"] == "stream" && a["reachable"] == true)
                    .count()
                    == HOSTS
            })
    });
    assert!(attached, "not every dial-in host attached");

    let config = lab.dir().join("troop.toml");
    let through_serve = time_kills(&lab, &alice, "role=nat", &dial_in, serve_pid);
    // The path every kill pays whatever the fleet's size: one host of the 30.
    let one_host = time_kills(&lab, &alice, "host=nat-1", &dial_in[..1], serve_pid);
    let direct_kills = time_kills(&lab, &config, "role=direct", &direct, serve_pid);
    // Where the time goes: the same process started the same way, doing nothing, and
    // `troop agents` through serve (its connection, ListAgents, then a Status round).
    let mut noop = Vec::new();
    let mut listing = Vec::new();
    for _ in 0..ROUNDS {
        noop.push(time_troop(&lab, &["--version"]));
        let alice = alice.to_str().unwrap();
        listing.push(time_troop(
            &lab,
            &["--config", alice, "agents", "--output", "json"],
        ));
    }
    let line = |samples: &[Duration]| {
        format!(
            "median {:.1} ms, min {:.1}, max {:.1}",
            ms(median(samples.to_vec())),
            ms(*samples.iter().min().unwrap()),
            ms(*samples.iter().max().unwrap()),
        )
    };
    println!(
        "kill on {HOSTS} hosts, CLI start to every victim gone, {ROUNDS} rounds:\n  \
         through serve (dial-in hosts): {}\n    \
         until the CLI exited:          {}\n  \
         through serve, one of them:    {}\n    \
         until the CLI exited:          {}\n  \
         direct (static hosts):         {}\n    \
         until the CLI exited:          {}\n  \
         `troop --version` the same way: {}\n  \
         `troop agents` through serve:   {}\n\
         CPU per kill (medians; serve, the agents of the hosts named, the CLI):\n  \
         through serve:                 {}\n  \
         through serve, one of them:    {}\n  \
         direct:                        {}",
        line(&through_serve.gone),
        line(&through_serve.cli),
        line(&one_host.gone),
        line(&one_host.cli),
        line(&direct_kills.gone),
        line(&direct_kills.cli),
        line(&noop),
        line(&listing),
        through_serve.cpu_line(),
        one_host.cpu_line(),
        direct_kills.cpu_line(),
    );
}

/// One part's rounds: until every victim was gone, until the CLI exited, and the CPU each
/// round cost.
struct Kills {
    gone: Vec<Duration>,
    cli: Vec<Duration>,
    cpu: Vec<CpuSplit>,
}

/// CPU time spent during one kill, from its CLI's start until its last victim was gone.
#[derive(Clone, Copy)]
struct CpuSplit {
    serve: Duration,
    agents: Duration,
    cli: Duration,
}

impl Kills {
    fn cpu_line(&self) -> String {
        let median_of =
            |part: fn(&CpuSplit) -> Duration| median(self.cpu.iter().map(part).collect());
        let (serve, agents, cli) = (
            median_of(|split| split.serve),
            median_of(|split| split.agents),
            median_of(|split| split.cli),
        );
        format!(
            "serve {:.1} ms, agents {:.1} ms, CLI {:.1} ms; {:.1} ms in all",
            ms(serve),
            ms(agents),
            ms(cli),
            ms(serve + agents + cli),
        )
    }
}

/// The CPU time of every thread `pid` has now (from `schedstat`, in nanoseconds: the
/// per-process counters in `stat` are in 10 ms ticks, too coarse for one command).
fn cpu_of_threads(pid: i32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// CPU time of this process's children that were reaped.
fn cpu_of_waited_children() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    let micros = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec() as u64) + Duration::from_micros(time.tv_usec() as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

/// Starts `troop args` from a thread inside the lab's network namespace, as an operator's
/// machine on that network would run it: the child inherits the thread's namespace, so
/// no `ip netns exec` (a second exec and a mount namespace, ~2–3 ms) sits in the timing.
/// Returns the child and the moment just before it was spawned.
fn start_troop(lab: &Lab, args: Vec<OsString>) -> (Instant, Child) {
    let netns = Path::new("/run/netns").join(&lab.net.as_ref().expect("a networked lab").ns);
    let mut command = Command::new(&lab.binaries.troop);
    command
        .args(args)
        .current_dir(lab.dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    troop_tests::net::inside(&netns, move || {
        let start = Instant::now();
        (start, command.spawn().unwrap())
    })
}

/// Runs `troop args` as [`start_troop`] does; how long it took, asserting it succeeded.
fn time_troop(lab: &Lab, args: &[&str]) -> Duration {
    let (start, child) = start_troop(lab, args.iter().map(OsString::from).collect());
    let output = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(output.status.success(), "troop {args:?}: {}", text(&output));
    took
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Each round: a fresh `sleep` victim on every host (a child of this process, through
/// nsenter), then `troop attack kill`. Timed from the CLI's start until every victim has
/// exited (one thread per victim blocks in `wait`, so the polling costs no CPU while
/// the kill runs), and until the CLI exited.
fn time_kills(lab: &Lab, config: &Path, select: &str, hosts: &[String], serve: i32) -> Kills {
    let argv: Vec<OsString> = vec!["sleep".into(), "600".into()];
    let agents: Vec<i32> = hosts
        .iter()
        .map(|id| lab.hosts[id].agent_pid().expect("the host's agent runs"))
        .collect();
    let agents_cpu = || {
        agents
            .iter()
            .map(|pid| cpu_of_threads(*pid))
            .sum::<Duration>()
    };
    let mut kills = Kills {
        gone: Vec::new(),
        cli: Vec::new(),
        cpu: Vec::new(),
    };
    for _ in 0..ROUNDS {
        let mut victims: Vec<Reaped> = hosts
            .iter()
            .map(|id| {
                Reaped(
                    lab.hosts[id]
                        .host
                        .command_inside(&argv)
                        .unwrap()
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        // nsenter forks the victim into the host's PID namespace; let each start.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            victims
                .iter_mut()
                .all(|victim| victim.0.try_wait().unwrap().is_none()),
            "victims did not start"
        );
        // Each waiter sees its victim exit without reaping it (WNOWAIT): a reaped child's
        // CPU would land in this process's count of its children, which must hold only
        // the CLI's while the kill is measured. The victims are reaped after.
        let waiters: Vec<_> = victims
            .into_iter()
            .map(|victim| {
                std::thread::spawn(move || {
                    let pid = nix::unistd::Pid::from_raw(victim.0.id() as i32);
                    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                    waitid(Id::Pid(pid), flags).unwrap();
                    (Instant::now(), victim)
                })
            })
            .collect();
        let args = ["--config".as_ref(), config.as_os_str()]
            .into_iter()
            .chain(["attack", "kill", "--select", select, "--name", "sleep"].map(OsStr::new))
            .map(OsString::from)
            .collect();
        let (serve_before, agents_before, cli_before) = (
            cpu_of_threads(serve),
            agents_cpu(),
            cpu_of_waited_children(),
        );
        let (start, child) = start_troop(lab, args);
        let output = child.wait_with_output().unwrap();
        kills.cli.push(start.elapsed());
        assert!(output.status.success(), "{}", text(&output));
        // A victim that survives keeps its waiter blocked: the CLI said all were killed,
        // so give them a bounded while, then fail rather than hang.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !waiters.iter().all(|waiter| waiter.is_finished()) {
            assert!(Instant::now() < deadline, "victims survived");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Read after the last victim was gone, so this accounting is outside the timing;
        // the CLI has exited and been waited for by then. Saturating: a thread that exits
        // meanwhile takes its count with it (rare: an idle blocking thread lingers ten
        // seconds).
        kills.cpu.push(CpuSplit {
            serve: cpu_of_threads(serve).saturating_sub(serve_before),
            agents: agents_cpu().saturating_sub(agents_before),
            cli: cpu_of_waited_children().saturating_sub(cli_before),
        });
        let last_gone = waiters
            .into_iter()
            .map(|waiter| {
                let (gone, mut victim) = waiter.join().unwrap();
                victim.0.wait().unwrap();
                gone
            })
            .max()
            .unwrap();
        kills.gone.push(last_gone - start);
    }
    kills
}

const STOP_ROUNDS: usize = 7;

fn emergency_stop_on_thirty_hosts() {
    let mut lab = Lab::networked("serve bench: emergency stop").expect("a networked lab");
    let alice = lab.add_operator("alice", Some("operator"));
    let hosts: Vec<String> = (1..=HOSTS).map(|n| format!("nat-{n}")).collect();
    let _serve = start_serve(&lab);
    let policy = "allow = [\"cpu\", \"memory\", \"disk\"]";
    for id in &hosts {
        lab.start_dial_in_host(id, &[("role", "nat")], policy, vec![]);
    }
    let troop = |args: &[&str]| {
        let output = lab
            .troop_command()
            .arg("--config")
            .arg(&alice)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "troop {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let attached = wait_for(Duration::from_secs(60), || {
        let output = troop(&["agents", "--output", "json"]);
        let agents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        agents["agents"]
            .as_array()
            .is_some_and(|all| all.iter().filter(|a| a["reachable"] == true).count() == HOSTS)
    });
    assert!(attached, "not every dial-in host attached");
    let disk = lab.hosts[&hosts[0]].disk.display().to_string();
    let (mut to_reverted, mut to_answered) = (Vec::new(), Vec::new());
    for _ in 0..STOP_ROUNDS {
        troop(&[
            "attack", "cpu", "--select", "role=nat", "--load", "20", "--cores", "1", "--for", "5m",
        ]);
        troop(&[
            "attack", "memory", "--select", "role=nat", "--size", "16MiB", "--for", "5m",
        ]);
        troop(&[
            "attack", "disk", "--select", "role=nat", "--path", &disk, "--fill", "50", "--for",
            "5m",
        ]);
        assert!(
            hosts.iter().all(|id| all_three_faults(&lab, id)),
            "not every host shows its three faults"
        );
        // Looked up before the clock starts: a scan of /proc per host per poll would
        // take longer than the stop.
        let watched: Vec<Watched> = hosts
            .iter()
            .map(|id| {
                let host = &lab.hosts[id];
                Watched {
                    agent: host.agent_pid().unwrap(),
                    holder: memory_holder(&lab, id),
                    disk: host.host.path_inside(&host.disk).unwrap(),
                }
            })
            .collect();
        let start = Instant::now();
        troop(&["emergency-stop", "--reason", "bench"]);
        to_answered.push(start.elapsed());
        loop {
            if watched.iter().all(Watched::clear) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "faults survived");
            std::thread::sleep(Duration::from_micros(500));
        }
        to_reverted.push(start.elapsed());
        troop(&["resume", "--reason", "bench round over"]);
    }
    println!(
        "emergency stop on {HOSTS} hosts (cpu, memory and disk faults on each) through serve, {STOP_ROUNDS} rounds:\n  \
         CLI start to the last fault gone: median {:.1} ms, min {:.1}, max {:.1}\n  \
         CLI start to its answer:          median {:.1} ms, min {:.1}, max {:.1}",
        ms(median(to_reverted.clone())),
        ms(*to_reverted.iter().min().unwrap()),
        ms(*to_reverted.iter().max().unwrap()),
        ms(median(to_answered.clone())),
        ms(*to_answered.iter().min().unwrap()),
        ms(*to_answered.iter().max().unwrap()),
    );
}

/// The host's memory holder process (the agent's `__hold-memory` helper).
fn memory_holder(lab: &Lab, id: &str) -> i32 {
    lab.hosts[id]
        .host
        .processes()
        .iter()
        .find(|p| p.cmdline.iter().any(|a| a == "__hold-memory"))
        .map_or(0, |p| p.pid)
}

fn all_three_faults(lab: &Lab, id: &str) -> bool {
    let host = &lab.hosts[id];
    burner_threads(host.agent_pid().unwrap()) > 0
        && memory_holder(lab, id) != 0
        && troop_tests::lab::used_percent(lab, id) > 40.0
}

/// One host's faults as seen from outside, its pids and paths found beforehand.
struct Watched {
    agent: i32,
    holder: i32,
    /// The host's tmpfs, as this machine reaches it.
    disk: PathBuf,
}

impl Watched {
    /// No fault left: the tmpfs by statvfs, the agent's threads, the holder's resident
    /// memory (none once it has exited).
    fn clear(&self) -> bool {
        let usage = troop_common::observe::usage(&self.disk).unwrap();
        usage.used * 100 < usage.total
            && burner_threads(self.agent) == 0
            && troop_tests::lab::resident_bytes(self.holder).is_none()
    }
}

const AGENTS: usize = 1000;

fn thousand_agents() {
    let dir = tempfile::tempdir().unwrap();
    let pki = troop_tests::TestPki::new_in(tempfile::tempdir_in(dir.path()).unwrap(), &[]);
    let root = pki.dir.path().to_path_buf();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let health = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_address = health.local_addr().unwrap();
    drop((listener, health));
    let mut config = troop_lab::files::coordinator_file([]);
    config.serve = Some(troop_coordinator::config::ServeFile {
        listen: Some(address.to_string()),
        health_listen: Some(health_address.to_string()),
        ..Default::default()
    });
    config.operators = vec![troop_coordinator::config::OperatorFile {
        name: "alice".into(),
        role: "operator".into(),
    }];
    troop_lab::files::write(&root.join("troop.toml"), &config).unwrap();
    troop_coordinator::pki::issue_operator(&pki.path(""), "alice", 30).unwrap();
    let operator = root.join("alice.toml");
    troop_lab::files::write(
        &operator,
        &troop_lab::files::operator_file("alice", &format!("https://{address}")),
    )
    .unwrap();

    let binaries = troop_lab::lab::Binaries::built();
    let serve_command = || {
        // Killed with this thread, also when the bench is killed outright.
        let mut command = ending_with_this_thread();
        command
            .arg(&binaries.troop)
            .args(["--config"])
            .arg(root.join("troop.toml"))
            .arg("serve")
            .current_dir(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let mut serve = Reaped(serve_command().spawn().unwrap());

    let started = Instant::now();
    let mut agents: Vec<Reaped> = (0..AGENTS)
        .map(|n| {
            let id = format!("a-{n:04}");
            pki.issue_agent(&id, &[]);
            let path = agent_config(&root, &id, &address.to_string());
            // Each in its own PID namespace, as on its own host: a kill looks through the
            // host's processes, not through 1,000 agents on one machine.
            Reaped(
                ending_with_this_thread()
                    .arg("unshare")
                    .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
                    .arg(&binaries.agent)
                    .arg("--config")
                    .arg(&path)
                    .current_dir(&root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let connected = |timeout: Duration| {
        wait_for(timeout, || {
            let output = Command::new(&binaries.troop)
                .arg("--config")
                .arg(&operator)
                .args(["agents", "--output", "json"])
                .current_dir(&root)
                .output()
                .unwrap();
            let agents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            agents["agents"]
                .as_array()
                .is_some_and(|all| all.iter().filter(|a| a["reachable"] == true).count() == AGENTS)
        })
    };
    assert!(
        connected(Duration::from_secs(300)),
        "not all agents attached"
    );
    println!(
        "{AGENTS} agents started and attached in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One command to all until every agent has answered: a kill that matches nothing,
    // which each agent answers itself with NOT_FOUND after looking through its processes.
    let agent_pids: Vec<u32> = agents.iter().map(|a| only_child(a.0.id())).collect();
    let agents_cpu = || agent_pids.iter().map(|pid| cpu_seconds(*pid)).sum::<f64>();
    let (serve_cpu_before, agents_cpu_before) = (cpu_seconds(serve.0.id()), agents_cpu());
    let mut samples = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let output = Command::new(&binaries.troop)
            .arg("--config")
            .arg(&operator)
            .args([
                "attack",
                "kill",
                "--select",
                "role=bench",
                "--name",
                "no-such-process",
                "--output",
                "json",
            ])
            .current_dir(&root)
            .output()
            .unwrap();
        let elapsed = start.elapsed();
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let receipts = answer["results"].as_array().map_or(0, |all| {
            all.iter().filter(|r| r["code"] == "NOT_FOUND").count()
        });
        assert_eq!(
            receipts,
            AGENTS,
            "{answer}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        samples.push(elapsed);
    }
    println!(
        "one command to {AGENTS} agents through serve, CLI start to every receipt back: median {:.0} ms (5 runs, max {:.0} ms)",
        ms(median(samples.clone())),
        ms(*samples.iter().max().unwrap())
    );
    println!(
        "  CPU per command to all: serve {:.0} ms, the agents together {:.0} ms (idle included)",
        (cpu_seconds(serve.0.id()) - serve_cpu_before) * 1000.0 / 5.0,
        (agents_cpu() - agents_cpu_before) * 1000.0 / 5.0,
    );
    println!(
        "serve resident memory with {AGENTS} agents: {:.1} MiB",
        rss_mib(serve.0.id())
    );
    let idle = Duration::from_secs(10);
    let serve_before = cpu_seconds(serve.0.id());
    let one_agent = only_child(agents[0].0.id());
    println!(
        "one agent's resident memory, attached: {:.1} MiB",
        rss_mib(one_agent)
    );
    let agent_before = cpu_seconds(one_agent);
    std::thread::sleep(idle);
    println!(
        "idle CPU over {}s: serve {:.2} % of one core, one agent {:.3} %",
        idle.as_secs(),
        (cpu_seconds(serve.0.id()) - serve_before) * 100.0 / idle.as_secs_f64(),
        (cpu_seconds(one_agent) - agent_before) * 100.0 / idle.as_secs_f64(),
    );

    // Serve killed outright and started again: every agent back.
    let _ = serve.0.kill();
    let _ = serve.0.wait();
    let restarted = Instant::now();
    serve = Reaped(serve_command().spawn().unwrap());
    assert!(
        connected(Duration::from_secs(120)),
        "not all agents came back"
    );
    println!(
        "after serve SIGKILL and restart: all {AGENTS} reconnected within {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    drop(serve);
    agents.clear();
}

fn agent_config(root: &Path, id: &str, coordinator: &str) -> PathBuf {
    let mut file = troop_lab::files::agent_file(
        id,
        "127.0.0.1:0",
        &troop_lab::files::labels(&[("role", "bench")]),
        troop_lab::files::policy(POLICY),
    );
    file.listen = None;
    file.coordinator = Some(troop_common::agent_file::Coordinators::One(format!(
        "https://{coordinator}"
    )));
    // SERVE_BENCH_STATE=/dev/shm puts the agents' journals on tmpfs: 1,000 agents share
    // this machine's one disk, where a real fleet has one each.
    let state =
        std::env::var_os("SERVE_BENCH_STATE").map_or_else(|| root.join("state"), PathBuf::from);
    file.state_dir = Some(state.join(format!("troop-bench-{id}")));
    let path = root.join(format!("{id}.toml"));
    troop_lab::files::write(&path, &file).unwrap();
    path
}

fn rss_mib(pid: u32) -> f64 {
    troop_common::observe::resident_bytes(pid).unwrap() as f64 / (1u64 << 20) as f64
}

fn cpu_seconds(pid: u32) -> f64 {
    troop_tests::lab::cpu_seconds(pid as i32)
}

/// The one child of `pid` (the agent under its `unshare`).
fn only_child(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}
