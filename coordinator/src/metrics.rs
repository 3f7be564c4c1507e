//! `troop serve`'s Prometheus metrics, served at `/metrics` on `health_listen`: agents
//! connected and silent, streams dropped for missed heartbeats, campaign runs by result,
//! probe failures, and strikes per campaign and group.
//!
//! One set per process, as Prometheus clients keep it; counters start at the process's
//! start (a restart shows as a reset).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `completed`, `aborted`, `interrupted`, ...: a run's status as the store keeps it.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrikeLabels {
    pub campaign: String,
    pub group: String,
}

pub struct ServeMetrics {
    registry: Registry,
    connected: Gauge,
    silent: Gauge,
    pub dropped_silent: Counter,
    runs: Family<ResultLabels, Counter>,
    probe_failures: Family<ProbeLabels, Counter>,
    strikes: Family<StrikeLabels, Counter>,
}

/// The process's metrics.
pub fn get() -> &'static ServeMetrics {
    static METRICS: OnceLock<ServeMetrics> = OnceLock::new();
    METRICS.get_or_init(ServeMetrics::new)
}

impl ServeMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("troop_serve");
        let metrics = Self {
            registry: Registry::default(),
            connected: Gauge::default(),
            silent: Gauge::default(),
            dropped_silent: Counter::default(),
            runs: Family::default(),
            probe_failures: Family::default(),
            strikes: Family::default(),
        };
        registry.register(
            "connected_agents",
            "Agents with an open stream whose heartbeats are current",
            metrics.connected.clone(),
        );
        registry.register(
            "silent_streams",
            "Open streams whose heartbeats stopped (about to be dropped)",
            metrics.silent.clone(),
        );
        registry.register(
            "streams_dropped_silent",
            "Streams dropped after missing their heartbeats",
            metrics.dropped_silent.clone(),
        );
        registry.register(
            "campaign_runs",
            "Campaign runs finished, by result",
            metrics.runs.clone(),
        );
        registry.register(
            "probe_failures",
            "Failed checks of a campaign's probes, by probe",
            metrics.probe_failures.clone(),
        );
        registry.register(
            "strikes",
            "Groups a scheduled firing chose to strike, by campaign and group",
            metrics.strikes.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn run_finished(&self, result: &str) {
        let result = result.to_string();
        self.runs.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn probe_failed(&self, probe: &str) {
        let probe = probe.to_string();
        self.probe_failures
            .get_or_create(&ProbeLabels { probe })
            .inc();
    }

    pub fn struck(&self, campaign: &str, groups: &[String]) {
        for group in groups {
            let labels = StrikeLabels {
                campaign: campaign.to_string(),
                group: group.clone(),
            };
            self.strikes.get_or_create(&labels).inc();
        }
    }

    /// The text Prometheus scrapes, with the stream gauges set from the live registry's
    /// counts now: agents connected, and streams open (connected or gone silent).
    pub fn render(&self, (connected, open): (usize, usize)) -> String {
        self.connected.set(connected as i64);
        self.silent.set(open.saturating_sub(connected) as i64);
        troop_telemetry::metrics::render(&self.registry)
    }
}
