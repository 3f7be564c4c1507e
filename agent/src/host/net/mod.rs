//! The host's packet filter, as network faults use it: nftables tables and iptables
//! chains that troop owns by name, and the NFQUEUE the agent serves for latency and
//! corruption.
//!
//! troop shells out to `nft`, `iptables` and `ip6tables` rather than speaking netlink for
//! rules: their scripts are what an operator reads and debugs with (`nft list ruleset`),
//! they apply a whole table or chain atomically, and every argument troop passes is built
//! from validated values (addresses, ports, interface names), never from raw request text.

pub mod nfqueue;
pub mod rules;
pub mod support;

use std::io::Write;
use std::process::{Command, Stdio};

/// What an active network fault puts on an interface, for the caps of the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkLoad {
    pub interface: String,
    /// 0 to 1, corruption included (a corrupted packet is dropped where it arrives); a
    /// blackhole is 1.
    pub loss: f64,
    /// Whether it feeds the interface's packets to an NFQUEUE (latency, corruption).
    pub queued: bool,
}

/// Runs `program args`, feeding `script` on stdin; the error carries its stderr.
pub fn run(program: &str, args: &[&str], script: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if script.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if let (Some(script), Some(mut stdin)) = (script, child.stdin.take()) {
        stdin
            .write_all(script.as_bytes())
            .map_err(|error| format!("cannot write to {program}: {error}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Applies an nft script (one table, atomically).
pub fn nft_apply(script: &str) -> Result<(), String> {
    run("nft", &["-f", "-"], Some(script)).map(drop)
}

/// Deletes nft table `FAMILY NAME`; one that is not there is fine.
pub fn nft_delete_table(family: &str, name: &str) -> Result<(), String> {
    match run("nft", &["list", "table", family, name], None) {
        Err(error) if error.contains("No such file or directory") => Ok(()),
        Err(error) => Err(error),
        Ok(_) => run("nft", &["delete", "table", family, name], None).map(drop),
    }
}

/// The names of troop's nftables tables on this host (`troop_*`, any family).
pub fn troop_tables() -> Vec<String> {
    let Ok(listed) = run("nft", &["list", "tables"], None) else {
        return Vec::new();
    };
    let mut names: Vec<String> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|name| name.starts_with("troop_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Counters of the rules of table `FAMILY NAME` that carry a comment: (comment, packets).
pub fn nft_counters(family: &str, name: &str) -> Result<Vec<(String, u64)>, String> {
    let json = run("nft", &["-j", "list", "table", family, name], None)?;
    let value: serde_json::Value =
        serde_json::from_str(&json).map_err(|error| format!("nft -j: {error}"))?;
    let mut counters = Vec::new();
    for item in value["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|expr| expr["counter"]["packets"].as_u64())
            .sum();
        counters.push((comment.to_string(), packets));
    }
    Ok(counters)
}

/// The two iptables families, each with its own binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The family's name in nft (`ip`, `ip6`), which is also its address keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
}

/// Loads an iptables-restore script into the mangle table, leaving every other chain as
/// it is.
pub fn iptables_apply(family: Family, script: &str) -> Result<(), String> {
    let program = format!("{}-restore", family.program());
    run(&program, &["--noflush", "--wait"], Some(script)).map(drop)
}

/// Removes mangle chain `chain` and every jump to it from OUTPUT; idempotent.
pub fn iptables_delete_chain(family: Family, chain: &str) -> Result<(), String> {
    let program = family.program();
    let mangle = |rest: &[&'static str], chain: &str| -> Result<String, String> {
        let mut args = vec!["--wait", "-t", "mangle"];
        args.extend_from_slice(rest);
        args.push(chain);
        run(program, &args, None)
    };
    if mangle(&["-S"], chain).is_err() {
        return Ok(());
    }
    while mangle(&["-D", "OUTPUT", "-j"], chain).is_ok() {}
    mangle(&["-F"], chain)?;
    mangle(&["-X"], chain).map(drop)
}
