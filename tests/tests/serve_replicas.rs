//! Two `troop serve` replicas sharing one real PostgreSQL database, on the lab: exactly one
//! fires schedules. The leader killed with SIGKILL mid-campaign is replaced within its
//! lease; the survivor closes the dead leader's run, honours `min_time_between` across the
//! takeover (no group struck twice), loses no record written before the kill, and takes
//! the agents, which fail over to it. A leader paused with SIGSTOP past its lease and
//! resumed with SIGCONT finds a successor and writes nothing as leader. Effects are read
//! from outside: statvfs of the hosts' disks, the database through its own client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use troop_coordinator::config::{ConfigFile, ServeFile, StoreFile};
use troop_coordinator::store::{Lease, RunDetail, Store};
use troop_postgres_lab::PostgresServer;
use troop_tests::lab::{Lab, Reaped, used_percent, wait_for};

/// The schedule lease the replicas hold; renewed every second.
const LEASE: Duration = Duration::from_secs(3);
const POLICY: &str = "allow = [\"disk\"]";
const HOSTS: [&str; 2] = ["web-a", "web-b"];

struct Replica {
    name: &'static str,
    port: u16,
    config: PathBuf,
    /// A viewer's CLI config that goes through this replica.
    viewer: PathBuf,
}

impl Replica {
    fn new(lab: &Lab, name: &'static str, port: u16, store_url: &str) -> Self {
        // The lab's own serve config (PKI, operators), as this replica's.
        let text = std::fs::read_to_string(lab.dir().join("troop.toml")).unwrap();
        let mut config: ConfigFile = toml::from_str(&text).unwrap();
        config.store = Some(StoreFile {
            url: Some(store_url.to_string()),
            ..StoreFile::default()
        });
        config.serve = Some(ServeFile {
            listen: Some(format!("0.0.0.0:{port}")),
            health_listen: Some(format!("127.0.0.1:{}", port + 100)),
            leader_lease: Some(format!("{}s", LEASE.as_secs())),
            replica: Some(name.to_string()),
            advertise: Some(format!("127.0.0.1:{port}")),
            ..ServeFile::default()
        });
        config.campaigns = Some(lab.dir().join("campaigns"));
        let path = lab.dir().join(format!("{name}.toml"));
        troop_lab::files::write(&path, &config).unwrap();
        let viewer = lab.dir().join(format!("alice-via-{name}.toml"));
        let operator =
            troop_lab::files::operator_file("alice", &format!("https://127.0.0.1:{port}"));
        troop_lab::files::write(&viewer, &operator).unwrap();
        Self {
            name,
            port,
            config: path,
            viewer,
        }
    }

    fn url(&self) -> String {
        format!("https://{}:{}", troop_lab::net::GATEWAY, self.port)
    }

    fn start(&self, lab: &Lab) -> Reaped {
        lab.start_serve_with(&self.config, &self.log_name())
    }

    fn log_name(&self) -> String {
        format!("{}.log", self.name)
    }

    fn log(&self, lab: &Lab) -> String {
        std::fs::read_to_string(lab.dir().join(self.log_name())).unwrap_or_default()
    }

    /// Whether every lab host is attached to this replica by its stream.
    fn holds_every_stream(&self, lab: &Lab) -> bool {
        self.reaches_every_host(lab, "stream")
    }

    /// Whether this replica shows every lab host reachable `via` (`stream`, `relay`).
    fn reaches_every_host(&self, lab: &Lab, via: &str) -> bool {
        let output = lab.troop_as(&self.viewer, &["agents", "--output", "json"]);
        let agents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        HOSTS.iter().all(|id| {
            agents["agents"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|a| a["agent"] == *id && a["via"] == via && a["reachable"] == true)
            })
        })
    }
}

/// The lease as the database has it, if current.
fn current_lease(store: &Store) -> Option<Lease> {
    let (lease, now) = store.lease().unwrap();
    lease.filter(|lease| lease.expires_at_ms > now)
}

/// Waits until `holder` holds a current lease; answers it and how long that took.
fn wait_leader(store: &Store, holder: &str, timeout: Duration) -> Option<(Lease, Duration)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(lease) = current_lease(store).filter(|lease| lease.holder == holder) {
            return Some((lease, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The newest run of `campaign` once both hosts' faults are applied.
fn wait_applied_run(store: &Store, campaign: &str) -> Option<RunDetail> {
    // Counted by the fills themselves: a run's `applied` also counts its lease renewals,
    // the first of which follows the fills within milliseconds.
    let fills_applied = |detail: &RunDetail| {
        detail
            .commands
            .iter()
            .filter(|c| c.fault_kind.starts_with("disk") && c.outcome == "applied")
            .count()
    };
    let mut found = None;
    wait_for(Duration::from_secs(30), || {
        found = store
            .runs(20)
            .unwrap()
            .into_iter()
            .filter(|run| run.campaign == campaign)
            .map(|run| store.run(run.id).unwrap())
            .find(|detail| fills_applied(detail) == HOSTS.len());
        found.is_some()
    });
    found
}

/// Writes campaign `name` (a disk fill per zone, fired every second, one strike per zone
/// an hour) into the campaigns directory and has `serves` reload it.
fn load_campaign(lab: &Lab, name: &str, serves: &[&Reaped]) {
    let text = format!(
        "name = \"{name}\"\n[schedule]\nevery = \"1s\"\nmin_time_between = \"1h\"\n\
         [guardrails]\nmax_concurrent = 2\nmin_healthy_percent = 0\nlease = \"4s\"\n\
         [[step]]\nselect = \"role=web\"\ngroup_by = \"zone\"\npick = \"all\"\n\
         fault = {{ kind = \"disk\", path = \"{}\", fill = 30 }}\nduration = \"60s\"\n",
        lab.hosts["web-a"].disk.display()
    );
    std::fs::write(lab.dir().join(format!("campaigns/{name}.toml")), text).unwrap();
    for serve in serves {
        signal(serve, Signal::SIGHUP);
    }
}

fn signal(serve: &Reaped, signal: Signal) {
    kill(Pid::from_raw(serve.0.id() as i32), signal).unwrap();
}

fn disks_filled(lab: &Lab) -> bool {
    HOSTS.iter().all(|id| used_percent(lab, id) > 20.0)
}

fn disks_empty(lab: &Lab) -> bool {
    HOSTS.iter().all(|id| used_percent(lab, id) < 1.0)
}

/// A networked lab with alice (of `role`) and two replicas' configs on one fresh
/// PostgreSQL database, nothing started; `None` where the lab or PostgreSQL is missing
/// (and skipping is allowed).
fn replicas(scenario: &str, role: &str) -> Option<(Lab, Store, Replica, Replica)> {
    let mut lab = Lab::networked(scenario)?;
    let postgres = PostgresServer::shared()?;
    let url = postgres.new_database().unwrap();
    let socket_url = postgres.socket_url(url.rsplit('/').next().unwrap());
    let store = Store::open(&url).unwrap();
    lab.add_operator("alice", Some(role));
    std::fs::create_dir(lab.dir().join("campaigns")).unwrap();
    let a = Replica::new(&lab, "serve-a", 7444, &socket_url);
    let b = Replica::new(&lab, "serve-b", 7445, &socket_url);
    Some((lab, store, a, b))
}

/// Starts the lab's hosts (zones a and b), dialling `coordinators` in turn.
fn start_hosts(lab: &mut Lab, coordinators: &[String]) {
    for (id, zone) in HOSTS.iter().zip(["a", "b"]) {
        lab.start_dial_in_host_to(
            id,
            &[("role", "web"), ("zone", zone)],
            POLICY,
            vec![],
            coordinators,
        );
    }
}

/// `troop attack disk` on every host through `replica`, for `duration`.
fn fill_through(lab: &Lab, replica: &Replica, duration: &str) -> std::process::Output {
    let disk = lab.hosts["web-a"].disk.display().to_string();
    lab.troop_as(
        &replica.viewer,
        &[
            "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "30", "--for",
            duration,
        ],
    )
}

#[test]
fn a_killed_or_paused_leader_is_replaced_and_strikes_nothing_twice() {
    let Some((mut lab, store, a, b)) = replicas("serve replicas on PostgreSQL", "viewer") else {
        return;
    };

    // serve-a leads; serve-b stands by; the hosts dial serve-a first, serve-b if it fails.
    let serve_a = a.start(&lab);
    let (first, _) = wait_leader(&store, "serve-a", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("serve-a never led:\n{}", a.log(&lab)));
    let serve_b = b.start(&lab);
    start_hosts(&mut lab, &[a.url(), b.url()]);
    assert!(
        wait_for(Duration::from_secs(30), || a.holds_every_stream(&lab)),
        "hosts not attached to serve-a:\n{}",
        a.log(&lab)
    );
    load_campaign(&lab, "monkey", &[&serve_a, &serve_b]);

    // The leader's run fills both disks; then it dies mid-run.
    let before = wait_applied_run(&store, "monkey")
        .unwrap_or_else(|| panic!("serve-a did not strike:\n{}", a.log(&lab)));
    assert!(
        wait_for(Duration::from_secs(10), || disks_filled(&lab)),
        "no fill seen"
    );
    let struck = store.last_strikes("monkey").unwrap();
    assert_eq!(struck.len(), 2, "both zones struck once: {struck:?}");
    let killed_at = Instant::now();
    let killed_at_ms = troop_tests::now_ms();
    drop(serve_a); // SIGKILL

    let (second, takeover) = wait_leader(&store, "serve-b", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("serve-b never took over:\n{}", b.log(&lab)));
    eprintln!("serve-b took over {takeover:?} after serve-a was killed (lease {LEASE:?})");
    assert!(second.epoch > first.epoch);
    assert!(
        takeover <= LEASE + LEASE / 3 + Duration::from_secs(2),
        "takeover took {takeover:?}, lease {LEASE:?}"
    );
    // The dead leader's faults end by their own lease, the agents' doing.
    assert!(
        wait_for(Duration::from_secs(15), || disks_empty(&lab)),
        "fills outlived the dead leader's leases"
    );
    // The agents fail over to the survivor.
    assert!(
        wait_for(Duration::from_secs(30), || b.holds_every_stream(&lab)),
        "hosts did not fail over to serve-b:\n{}",
        b.log(&lab)
    );
    // The survivor closes the dead leader's run, keeps every record of it, and fires
    // again inside the floor without striking anyone.
    let closed = wait_for(Duration::from_secs(10), || {
        store.run(before.run.id).unwrap().run.status == "failed"
    });
    assert!(
        closed,
        "the dead leader's run stayed open:\n{}",
        b.log(&lab)
    );
    let after = store.run(before.run.id).unwrap();
    let ids = |detail: &RunDetail| -> Vec<String> {
        detail
            .commands
            .iter()
            .map(|c| c.command_id.clone())
            .collect()
    };
    assert!(
        ids(&before).iter().all(|id| ids(&after).contains(id)),
        "a record written before the kill is gone"
    );
    let fired = wait_for(Duration::from_secs(10), || {
        store
            .last_run("monkey")
            .unwrap()
            .is_some_and(|at| at > killed_at_ms)
    });
    assert!(fired, "serve-b never fired:\n{}", b.log(&lab));
    assert_eq!(
        store.last_strikes("monkey").unwrap(),
        struck,
        "a group was struck twice"
    );
    let monkey_runs = store
        .runs(50)
        .unwrap()
        .iter()
        .filter(|r| r.campaign == "monkey")
        .count();
    assert_eq!(monkey_runs, 1, "a second run inside min_time_between");
    eprintln!(
        "first firing by serve-b {:?} after the kill",
        killed_at.elapsed()
    );

    // serve-b leads a second campaign's run, then is paused past its lease.
    load_campaign(&lab, "second", &[&serve_b]);
    let running = wait_applied_run(&store, "second")
        .unwrap_or_else(|| panic!("serve-b did not strike:\n{}", b.log(&lab)));
    let serve_a = a.start(&lab);
    assert!(
        wait_for(Duration::from_secs(20), || a
            .log(&lab)
            .contains("serving agents' streams")),
        "serve-a did not start again:\n{}",
        a.log(&lab)
    );
    signal(&serve_b, Signal::SIGSTOP);
    let resumed = wait_leader(&store, "serve-a", Duration::from_secs(20));
    // What serve-b wrote as leader, all of it committed before serve-a could take over.
    let frozen = store.run(running.run.id).unwrap();
    // SIGCONT before any assertion, so a failure never leaves serve-b stopped.
    signal(&serve_b, Signal::SIGCONT);
    let (third, _) = resumed.unwrap_or_else(|| panic!("serve-a never took over:\n{}", a.log(&lab)));
    assert!(third.epoch > second.epoch);
    // serve-b wakes with its run in flight: it may renew nothing, record nothing, close
    // nothing. Its faults end by their lease; serve-a keeps the lease.
    assert!(
        wait_for(Duration::from_secs(15), || disks_empty(&lab)),
        "the paused leader's fills were renewed"
    );
    std::thread::sleep(LEASE);
    let detail = store.run(running.run.id).unwrap();
    assert_eq!(
        ids(&detail),
        ids(&frozen),
        "the deposed leader recorded (so could send) commands:\n{}",
        b.log(&lab)
    );
    assert_eq!(
        detail.run.status, "failed",
        "closed by serve-a, and not reopened or rewritten"
    );
    assert_eq!(
        current_lease(&store).map(|l| (l.holder, l.epoch)),
        Some(("serve-a".into(), third.epoch))
    );
    let said = b.log(&lab);
    assert!(
        said.contains("lost the schedule lease") || said.contains("not the leader any more"),
        "serve-b did not notice it was deposed:\n{said}"
    );
    drop(serve_a);
    drop(serve_b);
}

/// The status of `id` through `replica`, as the operator CLI shows it.
fn status_via(lab: &Lab, replica: &Replica, id: &str) -> Value {
    let output = lab.troop_as(&replica.viewer, &["status", "--output", "json"]);
    let statuses: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    statuses["agents"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["agent"] == id).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn an_emergency_stop_through_one_replica_latches_the_agents_of_another() {
    let Some((mut lab, _store, a, b)) =
        replicas("emergency stop across serve replicas", "operator")
    else {
        return;
    };
    let _serve_a = a.start(&lab);
    let _serve_b = b.start(&lab);
    // The hosts know only serve-b: serve-a has no stream to any of them.
    start_hosts(&mut lab, &[b.url()]);
    assert!(
        wait_for(Duration::from_secs(30), || b.holds_every_stream(&lab)),
        "hosts not attached to serve-b:\n{}",
        b.log(&lab)
    );
    let fill = fill_through(&lab, &b, "60s");
    assert_eq!(
        fill.status.code(),
        Some(0),
        "{}",
        troop_tests::lab::output_text(&fill)
    );
    assert!(wait_for(Duration::from_secs(10), || disks_filled(&lab)));

    let stop = lab.troop_as(
        &a.viewer,
        &["emergency-stop", "--reason", "checkout is down"],
    );
    assert_eq!(
        stop.status.code(),
        Some(0),
        "{}",
        troop_tests::lab::output_text(&stop)
    );
    let started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(10), || disks_empty(&lab)),
        "serve-b did not stop its agents' faults:\n{}",
        b.log(&lab)
    );
    eprintln!(
        "fills gone {:?} after a stop through the other replica",
        started.elapsed()
    );
    for id in HOSTS {
        assert_eq!(status_via(&lab, &b, id)["latch"]["by"], "alice", "{id}");
    }
    let refused = fill_through(&lab, &b, "60s");
    assert_eq!(
        refused.status.code(),
        Some(1),
        "serve-b took an attack while latched"
    );
    assert!(
        troop_tests::lab::output_text(&refused).contains("emergency stop by alice"),
        "{}",
        troop_tests::lab::output_text(&refused)
    );
    assert!(disks_empty(&lab));

    let resume = lab.troop_as(&a.viewer, &["resume", "--reason", "checkout is back"]);
    assert_eq!(
        resume.status.code(),
        Some(0),
        "{}",
        troop_tests::lab::output_text(&resume)
    );
    let resumed = wait_for(Duration::from_secs(10), || {
        HOSTS
            .iter()
            .all(|id| status_via(&lab, &b, id)["latch"].is_null())
    });
    assert!(resumed, "serve-b's agents stayed latched:\n{}", b.log(&lab));
    let again = fill_through(&lab, &b, "2s");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        troop_tests::lab::output_text(&again)
    );
}

#[test]
fn the_leader_strikes_agents_attached_to_another_replica() {
    let Some((mut lab, store, a, b)) = replicas("relay between serve replicas", "operator") else {
        return;
    };
    let serve_a = a.start(&lab);
    wait_leader(&store, "serve-a", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("serve-a never led:\n{}", a.log(&lab)));
    let serve_b = b.start(&lab);
    // The hosts know only serve-b; serve-a, the leader, has no stream to any of them.
    start_hosts(&mut lab, &[b.url()]);
    assert!(
        wait_for(Duration::from_secs(30), || b.holds_every_stream(&lab)),
        "hosts not attached to serve-b:\n{}",
        b.log(&lab)
    );
    assert!(
        wait_for(Duration::from_secs(10), || a
            .reaches_every_host(&lab, "relay")),
        "serve-a does not see serve-b's hosts:\n{}",
        a.log(&lab)
    );
    for id in HOSTS {
        let status = status_via(&lab, &a, id);
        assert_eq!(status["reachable"], true, "{id} through serve-a: {status}");
        assert_eq!(status["via"], "relay", "{status}");
    }

    // The leader's campaign strikes both, through serve-b; the effect read by statvfs.
    load_campaign(&lab, "monkey", &[&serve_a, &serve_b]);
    let run = wait_applied_run(&store, "monkey")
        .unwrap_or_else(|| panic!("serve-a did not strike:\n{}", a.log(&lab)));
    assert!(
        wait_for(Duration::from_secs(10), || disks_filled(&lab)),
        "no fill seen"
    );
    assert_eq!(
        current_lease(&store).map(|l| l.holder),
        Some("serve-a".into())
    );
    let faults: Vec<_> = run.commands.iter().filter(|c| c.step.is_some()).collect();
    assert_eq!(faults.len(), 2);
    assert!(faults.iter().all(|c| c.outcome == "applied"), "{faults:?}");

    // An operator's halt through serve-a reaches them the same way.
    let halt = lab.troop_as(&a.viewer, &["halt", "--select", "role=web"]);
    assert_eq!(
        halt.status.code(),
        Some(0),
        "{}",
        troop_tests::lab::output_text(&halt)
    );
    assert!(
        wait_for(Duration::from_secs(10), || disks_empty(&lab)),
        "halt through the relay"
    );
}
