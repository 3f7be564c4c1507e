//! The gRPC service: every `Execute` goes signature → binding → freshness → replay →
//! policy → fault, and every outcome is logged and remembered in the ledger.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};
use troop_proto::envelope::printable;
use troop_proto::pb::agent_server::Agent;
use troop_proto::{Refusal, TrustedKeys, freshness, pb};

use crate::faults::runner::Runner;
use crate::ledger::{self, Admission, FirstAnswer, ReplayLedger};
use troop_telemetry::error_chain;

use troop_common::clock::now_unix_ms;
use troop_common::names::is_valid_command_id;

/// Everything `Execute` and `Status` need; shared by every connection.
pub struct AgentService {
    pub(crate) id: String,
    /// What SIGHUP reloads from the config file.
    pub(crate) settings: RwLock<Settings>,
    pub(crate) ledger: ReplayLedger,
    pub(crate) runner: Runner,
    pub(crate) last_stop: Option<pb::HostStop>,
}

/// The part of the agent's config a reload (SIGHUP) replaces, without touching active
/// faults.
pub struct Settings {
    pub labels: BTreeMap<String, String>,
    pub trusted: Arc<TrustedKeys>,
    pub max_clock_skew: Duration,
}

impl AgentService {
    /// The command pipeline without a server in front of it (the agent builds one in
    /// [`crate::Agent::new`]; fuzzing drives one directly).
    pub fn new(
        id: String,
        labels: BTreeMap<String, String>,
        trusted: TrustedKeys,
        max_clock_skew: Duration,
        ledger: ReplayLedger,
        runner: Runner,
        last_stop: Option<pb::HostStop>,
    ) -> Self {
        Self {
            id,
            settings: RwLock::new(Settings {
                labels,
                trusted: Arc::new(trusted),
                max_clock_skew,
            }),
            ledger,
            runner,
            last_stop,
        }
    }

    /// Replaces the reloadable settings and the policy (for new commands; active faults
    /// keep what they started with).
    pub fn reload(&self, settings: Settings, policy: crate::policy::Policy) {
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        self.runner.set_policy(policy);
    }

    /// Read once per command; a reload swaps what later commands see.
    fn trust_and_skew(&self) -> (Arc<TrustedKeys>, Duration) {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        (settings.trusted.clone(), settings.max_clock_skew)
    }

    /// The whole admission pipeline and the fault, synchronously (it reads /proc and
    /// syncs the ledger, so callers run it off the async threads).
    pub fn execute(&self, signed: &pb::SignedCommand) -> Result<pb::Receipt, Status> {
        let (trusted, max_clock_skew) = self.trust_and_skew();
        let command = trusted.verify(signed).inspect_err(|refusal| {
            tracing::warn!(key_id = %printable(&signed.key_id), reason = %refusal, "refused command");
        })?;
        let id = command.command_id.clone();
        let now = now_unix_ms();
        if let Err(refusal) = freshness::check(&command, &self.id, now, max_clock_skew) {
            tracing::warn!(command_id = %printable(&id), reason = %refusal, "refused command");
            return Err(refusal.into());
        }
        // Ids are names: logged, echoed back and part of file names.
        if !is_valid_command_id(&id) {
            let refusal = Refusal::InvalidArgument(
                "command_id must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
            );
            tracing::warn!(command_id = %printable(&id), reason = %refusal, "refused command");
            return Err(refusal.into());
        }
        let until = freshness::remember_until_unix_ms(&command, max_clock_skew);
        let digest = ledger::digest(&signed.payload);
        let admission = match self.ledger.admit(
            &id,
            &digest,
            command.expires_at_unix_ms,
            until,
            now,
        ) {
            Ok(admission) => admission,
            // Ending faults must never depend on the state dir's disk: running an
            // abort, halt or renewal twice ends nothing that should go on.
            Err(error) if only_ends_faults(&command) => {
                tracing::error!(command_id = %id, error = %error_chain(&error), "ledger write failed; running this command anyway, as it only ends faults");
                return self.runner.carry_out(&command).map_err(Status::from);
            }
            Err(error) => {
                tracing::error!(command_id = %id, error = %error_chain(&error), "ledger write failed; command not run");
                return Err(Status::unavailable(
                    "agent cannot record the command durably; nothing was run",
                ));
            }
        };
        match admission {
            Admission::New => {}
            Admission::BeyondHorizon => {
                let refusal = Refusal::BeyondReplayHorizon { command_id: id };
                tracing::warn!(reason = %refusal, "refused command");
                return Err(refusal.into());
            }
            Admission::Replay(outcome) => {
                tracing::info!(command_id = %id, "exact retry of a command: answering its first outcome, running nothing");
                return replayed(outcome);
            }
            Admission::Pending => {
                return Err(Status::aborted(format!(
                    "command {id} was admitted before and its outcome is not known (still running, or lost in a restart); it will not run again"
                )));
            }
            Admission::Conflict => {
                let refusal = Refusal::ReusedCommandId { command_id: id };
                tracing::warn!(reason = %refusal, "refused command");
                return Err(refusal.into());
            }
        }
        let result = self.runner.carry_out(&command);
        let outcome = match &result {
            Ok(receipt) => {
                tracing::info!(command_id = %id, summary = %receipt.summary, "accepted command");
                FirstAnswer::Receipt(hex::encode(receipt.encode_to_vec()))
            }
            Err(error) => {
                if error.is_refusal() {
                    tracing::warn!(command_id = %id, reason = %error, "refused command");
                } else {
                    tracing::warn!(command_id = %id, %error, "command failed");
                }
                FirstAnswer::Status {
                    code: error.code() as i32,
                    message: error.to_string(),
                }
            }
        };
        if let Err(error) = self.ledger.finish(&id, outcome, now_unix_ms()) {
            tracing::error!(command_id = %id, error = %error_chain(&error), "cannot record a command's outcome");
        }
        result.map_err(Status::from)
    }

    pub fn status(&self) -> pb::AgentStatus {
        pb::AgentStatus {
            agent_id: self.id.clone(),
            labels: self
                .settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .labels
                .clone()
                .into_iter()
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            active_faults: self.runner.engine.active(),
            inventory: Some(crate::inventory::collect()),
            last_stop: self.last_stop.clone(),
        }
    }
}

/// Aborts, halts and lease renewals: they can only end what runs, or keep it within the
/// bounds it was started with.
fn only_ends_faults(command: &pb::Command) -> bool {
    use pb::command::Action;
    matches!(
        command.action,
        Some(Action::Abort(_) | Action::AbortAll(_) | Action::Renew(_))
    )
}

fn replayed(outcome: FirstAnswer) -> Result<pb::Receipt, Status> {
    match outcome {
        FirstAnswer::Receipt(hex_bytes) => hex::decode(hex_bytes)
            .ok()
            .and_then(|bytes| pb::Receipt::decode(bytes.as_slice()).ok())
            .ok_or_else(|| Status::internal("stored receipt is unreadable")),
        FirstAnswer::Status { code, message } => Err(Status::new(code.into(), message)),
    }
}

/// The tonic face of [`AgentService`].
#[derive(Clone)]
pub struct GrpcAgent(pub Arc<AgentService>);

#[tonic::async_trait]
impl Agent for GrpcAgent {
    async fn execute(
        &self,
        request: Request<pb::SignedCommand>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let service = self.0.clone();
        let signed = request.into_inner();
        tokio::task::spawn_blocking(move || service.execute(&signed))
            .await
            .map_err(|_| Status::internal("command task failed"))?
            .map(Response::new)
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::AgentStatus>, Status> {
        let service = self.0.clone();
        tokio::task::spawn_blocking(move || service.status())
            .await
            .map(Response::new)
            .map_err(|_| Status::internal("status task failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::engine::Engine;
    use crate::faults::journal::FaultJournal;
    use crate::host::process::{FakeProcessTable, ProcessInfo};
    use crate::policy::Policy;
    use ed25519_dalek::SigningKey;
    use troop_proto::sign_command;

    fn victim() -> ProcessInfo {
        ProcessInfo {
            pid: 4242,
            ppid: 1,
            name: "nginx".into(),
            exe: Some("/usr/sbin/nginx".into()),
            cmdline: vec!["nginx".into()],
            uid: 33,
            start_time: 1,
            kernel_thread: false,
            zombie: false,
        }
    }

    fn service(dir: &std::path::Path, policy: Policy) -> (AgentService, Arc<FakeProcessTable>) {
        let table = Arc::new(FakeProcessTable::new(vec![victim()]));
        let (journal, _) = FaultJournal::open(dir).unwrap();
        let service = AgentService::new(
            "web-1".into(),
            BTreeMap::new(),
            TrustedKeys::new([key().verifying_key()]),
            freshness::DEFAULT_CLOCK_SKEW,
            ReplayLedger::open(dir, now_unix_ms()).unwrap(),
            Runner::new(
                "web-1".into(),
                policy,
                Arc::new(Engine::new(journal)),
                table.clone(),
                "/nonexistent".into(),
            ),
            None,
        );
        (service, table)
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn kill_nginx() -> pb::SignedCommand {
        let kill = pb::command::Action::Start(pb::StartFault {
            lease_ms: 0,
            duration_ms: 0,
            fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
                target: Some(pb::ProcessMatch {
                    by: Some(pb::process_match::By::Name("nginx".into())),
                }),
                signal: 15,
                all_matches: true,
                repeat_every_ms: 0,
            })),
        });
        signed("c-1", 60_000, kill)
    }

    #[test]
    fn an_accepted_kill_signals_through_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (service, table) = service(dir.path(), Policy::default());
        let receipt = service.execute(&kill_nginx()).unwrap();
        assert_eq!(receipt.signalled[0].pid, 4242);
        assert_eq!(table.signalled(), [(4242, 15)]);
    }

    #[test]
    fn an_unwritable_ledger_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (service, table) = service(dir.path(), Policy::default());
        service.ledger.fail_writes();
        let status = service.execute(&kill_nginx()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("nothing was run"), "{status:?}");
        assert!(table.signalled().is_empty());
    }

    #[test]
    fn policy_refusals_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut policy = Policy::default();
        policy.protected_processes.insert("nginx".into());
        let (service, table) = service(dir.path(), policy);
        let status = service.execute(&kill_nginx()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().contains("protected_processes"),
            "{status:?}"
        );
        assert!(table.signalled().is_empty());
    }

    #[test]
    fn ids_that_are_not_plain_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (service, table) = service(dir.path(), Policy::default());
        let long = "x".repeat(129);
        for id in [
            "c\u{1b}[2J",
            "../../etc/x",
            "a/b",
            "..",
            ".",
            "",
            "a b",
            "é",
            &long,
        ] {
            let mut command = pb::Command::decode(kill_nginx().payload.as_slice()).unwrap();
            command.command_id = id.into();
            let status = service
                .execute(&sign_command(&command, &key()))
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{id:?}");
            assert!(status.message().contains("command_id"), "{status:?}");
        }
        assert!(table.signalled().is_empty());
        assert!(is_valid_command_id("0b0c4f6e-8a1d-4c4e-9d7c-1f2a3b4c5d6e"));
        assert!(is_valid_command_id("run-12.step_3"));
    }

    fn signed(id: &str, validity_ms: i64, action: pb::command::Action) -> pb::SignedCommand {
        let now = now_unix_ms();
        let command = pb::Command {
            command_id: id.into(),
            agent_id: "web-1".into(),
            issued_at_unix_ms: now,
            expires_at_unix_ms: now + validity_ms,
            action: Some(action),
        };
        sign_command(&command, &key())
    }

    fn repeating_kill(duration_ms: u64) -> pb::command::Action {
        pb::command::Action::Start(pb::StartFault {
            lease_ms: 0,
            duration_ms,
            fault: Some(pb::start_fault::Fault::Kill(pb::Kill {
                target: Some(pb::ProcessMatch {
                    by: Some(pb::process_match::By::Name("nginx".into())),
                }),
                signal: 15,
                all_matches: true,
                repeat_every_ms: 60_000,
            })),
        })
    }

    /// Once the ledger no longer guards an id (its window is over), a new command with
    /// the same id must still not replace the fault that runs under it.
    #[test]
    fn a_new_command_reusing_the_id_of_a_running_fault_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (service, table) = service(dir.path(), Policy::default());
        service.settings.write().unwrap().max_clock_skew = Duration::ZERO;
        service
            .execute(&signed("r-1", 100, repeating_kill(60_000)))
            .unwrap();
        assert_eq!(table.signalled().len(), 1);
        std::thread::sleep(Duration::from_millis(150));
        let status = service
            .execute(&signed("r-1", 60_000, repeating_kill(30_000)))
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("still active"), "{status:?}");
        assert_eq!(
            table.signalled().len(),
            1,
            "the refused start signalled nothing"
        );
        let active = service.status().active_faults;
        assert_eq!(active.len(), 1);
        assert_eq!(
            active[0].ends_at_unix_ms - active[0].started_at_unix_ms,
            60_000
        );
        let halt = service
            .execute(&signed(
                "h-1",
                60_000,
                pb::command::Action::AbortAll(pb::AbortAll {}),
            ))
            .unwrap();
        assert_eq!(halt.aborted_fault_ids, ["r-1"]);
    }

    #[test]
    fn halt_and_aborts_still_run_when_the_ledger_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let (service, table) = service(dir.path(), Policy::default());
        service
            .execute(&signed("r-1", 60_000, repeating_kill(60_000)))
            .unwrap();
        service
            .execute(&signed("r-2", 60_000, repeating_kill(60_000)))
            .unwrap();
        service.ledger.fail_writes();
        let start = service
            .execute(&signed("r-3", 60_000, repeating_kill(60_000)))
            .unwrap_err();
        assert_eq!(start.code(), tonic::Code::Unavailable);
        let abort = pb::command::Action::Abort(pb::AbortFault {
            fault_id: "r-1".into(),
        });
        service.execute(&signed("a-1", 60_000, abort)).unwrap();
        let halt = service
            .execute(&signed(
                "h-1",
                60_000,
                pb::command::Action::AbortAll(pb::AbortAll {}),
            ))
            .unwrap();
        assert_eq!(halt.aborted_fault_ids, ["r-2"]);
        assert!(service.status().active_faults.is_empty());
        assert_eq!(table.signalled().len(), 2, "only the two first kills ran");
    }

    /// The same signed command, re-sent after the agent restarted with its clock far
    /// ahead (so the ledger forgot it) and then set right again, runs nothing.
    #[test]
    fn a_replay_after_the_clock_jumped_ahead_and_back_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let command = kill_nginx();
        {
            let (service, table) = service(dir.path(), Policy::default());
            service.execute(&command).unwrap();
            assert_eq!(table.signalled().len(), 1);
        }
        drop(ReplayLedger::open(dir.path(), now_unix_ms() + 3_600_000).unwrap());
        let (service, table) = service(dir.path(), Policy::default());
        let status = service.execute(&command).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("replay horizon"), "{status:?}");
        assert!(table.signalled().is_empty());
    }
}
