//! The web dashboard `troop serve` serves at `/ui/`: the live fleet, the faults running now
//! (from the agents' own Status, never assumed), campaigns, runs with their timeline, the
//! access log, and an emergency stop that works whatever else is happening.
//!
//! Server-rendered HTML ([`pages`]) with a few lines of JavaScript that take live updates
//! from server-sent events; every asset is in the binary. An operator signs in with a
//! token from `troop pki operator-token` ([`token`]); it is kept in an `HttpOnly`,
//! `SameSite=Strict` cookie, never in a URL or a log. Roles are the operator API's: a
//! viewer sees no button that would be refused, and every action also checks the role
//! and a CSRF token derived from the session, so a forged POST is refused. Every
//! sign-in and action is in the access log, allowed or refused.

pub mod listen;
pub mod pages;
pub mod token;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::Role;
use crate::fleet::Fleet;
use crate::latch::{FleetLatch, LatchError};
use crate::signer::now_unix_ms;
use crate::store::Store;

const COOKIE: &str = "troop_session";
/// How often the live parts of a page are sent again.
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// What the dashboard reads and acts on: serve's own fleet, store and latch.
pub struct Dashboard {
    pub fleet: Fleet,
    pub store: Arc<Store>,
    pub latch: Arc<FleetLatch>,
    /// Verifies operator tokens: serve's signing key's public half, as a signing-key
    /// rotation leaves it.
    pub tokens: Arc<crate::signer::Signer>,
    /// Whether the dashboard is served over HTTPS (the cookie is then `Secure`).
    pub https: bool,
    /// When each scheduled campaign fires next (Unix ms), as serve's scheduler drew it.
    pub next_firings: Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
}

/// A signed-in operator, for one request.
pub struct Session {
    pub name: String,
    pub role: Role,
    /// Proves a form came from a page of this session.
    pub csrf: String,
}

impl Session {
    pub fn may_act(&self) -> bool {
        self.role >= Role::Operator
    }
}

type Shared = State<Arc<Dashboard>>;

/// The `/ui/` routes.
pub fn router(dashboard: Arc<Dashboard>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(fleet_page))
        .route("/ui/faults", get(faults_page))
        .route("/ui/campaigns", get(campaigns_page))
        .route("/ui/runs", get(runs_page))
        .route("/ui/runs/{id}", get(run_page))
        .route("/ui/audit", get(audit_page))
        .route("/ui/signin", get(signin_page).post(sign_in))
        .route("/ui/signout", post(sign_out))
        .route("/ui/stop", post(emergency_stop))
        .route("/ui/resume", post(resume))
        .route("/ui/events", get(events))
        .route(
            "/ui/style.css",
            get(|| async { asset("text/css", pages::STYLE) }),
        )
        .route(
            "/ui/live.js",
            get(|| async { asset("text/javascript", pages::SCRIPT) }),
        )
        .layer(axum::middleware::map_response(hardened))
        .with_state(dashboard)
}

/// Every answer: never cached, never framed (the stop button must not be clickjacked),
/// only our own scripts and styles, no referrer.
async fn hardened(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

impl Dashboard {
    /// The operator whose session cookie this request carries, if it is valid and they
    /// are still listed in `[[operators]]`.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let text = session_cookie(headers)?;
        let token = token::verify(&text, &self.tokens.verifying_key(), now_unix_ms()).ok()?;
        let role = self.fleet.config.role_of(&token.name)?;
        Some(Session {
            name: token.name,
            role,
            csrf: csrf_of(&text),
        })
    }

    fn record(&self, caller: &str, call: &str, refused: Option<&str>) {
        self.store
            .record_call(caller, &format!("{call} (dashboard)"), refused);
    }

    /// The session a form's action runs in: signed in, with the operator role, and the
    /// form's CSRF token this session's. Refusals are audited.
    fn acting(&self, headers: &HeaderMap, csrf: &str, call: &str) -> Result<Session, Refused> {
        let Some(session) = self.session(headers) else {
            self.record("?", call, Some("not signed in"));
            return Err(Refused(StatusCode::UNAUTHORIZED, "sign in first".into()));
        };
        if !constant_time_eq(csrf.as_bytes(), session.csrf.as_bytes()) {
            let reason = "forged request: the form's CSRF token is not this session's";
            self.record(&session.name, call, Some(reason));
            return Err(Refused(StatusCode::FORBIDDEN, reason.into()));
        }
        if !session.may_act() {
            let reason = format!(
                "{call} needs the operator role; operator {:?} is a {}",
                session.name,
                session.role.name()
            );
            self.record(&session.name, call, Some(&reason));
            return Err(Refused(StatusCode::FORBIDDEN, reason));
        }
        Ok(session)
    }
}

/// An action refused, and why, as plain text.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// A session's CSRF token: derived from its token, so it needs no server state, and
/// useless without the cookie it belongs to.
fn csrf_of(token: &str) -> String {
    let digest = Sha256::digest([b"troop/v1/csrf\0".as_slice(), token.as_bytes()].concat());
    hex::encode(&digest[..16])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in operator, or the way to sign in.
fn signed_in(d: &Dashboard, headers: &HeaderMap) -> Result<Session, Redirect> {
    d.session(headers).ok_or_else(|| Redirect::to("/ui/signin"))
}

type Page = Result<maud::Markup, Redirect>;

async fn fleet_page(State(d): Shared, headers: HeaderMap) -> Page {
    let session = signed_in(&d, &headers)?;
    let statuses = d.fleet.statuses(&d.fleet.agents()).await;
    Ok(pages::fleet(
        &session,
        d.latch.to_pb().as_ref(),
        &d.fleet.live_agents(),
        &statuses,
    ))
}

async fn faults_page(State(d): Shared, headers: HeaderMap) -> Page {
    let session = signed_in(&d, &headers)?;
    let faults = pages::faults_table(&d.fleet.statuses(&d.fleet.agents()).await);
    Ok(pages::faults(&session, d.latch.to_pb().as_ref(), faults))
}

async fn campaigns_page(State(d): Shared, headers: HeaderMap) -> Page {
    let session = signed_in(&d, &headers)?;
    let dir = crate::campaign::scheduler::campaigns_dir(&d.fleet.config);
    let campaigns = crate::campaign::scheduler::load_campaigns(&dir);
    let runs = d.store.runs(500).unwrap_or_default();
    let next = d
        .next_firings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(pages::campaigns(
        &session,
        d.latch.to_pb().as_ref(),
        &campaigns,
        &next,
        &runs,
    ))
}

async fn runs_page(State(d): Shared, headers: HeaderMap) -> Page {
    let session = signed_in(&d, &headers)?;
    let runs = d.store.runs(200).unwrap_or_default();
    Ok(pages::runs(&session, d.latch.to_pb().as_ref(), &runs))
}

async fn run_page(State(d): Shared, headers: HeaderMap, Path(id): Path<i64>) -> Page {
    let session = signed_in(&d, &headers)?;
    let detail = d.store.run(id).ok();
    Ok(pages::run(
        &session,
        d.latch.to_pb().as_ref(),
        id,
        detail.as_ref(),
    ))
}

async fn audit_page(State(d): Shared, headers: HeaderMap) -> Page {
    let session = signed_in(&d, &headers)?;
    let log = d.store.access_log(300).unwrap_or_default();
    Ok(pages::audit(&session, d.latch.to_pb().as_ref(), &log))
}

async fn signin_page() -> maud::Markup {
    pages::signin(None)
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(d): Shared, Form(form): Form<SignIn>) -> Response {
    let now = now_unix_ms();
    // Who tried, when the token says (a valid token of an unlisted operator), for the log.
    let (caller, verdict) = match token::verify(&form.token, &d.tokens.verifying_key(), now) {
        Err(error) => ("?".to_string(), Err(error.to_string())),
        Ok(token) => match d.fleet.config.role_of(&token.name) {
            Some(_) => (token.name.clone(), Ok(token)),
            None => (
                token.name.clone(),
                Err(format!(
                    "operator {:?} is not listed in serve's [[operators]]",
                    token.name
                )),
            ),
        },
    };
    match verdict {
        Ok(token) => {
            d.record(&token.name, "sign in", None);
            let max_age = (token.expires_at_ms - now) / 1000;
            let cookie = format!(
                "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
                form.token.trim(),
                if d.https { "; Secure" } else { "" }
            );
            let mut response = Redirect::to("/ui/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(reason) => {
            d.record(&caller, "sign in", Some(&reason));
            (StatusCode::UNAUTHORIZED, pages::signin(Some(&reason))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

async fn sign_out(State(d): Shared, headers: HeaderMap, Form(form): Form<Csrf>) -> Response {
    if let Some(session) = d.session(&headers)
        && constant_time_eq(form.csrf.as_bytes(), session.csrf.as_bytes())
    {
        d.record(&session.name, "sign out", None);
    }
    let mut response = Redirect::to("/ui/signin").into_response();
    let cleared = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LatchForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn emergency_stop(
    State(d): Shared,
    headers: HeaderMap,
    Form(form): Form<LatchForm>,
) -> Response {
    latch_action(&d, &headers, form, true).await
}

async fn resume(State(d): Shared, headers: HeaderMap, Form(form): Form<LatchForm>) -> Response {
    latch_action(&d, &headers, form, false).await
}

/// The emergency stop (`stop`) or the resume, as the operator API runs them.
async fn latch_action(d: &Dashboard, headers: &HeaderMap, form: LatchForm, stop: bool) -> Response {
    let call = if stop { "emergency stop" } else { "resume" };
    let session = match d.acting(headers, &form.csrf, call) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    d.record(&session.name, call, None);
    // The latch checks the reason, as it does for the operator API.
    let latched = if stop {
        d.latch.stop(&session.name, &form.reason).await
    } else {
        d.latch.resume(&session.name, &form.reason).await
    };
    match latched {
        Ok((run, deliveries)) => {
            pages::latched(&session, d.latch.to_pb().as_ref(), stop, run, &deliveries)
                .into_response()
        }
        Err(LatchError::Invalid(message)) => {
            Refused(StatusCode::BAD_REQUEST, message).into_response()
        }
        Err(error @ LatchError::Store(_)) => {
            Refused(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
        }
    }
}

/// Server-sent events for the signed-in: `faults` (the live faults table) and `latch`
/// (the banner), each second.
async fn events(State(d): Shared, headers: HeaderMap) -> Response {
    if d.session(&headers).is_none() {
        return Refused(StatusCode::UNAUTHORIZED, "sign in first".into()).into_response();
    }
    Sse::new(live(d))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn live(d: Arc<Dashboard>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((d, true), |(d, first)| async move {
        if !first {
            tokio::time::sleep(LIVE_EVERY).await;
        }
        let statuses = d.fleet.statuses(&d.fleet.agents()).await;
        let faults = pages::faults_table(&statuses).into_string();
        let banner = pages::latch_banner(d.latch.to_pb().as_ref()).into_string();
        let events = [
            Ok(Event::default().event("faults").data(faults)),
            Ok(Event::default().event("latch").data(banner)),
        ];
        Some((futures::stream::iter(events), (d, false)))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; troop_session=tok.en; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("tok.en"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        assert_ne!(csrf_of("one"), csrf_of("two"));
        assert_eq!(csrf_of("one").len(), 32);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
