//! `troop-agent`: parse args, load config, init telemetry, serve.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use troop_agent::Agent;
use troop_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use troop_telemetry::LogFormat;
use troop_telemetry::error_chain;

/// troop's host agent: carries out signed chaos commands under this host's own policy.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Agent config file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH, env = "TROOP_AGENT_CONFIG")]
    config: PathBuf,
    /// Log lines as plain text or JSON objects (filter with RUST_LOG).
    #[arg(long, global = true, default_value = "plain")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and everything it points at (keys, certificates, state dir), then exit.
    Validate,
    /// Join the fleet with a join token: make this host's key, have serve certify it, and
    /// write the config (at --config), ca.pem and the trusted signing keys beside it, and
    /// the key and certificate in the state dir. Nothing is written if serve refuses.
    Enroll {
        /// `troop serve`'s URL, `https://HOST[:PORT]` (port 7444 by default).
        #[arg(long)]
        coordinator: String,
        /// From `troop pki join-token` (or $TROOP_JOIN_TOKEN, which `ps` does not show).
        #[arg(long, env = "TROOP_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// The fleet CA's SHA-256, as `troop pki join-token` prints it.
        #[arg(long)]
        ca_sha256: String,
        /// The agent id to ask for; default the token's, else this host's name.
        #[arg(long)]
        id: Option<String>,
        /// The state dir the written config names (default /var/lib/troop-agent).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A TOML file with this host's `[policy]` table (as in agent.toml), written into
        /// the config; without it the agent's defaults apply. Checked before the token is
        /// used.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // A helper the agent started (memory holder, fill guard): nothing else may run in it.
    troop_agent::host::run_helper_if_asked();
    troop_common::allocator::limit_arenas();
    troop_common::allocator::trim_eagerly();
    // Two workers whatever the host's size: the agent's work is small and mostly waits,
    // and a thread per core would cost memory on every large host of the fleet.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(agent_main()),
        Err(error) => {
            eprintln!("troop-agent: cannot start the async runtime: {error}");
            ExitCode::from(2)
        }
    }
}

async fn agent_main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Enroll {
        coordinator,
        token,
        ca_sha256,
        id,
        state_dir,
        policy,
    }) = &args.command
    {
        let request = troop_agent::enrol::Request {
            coordinator: coordinator.clone(),
            token: token.clone(),
            ca_sha256: ca_sha256.clone(),
            id: id.clone(),
            config: args.config.clone(),
            state_dir: state_dir.clone(),
            policy: policy.clone(),
        };
        return match troop_agent::enrol::enrol(&request).await {
            Ok(written) => {
                for path in &written {
                    println!("wrote {}", path.display());
                }
                println!(
                    "enrolled: start the agent with --config {}",
                    args.config.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("troop-agent enroll: {}", error_chain(&error));
                ExitCode::from(2)
            }
        };
    }
    let config = match AgentConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("troop-agent: {}", error_chain(&error));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Validate) = &args.command {
        return match troop_agent::validate(&config) {
            Ok(found) => {
                println!(
                    "{}: valid. agent {:?} {}, {} trusted coordinator key(s), {} command(s) remembered, {} fault(s) to undo at start, allows {}",
                    args.config.display(),
                    config.id,
                    reached_by(&config),
                    found.trusted_keys,
                    found.remembered_commands,
                    found.journaled_faults,
                    config
                        .policy
                        .allow
                        .iter()
                        .map(|kind| kind.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("troop-agent: {}", error_chain(&error));
                ExitCode::from(2)
            }
        };
    }
    // Telemetry first, so whatever start-up finds (a damaged ledger line) is logged.
    let _telemetry = match troop_telemetry::init("troop-agent", args.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("troop-agent: telemetry: {error:#}");
            return ExitCode::from(2);
        }
    };
    // Exit 2: cannot start (config, keys, state dir in use, port in use); 1: failed
    // while running. Each is logged once (the log goes to stderr).
    let agent = match Agent::new(config) {
        Ok(agent) => agent,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "cannot start");
            return ExitCode::from(2);
        }
    };
    let listener = match agent.config().listen {
        None => None,
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(%address, %error, "cannot start: cannot listen");
                return ExitCode::from(2);
            }
        },
    };
    match run(agent, listener, args.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "agent failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    agent: Agent,
    listener: Option<tokio::net::TcpListener>,
    config_path: PathBuf,
) -> Result<(), String> {
    // Everything is loaded and the port is ours: systemd may count us as started.
    if let Err(error) = troop_common::notify::ready() {
        tracing::warn!(%error, "cannot notify systemd of readiness");
    }
    let reloader = agent.reloader();
    let reload = move || match AgentConfig::load(&config_path) {
        Ok(config) => {
            if let Err(error) = reloader.reload(&config) {
                tracing::error!(error = %error_chain(&error), "reload failed; keeping the running config");
            }
        }
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "reload failed; keeping the running config")
        }
    };
    agent
        .serve(listener, troop_agent::signals::until_stopped(reload))
        .await
        .map_err(|error| error_chain(&error))
}

/// How the agent is reached, as `validate` says it.
fn reached_by(config: &AgentConfig) -> String {
    let mut ways = Vec::new();
    if let Some(listen) = config.listen {
        ways.push(format!("listening on {listen}"));
    }
    if !config.coordinators.is_empty() {
        ways.push(format!("dialling {}", config.coordinators.join(" or ")));
    }
    ways.join(" and ")
}
