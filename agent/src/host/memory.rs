//! Holding memory in a helper process.
//!
//! The memory is held by a child process, not by the agent: the child raises its own
//! `oom_score_adj` to 1000, so under pressure the kernel's OOM killer takes it first and
//! the agent survives. The child touches every page so the memory is really resident,
//! says "ready", and then waits; it exits by itself if the agent goes away.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The hidden subcommand both binaries answer with [`hold`].
pub const HOLD_COMMAND: &str = "__hold-memory";
const PAGE: usize = 4096;

/// The holder: allocates and touches `bytes`, reports ready, and holds them until killed
/// or until its parent (the agent) is gone.
pub fn hold(bytes: u64) -> io::Result<()> {
    // First in line for the OOM killer, so the agent is not.
    std::fs::write("/proc/self/oom_score_adj", "1000")?;
    let parent = nix::unistd::getppid();
    let size = usize::try_from(bytes).map_err(|_| io::Error::other("size too large"))?;
    let mut memory: Vec<u8> = Vec::new();
    memory
        .try_reserve_exact(size)
        .map_err(|_| io::Error::other(format!("cannot allocate {bytes} bytes")))?;
    memory.resize(size, 0);
    // resize may map zero pages lazily; writing one byte per page makes them resident.
    for offset in (0..size).step_by(PAGE) {
        memory[offset] = 1;
    }
    std::hint::black_box(&memory);
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if nix::unistd::getppid() != parent {
            return Ok(());
        }
    }
}

/// A running holder.
#[derive(Debug)]
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `exe __hold-memory` and waits until it holds the memory (or `timeout`).
    pub fn start(exe: &Path, marker: &str, bytes: u64, timeout: Duration) -> io::Result<Self> {
        let mut child = Command::new(exe)
            .args([
                HOLD_COMMAND,
                "--fault",
                marker,
                "--bytes",
                &bytes.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let (ready, wait) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready.send(line);
        });
        let mut holder = Self { child };
        match wait.recv_timeout(timeout) {
            Ok(line) if line.trim() == "ready" => Ok(holder),
            outcome => {
                holder.stop();
                let mut stderr = String::new();
                if let Some(mut pipe) = holder.child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                Err(io::Error::other(match outcome {
                    Ok(_) => format!("memory holder failed: {}", stderr.trim()),
                    Err(_) => format!("memory holder not ready within {}s", timeout.as_secs()),
                }))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The holder's resident memory, from /proc.
    pub fn resident_bytes(&self) -> Option<u64> {
        crate::host::process::resident_bytes(self.child.id())
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends holders a crashed agent left behind, found by their marker in the command line.
pub fn end_leftover(marker: &str) {
    use crate::host::process::{LinuxProcessTable, ProcessTable};
    let table = LinuxProcessTable;
    let Ok(processes) = table.list() else { return };
    for process in processes {
        let args = &process.cmdline;
        let is_ours = args.iter().any(|a| a == HOLD_COMMAND)
            && args.windows(2).any(|w| w[0] == "--fault" && w[1] == marker);
        if is_ours {
            let _ = table.signal(&process, libc::SIGKILL, &|_| true);
            tracing::info!(
                pid = process.pid,
                marker,
                "ended a memory holder left by a crash"
            );
        }
    }
}
