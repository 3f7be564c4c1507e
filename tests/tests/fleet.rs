//! End to end, the way an operator does it: the PKI from the CLI, `troop-agent` processes
//! each in its own PID namespace (a host with its own /proc and its own `sleep` service),
//! and `troop attack kill` picking one at random. Effects are counted from outside.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use troop_lab::files;
use troop_lab::host::{LocalHost, free_port};
use troop_tests::binary;

const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
const SERVICES: usize = 2;

fn troop(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("troop"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not JSON ({error}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

struct Fleet {
    dir: tempfile::TempDir,
    hosts: Vec<LocalHost>,
}

impl Fleet {
    /// The fleet, or `None` (with the reason printed) where this machine cannot make
    /// PID namespaces; as root that is a failure, not a skip.
    fn start(extra_agents: &[(&'static str, &str)]) -> Option<Self> {
        if let Err(reason) = troop_lab::host::can_make_hosts() {
            assert!(
                !nix::unistd::geteuid().is_root(),
                "as root, hosts must work: {reason}"
            );
            troop_tests::lab::skip("CLI end to end", &reason);
            return None;
        }
        Some(Self::start_hosts(extra_agents))
    }

    fn start_hosts(extra_agents: &[(&'static str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(
            troop(root, &["pki", "init", "--dir", "pki"])
                .status
                .success()
        );
        let web = files::labels(&[("role", "web")]);
        let mut agents: Vec<(&str, String)> = Vec::new();
        let mut hosts = Vec::new();
        for id in HOSTS {
            let issued = troop(
                root,
                &[
                    "pki",
                    "issue-agent",
                    "--dir",
                    "pki",
                    "--name",
                    id,
                    "--san",
                    "127.0.0.1",
                ],
            );
            assert!(issued.status.success(), "{issued:?}");
            let address = format!("127.0.0.1:{}", free_port().unwrap());
            let config = root.join(format!("{id}.toml"));
            let agent = files::agent_file(id, &address, &web, Default::default());
            files::write(&config, &agent).unwrap();
            agents.push((id, address));
            let agent: Vec<OsString> = vec![
                binary("troop-agent").into(),
                "--config".into(),
                config.into(),
            ];
            let service: Vec<OsString> = vec!["sleep".into(), "600".into()];
            let host = LocalHost::start(
                id,
                &agent,
                &vec![service; SERVICES],
                &root.join(format!("{id}.log")),
            )
            .unwrap();
            assert!(
                host.wait_for("sleep", SERVICES, Duration::from_secs(10)),
                "{id} services"
            );
            hosts.push(host);
        }
        agents.extend(
            extra_agents
                .iter()
                .map(|(id, address)| (*id, address.to_string())),
        );
        let fleet = agents
            .iter()
            .map(|(id, address)| (*id, address.as_str(), &web));
        files::write(&root.join("troop.toml"), &files::coordinator_file(fleet)).unwrap();
        let fleet = Self { dir, hosts };
        fleet.wait_until_reachable();
        fleet
    }

    fn troop(&self, args: &[&str]) -> Output {
        troop(self.dir.path(), args)
    }

    fn wait_until_reachable(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let output = self.troop(&["agents", "--select", "role=web", "--output", "json"]);
            let listing = json(&output);
            let agents = listing["agents"].as_array().unwrap();
            let ours = agents
                .iter()
                .filter(|a| HOSTS.contains(&a["agent"].as_str().unwrap()));
            if ours.clone().count() == HOSTS.len()
                && ours.into_iter().all(|a| a["reachable"] == true)
            {
                return;
            }
            assert!(Instant::now() < deadline, "agents not reachable: {listing}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn sleeps(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .map(|h| h.pids_named("sleep").len())
            .collect()
    }
}

#[test]
fn attack_kill_picks_one_host_at_random_and_kills_only_there() {
    let Some(fleet) = Fleet::start(&[]) else {
        return;
    };
    let args = [
        "attack", "kill", "--select", "role=web", "--count", "1", "--name", "sleep", "--seed",
        "11", "--output", "json",
    ];

    // The dry run with the same seed names the same target and sends nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let planned = json(&fleet.troop(&dry));
    let planned_target = planned["commands"][0]["agent_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(planned["commands"].as_array().unwrap().len(), 1);
    assert_eq!(
        fleet.sleeps(),
        vec![SERVICES; HOSTS.len()],
        "a dry run killed something"
    );

    let output = fleet.troop(&args);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let target = results[0]["agent"].as_str().unwrap();
    assert_eq!(target, planned_target, "the same seed picks the same host");
    assert_eq!(results[0]["outcome"], "applied");
    assert_eq!(
        results[0]["receipt"]["signalled"].as_array().unwrap().len(),
        1
    );

    let hit = HOSTS.iter().position(|h| *h == target).unwrap();
    assert!(fleet.hosts[hit].wait_for("sleep", SERVICES - 1, Duration::from_secs(5)));
    for (index, count) in fleet.sleeps().into_iter().enumerate() {
        let expected = if index == hit { SERVICES - 1 } else { SERVICES };
        assert_eq!(count, expected, "host {}", HOSTS[index]);
    }
}

#[test]
fn one_unreachable_agent_is_reported_without_failing_the_others() {
    let Some(fleet) = Fleet::start(&[("web-9", "127.0.0.1:1")]) else {
        return;
    };
    let output = fleet.troop(&[
        "attack",
        "kill",
        "--select",
        "role=web",
        "--name",
        "sleep",
        "--all-matches",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "some target failed: exit 1");
    let report = json(&output);
    let outcomes: Vec<(&str, &str)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["agent"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("web-1", "applied"),
            ("web-2", "applied"),
            ("web-3", "applied"),
            ("web-9", "unreachable")
        ]
    );
    for host in &fleet.hosts {
        assert!(
            host.wait_for("sleep", 0, Duration::from_secs(5)),
            "{} still runs sleep",
            host.name
        );
    }
}

#[test]
fn halt_and_status_answer_from_every_agent() {
    let Some(fleet) = Fleet::start(&[]) else {
        return;
    };
    let halt = fleet.troop(&["halt", "--output", "json"]);
    assert_eq!(halt.status.code(), Some(0), "{halt:?}");
    let results = json(&halt)["results"].as_array().unwrap().len();
    assert_eq!(results, HOSTS.len());
    let status = fleet.troop(&["status", "--select", "role=web"]);
    assert_eq!(status.status.code(), Some(0));
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(
        text.matches("no active faults").count(),
        HOSTS.len(),
        "{text}"
    );
    assert_eq!(fleet.sleeps(), vec![SERVICES; HOSTS.len()]);
}
