//! Faults in words, one way for everyone who shows them: the agent's receipts and
//! Status, and the coordinator's reports and audit trail.

use std::time::Duration;

use troop_common::units::{format_duration, format_rate};

use crate::pb;

/// A network fault's effects: `latency +100ms ±10ms, loss 30%, blackhole`.
pub fn network_effects(network: &pb::Network) -> String {
    let ms = |ms: u64| format_duration(Duration::from_millis(ms));
    let mut effects = Vec::new();
    if network.latency_ms > 0 {
        let mut latency = format!("latency +{}", ms(network.latency_ms));
        if network.jitter_ms > 0 {
            latency.push_str(&format!(" ±{}", ms(network.jitter_ms)));
        }
        effects.push(latency);
    }
    for (name, percent) in [
        ("loss", network.loss_percent),
        ("corrupt", network.corrupt_percent),
        ("duplicate", network.duplicate_percent),
    ] {
        if percent > 0.0 {
            effects.push(format!("{name} {percent}%"));
        }
    }
    if network.rate_bits_per_second > 0 {
        effects.push(format!(
            "rate {}",
            format_rate(network.rate_bits_per_second)
        ));
    }
    if network.blackhole {
        effects.push("blackhole".into());
    }
    effects.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_effect_asked_is_named_once() {
        let network = pb::Network {
            latency_ms: 100,
            jitter_ms: 10,
            loss_percent: 0.5,
            rate_bits_per_second: 10_000_000,
            blackhole: true,
            ..pb::Network::default()
        };
        assert_eq!(
            network_effects(&network),
            "latency +100ms ±10ms, loss 0.5%, rate 10mbit, blackhole"
        );
    }
}
