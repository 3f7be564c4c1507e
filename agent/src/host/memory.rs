//! Holding memory in a helper process.
//!
//! The memory is held by a child process, not by the agent: the child raises its own
//! `oom_score_adj` to 1000, so under pressure the kernel's OOM killer takes it first and
//! the agent survives. The child touches every page so the memory is really resident,
//! says "ready", and then waits. It is a minimal process (one thread, no capabilities,
//! no new privileges) and the kernel kills it when the agent goes away.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

/// The hidden subcommand both binaries answer with [`hold`], before anything else starts.
pub const HOLD_COMMAND: &str = "__hold-memory";
const PAGE: usize = 4096;

/// Runs the memory holder and exits, if this process was started as one; returns
/// otherwise. Binaries call this first, before argument parsing, logging or an async
/// runtime: the holder stays a single thread with nothing but its memory.
pub fn run_holder_if_asked() {
    let Some(args) = super::HelperArgs::of(HOLD_COMMAND) else {
        return;
    };
    let outcome = args
        .get::<u64>("--bytes")
        .zip(args.get::<i32>("--parent"))
        .map(|(bytes, parent)| hold(bytes, parent));
    super::exit_helper(HOLD_COMMAND, "--fault ID --bytes N --parent PID", outcome)
}

/// The holder: dies with the agent, gives up every capability, allocates and touches
/// `bytes`, reports ready, and holds them until killed.
pub fn hold(bytes: u64, parent: i32) -> io::Result<()> {
    // SIGKILL when the thread that started us ends (the agent's spawner thread lives as
    // long as the agent). Checked after arming it: if the agent died before, our parent
    // is already someone else, and we leave at once.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(io::Error::other(
            "the agent that started this holder is gone",
        ));
    }
    // First in line for the OOM killer, so the agent is not.
    std::fs::write("/proc/self/oom_score_adj", "1000")?;
    drop_privileges()?;
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
        std::thread::park();
    }
}

/// No new privileges and an empty capability set: the holder can do nothing an
/// unprivileged process cannot.
fn drop_privileges() -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs()?;
    clear_capabilities()
}

#[allow(unsafe_code)]
fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads one header and, for version 3, two data structs; both are
    // properly laid out (repr(C)), initialised, and live across the call.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Holders are started from one thread that lives as long as the agent: the kernel's
/// parent-death signal follows the thread that forked, and a pool thread may end early.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("troop-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// A running holder.
#[derive(Debug)]
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `exe __hold-memory` and waits until it holds the memory (or `timeout`).
    pub fn start(exe: &Path, marker: &str, bytes: u64, timeout: Duration) -> io::Result<Self> {
        let mut command = Command::new(exe);
        command
            .args([
                HOLD_COMMAND,
                "--fault",
                marker,
                "--bytes",
                &bytes.to_string(),
                "--parent",
                &std::process::id().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_from_lasting_thread(command)?;
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

/// How many memory holders run on this host (of this agent or a crashed one).
pub fn holders() -> usize {
    use crate::host::process::{LinuxProcessTable, ProcessTable};
    LinuxProcessTable.list().map_or(0, |processes| {
        processes
            .iter()
            .filter(|process| process.cmdline.iter().any(|a| a == HOLD_COMMAND))
            .count()
    })
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
