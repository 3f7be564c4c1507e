//! The gRPC service: every `Execute` goes signature → binding → freshness → replay →
//! policy → fault, and every outcome is logged and remembered in the ledger.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};
use troop_proto::envelope::printable;
use troop_proto::pb::agent_server::Agent;
use troop_proto::{Refusal, TrustedKeys, freshness, pb};

use crate::faults::runner::Runner;
use crate::inventory::Inventory;
use crate::ledger::{self, Admission, Durability, FirstAnswer, ReplayLedger};
use troop_telemetry::error_chain;

use troop_common::clock::now_unix_ms;
use troop_common::names::is_valid_command_id;

/// Commands are small; anything larger is refused before it is decoded (on the listener
/// and on the stream to `troop serve`).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Everything `Execute` and `Status` need; shared by every connection.
pub struct AgentService {
    pub(crate) id: String,
    /// What SIGHUP reloads from the config file.
    pub(crate) settings: RwLock<Settings>,
    pub(crate) ledger: ReplayLedger,
    pub(crate) runner: Runner,
    pub(crate) last_stop: Option<pb::HostStop>,
    /// Where rotations' keys are kept, and the set the last one gave; `None`: this
    /// service learns no keys (TrustKeys is refused).
    learning: Option<Learning>,
    /// Read in the background ([`AgentService::housekeeping`]), so Status never waits on
    /// the host.
    inventory: Inventory,
    /// Set by every command, cleared by housekeeping: an agent asked nothing for a whole
    /// round unmaps the code it is not using ([`crate::host::residency`]).
    commanded: AtomicBool,
}

/// Keys learned from signing-key rotations ([`crate::trust`]).
struct Learning {
    state_dir: std::path::PathBuf,
    current: std::sync::Mutex<Option<crate::trust::Learned>>,
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
            learning: None,
            inventory: Inventory::new(),
            commanded: AtomicBool::new(false),
        }
    }

    /// Takes signing-key rotations, keeping their keys in `state_dir`; `current` is the
    /// set a rotation gave before (the keys trusted now, when it is set).
    pub fn learning_keys(
        mut self,
        state_dir: std::path::PathBuf,
        current: Option<crate::trust::Learned>,
    ) -> Self {
        self.learning = Some(Learning {
            state_dir,
            current: std::sync::Mutex::new(current),
        });
        self
    }

    /// The signing-key generation this agent follows (0: its config's keys).
    pub fn trust_generation(&self) -> u64 {
        self.learning.as_ref().map_or(0, |learning| {
            learning
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, |learned| learned.generation)
        })
    }

    /// A `TrustKeys` command, admitted: the trusted set is replaced (kept on disk first).
    fn learn(
        &self,
        command: &pb::Command,
        trust: &pb::TrustKeys,
        signed_by: &str,
    ) -> Result<pb::Receipt, Refusal> {
        let learning = self
            .learning
            .as_ref()
            .ok_or_else(|| Refusal::Unimplemented("this agent learns no signing keys".into()))?;
        let mut current = learning.current.lock().unwrap_or_else(|e| e.into_inner());
        let summary = match crate::trust::decide(current.as_ref(), trust, signed_by)? {
            crate::trust::Decision::Same => format!(
                "already trusting signing-key generation {}",
                trust.generation
            ),
            crate::trust::Decision::Replace(learned) => {
                crate::trust::save(&learning.state_dir, &learned).map_err(|error| {
                    Refusal::Unavailable(format!(
                        "cannot keep the new keys in the state dir ({error}); still trusting the old ones"
                    ))
                })?;
                let summary = format!(
                    "trusting signing-key generation {}: {}",
                    learned.generation,
                    learned.key_ids()
                );
                tracing::warn!(generation = learned.generation, keys = %learned.key_ids(), "signing keys rotated");
                self.settings
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .trusted = Arc::new(TrustedKeys::new(learned.keys.clone()));
                *current = Some(learned);
                summary
            }
        };
        Ok(pb::Receipt {
            command_id: command.command_id.clone(),
            agent_id: self.id.clone(),
            applied_at_unix_ms: now_unix_ms(),
            summary,
            ..pb::Receipt::default()
        })
    }

    /// What the agent does between commands: reads the host's inventory again, forgets
    /// expired commands and gives the memory freed back to the host; after a round without
    /// commands, also the code pages it is not using (commands never pay for refaults
    /// in a burst). Blocks for at most about [`crate::inventory::MOUNT_TIMEOUT`].
    pub fn housekeeping(&self) {
        self.inventory.refresh();
        if let Err(error) = self.ledger.forget_expired(now_unix_ms()) {
            tracing::error!(error = %error_chain(&error), "cannot compact the command ledger");
        }
        troop_common::allocator::give_back_free_memory();
        if !self.commanded.swap(false, Ordering::Relaxed) {
            match crate::host::residency::unmap_idle_code() {
                Ok(bytes) => tracing::debug!(bytes, "idle: unmapped clean code pages"),
                Err(error) => tracing::debug!(%error, "cannot read this process's mappings"),
            }
        }
    }

    /// Replaces the reloadable settings and the policy (for new commands; active faults
    /// keep what they started with), and the rotation's set the trusted keys came from.
    pub fn reload(
        &self,
        settings: Settings,
        policy: crate::policy::Policy,
        learned: Option<crate::trust::Learned>,
    ) {
        if let Some(learning) = &self.learning {
            *learning.current.lock().unwrap_or_else(|e| e.into_inner()) = learned;
        }
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
        self.runner.set_policy(policy);
    }

    /// Read once per command; a reload swaps what later commands see.
    fn trust_and_skew(&self) -> (Arc<TrustedKeys>, Duration) {
        let settings = self.settings.read().unwrap_or_else(|e| e.into_inner());
        (settings.trusted.clone(), settings.max_clock_skew)
    }

    /// The whole admission pipeline and the fault, synchronously (it reads /proc and
    /// syncs the ledger, so callers run it off the async threads); counted in the
    /// metrics by action, kind, outcome and reason.
    pub fn execute(&self, signed: &pb::SignedCommand) -> Result<pb::Receipt, Status> {
        self.commanded.store(true, Ordering::Relaxed);
        let mut seen = Seen::default();
        let result = self.admit_and_run(signed, &mut seen);
        let (outcome, reason) = match &result {
            Ok(_) => ("accepted", String::new()),
            Err(status) => {
                let refused = troop_proto::refusal::is_refusal_code(status.code());
                let reason = seen.reason.map_or_else(
                    || troop_proto::refusal::code_name(status.code()).to_ascii_lowercase(),
                    str::to_string,
                );
                (if refused { "refused" } else { "failed" }, reason)
            }
        };
        seen.span.record("troop.outcome", outcome);
        match &result {
            Ok(receipt) if !receipt.fault_id.is_empty() => {
                seen.span
                    .record("troop.fault.id", receipt.fault_id.as_str());
            }
            Ok(_) => {}
            Err(status) => {
                seen.span.record("otel.status_code", "ERROR");
                seen.span
                    .record("otel.status_description", status.message());
            }
        }
        crate::metrics::get()
            .commands
            .get_or_create(&crate::metrics::CommandLabels {
                action: seen.action.to_string(),
                kind: seen.kind.to_string(),
                outcome: outcome.to_string(),
                reason,
            })
            .inc();
        result
    }

    fn admit_and_run(
        &self,
        signed: &pb::SignedCommand,
        seen: &mut Seen,
    ) -> Result<pb::Receipt, Status> {
        let (trusted, max_clock_skew) = self.trust_and_skew();
        let command = trusted.verify(signed).inspect_err(|refusal| {
            seen.reason = Some(refusal.reason());
            tracing::warn!(key_id = %printable(&signed.key_id), reason = %refusal, "refused command");
        })?;
        (seen.action, seen.kind) = action_and_kind(&command);
        seen.span = command_span(&self.id, &command, seen.action, seen.kind);
        let _in_span = seen.span.clone().entered();
        let id = command.command_id.clone();
        let now = now_unix_ms();
        if let Err(refusal) = freshness::check(&command, &self.id, now, max_clock_skew) {
            seen.reason = Some(refusal.reason());
            tracing::warn!(command_id = %printable(&id), reason = %refusal, "refused command");
            return Err(refusal.into());
        }
        // Ids are names: logged, echoed back and part of file names.
        if !is_valid_command_id(&id) {
            let refusal = Refusal::InvalidArgument(
                "command_id must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
            );
            seen.reason = Some(refusal.reason());
            tracing::warn!(command_id = %printable(&id), reason = %refusal, "refused command");
            return Err(refusal.into());
        }
        let until = freshness::remember_until_unix_ms(&command, max_clock_skew);
        let digest = ledger::digest(&signed.payload);
        // A command that only ends faults changes nothing if it runs twice: it need not
        // wait for the disk.
        let durability = if only_ends_faults(&command) {
            Durability::WithNextSync
        } else {
            Durability::Synced
        };
        let admission = match self.ledger.admit(
            &id,
            &digest,
            command.expires_at_unix_ms,
            until,
            now,
            durability,
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
                seen.reason = Some(refusal.reason());
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
                seen.reason = Some(refusal.reason());
                tracing::warn!(reason = %refusal, "refused command");
                return Err(refusal.into());
            }
        }
        let result = match &command.action {
            Some(pb::command::Action::Trust(trust)) => self.learn(&command, trust, &signed.key_id),
            _ => self.runner.carry_out(&command),
        };
        let outcome = match &result {
            Ok(receipt) => {
                tracing::info!(command_id = %id, summary = %receipt.summary, "accepted command");
                FirstAnswer::Receipt(hex::encode(receipt.encode_to_vec()))
            }
            Err(error) => {
                seen.reason = Some(error.reason());
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
        if let Err(error) = self.ledger.finish(&id, &digest, outcome, now_unix_ms()) {
            tracing::error!(command_id = %id, error = %error_chain(&error), "cannot record a command's outcome");
        }
        result.map_err(Status::from)
    }

    /// The metrics as Prometheus scrapes them, with the gauges read now.
    pub fn metrics_text(&self) -> String {
        let active: Vec<String> = self
            .runner
            .engine
            .active()
            .into_iter()
            .map(|fault| fault.kind)
            .collect();
        crate::metrics::get().render(&active, &self.runner.disk_paths())
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
            inventory: Some(self.inventory.current()),
            last_stop: self.last_stop.clone(),
            latch: self.runner.engine.latch().map(|latch| latch.to_pb()),
        }
    }
}

/// Aborts, halts, emergency stops and lease renewals: they can only end what runs, or
/// keep it within the bounds it was started with.
fn only_ends_faults(command: &pb::Command) -> bool {
    use pb::command::Action;
    matches!(
        command.action,
        Some(Action::Abort(_) | Action::AbortAll(_) | Action::EmergencyStop(_) | Action::Renew(_))
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

/// What `execute` learnt of a command on its way, for the metrics and the trace.
struct Seen {
    action: &'static str,
    kind: &'static str,
    reason: Option<&'static str>,
    /// The command's span, once its signature holds (junk makes no traces).
    span: tracing::Span,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            action: "unverified",
            kind: "",
            reason: None,
            span: tracing::Span::none(),
        }
    }
}

/// The span of one verified command, a child of the span that sent it (whose context the
/// signed command carries), named by the fault it starts or ends.
fn command_span(agent_id: &str, command: &pb::Command, action: &str, kind: &str) -> tracing::Span {
    use pb::command::Action;
    // A start's fault id comes with its receipt (a one-off kill has none).
    let fault_id = match &command.action {
        Some(Action::Abort(abort)) => abort.fault_id.as_str(),
        Some(Action::Renew(renew)) => renew.fault_id.as_str(),
        _ => "",
    };
    let span = tracing::info_span!(
        "execute",
        otel.name = format!("troop-agent {action}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        troop.command_id = %printable(&command.command_id),
        troop.action = action,
        troop.fault.id = tracing::field::Empty,
        troop.fault.kind = kind,
        troop.target = %agent_id,
        troop.outcome = tracing::field::Empty,
    );
    if !fault_id.is_empty() {
        span.record("troop.fault.id", printable(fault_id).to_string());
    }
    if let Some(trace) = &command.trace_context {
        troop_telemetry::TraceContext {
            traceparent: trace.traceparent.clone(),
            tracestate: trace.tracestate.clone(),
        }
        .set_as_parent_of(&span);
    }
    span
}

/// A verified command's action and, for a start, its fault kind.
fn action_and_kind(command: &pb::Command) -> (&'static str, &'static str) {
    use pb::command::Action;
    match &command.action {
        None => ("none", ""),
        Some(Action::Start(start)) => (
            "start",
            start
                .fault
                .as_ref()
                .map_or("", |fault| crate::faults::runner::kind_of(fault).name()),
        ),
        Some(Action::Abort(_)) => ("abort", ""),
        Some(Action::AbortAll(_)) => ("abort_all", ""),
        Some(Action::Renew(_)) => ("renew", ""),
        Some(Action::EmergencyStop(_)) => ("emergency_stop", ""),
        Some(Action::Resume(_)) => ("resume", ""),
        Some(Action::Trust(_)) => ("trust", ""),
    }
}

#[cfg(test)]
mod tests;
