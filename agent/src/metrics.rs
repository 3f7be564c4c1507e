//! The agent's Prometheus metrics, served on `metrics_listen` at `/metrics`: commands by
//! action and outcome, faults active and reverted, how long faults held, the latency of
//! the ledger's and the journal's durable writes, and, as a leak detector, the faults the
//! agent believes active next to what the host shows of them (fill files, troop's
//! nftables tables, memory holders); and when the agent's certificate expires, with its
//! renewals over the stream, so a fleet can alert on a host that stopped renewing.
//!
//! One set per process, as Prometheus clients keep it: counters count from the start of
//! the process, so a restart shows as a reset, which Prometheus' `rate()` handles.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::policy::FaultKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `start`, `abort`, `abort_all`, `renew`, `emergency_stop`, `resume`, or `unverified`.
    pub action: String,
    /// The fault kind of a start, else empty.
    pub kind: String,
    /// `accepted`, `refused` or `failed`.
    pub outcome: String,
    /// Why, for a refusal or failure (`bad_signature`, `expired`, `policy`...), else empty.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevertLabels {
    pub kind: String,
    /// `deadline`, `lease`, `abort`, `halt`, `emergency_stop`, `shutdown`, `recovery`.
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `renewed`, `refused` (by serve) or `rejected` (by the agent: it did not check out).
    pub outcome: String,
}

type Histograms = Family<KindLabels, Histogram, fn() -> Histogram>;

pub struct AgentMetrics {
    registry: Registry,
    pub commands: Family<CommandLabels, Counter>,
    active: Family<KindLabels, Gauge>,
    on_host: Family<KindLabels, Gauge>,
    held: Histograms,
    reverts: Family<RevertLabels, Counter>,
    pub ledger_write: Histogram,
    pub journal_write: Histogram,
    /// Unix seconds when the certificate in use expires.
    pub certificate_expiry: Gauge,
    pub renewals: Family<OutcomeLabels, Counter>,
}

fn fault_seconds() -> Histogram {
    // 1 s to about 4.5 h.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

fn write_seconds() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The process's metrics.
pub fn get() -> &'static AgentMetrics {
    static METRICS: OnceLock<AgentMetrics> = OnceLock::new();
    METRICS.get_or_init(AgentMetrics::new)
}

impl AgentMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("troop_agent");
        let metrics = Self {
            commands: Family::default(),
            active: Family::default(),
            on_host: Family::default(),
            held: Family::new_with_constructor(fault_seconds),
            reverts: Family::default(),
            ledger_write: write_seconds(),
            journal_write: write_seconds(),
            certificate_expiry: Gauge::default(),
            renewals: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "commands",
            "Signed commands by action, fault kind, outcome and reason",
            metrics.commands.clone(),
        );
        registry.register(
            "faults_active",
            "Faults this agent holds now, by kind",
            metrics.active.clone(),
        );
        registry.register(
            "fault_artifacts_on_host",
            "What the host shows of troop's faults, by kind (fill files, nftables tables, memory holders): above faults_active means a leak",
            metrics.on_host.clone(),
        );
        registry.register(
            "fault_held_seconds",
            "How long each fault held, from apply to revert",
            metrics.held.clone(),
        );
        registry.register(
            "reverts",
            "Faults reverted, by kind and cause",
            metrics.reverts.clone(),
        );
        registry.register(
            "ledger_write_seconds",
            "Durable writes of the command ledger",
            metrics.ledger_write.clone(),
        );
        registry.register(
            "journal_write_seconds",
            "Durable writes of the fault journal",
            metrics.journal_write.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the agent's certificate expires (Unix seconds); enrolled agents renew it past half its lifetime",
            metrics.certificate_expiry.clone(),
        );
        registry.register(
            "certificate_renewals",
            "Certificate renewals over the stream, by outcome",
            metrics.renewals.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts one renewal's outcome: `renewed`, `refused` or `rejected`.
    pub fn renewal(&self, outcome: &str) {
        self.renewals
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one reverted fault, why (`EndReason::label`) and how long it held.
    pub fn reverted(&self, kind: &str, cause: &str, held: Duration) {
        self.reverts
            .get_or_create(&RevertLabels {
                kind: kind.to_string(),
                cause: cause.to_string(),
            })
            .inc();
        self.held
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(held.as_secs_f64());
    }

    /// The text Prometheus scrapes, with the gauges read now: `active` (fault kinds the
    /// engine holds) and what the host shows under `disk_paths`.
    pub fn render(&self, active: &[String], disk_paths: &[std::path::PathBuf]) -> String {
        for kind in FaultKind::ALL {
            let name = kind.name().to_string();
            let count = active.iter().filter(|k| **k == name).count();
            self.active
                .get_or_create(&KindLabels { kind: name })
                .set(count as i64);
        }
        for (kind, count) in [
            ("disk", fill_files(disk_paths)),
            ("network", crate::host::net::troop_tables().len()),
            ("memory", crate::host::memory::holders()),
        ] {
            self.on_host
                .get_or_create(&KindLabels {
                    kind: kind.to_string(),
                })
                .set(count as i64);
        }
        troop_telemetry::metrics::render(&self.registry)
    }
}

/// Fill files (`.troop-fill-*`) in the policy's disk paths.
fn fill_files(disk_paths: &[std::path::PathBuf]) -> usize {
    disk_paths
        .iter()
        .filter_map(|dir| std::fs::read_dir(Path::new(dir)).ok())
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(".troop-fill-")
        })
        .count()
}
