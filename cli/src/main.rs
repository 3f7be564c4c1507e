//! `troop`: parse args, set up telemetry, run one command, exit with its code.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod outcome;
mod report;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use clap::{CommandFactory as _, FromArgMatches as _};
use tracing::Instrument as _;

fn main() -> ExitCode {
    // Before any thread: serve would otherwise keep an arena per blocking thread it ran.
    troop_common::allocator::limit_arenas();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // Serve and the demo are services with work on many connections at once: a worker per
    // core. A command is one operator's request, mostly waiting on the network: one
    // thread, which spares every run the start of the workers and the reading of the
    // cgroup limits that sizes them (~0.8 ms of a ~4 ms start here). Unless it exports
    // spans: their flush at exit needs a worker beside the thread that waits for it.
    let services = matches!(cli.command, Command::Serve | Command::Demo(_));
    let runtime = if services || troop_telemetry::exports_spans() {
        tokio::runtime::Runtime::new()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli, subcommands(&matches))),
        Err(error) => {
            eprintln!("troop: cannot start the async runtime: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli, invoked: String) -> ExitCode {
    // A CLI's stderr is for problems unless RUST_LOG asks for more; `serve` is a service
    // and says what it loaded and does.
    let level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    // Serve and the CLI are one binary but two services in a trace.
    let service = if matches!(cli.command, Command::Serve) {
        "troop-serve"
    } else {
        "troop"
    };
    let _telemetry = match troop_telemetry::init_with_default_filter(service, cli.log_format, level)
    {
        Ok(telemetry) => Some(telemetry),
        Err(error) => {
            eprintln!("troop: telemetry: {error:#}");
            None
        }
    };
    // One span for the whole command, the root of its trace, which serve's and the
    // agents' spans join. Not for serve: a span that lasts its life would swallow every
    // trace it takes part in.
    let span = if matches!(cli.command, Command::Serve) {
        tracing::Span::none()
    } else {
        tracing::info_span!("troop", otel.name = format!("troop {invoked}"))
    };
    let result = async move {
        match cli.command {
            Command::Pki(command) => {
                commands::pki::run(command, cli.config.as_deref(), cli.output).await
            }
            Command::Config(crate::cli::ConfigCommand::Validate { file }) => {
                commands::config::validate(file.as_deref().or(cli.config.as_deref()), cli.output)
            }
            Command::InternalDemoService { name } => commands::demo::run_service(&name),
            Command::Demo(args) => commands::demo::run(args, cli.output).await,
            Command::Campaign(command) => {
                commands::run_campaign_command(cli.config.as_deref(), cli.output, command).await
            }
            Command::Serve => {
                match commands::context::Context::load(cli.config.as_deref(), cli.output) {
                    Ok(context) => commands::serve::run(context).await,
                    Err(error) => Err(error),
                }
            }
            Command::Fleet(command) => {
                match commands::context::Context::connect(cli.config.as_deref(), cli.output).await {
                    Ok(context) => commands::run(context, command).await,
                    Err(error) => Err(error),
                }
            }
        }
    }
    .instrument(span)
    .await;
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("troop: {error:#}");
            // troop serve's verdict on the call, like an agent's refusal: exit 1.
            if error.is::<troop_coordinator::remote::Refused>() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// The subcommands invoked, as typed: `attack kill`.
fn subcommands(matches: &clap::ArgMatches) -> String {
    let mut names = Vec::new();
    let mut level = matches;
    while let Some((name, next)) = level.subcommand() {
        names.push(name);
        level = next;
    }
    names.join(" ")
}
