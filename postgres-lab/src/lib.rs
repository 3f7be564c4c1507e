//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` package: a cluster
//! made with `initdb` in a temporary directory, run as the unprivileged `postgres` user
//! (initdb and postgres refuse root) on a loopback port, with trust authentication for the
//! user `troop`. Durability is switched off: nothing here outlives the test process.
//!
//! Cleanup does not depend on the test ending well: the server runs under a small shell
//! that holds the read end of a pipe whose write end only this process has. When this
//! process exits, however it exits, the pipe closes, and the shell stops the server and
//! removes the directory.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a fresh cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Set (to 1) where no test may be skipped for want of a tool; CI sets it.
const REQUIRED_ENV: &str = "TROOP_LAB_REQUIRED";

/// A running throwaway server.
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    keeper: Child,
    /// Dropping it (or this process ending) tells the keeper to stop the server.
    hold: Option<ChildStdin>,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// One server for this whole test process, started on first use; `None` (after saying
    /// why on stderr) where PostgreSQL is not installed, unless `TROOP_LAB_REQUIRED=1`,
    /// where that is a failure.
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Result<PostgresServer, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::start) {
            Ok(server) => Some(server),
            Err(why) if std::env::var(REQUIRED_ENV).as_deref() == Ok("1") => {
                panic!("{REQUIRED_ENV}=1 but no PostgreSQL server for the tests: {why}")
            }
            Err(why) => {
                eprintln!("skipped: no PostgreSQL server for the tests: {why}");
                None
            }
        }
    }

    /// Makes a cluster and starts a server on it, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        Self::start_with(None)
    }

    /// As [`PostgresServer::start`], with TLS on (`ssl = on`) presenting the certificate
    /// chain and key given as PEM; plain connections are still taken.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<Self, String> {
        let bin = bin_dir()
            .ok_or("no /usr/lib/postgresql/*/bin/initdb (install Debian's postgresql package)")?;
        let owner = Owner::find()?;
        let dir = tempfile::Builder::new()
            .prefix("troop-postgres-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        owner.give(&dir)?;
        let initdb = owner
            .command(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=troop",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !initdb.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, pem, mode) in [("server.crt", cert, 0o644), ("server.key", key, 0o600)] {
                let path = dir.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("{name}: {e}"))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{name}: {e}"))?;
                owner.give(&path)?;
            }
        }
        let port = free_port()?;
        let mut server = owner.command(&bin.join("postgres"));
        if tls.is_some() {
            server.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        }
        server.arg("-D").arg(&dir).arg("-k").arg(&dir).args([
            "-p",
            &port.to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]);
        let mut keeper = Command::new("sh")
            .arg("-c")
            .arg(KEEPER)
            .arg("keeper")
            .arg(&dir)
            .arg(server.get_program())
            .args(server.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let hold = keeper.stdin.take();
        let mut server = Self {
            port,
            bin,
            dir,
            keeper,
            hold,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the user `troop`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://troop@127.0.0.1:{}/{database}", self.port)
    }

    /// A URL for `database` through the server's Unix socket: reachable from any network
    /// namespace of this machine (a lab's `troop serve`), as the loopback port is not.
    pub fn socket_url(&self, database: &str) -> String {
        let dir = self.dir.display().to_string().replace('/', "%2F");
        format!("postgres://troop@{dir}:{}/{database}", self.port)
    }

    /// Creates an empty database with a name no other caller in this process gets, and
    /// answers its URL.
    pub fn new_database(&self) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs one SQL command with psql against `database`; answers its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "troop",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.keeper.try_wait() {
                return Err(format!("postgres exited ({status}): {}", self.log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "postgres not ready after {START_TIMEOUT:?}: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut log = String::new();
        let _ = std::fs::File::open(self.dir.join("server.log"))
            .and_then(|mut file| file.read_to_string(&mut log));
        log
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        drop(self.hold.take());
        let _ = self.keeper.wait();
    }
}

/// Starts the server (arguments after the data directory), waits for its standard input to
/// close, then stops it (fast shutdown) and removes the directory.
const KEEPER: &str = r#"
dir=$1; shift
"$@" >"$dir/server.log" 2>&1 &
server=$!
read -r _ || true
kill -INT "$server" 2>/dev/null
wait "$server"
rm -rf "$dir"
"#;

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|e| format!("free port: {e}"))
}

/// Who runs the server: the `postgres` user when this process is root, else this user.
enum Owner {
    Me,
    User(nix::unistd::User),
}

impl Owner {
    fn find() -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Self::Me);
        }
        match nix::unistd::User::from_name("postgres") {
            Ok(Some(user)) => Ok(Self::User(user)),
            _ => Err("running as root and there is no postgres user to run the server as".into()),
        }
    }

    fn give(&self, dir: &Path) -> Result<(), String> {
        match self {
            Self::Me => Ok(()),
            Self::User(user) => nix::unistd::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", dir.display())),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = self.command_in_cwd(program);
        // The postgres user may not read this process's working directory.
        command.current_dir("/");
        command
    }

    fn command_in_cwd(&self, program: &Path) -> Command {
        match self {
            Self::Me => Command::new(program),
            Self::User(user) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups")
                    .arg(program);
                command
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answers_and_leaves_nothing_behind() {
        let server = match PostgresServer::start() {
            Ok(server) => server,
            Err(why) if std::env::var(REQUIRED_ENV).as_deref() != Ok("1") => {
                eprintln!("skipped: {why}");
                return;
            }
            Err(why) => panic!("{why}"),
        };
        let dir = server.dir.clone();
        let url = server.new_database().unwrap();
        let database = url.rsplit('/').next().unwrap();
        assert_eq!(server.psql(database, "SELECT 40 + 2").unwrap(), "42");
        let port = server.port();
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server still listens"
        );
    }
}
