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
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = AgentConfig::load(&args.config)
        .map_err(|error| error_chain(&error))
        .and_then(|config| Agent::new(config).map_err(|error| error_chain(&error)));
    let agent = match loaded {
        Ok(agent) => agent,
        Err(error) => {
            eprintln!("troop-agent: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Validate) = args.command {
        let config = agent.config();
        println!(
            "{}: valid. agent {:?} on {}, {} trusted coordinator key(s), allows {}",
            args.config.display(),
            config.id,
            config.listen,
            config.coordinator_keys.len(),
            config
                .policy
                .allow
                .iter()
                .map(|kind| kind.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let _telemetry = match troop_telemetry::init("troop-agent", args.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("troop-agent: telemetry: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run(agent).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "agent failed");
            eprintln!("troop-agent: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(agent: Agent) -> Result<(), String> {
    let address = agent.config().listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    agent
        .serve(listener, troop_agent::shutdown_signal())
        .await
        .map_err(|error| error_chain(&error))
}
