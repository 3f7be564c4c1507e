//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven through WebDriver: an operator signs in with a token, sees the lab fleet,
//! watches an attack started from the CLI appear live with time left, presses the
//! emergency stop and sees every fault gone — checked from outside too: statvfs and the
//! agents' CPU time, and every agent latched — then resumes. A viewer sees no stop
//! button, and forged POSTs are refused with nothing latched. With
//! `TROOP_DOCS_SCREENSHOTS=DIR` the test keeps screenshots of the main pages there.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;
use troop_lab::host::{ending_with_this_thread, free_port};
use troop_tests::lab::{Lab, Reaped, UI_PORT, cpu_seconds, output_text, used_percent, wait_for};
use troop_tests::net::inside;

const POLICY: &str = "allow = [\"cpu\", \"disk\"]";
const UI: &str = "http://127.0.0.1:7081/ui";

fn status_json(lab: &Lab, operator: &Path) -> Value {
    let output = lab.troop_as(operator, &["status", "--output", "json"]);
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

fn agent_entries(status: &Value) -> Vec<Value> {
    status["agents"].as_array().cloned().unwrap_or_default()
}

/// Whether `id`'s agent burns CPU, read from /proc over 300 ms.
fn burning(lab: &Lab, id: &str) -> bool {
    let agent = lab.hosts[id].agent_pid().unwrap();
    let before = cpu_seconds(agent);
    std::thread::sleep(Duration::from_millis(300));
    cpu_seconds(agent) - before > 0.03
}

/// chromedriver in the lab's network, where serve's dashboard listens on loopback, as
/// pid 1 of a PID namespace of its own: however the test ends, no browser outlives it.
fn start_chromedriver(lab: &Lab, port: u16) -> Reaped {
    let log = std::fs::File::create(lab.dir().join("chromedriver.log")).unwrap();
    Reaped(
        ending_with_this_thread()
            .args(["ip", "netns", "exec"])
            .arg(lab.network_namespace().unwrap().file_name().unwrap())
            .args([
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
            ])
            .arg("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run chromedriver (Debian package chromium-driver)"),
    )
}

async fn browser(port: u16) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            // Root in a container: no sandbox; no GPU; a laptop's screen.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1366,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..50 {
        if let Ok(client) = ClientBuilder::new(connector.clone())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("chromedriver on {url} did not start a browser");
}

async fn sign_in(browser: &Client, token: &str) {
    browser.goto(&format!("{UI}/")).await.unwrap();
    // Not signed in: the dashboard sends the browser to sign in.
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/ui/signin")
    );
    let field = browser.find(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    browser
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Signed in once the fleet page is there (the click returns before it is).
    let signed_in = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("fleet"))
        .await;
    assert!(signed_in.is_ok(), "sign-in did not reach the fleet page");
}

/// The text of every element `css` picks, read by the page in one go.
async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let script = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);";
    let found = browser
        .execute(script, vec![Value::String(css.to_string())])
        .await
        .unwrap_or(Value::Null);
    found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|text| text.as_str().map(str::to_string))
        .collect()
}

/// The text of the element `css` picks on the page as it is now; empty if none.
async fn text_now(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The text of the element `css` picks, once the page has one (a click's navigation
/// may still be under way when the click returns); empty if none comes within 10 s.
async fn text_of(browser: &Client, css: &str) -> String {
    let found = browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await;
    match found {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits up to `seconds` for `condition` on the page, polling it every 200 ms.
async fn until<F, Fut>(seconds: u64, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..seconds * 5 {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

async fn screenshot(browser: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("TROOP_DOCS_SCREENSHOTS") {
        let png = browser.screenshot().await.unwrap();
        std::fs::write(PathBuf::from(dir).join(name), png).unwrap();
    }
}

/// Runs `work` on a thread inside network namespace `netns`, on a runtime of its own.
fn in_network<T: Send>(netns: &Path, work: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(netns).expect("open the network namespace");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(work)
            })
            .join()
            .expect("the browser's thread panicked")
    })
}

/// A raw HTTP request inside the lab's network: (status code, body).
fn http(lab_ns: &Path, request: String) -> (u16, String) {
    inside(lab_ns, move || {
        let mut stream = TcpStream::connect(("127.0.0.1", UI_PORT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        (code, response)
    })
}

/// The CSRF token the session of `token` gets in its pages' forms.
fn csrf_of(lab_ns: &Path, token: &str) -> String {
    let page = http(
        lab_ns,
        format!("GET /ui/ HTTP/1.0\r\nHost: 127.0.0.1\r\nCookie: troop_session={token}\r\n\r\n"),
    )
    .1;
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-out form carries the session's csrf")
        .to_string()
}

fn post(lab_ns: &Path, path: &str, cookie: &str, body: &str) -> (u16, String) {
    http(
        lab_ns,
        format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nCookie: troop_session={cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn an_operator_watches_an_attack_live_and_stops_the_fleet_from_the_dashboard() {
    let Some(mut lab) = Lab::networked("dashboard") else {
        return;
    };
    if Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        troop_tests::lab::skip("dashboard", "needs chromium and chromium-driver");
        return;
    }
    lab.add_host("web-1", &[("role", "web")], POLICY, vec![]);
    let alice = lab.add_operator("alice", Some("operator"));
    lab.add_operator("vic", Some("viewer"));
    lab.serve_dashboard();
    let _serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], POLICY, vec![]);
    let attached = wait_for(Duration::from_secs(30), || {
        agent_entries(&status_json(&lab, &alice)).len() == 2
            && lab.troop_as(&alice, &["status"]).status.success()
    });
    assert!(attached, "serve log:\n{}", lab.serve_log());
    let alice_token = lab.operator_token("alice");
    let vic_token = lab.operator_token("vic");
    let lab_ns = lab.network_namespace().unwrap();
    let driver_port = free_port().unwrap();
    let _chromedriver = start_chromedriver(&lab, driver_port);
    let disk = lab.hosts["web-1"].disk.display().to_string();

    // The browser's client runs in the lab's network, as chromedriver and serve do.
    in_network(&lab_ns, async {
        let browser = browser(driver_port).await;
        sign_in(&browser, &alice_token).await;
        let fleet = text_of(&browser, "#fleet").await;
        assert!(
            fleet.contains("web-1") && fleet.contains("nat-1"),
            "{fleet}"
        );
        assert!(fleet.contains("role=web"), "{fleet}");
        // nat-1's stream shows its certificate's expiry (the lab's last 825 days).
        assert!(
            fleet.contains("expires in 824d") || fleet.contains("expires in 825d"),
            "{fleet}"
        );
        screenshot(&browser, "dashboard-fleet.png").await;

        // The faults page is open before the attack: the rows come in live.
        browser.goto(&format!("{UI}/faults")).await.unwrap();
        let before = text_of(&browser, "#live-faults").await;
        assert!(before.contains("No fault is active"), "{before}");
        let attacks = [
            vec![
                "attack", "cpu", "--select", "role=web", "--load", "30", "--cores", "1", "--for",
                "5m",
            ],
            vec![
                "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "50", "--for",
                "5m",
            ],
        ];
        for args in attacks {
            let attacked = lab.troop_as(&alice, &args);
            assert!(attacked.status.success(), "{}", output_text(&attacked));
        }
        // Read in one go: the live table is replaced every second.
        let live = until(15, || async {
            texts(&browser, "tr.fault").await.len() == 4
        })
        .await;
        assert!(
            live,
            "faults never appeared live: {}",
            text_of(&browser, "#live-faults").await
        );
        let left = texts(&browser, "tr.fault td.time-left").await;
        assert!(
            left.iter()
                .all(|left| left.starts_with('4') && left.contains('m')),
            "time left {left:?}"
        );
        let rows = texts(&browser, "tr.fault").await;
        assert!(
            rows.iter()
                .any(|row| row.contains("disk") && row.contains("50.0%")),
            "what the fills achieve: {rows:?}"
        );
        screenshot(&browser, "dashboard-faults.png").await;
        for id in ["web-1", "nat-1"] {
            assert!(
                used_percent(&lab, id) > 40.0 && burning(&lab, id),
                "{id} under fault"
            );
        }

        // The emergency stop, from the button on the page.
        browser
            .find(Locator::Id("stop-reason"))
            .await
            .unwrap()
            .send_keys("checkout is down")
            .await
            .unwrap();
        browser
            .find(Locator::Id("emergency-stop"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let reached = text_of(&browser, "#reached").await;
        assert!(reached.matches("applied").count() == 2, "{reached}");
        // The page the stop answered with: it lists who was reached.
        assert!(
            text_of(&browser, "#latch")
                .await
                .contains("Emergency stop by alice")
        );
        screenshot(&browser, "dashboard-emergency-stop.png").await;
        browser.close().await.unwrap();
    });

    // From outside: nothing burns, nothing is filled, every agent is latched.
    for id in ["web-1", "nat-1"] {
        assert!(
            wait_for(Duration::from_secs(5), || used_percent(&lab, id) < 1.0
                && !burning(&lab, id)),
            "{id} still under fault"
        );
    }
    let status = status_json(&lab, &alice);
    for agent in agent_entries(&status) {
        assert_eq!(agent["latch"]["by"], "alice", "{status}");
        assert_eq!(
            agent["active_faults"].as_array().map(Vec::len),
            Some(0),
            "{status}"
        );
    }

    in_network(&lab_ns, async {
        let browser = browser(driver_port).await;
        sign_in(&browser, &lab.operator_token("alice")).await;
        browser.goto(&format!("{UI}/faults")).await.unwrap();
        let gone = until(5, || async {
            text_now(&browser, "#live-faults")
                .await
                .contains("No fault is active")
        })
        .await;
        assert!(gone, "{}", text_of(&browser, "#live-faults").await);
        browser
            .find(Locator::Id("resume-reason"))
            .await
            .unwrap()
            .send_keys("checkout is back")
            .await
            .unwrap();
        browser
            .find(Locator::Id("resume"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let resumed = text_of(&browser, "#reached").await;
        assert!(resumed.matches("applied").count() == 2, "{resumed}");
        assert!(
            text_of(&browser, "#latch")
                .await
                .contains("No emergency stop")
        );
        browser.goto(&format!("{UI}/runs")).await.unwrap();
        screenshot(&browser, "dashboard-runs.png").await;
        browser.close().await.unwrap();

        // A viewer sees the fleet and no button that would be refused.
        let viewer = self::browser(driver_port).await;
        sign_in(&viewer, &vic_token).await;
        assert!(text_of(&viewer, "#fleet").await.contains("web-1"));
        assert!(viewer.find(Locator::Id("emergency-stop")).await.is_err());
        viewer.close().await.unwrap();
    });
    let status = status_json(&lab, &alice);
    for agent in agent_entries(&status) {
        assert!(agent["latch"].is_null(), "resumed: {status}");
    }

    // Forged POSTs: alice's cookie without the page's CSRF token, and a viewer's own
    // form: refused, and nothing latched.
    let (code, body) = post(
        &lab_ns,
        "/ui/stop",
        &lab.operator_token("alice"),
        "csrf=guess&reason=x",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("forged request"), "{body}");
    let vic = lab.operator_token("vic");
    let csrf = csrf_of(&lab_ns, &vic);
    let (code, body) = post(&lab_ns, "/ui/stop", &vic, &format!("csrf={csrf}&reason=x"));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("needs the operator role"), "{body}");
    // A reason the latch refuses (a control character) is refused here as through the
    // operator API, not cleaned up.
    let alice_token = lab.operator_token("alice");
    let csrf = csrf_of(&lab_ns, &alice_token);
    let (code, body) = post(
        &lab_ns,
        "/ui/stop",
        &alice_token,
        &format!("csrf={csrf}&reason=bad%07reason"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("reason must not contain control characters"),
        "{body}"
    );
    let (code, _) = post(&lab_ns, "/ui/stop", "not-a-token", "csrf=x&reason=x");
    assert_eq!(code, 401);
    // Signing in with garbage says why, and sets no session.
    let (code, body) = post(&lab_ns, "/ui/signin", "", "token=troop-operator-1.00.00");
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("Not signed in: this is not an operator token"),
        "{body}"
    );
    assert!(!body.to_ascii_lowercase().contains("set-cookie"), "{body}");
    let status = status_json(&lab, &alice);
    for agent in agent_entries(&status) {
        assert!(agent["latch"].is_null(), "nothing latched: {status}");
    }
}
