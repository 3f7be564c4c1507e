//! Hosts made on this machine: each one a PID namespace with its own /proc, holding an
//! agent and the service processes it may attack. Used by `troop demo` and by tests.
//!
//! The namespace's pid 1 is a shell that starts the services and the agent. Dropping a
//! [`LocalHost`] sends SIGKILL to the `unshare` process; `--kill-child` then ends the
//! namespace's pid 1, and with it every process of the host.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use troop_common::observe::{ProcessInfo, list_processes, read_process};

/// `setpriv`, to which the caller adds the program it then execs: that program is sent
/// SIGKILL when the thread that started it ends, also when this process is killed
/// outright and drops no guard.
pub fn ending_with_this_thread() -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]);
    command
}

/// What a host runs.
#[derive(Debug)]
pub struct HostSpec<'a> {
    pub name: &'a str,
    pub agent: &'a [OsString],
    pub services: &'a [Vec<OsString>],
    /// A size-capped tmpfs mounted here (bytes), inside the host only.
    pub tmpfs: Option<(std::path::PathBuf, u64)>,
    /// A network namespace (made beforehand with `ip netns add`) to run the host in;
    /// `None` shares this machine's network (loopback hosts).
    pub netns: Option<&'a str>,
    pub log: &'a Path,
}

/// One host: a PID namespace with an agent and some services.
#[derive(Debug)]
pub struct LocalHost {
    pub name: String,
    unshare: Child,
}

/// `'...'` quoting for a POSIX shell.
fn shell_quote(arg: &OsString) -> String {
    let text = String::from_utf8_lossy(arg.as_bytes());
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn shell_command(argv: &[OsString]) -> String {
    argv.iter().map(shell_quote).collect::<Vec<_>>().join(" ")
}

impl LocalHost {
    /// Starts `services` (each an argv) in the background and then `agent` in a new PID
    /// namespace; the agent's output goes to `log`. As root the namespace is made
    /// directly; otherwise inside a user namespace, where the kernel allows that.
    pub fn start(
        name: &str,
        agent: &[OsString],
        services: &[Vec<OsString>],
        log: &Path,
    ) -> io::Result<Self> {
        Self::start_spec(&HostSpec {
            name,
            agent,
            services,
            tmpfs: None,
            netns: None,
            log,
        })
    }

    pub fn start_spec(spec: &HostSpec<'_>) -> io::Result<Self> {
        let mut script = String::from("set -e\n");
        if let Some((dir, bytes)) = &spec.tmpfs {
            let dir = shell_quote(&dir.clone().into_os_string());
            // The mount namespace is private: this tmpfs exists only inside the host.
            script.push_str(&format!(
                "mkdir -p {dir}\nmount -t tmpfs -o size={bytes} troop-lab {dir}\n"
            ));
        }
        script.push_str("set +e\n");
        for service in spec.services {
            script.push_str(&shell_command(service));
            script.push_str(" &\n");
        }
        // Not `exec`: the shell stays pid 1, reaps the services the agent kills, and
        // keeps the host up if the agent dies, as a real host's init would.
        script.push_str(&shell_command(spec.agent));
        script.push_str("\nwait\nwhile :; do sleep 3600; done\n");
        let output = File::create(spec.log)?;
        // setpriv makes the host die with this process even if it is killed outright;
        // it and `ip netns exec` exec onwards, so the child is unshare itself.
        let mut command = ending_with_this_thread();
        if let Some(netns) = spec.netns {
            command.args(["ip", "netns", "exec", netns]);
        }
        command.arg("unshare");
        if !nix::unistd::geteuid().is_root() {
            command.args(["--user", "--map-root-user"]);
        }
        command
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let unshare = command.spawn()?;
        Ok(Self {
            name: spec.name.to_string(),
            unshare,
        })
    }

    /// A path inside the host (its own mounts), as this machine can reach it.
    pub fn path_inside(&self, path: &Path) -> Option<std::path::PathBuf> {
        let init = self.init_pid()?;
        let relative = path.strip_prefix("/").unwrap_or(path);
        Some(std::path::PathBuf::from(format!("/proc/{init}/root")).join(relative))
    }

    /// A command that runs inside the host's PID, mount and network namespaces.
    pub fn command_inside(&self, argv: &[OsString]) -> Option<Command> {
        let init = self.init_pid()?;
        let mut command = Command::new("nsenter");
        command.args(["-t", &init.to_string(), "-p", "-m"]);
        if nix::unistd::geteuid().is_root() {
            command.arg("-n");
        } else {
            // The host lives in a user namespace of ours and shares our network.
            command.args(["-U", "--preserve-credentials"]);
        }
        command.arg("--").args(argv);
        Some(command)
    }

    /// The namespace's pid 1 as this machine sees it, once it exists.
    pub fn init_pid(&self) -> Option<i32> {
        let parent = self.unshare.id() as i32;
        list_processes()
            .ok()?
            .into_iter()
            .find(|process| process.ppid == parent)
            .map(|process| process.pid)
    }

    /// Every live process of the host, as this machine sees them.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let Some(init) = self.init_pid() else {
            return Vec::new();
        };
        let all = list_processes().unwrap_or_default();
        let mut members = vec![init];
        let mut found = Vec::new();
        while let Some(parent) = members.pop() {
            for process in all.iter().filter(|p| p.ppid == parent && !p.zombie) {
                members.push(process.pid);
                found.push(process.clone());
            }
        }
        found
    }

    /// Live processes of the host with this name.
    pub fn pids_named(&self, name: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .processes()
            .into_iter()
            .filter(|process| process.name == name)
            .map(|process| process.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Waits until the host runs `count` processes named `name`.
    pub fn wait_for(&self, name: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.pids_named(name).len() == count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Ends the host and waits until every process in it is gone.
    pub fn stop(&mut self) {
        let mut members = self.processes();
        if let Some(init) = self.init_pid().and_then(read_process) {
            members.push(init);
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The kernel ends the namespace's processes after unshare is gone; a pid counts
        // as gone once it no longer names the same process, or names a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let alive = members.iter().any(|member| {
                read_process(member.pid)
                    .is_some_and(|now| now.start_time == member.start_time && !now.zombie)
            });
            if !alive {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LocalHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this machine lets us make hosts: as root always (on Linux with util-linux);
/// otherwise only where unprivileged user namespaces are allowed. The error says why not.
pub fn can_make_hosts() -> Result<(), String> {
    let mut command = Command::new("unshare");
    if !nix::unistd::geteuid().is_root() {
        command.args(["--user", "--map-root-user"]);
    }
    let output = command
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output()
        .map_err(|error| format!("cannot run unshare (util-linux): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare cannot make a PID namespace here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A free loopback port, for an agent to listen on.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote(&OsString::from("it's")), r"'it'\''s'");
    }
}
