//! The `troop` command line, as DESIGN.md's CLI contract lays it out.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use troop_telemetry::LogFormat;

use troop_coordinator::selector::Selector;
use troop_coordinator::signal::parse_signal;

/// troop: chaos engineering for fleets across clouds and bare metal.
///
/// Exit codes: 0 every target succeeded, 1 some target failed or refused, 2 usage or
/// config error.
#[derive(Debug, Parser)]
#[command(name = "troop", version)]
pub struct Cli {
    /// Coordinator config [default: $TROOP_CONFIG, else ./troop.toml, else /etc/troop/troop.toml].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Output for people (table) or for scripts (json).
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Log format on stderr (filter with RUST_LOG; default level warn).
    #[arg(long, global = true, default_value = "plain")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the fleet's certificates and the coordinator's signing key.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Commands that talk to the fleet in the config.
    #[command(flatten)]
    Fleet(FleetCommand),
    /// Campaigns: validate, plan, run, and their history.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Check troop.toml and what it points at.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The Chaos Monkey: fire every campaign in the campaigns directory on its schedule.
    Serve,
    /// Run a local fleet, attack it and report, with nothing to set up.
    Demo(DemoArgs),
    /// Internal: a stand-in service process for `troop demo` to attack.
    #[command(name = "__demo-service", hide = true)]
    InternalDemoService { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a troop.toml (FILE, else --config, $TROOP_CONFIG, ./troop.toml,
    /// /etc/troop/troop.toml) and everything it points at: the signing key, the TLS
    /// certificate, key and CA, the store and the campaigns. Changes nothing.
    Validate { file: Option<PathBuf> },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// List agents: reachable or not, labels, inventory, active faults.
    Agents(SelectArgs),
    /// Show the active faults on each agent.
    Status(SelectArgs),
    /// Inject a fault on agents picked by a label selector.
    #[command(subcommand)]
    Attack(AttackCommand),
    /// Abort every active fault now.
    Halt(SelectArgs),
    /// Revert every fault on every agent and latch them all: no fault starts, from any
    /// coordinator or CLI, until `troop resume`. With serve, serve latches too (no
    /// attack, campaign run or schedule) and latches agents that come back later.
    EmergencyStop(LatchArgs),
    /// Lift the emergency stop's latch on serve and every agent.
    Resume(LatchArgs),
}

#[derive(Debug, Args)]
pub struct LatchArgs {
    /// Why, for the audit trail and every refusal's message (up to 500 characters).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Check a campaign file; every problem is reported with its line and column.
    Validate { file: PathBuf },
    /// Show when and where a scheduled campaign would strike, touching nothing.
    Plan {
        file: PathBuf,
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
    },
    /// Run a campaign now, attached: progress, guardrails, Ctrl-C aborts and reverts.
    Run {
        file: PathBuf,
        /// Plan the steps and show the targets; send nothing, record nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Past runs, newest first.
    History,
    /// One run: its steps, commands and probe results.
    Show {
        run: i64,
        /// Also draw the run's timeline into this SVG file: a row per host hit, a bar
        /// per fault coloured by kind, aborts marked, probe results beneath.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a fleet CA, the coordinator's certificate and its signing key in DIR.
    Init {
        /// Where to write ca.pem, ca.key, coordinator.pem/.key, signing.key, signing.pub
        /// (created 0700 if missing; existing files are never overwritten).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue an agent's server certificate (ID.pem, ID.key) signed by the CA in DIR.
    IssueAgent {
        /// The directory `troop pki init` wrote (its ca.pem and ca.key sign the certificate).
        #[arg(long)]
        dir: PathBuf,
        /// The agent id; the certificate names it, and the coordinator checks that.
        #[arg(long)]
        name: String,
        /// Further host names or IP addresses for the certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// How long the certificate is valid, in days (at most 825).
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
    /// Issue an operator's client certificate (NAME.pem, NAME.key) for the operator API of
    /// `troop serve`; serve's `[[operators]]` gives NAME its role.
    IssueOperator {
        /// The directory `troop pki init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// The operator's name, as `[[operators]] name` and the audit trail give it.
        #[arg(long)]
        name: String,
        /// How long the certificate is valid, in days (at most 825).
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
    /// Print a token that signs NAME in to the dashboard of `troop serve`, signed with
    /// serve's signing key (troop.toml's `[signing] key`, or DIR/signing.key); serve's
    /// `[[operators]]` gives NAME its role.
    OperatorToken {
        /// The directory `troop pki init` wrote, if not troop.toml's `[signing] key`.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The operator's name, as `[[operators]] name` gives it.
        #[arg(long)]
        name: String,
        /// How long the token is valid (at most 30d).
        #[arg(long, default_value = "12h")]
        ttl: String,
    },
    /// Print a join token a new host enrols with (`troop-agent enroll`), and the CA's
    /// SHA-256 it pins. On the serve host (troop.toml's store), or through serve with the
    /// admin role (`[coordinator]`). Serve keeps only the token's hash.
    JoinToken {
        /// How long the token can be used (at most 30d).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many hosts may enrol with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The only agent id it enrols; else the host chooses (`--id`, or its hostname).
        #[arg(long)]
        name: Option<String>,
        /// Labels every host it enrols gets, e.g. `role=web,zone=eu-1`.
        #[arg(long, default_value = "")]
        labels: String,
    },
    /// Rotate the key that signs commands, on the serve host: a new key beside the
    /// configured one, which serve announces to every agent (signed by the current key) and
    /// signs with from then on, both trusted; `--retire` then ends the overlap, so agents
    /// refuse the old key. Agents keep what they learn across restarts.
    RotateSigningKey {
        /// End the overlap: agents trust only the new key from now on.
        #[arg(long)]
        retire: bool,
    },
    /// Refuse every certificate for an agent or operator NAME issued until now: serve cuts
    /// off its streams within a second and refuses it until it enrols again.
    Revoke {
        /// The agent id or operator name.
        name: String,
    },
    /// Issue a new coordinator.pem/.key for client and server use, when an older
    /// `troop pki init` made it for client use only (`troop serve` says so); move the
    /// old pair aside first.
    IssueCoordinator {
        /// The directory `troop pki init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// How long the certificate is valid, in days (at most 825).
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Label selector, e.g. `role=web,cloud!=aws,region in (eu-1,eu-2),!canary`.
    #[arg(long = "select", default_value = "")]
    pub selector: Selector,
}

/// Which of the selected agents to hit.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("how_many").args(["count", "percent"])))]
pub struct Targeting {
    /// Label selector, e.g. `role=web,cloud!=aws,region in (eu-1,eu-2),!canary`.
    #[arg(long = "select")]
    pub selector: Selector,
    /// Hit this many of the selected agents, picked at random.
    #[arg(long)]
    pub count: Option<usize>,
    /// Hit this percentage of the selected agents (rounded up), picked at random.
    #[arg(long, value_parser = parse_percent)]
    pub percent: Option<u8>,
    /// Seed for picking: the same seed picks the same agents.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Show the picked agents and the commands, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum AttackCommand {
    /// Signal processes matched by name, exe, cmdline pattern, pid or user.
    Kill(KillArgs),
    /// Burn CPU: a load on some or all cores.
    Cpu(CpuArgs),
    /// Hold memory resident (in a helper the OOM killer takes before the agent).
    Memory(MemoryArgs),
    /// Fill a filesystem with one file, under a path the agent's policy allows.
    Disk(DiskArgs),
    /// Power off, reboot or halt the host (only where the agent's policy allows it).
    StopHost(StopHostArgs),
    /// Degrade egress on one interface: latency, loss, rate, blackhole (the agent's own
    /// control traffic and SSH are spared).
    Network(Box<NetworkArgs>),
    /// Make the host's name resolution fail (its DNS queries are dropped).
    Dns(DnsArgs),
}

impl AttackCommand {
    /// The fault kind, as the CLI spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            AttackCommand::Kill(_) => "kill",
            AttackCommand::Cpu(_) => "cpu",
            AttackCommand::Memory(_) => "memory",
            AttackCommand::Disk(_) => "disk",
            AttackCommand::StopHost(_) => "stop-host",
            AttackCommand::Network(_) => "network",
            AttackCommand::Dns(_) => "dns",
        }
    }
}

/// How long a fault holds, and whether this command stays to keep it alive.
#[derive(Debug, Args)]
pub struct Holding {
    /// How long the fault holds; each agent reverts it then by itself.
    #[arg(long = "for", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stay attached, renewing a lease of this length; if renewals stop (this command is
    /// killed, the network fails) agents revert within the lease. Ctrl-C aborts.
    #[arg(long, value_parser = parse_duration)]
    pub lease: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("process").required(true).args(["name", "exe", "pattern", "pid", "user"])))]
pub struct KillArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// Exact process name, as pkill reads it (the kernel's `comm`; a name longer than the
    /// 15 bytes the kernel keeps matches by the executable's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Absolute path of the executable.
    #[arg(long, value_parser = parse_exe)]
    pub exe: Option<String>,
    /// Regular expression over the command line.
    #[arg(long)]
    pub pattern: Option<String>,
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub pid: Option<i32>,
    /// User name or uid owning the processes.
    #[arg(long)]
    pub user: Option<String>,
    /// Signal name or number.
    #[arg(long, default_value = "KILL", value_parser = parse_signal)]
    pub signal: i32,
    /// Signal every matching process (default: one at random).
    #[arg(long)]
    pub all_matches: bool,
    /// Kill again at this interval (keeps a restarting service down), for `--for`.
    #[arg(long, value_parser = parse_duration, requires = "duration")]
    pub repeat: Option<Duration>,
    /// How long to keep repeating.
    #[arg(long = "for", value_parser = parse_duration, requires = "repeat")]
    pub duration: Option<Duration>,
    /// With --repeat: stay attached and renew a lease of this length (see `attack cpu`).
    #[arg(long, value_parser = parse_duration, requires = "repeat")]
    pub lease: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct CpuArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// Load per core, 1 to 100 (`80` or `80%`).
    #[arg(long, value_parser = parse_percent)]
    pub load: u8,
    /// How many cores (default: all).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cores: Option<u32>,
    #[command(flatten)]
    pub holding: Holding,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// How much: a size (`512MiB`, `2GiB`) or a share of the host's memory (`25%`).
    /// (`--percent` already picks hosts, so memory's percent is written as a size.)
    #[arg(long, value_parser = parse_memory_amount)]
    pub size: MemoryAmount,
    #[command(flatten)]
    pub holding: Holding,
}

/// A memory amount as the operator wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAmount {
    Bytes(u64),
    Percent(u8),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("amount").required(true).args(["fill", "size"])))]
pub struct DiskArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// Directory for the fill file; must be under the agent's policy.disk_paths.
    #[arg(long)]
    pub path: String,
    /// Fill the filesystem to this percent used.
    #[arg(long, value_parser = parse_percent)]
    pub fill: Option<u8>,
    /// Add this much (`200MiB`, `4GiB`).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    #[command(flatten)]
    pub holding: Holding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StopMode {
    Poweroff,
    Reboot,
    Halt,
}

#[derive(Debug, Args)]
pub struct StopHostArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    #[arg(long, value_enum)]
    pub mode: StopMode,
    /// Wait this long after answering before stopping.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: Duration,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("effect").required(true).multiple(true)
    .args(["latency", "loss", "corrupt", "duplicate", "rate", "blackhole"])))]
pub struct NetworkArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// Delay every matched packet this long (`100ms`).
    #[arg(long, value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// Vary each delay by up to this much either way.
    #[arg(long, value_parser = parse_duration, requires = "latency")]
    pub jitter: Option<Duration>,
    /// Drop this share of matched packets at random (`30%`, `0.5%`).
    #[arg(long, value_parser = parse_fractional_percent)]
    pub loss: Option<f64>,
    /// Flip one bit in this share of packets (past the IP header).
    #[arg(long, value_parser = parse_fractional_percent)]
    pub corrupt: Option<f64>,
    /// Send this share of packets twice.
    #[arg(long, value_parser = parse_fractional_percent)]
    pub duplicate: Option<f64>,
    /// Drop what passes this rate (`800kbit`, `10mbit`).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Drop every matched packet.
    #[arg(long)]
    pub blackhole: bool,
    /// Only traffic to this CIDR, address or host name, each optionally `:PORT` (repeatable).
    #[arg(long = "to")]
    pub to: Vec<String>,
    /// Only traffic to this destination port, TCP and UDP (repeatable).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// The interface (default: the one of the host's default route).
    #[arg(long)]
    pub interface: Option<String>,
    #[command(flatten)]
    pub holding: Holding,
}

#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    #[command(flatten)]
    pub holding: Holding,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed for the demo's random picks.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_fractional_percent(text: &str) -> Result<f64, String> {
    troop_common::units::parse_fractional_percent(text).map_err(|error| error.to_string())
}

fn parse_rate(text: &str) -> Result<u64, String> {
    troop_common::units::parse_rate(text).map_err(|error| error.to_string())
}

fn parse_percent(text: &str) -> Result<u8, String> {
    troop_common::units::parse_percent(text).map_err(|error| error.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    troop_common::units::parse_duration(text).map_err(|error| error.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    troop_common::units::parse_size(text).map_err(|error| error.to_string())
}

fn parse_memory_amount(text: &str) -> Result<MemoryAmount, String> {
    if text.trim_end().ends_with('%') {
        parse_percent(text).map(MemoryAmount::Percent)
    } else {
        parse_size(text).map(MemoryAmount::Bytes)
    }
}

fn parse_exe(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} must be an absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_attack_parses_and_contradictions_are_usage_errors() {
        let parse = |args: &str| Cli::try_parse_from(args.split_whitespace());
        for ok in [
            "troop attack cpu --select role=web --load 80 --for 2m",
            "troop attack cpu --select role=web --load 80% --cores 1 --for 30s --lease 10s",
            "troop attack memory --select role=web --size 512MiB --for 1m",
            "troop attack memory --select role=web --size 25% --for 1m --count 2",
            "troop attack disk --select role=web --path /var/tmp/troop --fill 90 --for 5m",
            "troop attack disk --select role=web --path /var/tmp/troop --size 4GiB --for 5m",
            "troop attack stop-host --select role=db --mode reboot --delay 10s",
            "troop attack kill --select role=web --name nginx --repeat 5s --for 1m",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
        for bad in [
            "troop attack cpu --select role=web --load 80",
            "troop attack cpu --select role=web --load 0 --for 1m",
            "troop attack cpu --select role=web --load 101 --for 1m",
            "troop attack cpu --select role=web --load 50 --for 10",
            "troop attack memory --select role=web --size 0% --for 1m",
            "troop attack disk --select role=web --path /x --fill 90 --size 1GiB --for 1m",
            "troop attack disk --select role=web --path /x --for 1m",
            "troop attack stop-host --select role=db --mode explode",
            "troop attack kill --select role=web --name nginx --repeat 5s",
            "troop attack kill --select role=web --name nginx --for 1m",
        ] {
            assert!(parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn attack_needs_a_process_and_one_way_of_counting() {
        let parse = |args: &str| Cli::try_parse_from(args.split_whitespace());
        assert!(parse("troop attack kill --select role=web --name nginx").is_ok());
        assert!(parse("troop attack kill --select role=web").is_err());
        assert!(parse("troop attack kill --select role=web --name a --pid 3").is_err());
        assert!(
            parse("troop attack kill --select role=web --name a --count 1 --percent 5").is_err()
        );
        let bad_selector = parse("troop attack kill --select role=,x --name a").unwrap_err();
        assert!(
            bad_selector.to_string().contains("column"),
            "{bad_selector}"
        );
    }
}
