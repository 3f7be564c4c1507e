//! The kill fault: signal the processes that match, never the ones that keep the host or
//! the agent alive.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rand::Rng;
use rand::seq::IndexedRandom;
use regex::{Regex, RegexBuilder};
use troop_proto::{Refusal, pb};

use super::engine::{Applied, Effect};
use crate::host::process::{ProcessInfo, ProcessTable, Sieve, SignalError};
use crate::policy::Policy;
use troop_common::units::format_duration;

/// Killing more often than this is a fork bomb's job, not ours.
const MIN_REPEAT: Duration = Duration::from_millis(100);
/// Linux's highest real-time signal.
const MAX_SIGNAL: i32 = 64;
/// Patterns come from the network: bound what compiling one may cost.
const MAX_PATTERN_LEN: usize = 1024;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum Target {
    Name(String),
    Exe(PathBuf),
    Pattern(Regex),
    Pid(i32),
    User { uid: u32, name: String },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Name(name) => format!("name {name:?}"),
            Target::Exe(path) => format!("exe {:?}", path.display().to_string()),
            Target::Pattern(regex) => format!("cmdline pattern {:?}", regex.as_str()),
            Target::Pid(pid) => format!("pid {pid}"),
            Target::User { name, .. } => format!("user {name:?}"),
        }
    }

    fn sieve(&self) -> Sieve<'_> {
        match self {
            Target::Name(name) => Sieve::Name(name),
            Target::Exe(path) => Sieve::Exe(path),
            Target::Pattern(regex) => Sieve::Cmdline(regex),
            Target::Pid(pid) => Sieve::Pid(*pid),
            Target::User { uid, .. } => Sieve::Uid(*uid),
        }
    }

    fn matches(&self, process: &ProcessInfo) -> bool {
        self.sieve().admits(process)
    }
}

/// A protected name covers a process by its kernel name or its exe's file name, whichever
/// it shows (the kernel's is cut at 15 bytes; a script's exe is its interpreter).
fn has_name(process: &ProcessInfo, name: &str) -> bool {
    process.name == name
        || process
            .exe
            .as_deref()
            .and_then(Path::file_name)
            .is_some_and(|file| file == name)
}

/// A validated kill.
#[derive(Debug, Clone)]
pub struct KillSpec {
    pub target: Target,
    pub signal: i32,
    pub all_matches: bool,
    /// Kill again at this interval for the fault's duration (keeps a restarting service
    /// down); `None` for one kill.
    pub repeat_every: Option<Duration>,
}

impl KillSpec {
    pub fn from_pb(kill: &pb::Kill) -> Result<Self, Refusal> {
        let invalid = |message: String| Refusal::InvalidArgument(message);
        let repeat_every = match kill.repeat_every_ms {
            0 => None,
            ms if ms < MIN_REPEAT.as_millis() as u64 => {
                return Err(invalid(format!(
                    "repeat interval {} is under the minimum of {}",
                    format_duration(Duration::from_millis(ms)),
                    format_duration(MIN_REPEAT)
                )));
            }
            ms => Some(Duration::from_millis(ms)),
        };
        let signal = match kill.signal {
            0 => libc::SIGKILL,
            signal if (1..=MAX_SIGNAL).contains(&signal) => signal,
            signal => return Err(invalid(format!("signal {signal} is not 1 to {MAX_SIGNAL}"))),
        };
        use pb::process_match::By;
        let by = kill
            .target
            .as_ref()
            .and_then(|target| target.by.as_ref())
            .ok_or_else(|| invalid("kill names no target process".into()))?;
        let target = match by {
            By::Name(name) if name.is_empty() => {
                return Err(invalid("process name is empty".into()));
            }
            By::Name(name) => Target::Name(name.clone()),
            By::Exe(path) if !path.starts_with('/') => {
                return Err(invalid(format!("exe {path:?} must be an absolute path")));
            }
            By::Exe(path) => Target::Exe(PathBuf::from(path)),
            By::CmdlinePattern(pattern) => Target::Pattern(compile_pattern(pattern)?),
            By::Pid(pid) if *pid <= 0 => return Err(invalid(format!("pid {pid} is not positive"))),
            By::Pid(pid) => Target::Pid(*pid),
            By::User(user) => resolve_user(user)?,
        };
        Ok(Self {
            target,
            signal,
            all_matches: kill.all_matches,
            repeat_every,
        })
    }

    pub fn describe(&self) -> String {
        self.target.describe()
    }
}

fn compile_pattern(pattern: &str) -> Result<Regex, Refusal> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
        return Err(Refusal::InvalidArgument(format!(
            "cmdline pattern must be 1 to {MAX_PATTERN_LEN} bytes"
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|error| Refusal::InvalidArgument(format!("cmdline pattern {pattern:?}: {error}")))
}

fn resolve_user(user: &str) -> Result<Target, Refusal> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(Target::User {
            uid,
            name: user.to_string(),
        });
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(Target::User {
            uid: found.uid.as_raw(),
            name: user.to_string(),
        }),
        _ => Err(Refusal::InvalidArgument(format!(
            "no user named {user:?} on this host"
        ))),
    }
}

/// Why a process may never be signalled, if it may not.
fn protection(process: &ProcessInfo, agent: &AgentLineage, policy: &Policy) -> Option<String> {
    let pid = process.pid;
    if pid == 1 {
        Some("pid 1 is the host's init".into())
    } else if pid == agent.pid {
        Some(format!("pid {pid} is the troop agent itself"))
    } else if agent.ancestors.contains(&pid) {
        Some(format!(
            "pid {pid} ({}) is an ancestor of the troop agent",
            process.name
        ))
    } else if process.kernel_thread {
        // The kernel's own flag, not ppid 0: in a PID namespace a process that entered it
        // from outside (nsenter, `docker exec`) has ppid 0 too, and is fair game.
        Some(format!("pid {pid} ({}) is a kernel thread", process.name))
    } else {
        policy
            .protected_processes
            .iter()
            .find(|name| has_name(process, name))
            .map(|name| format!("process {name:?} is in policy.protected_processes"))
    }
}

/// The agent and the processes above it, which a kill must never reach.
#[derive(Debug, Clone)]
pub struct AgentLineage {
    pub pid: i32,
    pub ancestors: HashSet<i32>,
}

impl AgentLineage {
    /// This process and what `table` says is above it.
    pub fn of_this_process(table: &dyn ProcessTable) -> Self {
        Self {
            pid: std::process::id() as i32,
            ancestors: table.ancestors(),
        }
    }
}

/// Picks what to signal: every match or one at random, minus protected processes.
pub fn choose_victims(
    spec: &KillSpec,
    processes: &[ProcessInfo],
    agent: &AgentLineage,
    policy: &Policy,
    rng: &mut impl Rng,
) -> Result<Vec<ProcessInfo>, Refusal> {
    let mut candidates = Vec::new();
    let mut protected = Vec::new();
    for process in processes
        .iter()
        .filter(|p| !p.zombie && spec.target.matches(p))
    {
        match protection(process, agent, policy) {
            Some(reason) => protected.push(reason),
            None => candidates.push(process.clone()),
        }
    }
    if candidates.is_empty() {
        return Err(match protected.first() {
            Some(reason) => Refusal::Policy(format!(
                "no process matching {} may be signalled: {reason}",
                spec.describe()
            )),
            None => Refusal::NotFound(format!("no process matches {}", spec.describe())),
        });
    }
    if spec.all_matches {
        Ok(candidates)
    } else {
        Ok(candidates.choose(rng).into_iter().cloned().collect())
    }
}

/// Signals the chosen processes; a process that exited meanwhile is skipped, not an error,
/// unless nothing at all could be signalled.
pub fn apply(
    spec: &KillSpec,
    table: &dyn ProcessTable,
    policy: &Policy,
    rng: &mut impl Rng,
) -> Result<Vec<pb::SignalledProcess>, Refusal> {
    let processes = table
        .find(&spec.target.sieve())
        .map_err(|error| Refusal::Internal(format!("cannot list processes: {error}")))?;
    let agent = AgentLineage::of_this_process(table);
    let victims = choose_victims(spec, &processes, &agent, policy, rng)?;
    let mut signalled = Vec::new();
    let mut last_error = None;
    let still_eligible = |now: &ProcessInfo| {
        !now.zombie && spec.target.matches(now) && protection(now, &agent, policy).is_none()
    };
    for victim in victims {
        match table.signal(&victim, spec.signal, &still_eligible) {
            Ok(()) => signalled.push(pb::SignalledProcess {
                pid: victim.pid,
                name: victim.name.clone(),
                signal: spec.signal,
            }),
            Err(error @ (SignalError::Gone { .. } | SignalError::Changed { .. })) => {
                tracing::debug!(%error, "skipped")
            }
            Err(error) => last_error = Some(error),
        }
    }
    match (signalled.is_empty(), last_error) {
        (true, Some(error)) => Err(Refusal::Internal(error.to_string())),
        (true, None) => Err(Refusal::NotFound(format!(
            "every process matching {} exited before it was signalled",
            spec.describe()
        ))),
        _ => Ok(signalled),
    }
}

/// Keeps killing what matches, every `repeat_every`, until reverted. The first kill has
/// already happened (its pids are in the receipt).
pub fn start_repeating(
    spec: KillSpec,
    interval: Duration,
    table: Arc<dyn ProcessTable>,
    policy: Policy,
    first: usize,
) -> Applied {
    let stop = Arc::new(StopSignal::default());
    let kills = Arc::new(AtomicUsize::new(first));
    let thread = {
        let (stop, kills) = (stop.clone(), kills.clone());
        let spec = spec.clone();
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            // Asleep between kills: woken by the interval or by the revert, nothing else.
            while !stop.wait(interval) {
                // No match is normal here: the service may not be back yet.
                if let Ok(signalled) = apply(&spec, table.as_ref(), &policy, &mut rng) {
                    kills.fetch_add(signalled.len(), Ordering::Relaxed);
                }
            }
        })
    };
    Applied {
        summary: format!(
            "killing {} every {}",
            spec.describe(),
            format_duration(interval)
        ),
        effect: Box::new(RepeatKill {
            what: spec.describe(),
            stop,
            kills,
            thread: Some(thread),
        }),
    }
}

/// A flag a sleeping thread wakes for at once.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl StopSignal {
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Sleeps `timeout` unless stopped first; whether it was stopped.
    fn wait(&self, timeout: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (stopped, _) = self
            .changed
            .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *stopped
    }
}

struct RepeatKill {
    what: String,
    stop: Arc<StopSignal>,
    kills: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Effect for RepeatKill {
    fn effect(&self) -> String {
        format!(
            "{} process(es) matching {} killed so far",
            self.kills.load(Ordering::Relaxed),
            self.what
        )
    }

    fn revert(&mut self) -> Result<(), String> {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Ok(())
    }
}

impl Drop for RepeatKill {
    fn drop(&mut self) {
        let _ = self.revert();
    }
}

#[cfg(test)]
mod tests;
