//! No signal that can end the agent leaves a fault behind: SIGHUP (an ssh session
//! ending) reloads the config and keeps every fault, which still ends at its deadline;
//! the other catchable signals revert everything before the agent exits.

use std::time::{Duration, Instant};

use std::sync::Arc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use troop_tests::lab::{Lab, used_percent, wait_for};

/// The serial of the certificate the host's agent presents now, read by a TLS handshake
/// as the coordinator makes it.
fn served_serial(lab: &Lab, id: &str) -> String {
    let address = lab.hosts[id].address.clone();
    let pki = |file: &str| lab.pki.path(file);
    let tls = troop_common::tls::client_config(
        &pki("coordinator.pem"),
        &pki("coordinator.key"),
        &pki("ca.pem"),
    )
    .unwrap();
    let name = rustls_pki_types::ServerName::try_from(id.to_string()).unwrap();
    let handshake = move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
                let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
                    .connect(name, tcp)
                    .await
                    .unwrap();
                let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                troop_agent::identity::Validity::read(&leaf).unwrap().serial
            })
    };
    match lab.network_namespace() {
        Some(netns) => troop_lab::net::inside(&netns, handshake),
        None => handshake(),
    }
}

#[test]
fn sighup_reloads_the_policy_and_the_fill_still_ends_at_its_deadline() {
    let Some(mut lab) = Lab::new("SIGHUP reloads") else {
        return;
    };
    lab.add_host(
        "web-1",
        &[("role", "web")],
        "allow = [\"kill\", \"disk\"]",
        vec![],
    );
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let started = Instant::now();
    let (code, report) = lab.troop_json(&[
        "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "24MiB", "--for", "4s",
    ]);
    assert_eq!(code, Some(0), "{report}");
    let (code, report) = lab.troop_json(&[
        "attack", "cpu", "--select", "role=web", "--load", "10", "--cores", "1", "--for", "2s",
    ]);
    assert_eq!(code, Some(1), "cpu is not allowed yet: {report}");

    // The operator allows cpu and sends SIGHUP.
    let config = lab.dir().join("web-1.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "allow = [\"kill\", \"disk\"]",
            "allow = [\"kill\", \"disk\", \"cpu\"]",
        ),
    )
    .unwrap();
    // ... and, as after a renewal by hand, a new certificate for the host.
    let first_serial = served_serial(&lab, "web-1");
    let pki = lab.dir().join("pki");
    for old in ["web-1.pem", "web-1.key"] {
        std::fs::rename(pki.join(old), pki.join(format!("{old}.old"))).unwrap();
    }
    let issued = lab.troop(&[
        "pki",
        "issue-agent",
        "--dir",
        pki.to_str().unwrap(),
        "--name",
        "web-1",
    ]);
    assert!(issued.status.success(), "{issued:?}");
    assert_eq!(
        served_serial(&lab, "web-1"),
        first_serial,
        "not reloaded yet"
    );
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGHUP).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .log("web-1")
            .contains("reloaded trusted keys")),
        "{}",
        lab.log("web-1")
    );
    assert_ne!(
        served_serial(&lab, "web-1"),
        first_serial,
        "the agent still presents the old certificate"
    );
    assert_eq!(
        lab.hosts["web-1"].agent_pid(),
        Some(agent),
        "SIGHUP ended the agent"
    );
    assert!(
        used_percent(&lab, "web-1") > 30.0,
        "the reload reverted the fill"
    );
    let (code, report) = lab.troop_json(&[
        "attack", "cpu", "--select", "role=web", "--load", "10", "--cores", "1", "--for", "1s",
    ]);
    assert_eq!(code, Some(0), "the reloaded policy allows cpu: {report}");

    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            < 1.0),
        "fill not removed"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "removed before its deadline"
    );
}

#[test]
fn every_other_catchable_signal_reverts_before_the_agent_exits() {
    for signal in [Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGALRM] {
        let Some(mut lab) = Lab::new("stopping signals revert") else {
            return;
        };
        lab.add_host("web-1", &[("role", "web")], "allow = [\"disk\"]", vec![]);
        let disk = lab.hosts["web-1"].disk.display().to_string();
        let (code, report) = lab.troop_json(&[
            "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "24MiB", "--for",
            "5m",
        ]);
        assert_eq!(code, Some(0), "{report}");
        let agent = lab.hosts["web-1"].agent_pid().unwrap();
        kill(Pid::from_raw(agent), signal).unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || lab.hosts["web-1"]
                .agent_pid()
                .is_none()),
            "{signal:?} did not stop the agent"
        );
        assert!(
            used_percent(&lab, "web-1") < 1.0,
            "{signal:?} left the fill behind"
        );
        assert!(
            lab.log("web-1").contains("reverting every fault first"),
            "{}",
            lab.log("web-1")
        );
    }
}

/// A fill ends by its deadline even when its agent is SIGKILLed and nothing restarts
/// it: the fill's guard removes it. Stopping what is left (as systemd does with SIGTERM
/// when it gives up on a unit) removes a fill at once.
#[test]
fn a_fill_ends_on_time_with_its_agent_dead_and_at_once_when_its_guard_is_stopped() {
    let Some(mut lab) = Lab::new("fill guard") else {
        return;
    };
    lab.add_host("web-1", &[("role", "web")], "allow = [\"disk\"]", vec![]);
    let disk = lab.hosts["web-1"].disk.display().to_string();
    // Every process of this machine: an agent restarted from outside is no child of
    // the host's pid 1.
    let all = || {
        use troop_agent::host::process::{LinuxProcessTable, ProcessTable};
        LinuxProcessTable.list().unwrap()
    };
    let guards = |_: &Lab| -> Vec<i32> {
        all()
            .iter()
            .filter(|p| p.cmdline.iter().any(|a| a == "__guard-fill"))
            .filter(|p| p.cmdline.iter().any(|a| a == &disk))
            .map(|p| p.pid)
            .collect()
    };
    let fill = |lab: &Lab, duration: &str| {
        let (code, report) = lab.troop_json(&[
            "attack", "disk", "--select", "role=web", "--path", &disk, "--size", "24MiB", "--for",
            duration,
        ]);
        assert_eq!(code, Some(0), "{report}");
        assert!(used_percent(lab, "web-1") > 30.0);
    };

    // The agent dies; the fill goes at its deadline, not before.
    let started = Instant::now();
    fill(&lab, "3s");
    assert_eq!(guards(&lab).len(), 1, "one guard per fill");
    let agent = lab.hosts["web-1"].agent_pid().unwrap();
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    assert!(wait_for(Duration::from_secs(5), || lab.hosts["web-1"]
        .agent_pid()
        .is_none()));
    assert!(
        used_percent(&lab, "web-1") > 30.0,
        "the fill went with the agent, before its deadline"
    );
    assert!(
        wait_for(Duration::from_secs(10), || used_percent(&lab, "web-1")
            < 1.0),
        "the fill outlived its deadline"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "removed before its deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "removed {took:?} after a 3 s fill"
    );
    assert!(
        wait_for(Duration::from_secs(5), || guards(&lab).is_empty()),
        "the guard stayed"
    );

    // Again with a long fill, the agent killed too: SIGTERM to the guard that is left
    // removes the fill now.
    let mut nsenter = lab.restart_agent("web-1");
    fill(&lab, "5m");
    let left = guards(&lab);
    assert_eq!(left.len(), 1, "one guard per fill");
    let agent = all()
        .into_iter()
        .find(|p| p.name == "troop-agent" && p.ppid == nsenter.id() as i32)
        .expect("the restarted agent")
        .pid;
    kill(Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    let _ = nsenter.wait();
    assert!(used_percent(&lab, "web-1") > 30.0);
    kill(Pid::from_raw(left[0]), Signal::SIGTERM).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || used_percent(&lab, "web-1") < 1.0),
        "SIGTERM to the guard left the fill"
    );
}
