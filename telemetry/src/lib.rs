//! Tracing setup shared by troop's binaries: logs to stderr (plain or JSON),
//! filtered by `RUST_LOG`, plus OpenTelemetry span export over OTLP/gRPC when
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set.

pub mod metrics;
pub mod trace_context;

pub use trace_context::TraceContext;

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt as tfmt};

/// How long dropping [`Telemetry`] may wait for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Crates on the OTLP export path; their spans must not reach the OpenTelemetry
/// layer, or exporting would create spans to export. Other spans are exported from
/// level info up, whatever `RUST_LOG` lets the logs show.
const EXPORT_STACK: [&str; 6] = ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"];

/// Format of the log lines written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = ParseLogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("plain") {
            Ok(Self::Plain)
        } else if s.eq_ignore_ascii_case("json") {
            Ok(Self::Json)
        } else {
            Err(ParseLogFormatError(s.to_owned()))
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Json => "json",
        })
    }
}

/// Error for a log format other than `plain` or `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLogFormatError(String);

impl fmt::Display for ParseLogFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log format {:?}: expected \"plain\" or \"json\"",
            self.0
        )
    }
}

impl std::error::Error for ParseLogFormatError {}

/// Keeps OpenTelemetry export alive; dropping it (or [`Telemetry::shutdown`])
/// flushes pending spans and stops the exporter.
#[must_use = "dropping Telemetry shuts down span export"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported over OTLP.
    pub fn otel_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and shuts down span export now, waiting at most a few seconds.
    pub fn shutdown(mut self) {
        self.shutdown_provider();
    }

    fn shutdown_provider(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Bounded so an unreachable collector cannot hold up process exit.
            if let Err(err) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
                tracing::warn!(error = %err, "OpenTelemetry shutdown did not complete cleanly");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown_provider();
    }
}

/// Installs the global tracing subscriber (logs, plus OTLP export when configured) for `service_name`.
///
/// Logs go to stderr in `format`, filtered by `RUST_LOG` (default `info`); an
/// invalid `RUST_LOG` is an error. When `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not
/// `true`), spans are also exported over OTLP/gRPC through a batch processor,
/// with `service.name` = `service_name` unless `OTEL_SERVICE_NAME` (or
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise. [`TraceContext`]
/// carries a span's context to other processes.
///
/// Without OTLP this needs no async runtime. With OTLP it must be called inside
/// a Tokio runtime (tonic's channel spawns onto it; without one tonic panics),
/// and that runtime should be multi-threaded and still running when the
/// returned [`Telemetry`] is dropped, since the final export runs on it: on a
/// current-thread runtime the drop blocks the only thread and gives up after
/// five seconds. Calling `init` a second time returns an error.
pub fn init(service_name: &'static str, format: LogFormat) -> anyhow::Result<Telemetry> {
    init_with_default_filter(service_name, format, "info")
}

/// Like [`init`], but with `default_filter` (e.g. `"warn"`) used when `RUST_LOG` is unset or empty.
pub fn init_with_default_filter(
    service_name: &'static str,
    format: LogFormat,
    default_filter: &str,
) -> anyhow::Result<Telemetry> {
    init_with(service_name, format, default_filter, |key| {
        std::env::var(key).ok()
    })
}

/// [`init_with_default_filter`] with the environment supplied by `env`, so tests
/// need not mutate the real one.
fn init_with(
    service_name: &'static str,
    format: LogFormat,
    default_filter: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Telemetry> {
    let filter = log_filter(default_filter, &env)?;

    // Colour only for a person at a terminal, and never against NO_COLOR.
    let ansi = std::io::stderr().is_terminal() && env("NO_COLOR").is_none_or(|v| v.is_empty());
    // The log filter is the logs' alone: a CLI that logs only warnings still exports the
    // spans of what it did.
    let logs = match format {
        LogFormat::Plain => tfmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tfmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };

    let provider = if otlp_requested(&env) {
        Some(tracer_provider(service_name, &env)?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|provider| {
        let spans = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_targets(EXPORT_STACK.map(|t| (t, LevelFilter::OFF)));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name))
            .with_filter(spans)
    });

    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init();
    if let Err(err) = installed {
        // Our provider never got wired in; stop its export thread quietly.
        if let Some(provider) = provider {
            let _ = provider.shutdown_with_timeout(Duration::from_millis(100));
        }
        return Err(anyhow::Error::new(err).context("a global tracing subscriber is already set"));
    }
    Ok(Telemetry { provider })
}

/// The log filter: `RUST_LOG` when set and non-empty, else `default_filter`.
fn log_filter(
    default_filter: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<EnvFilter> {
    let builder = EnvFilter::builder();
    match env(EnvFilter::DEFAULT_ENV).filter(|v| !v.trim().is_empty()) {
        Some(rust_log) => builder
            .parse(&rust_log)
            .with_context(|| format!("RUST_LOG={rust_log:?} is not a valid tracing filter")),
        None => builder
            .parse(default_filter)
            .with_context(|| format!("default log filter {default_filter:?} is invalid")),
    }
}

/// Whether this process's environment asks for OTLP span export, which then needs a
/// multi-threaded runtime (see [`init`]).
pub fn exports_spans() -> bool {
    otlp_requested(&|key: &str| std::env::var(key).ok())
}

/// Whether the environment asks for OTLP span export.
fn otlp_requested(env: &impl Fn(&str) -> Option<String>) -> bool {
    let set = |key: &str| env(key).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Whether the environment names the service itself, which then beats our default.
fn service_name_from_env(env: &impl Fn(&str) -> Option<String>) -> bool {
    env("OTEL_SERVICE_NAME").is_some_and(|v| !v.is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .any(|(k, v)| k.trim() == "service.name" && !v.trim().is_empty())
        })
}

fn tracer_provider(
    service_name: &'static str,
    env: &impl Fn(&str) -> Option<String>,
) -> anyhow::Result<SdkTracerProvider> {
    // The exporter reads the endpoint, headers, timeout and compression from
    // the standard OTEL_EXPORTER_OTLP_* variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("cannot set up the OTLP span exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    // Resource::builder() already applies OTEL_SERVICE_NAME and
    // OTEL_RESOURCE_ATTRIBUTES; an explicit service name would override them.
    let resource = if service_name_from_env(env) {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name(service_name).build()
    };
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// An error and its sources on one line, for logs and messages: `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some errors already print their source; don't say it twice.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| vars.get(key).cloned()
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("plain".parse::<LogFormat>(), Ok(LogFormat::Plain));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(err.to_string().contains("yaml"), "{err}");
        assert!("".parse::<LogFormat>().is_err());
        assert_eq!(LogFormat::default(), LogFormat::Plain);
        for f in [LogFormat::Plain, LogFormat::Json] {
            assert_eq!(f.to_string().parse::<LogFormat>(), Ok(f));
        }
    }

    #[test]
    fn otlp_only_when_an_endpoint_is_set() {
        assert!(!otlp_requested(&env_of(&[])));
        assert!(!otlp_requested(&env_of(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            ""
        )])));
        assert!(otlp_requested(&env_of(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(otlp_requested(&env_of(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4317"
        )])));
        assert!(!otlp_requested(&env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
    }

    #[test]
    fn service_name_env_overrides_default() {
        assert!(!service_name_from_env(&env_of(&[])));
        assert!(!service_name_from_env(&env_of(&[(
            "OTEL_SERVICE_NAME",
            ""
        )])));
        assert!(service_name_from_env(&env_of(&[(
            "OTEL_SERVICE_NAME",
            "x"
        )])));
        assert!(service_name_from_env(&env_of(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=sre, service.name=edge"
        )])));
        assert!(!service_name_from_env(&env_of(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.namespace=troop"
        )])));
    }

    #[test]
    fn bad_rust_log_is_an_error() {
        // Fails while building the filter, before anything is installed.
        let err = init_with(
            "t",
            LogFormat::Plain,
            "info",
            env_of(&[("RUST_LOG", "=,[[")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("RUST_LOG"), "{err:#}");
        let err = init_with("t", LogFormat::Plain, "=,[[", env_of(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("default log filter"), "{err:#}");
    }

    #[test]
    fn rust_log_beats_default_filter() {
        let filter = |default: &str, vars: &[(&str, &str)]| {
            log_filter(default, &env_of(vars)).unwrap().to_string()
        };
        assert_eq!(filter("info", &[]), "info");
        assert_eq!(filter("warn", &[("RUST_LOG", "")]), "warn");
        assert_eq!(
            filter("warn", &[("RUST_LOG", "troop=debug")]),
            "troop=debug"
        );
    }

    /// The only test that installs the global subscriber.
    #[test]
    fn init_without_otel_installs_once() {
        let telemetry = init_with("troop-test", LogFormat::Json, "info", env_of(&[])).unwrap();
        assert!(!telemetry.otel_enabled());
        tracing::info_span!("span", answer = 42).in_scope(|| tracing::info!("hello"));
        let err = init_with("troop-test", LogFormat::Plain, "info", env_of(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("already"), "{err:#}");
        telemetry.shutdown();
    }
}
