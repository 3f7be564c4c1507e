//! The lab's network: a lab namespace holding a bridge, and per host a network namespace
//! joined to that bridge by a veth pair, with its own address. The coordinator runs in
//! the lab namespace and reaches hosts by address, as in production; nothing is added to
//! this machine's own network. Partitioning a host takes its link down; healing brings it
//! up. Every namespace is deleted when the [`LabNet`] is dropped, and namespaces left by
//! an earlier run that died are swept when a new one starts.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Names start with this, then the creating process's pid, so stale ones can be found.
const PREFIX: &str = "troop-lab-";
const SUBNET: &str = "10.77.0";
/// The lab namespace's own address on the bridge: where the coordinator (and `troop
/// serve`) is, as hosts see it.
pub const GATEWAY: &str = "10.77.0.1";

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes lab namespaces whose creating process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("sweeping stale lab namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// Runs `work` on a thread of its own inside network namespace `netns` (a
/// `/run/netns/...` path), so the sockets it opens are that namespace's: a test's
/// servers and probes on a lab host, measured from outside the host's processes.
pub fn inside<T: Send + 'static>(netns: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open the network namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        work()
    })
    .join()
    .expect("the thread inside the namespace panicked")
}

/// Drops every inbound connection to host namespace `ns` (replies to its own outbound
/// connections still arrive), as a NAT or a strict firewall would: nftables, in a table of
/// its own inside that namespace only.
pub fn drop_inbound(ns: &str) {
    let rules = "table inet troop_lab_firewall {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    iifname \"eth0\" ct state established,related accept\n    iifname \"eth0\" drop\n  }\n}\n";
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft (Debian package nftables)");
    use std::io::Write;
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft in {ns} failed");
}

/// One lab's network.
#[derive(Debug)]
pub struct LabNet {
    /// The namespace of the bridge and of the coordinator.
    pub ns: String,
    hosts: Vec<String>,
}

impl LabNet {
    /// Sweeps stale lab namespaces, then makes this lab's namespace and bridge.
    pub fn create() -> Self {
        sweep_stale();
        let ns = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &ns]);
        let net = Self {
            ns,
            hosts: Vec::new(),
        };
        ip(&["-n", &net.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &net.ns, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{SUBNET}.1/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &net.ns, "link", "set", "br0", "up"]);
        net
    }

    /// Makes host `index`'s namespace and link; returns (namespace, address).
    pub fn add_host(&mut self, index: usize) -> (String, String) {
        let ns = format!("{}-h{index}", self.ns);
        let address = format!("{SUBNET}.{}", 10 + index);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let link = format!("v{index}");
        ip(&[
            "-n", &self.ns, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        ip(&["-n", &self.ns, "link", "set", &link, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        // As real hosts have: network faults pick their interface from it.
        ip(&["-n", &ns, "route", "add", "default", "via", GATEWAY]);
        (ns, address)
    }

    /// Cuts host `index` off the lab network (its link goes down), or heals it.
    pub fn set_connected(&self, index: usize, connected: bool) {
        let state = if connected { "up" } else { "down" };
        ip(&["-n", &self.ns, "link", "set", &format!("v{index}"), state]);
    }

    /// A command run inside the lab namespace (where the coordinator lives).
    pub fn command(&self, program: &Path) -> Command {
        let [ip, args @ ..] = self.exec_words();
        let mut command = Command::new(ip);
        command.args(args).arg(program);
        command
    }

    /// The words that run a program inside the lab namespace (it execs onwards).
    pub fn exec_words(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns]
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
