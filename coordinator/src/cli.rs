//! The `troop` command line, as DESIGN.md's CLI contract lays it out.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use troop_telemetry::LogFormat;

use crate::selector::Selector;

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
    /// Run a local fleet, attack it and report, with nothing to set up.
    Demo(DemoArgs),
    /// Internal: run an agent from this binary (used by `troop demo`).
    #[command(name = "__agent", hide = true)]
    InternalAgent {
        #[arg(long)]
        config: PathBuf,
    },
    /// Internal: a stand-in service process for `troop demo` to attack.
    #[command(name = "__demo-service", hide = true)]
    InternalDemoService { name: String },
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
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a fleet CA, the coordinator's client certificate and its signing key in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue an agent's server certificate (ID.pem, ID.key) signed by the CA in DIR.
    IssueAgent {
        #[arg(long)]
        dir: PathBuf,
        /// The agent id; the certificate names it, and the coordinator checks that.
        #[arg(long)]
        name: String,
        /// Further host names or IP addresses for the certificate.
        #[arg(long = "san")]
        sans: Vec<String>,
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
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("process").required(true).args(["name", "exe", "pattern", "pid", "user"])))]
pub struct KillArgs {
    #[command(flatten)]
    pub targeting: Targeting,
    /// Exact process name.
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
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed for the demo's random picks.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_percent(text: &str) -> Result<u8, String> {
    troop_agent::units::parse_percent(text).map_err(|error| error.to_string())
}

fn parse_exe(text: &str) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} must be an absolute path"))
    }
}

/// `KILL`, `SIGKILL`, `kill` or `9`; 1 to 64. (Signal 0 would only probe; on the wire it
/// means "the default, KILL", so it is refused here.)
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=64).contains(&number) {
            Ok(number)
        } else {
            Err(format!("signal {number} is not 1 to 64"))
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|signal| signal as i32)
        .map_err(|_| format!("unknown signal {text:?}; use a name like TERM or KILL, or a number"))
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
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("sigterm"), Ok(15));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("NUKE").is_err());
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
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
