//! A `[[guardrails.stop_if]]` table checked into a [`Probe`]: one of http, tcp or
//! command, an https probe's CA readable, headers valid, intervals sane.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::raw::{Problems, RawProbe};
use crate::campaign::probe::{self, Check, Probe};

/// `base`: the campaign file's directory, which a relative `ca` is read from.
pub(super) fn check_probe(
    index: usize,
    raw: &Spanned<RawProbe>,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<Probe> {
    let probe = raw.get_ref();
    let checks = [
        probe.http.is_some(),
        probe.tcp.is_some(),
        probe.command.is_some(),
    ];
    if checks.iter().filter(|set| **set).count() != 1 {
        p.at(
            raw.span(),
            "a stop_if probe needs exactly one of http, tcp or command",
        );
        return None;
    }
    let expect_status = match &probe.expect_status {
        Some(status) => p.ranged(status, "expect_status", 100..=599)? as u16,
        None => 200,
    };
    if probe.http.is_none() {
        for (key, span) in [
            ("ca", probe.ca.as_ref().map(Spanned::span)),
            ("headers", probe.headers.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                p.at(span, format!("{key} is only for http probes"));
            }
        }
    }
    let check = if let Some(url) = &probe.http {
        let parsed = match probe::check_http_url(url.get_ref()) {
            Ok(parsed) => parsed,
            Err(error) => {
                p.at(url.span(), error);
                return None;
            }
        };
        let ca = match &probe.ca {
            Some(ca) if parsed.scheme() != "https" => {
                p.at(ca.span(), "ca is only for https:// URLs");
                return None;
            }
            Some(ca) => {
                let path = base.join(ca.get_ref());
                if let Err(error) = probe::trusted_roots(Some(&path)) {
                    p.at(ca.span(), format!("ca: {error}"));
                    return None;
                }
                Some(path)
            }
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in probe
            .headers
            .as_ref()
            .map(Spanned::get_ref)
            .into_iter()
            .flatten()
        {
            if let Err(error) = probe::check_header(name, value) {
                p.at(probe.headers.as_ref()?.span(), error);
                return None;
            }
            headers.push((name.clone(), value.clone()));
        }
        Check::Http {
            url: url.get_ref().clone(),
            expect_status,
            ca,
            headers,
        }
    } else if let Some(address) = &probe.tcp {
        if !address.get_ref().contains(':') {
            p.at(address.span(), "tcp probe needs host:port");
            return None;
        }
        Check::Tcp {
            address: address.get_ref().clone(),
        }
    } else {
        let command = probe.command.as_ref()?;
        Check::Command {
            command: command.get_ref().clone(),
        }
    };
    let every = match &probe.every {
        Some(every) => p.duration(every, "stop_if.every")?,
        None => Duration::from_secs(5),
    };
    if every < Duration::from_millis(100) {
        p.at(raw.span(), "stop_if.every must be at least 100ms");
    }
    Some(Probe {
        name: probe
            .name
            .clone()
            .unwrap_or_else(|| format!("stop_if[{index}]")),
        check,
        every,
        failures: match &probe.failures {
            Some(failures) => p.ranged(failures, "stop_if.failures", 1..=1000)? as u32,
            None => 3,
        },
        timeout: match &probe.timeout {
            Some(timeout) => p.duration(timeout, "stop_if.timeout")?,
            None => Duration::from_secs(2),
        },
    })
}
