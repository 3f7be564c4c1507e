//! `troop pki`: the fleet's CA, certificates and signing key.

use std::path::PathBuf;

use crate::cli::{Output, PkiCommand};
use troop_coordinator::pki;

use crate::outcome::Outcome;

pub fn run(command: PkiCommand, output: Output) -> anyhow::Result<Outcome> {
    let written: Vec<PathBuf> = match &command {
        PkiCommand::Init { dir } => pki::init(dir)?,
        PkiCommand::IssueAgent {
            dir,
            name,
            sans,
            days,
        } => pki::issue_agent_for(dir, name, sans, *days)?,
        PkiCommand::IssueOperator { dir, name, days } => pki::issue_operator(dir, name, *days)?,
        PkiCommand::IssueCoordinator { dir, days } => pki::issue_coordinator(dir, *days)?,
    };
    match output {
        Output::Json => println!("{}", serde_json::json!({ "written": written })),
        Output::Table => {
            for path in &written {
                println!("wrote {}", path.display());
            }
            if let PkiCommand::Init { dir } = &command {
                println!(
                    "\nNext: `troop pki issue-agent --dir {} --name AGENT_ID` for each host. \
                     Keep ca.key and signing.key on the coordinator only.",
                    dir.display()
                );
            }
        }
    }
    Ok(Outcome::Success)
}
