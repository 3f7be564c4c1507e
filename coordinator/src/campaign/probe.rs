//! Steady-state probes: an HTTP status, a TCP connect, or a command's exit code. A
//! campaign checks them before its first fault (no chaos on a service that is already
//! sick) and keeps checking while faults are active; enough failures in a row stop it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET url` answers with `expect_status` (plain `http://` only).
    Http { url: String, expect_status: u16 },
    /// A TCP connection to `address` opens.
    Tcp { address: String },
    /// `sh -c command` exits 0.
    Command { command: String },
}

/// A probe as a campaign file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub check: Check,
    pub every: Duration,
    /// Failures in a row that count as the steady state being broken.
    pub failures: u32,
    pub timeout: Duration,
}

impl Check {
    /// Runs the check once; `Err` says what was wrong.
    pub async fn run(&self, timeout: Duration) -> Result<String, String> {
        match tokio::time::timeout(timeout, self.run_untimed()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    async fn run_untimed(&self) -> Result<String, String> {
        match self {
            Check::Http { url, expect_status } => {
                let status = http_get_status(url).await?;
                if status == *expect_status {
                    Ok(format!("HTTP {status}"))
                } else {
                    Err(format!("HTTP {status}, expected {expect_status}"))
                }
            }
            Check::Tcp { address } => TcpStream::connect(address)
                .await
                .map(|_| format!("connected to {address}"))
                .map_err(|error| format!("connect {address}: {error}")),
            Check::Command { command } => {
                let output = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|error| format!("cannot run sh: {error}"))?;
                if output.status.success() {
                    Ok("exit 0".into())
                } else {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    Err(format!("{}: {}", output.status, stderr.trim()))
                }
            }
        }
    }
}

/// Splits `http://host:port/path` into (host:port, host, path).
pub fn parse_http_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((address, host.to_string(), path.to_string()))
}

async fn http_get_status(url: &str) -> Result<u16, String> {
    let (address, host, path) = parse_http_url(url)?;
    let mut stream = TcpStream::connect(&address)
        .await
        .map_err(|error| format!("connect {address}: {error}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: troop-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("send to {address}: {error}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        match stream.read(&mut head[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) => return Err(format!("read from {address}: {error}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{address} did not answer HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 512];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        address
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            parse_http_url("http://10.0.0.5:8080/health").unwrap(),
            ("10.0.0.5:8080".into(), "10.0.0.5".into(), "/health".into())
        );
        assert_eq!(parse_http_url("http://svc").unwrap().0, "svc:80");
        assert!(parse_http_url("https://svc").is_err());
    }

    #[tokio::test]
    async fn http_status_is_checked() {
        let ok = serve_once("200 OK").await;
        let check = Check::Http {
            url: format!("http://{ok}/health"),
            expect_status: 200,
        };
        assert!(check.run(Duration::from_secs(2)).await.is_ok());
        let sick = serve_once("503 Service Unavailable").await;
        let check = Check::Http {
            url: format!("http://{sick}/"),
            expect_status: 200,
        };
        let error = check.run(Duration::from_secs(2)).await.unwrap_err();
        assert!(error.contains("503"), "{error}");
    }

    #[tokio::test]
    async fn tcp_and_command_checks() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        assert!(
            Check::Tcp {
                address: address.clone()
            }
            .run(Duration::from_secs(2))
            .await
            .is_ok()
        );
        drop(listener);
        assert!(
            Check::Tcp { address }
                .run(Duration::from_secs(2))
                .await
                .is_err()
        );
        let yes = Check::Command {
            command: "true".into(),
        };
        assert!(yes.run(Duration::from_secs(2)).await.is_ok());
        let no = Check::Command {
            command: "echo broken >&2; exit 3".into(),
        };
        let error = no.run(Duration::from_secs(2)).await.unwrap_err();
        assert!(error.contains("broken"), "{error}");
    }
}
