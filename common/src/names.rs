//! Names troop gives things, checked the same way by the agent and the coordinator:
//! agent ids (which are DNS names in certificates), labels and command ids.

use std::net::IpAddr;

use rustls_pki_types::DnsName;

/// Agent ids double as the DNS name in the agent's certificate, so they follow DNS rules.
pub fn validate_agent_id(id: &str) -> Result<(), String> {
    check_dns_name(id, false).map_err(|reason| {
        format!("{id:?} {reason}; an agent id is the DNS name its certificate must carry")
    })
}

/// Validates a DNS name by the rules webpki applies, with a reason for each failure.
pub fn check_dns_name(name: &str, allow_wildcard: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!(
            "must be 1 to 253 characters long, not {}",
            name.len()
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err("looks like an IP address, not a DNS name".into());
    }
    for (i, label) in name.split('.').enumerate() {
        if allow_wildcard && i == 0 && label == "*" {
            continue;
        }
        if label.is_empty() {
            return Err("has an empty label (leading, trailing or doubled '.')".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!(
                "contains {c:?}; only letters, digits, '-' and '.' are allowed"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    // webpki also rejects names whose last label is numeric; catch whatever else it would.
    let plain = name
        .strip_prefix("*.")
        .filter(|_| allow_wildcard)
        .unwrap_or(name);
    if DnsName::try_from(plain).is_err() {
        return Err("is not a DNS name TLS libraries accept (is the last label numeric?)".into());
    }
    Ok(())
}

pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let ok = |text: &str, allow_empty: bool| {
        (allow_empty || !text.is_empty())
            && text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    if !ok(name, false) {
        return Err(format!(
            "label key {key:?} must be 1 to 63 of [A-Za-z0-9-_.]"
        ));
    }
    if !ok(value, true) {
        return Err(format!(
            "label {key:?} has value {value:?}; values are at most 63 of [A-Za-z0-9-_.]"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9._-]{1,128}`: a command's id names its fault and its fill file.
pub fn is_valid_command_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id != "."
        && id != ".."
}

/// The port `troop serve` takes agents and operators on unless a URL says otherwise.
pub const DEFAULT_SERVE_PORT: u16 = 7444;

/// `https://host[:port][/]` as the `host:port` to dial.
pub fn serve_address(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must be an https:// URL"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{url:?} must be https://HOST or https://HOST:PORT, nothing after"
        ));
    }
    // The colons of a bracketed IPv6 address are not a port.
    let port = match authority.rsplit_once(':') {
        Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => Some((host, port)),
        _ => None,
    };
    match port {
        None => Ok(format!("{authority}:{DEFAULT_SERVE_PORT}")),
        Some((host, port)) => match port.parse::<u16>() {
            Ok(port) if port > 0 && !host.is_empty() => Ok(authority.to_string()),
            _ => Err(format!("{url:?}: {port:?} is not a port")),
        },
    }
}
