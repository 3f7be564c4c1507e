//! `troop`: parse args, set up telemetry, run one command, exit with its code.
#![forbid(unsafe_code)]

mod cli;
mod commands;
mod outcome;
mod report;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("troop: cannot start the async runtime: {error}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // A CLI's stderr is for problems unless RUST_LOG asks for more; `serve` is a service
    // and says what it loaded and does.
    let level = if matches!(cli.command, Command::Serve) {
        "info"
    } else {
        "warn"
    };
    let _telemetry = match troop_telemetry::init_with_default_filter("troop", cli.log_format, level)
    {
        Ok(telemetry) => Some(telemetry),
        Err(error) => {
            eprintln!("troop: telemetry: {error:#}");
            None
        }
    };
    let result = match cli.command {
        Command::Pki(command) => commands::pki::run(command, cli.output),
        Command::Config(crate::cli::ConfigCommand::Validate { file }) => {
            commands::config::validate(file.as_deref().or(cli.config.as_deref()), cli.output)
        }
        Command::InternalDemoService { name } => commands::demo::run_service(&name),
        Command::Demo(args) => commands::demo::run(args, cli.output).await,
        Command::Campaign(command) => {
            commands::run_campaign_command(cli.config.as_deref(), cli.output, command).await
        }
        Command::Serve => match commands::context::Context::load(cli.config.as_deref(), cli.output)
        {
            Ok(context) => commands::serve::run(context).await,
            Err(error) => Err(error),
        },
        Command::Fleet(command) => {
            match commands::context::Context::connect(cli.config.as_deref(), cli.output).await {
                Ok(context) => commands::run(context, command).await,
                Err(error) => Err(error),
            }
        }
    };
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
