//! Steady-state probes: an HTTP(S) status, a TCP connect, or a command's exit code. A
//! campaign checks them before its first fault (no chaos on a service that is already
//! sick) and keeps checking while faults are active; enough failures in a row stop it.
//!
//! HTTP goes through reqwest over troop's own rustls config (ring provider): HTTPS
//! servers are checked against the probe's `ca` file when it names one, else against
//! the machine's trusted roots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `GET url` with `headers` answers with `expect_status` (redirects not followed);
    /// an `https://` server must present a certificate from `ca` (else a system root).
    Http {
        url: String,
        expect_status: u16,
        ca: Option<PathBuf>,
        headers: Vec<(String, String)>,
    },
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
            Check::Http {
                url,
                expect_status,
                ca,
                headers,
            } => {
                let status = http_get_status(url, ca.as_deref(), headers).await?;
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

/// An `http://` or `https://` URL naming a host; says what is wrong otherwise.
pub fn check_http_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("{url:?}: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{url:?}: only http:// and https:// URLs are probed"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} names no host"));
    }
    Ok(parsed)
}

/// Whether `name: value` can be sent as an HTTP header.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not an HTTP header name"))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| format!("header {name:?}: its value is not valid in HTTP"))?;
    Ok(())
}

/// The roots an HTTPS probe trusts: the certificates in `ca`, or this machine's.
pub fn trusted_roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    match ca {
        Some(path) => troop_common::tls::root_store(path)
            .map_err(|error| troop_telemetry::error_chain(&error)),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Ok(roots)
        }
    }
}

fn http_client(ca: Option<&Path>) -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(troop_common::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(trusted_roots(ca)?)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent("troop-probe")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| troop_telemetry::error_chain(&error))
}

async fn http_get_status(
    url: &str,
    ca: Option<&Path>,
    headers: &[(String, String)],
) -> Result<u16, String> {
    // A fresh client each time: every check opens a new connection, as a new user would.
    let mut request = http_client(ca)?.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => Ok(response.status().as_u16()),
        Err(error) => Err(http_error(url, ca, &error)),
    }
}

/// What went wrong, in words. A certificate from another CA shows as `UnknownIssuer`, or
/// as `BadSignature` where that CA has the same name as a trusted one: say which roots
/// were tried.
fn http_error(url: &str, ca: Option<&Path>, error: &reqwest::Error) -> String {
    let chain = troop_telemetry::error_chain(error);
    if chain.contains("invalid peer certificate: UnknownIssuer")
        || chain.contains("invalid peer certificate: BadSignature")
    {
        return match ca {
            Some(ca) => format!(
                "{url}: the server's certificate is not signed by the CA in {} ({chain})",
                ca.display()
            ),
            None => format!(
                "{url}: the server's certificate is not signed by a CA this machine trusts; name its CA with `ca` ({chain})"
            ),
        };
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    fn urls_and_headers_are_checked() {
        assert!(check_http_url("http://10.0.0.5:8080/health").is_ok());
        assert!(check_http_url("https://svc/health").is_ok());
        assert!(check_http_url("ftp://svc").is_err());
        assert!(check_http_url("svc:80").is_err());
        assert!(check_header("Authorization", "Bearer abc").is_ok());
        assert!(check_header("Bad Name", "x").is_err());
        assert!(check_header("X-Ok", "line\nbreak").is_err());
    }

    #[tokio::test]
    async fn http_status_is_checked() {
        let ok = serve_once("200 OK").await;
        let check = Check::Http {
            url: format!("http://{ok}/health"),
            expect_status: 200,
            ca: None,
            headers: vec![],
        };
        assert!(check.run(Duration::from_secs(2)).await.is_ok());
        let sick = serve_once("503 Service Unavailable").await;
        let check = Check::Http {
            url: format!("http://{sick}/"),
            expect_status: 200,
            ca: None,
            headers: vec![],
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
