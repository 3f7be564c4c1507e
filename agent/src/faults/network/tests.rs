use super::*;

fn policy() -> Policy {
    Policy {
        network_interfaces: vec!["eth0".into()],
        max_loss_percent: 50,
        max_latency: Duration::from_secs(1),
        ..Policy::default()
    }
}

fn support() -> Support {
    Support {
        nft: true,
        iptables: true,
        ip6tables: true,
        queue: true,
        dup: true,
    }
}

fn request() -> pb::Network {
    pb::Network {
        interface: "eth0".into(),
        ..pb::Network::default()
    }
}

fn planned(request: &pb::Network, active: &[NetworkLoad]) -> Result<NetworkPlan, Refusal> {
    plan(
        request,
        &policy(),
        &ControlPath::default(),
        &support(),
        active,
    )
}

fn refusal(request: &pb::Network, active: &[NetworkLoad]) -> String {
    planned(request, active).unwrap_err().to_string()
}

#[test]
fn a_fault_without_an_effect_is_refused() {
    assert!(refusal(&request(), &[]).contains("at least one effect"));
}

#[test]
fn interfaces_and_caps_come_from_the_policy_and_are_named() {
    let other = pb::Network {
        interface: "eth1".into(),
        blackhole: true,
        ..request()
    };
    assert!(refusal(&other, &[]).contains("policy.network_interfaces (eth0)"));
    let slow = pb::Network {
        latency_ms: 2000,
        ..request()
    };
    assert!(refusal(&slow, &[]).contains("policy.max_latency of 1s"));
    let lossy = pb::Network {
        loss_percent: 60.0,
        ..request()
    };
    assert!(refusal(&lossy, &[]).contains("policy.max_loss_percent of 50%"));
    let blackhole = pb::Network {
        blackhole: true,
        ..request()
    };
    assert!(refusal(&blackhole, &[]).contains("a blackhole as 100%"));
    let bad_name = pb::Network {
        interface: "eth0; reboot".into(),
        loss_percent: 1.0,
        ..request()
    };
    assert!(refusal(&bad_name, &[]).contains("not an interface name"));
}

#[test]
fn concurrent_faults_on_one_interface_together_stay_under_the_loss_cap() {
    let thirty = pb::Network {
        loss_percent: 30.0,
        ..request()
    };
    let first = planned(&thirty, &[]).unwrap();
    let active = [first.load.clone().unwrap()];
    // 1 - 0.7 × 0.7 = 51% together, past the cap of 50%.
    assert!(refusal(&thirty, &active).contains("would be 51.0%"));
    let twenty = pb::Network {
        loss_percent: 20.0,
        ..request()
    };
    assert!(planned(&twenty, &active).is_ok());
    let elsewhere = NetworkLoad {
        interface: "eth1".into(),
        ..active[0].clone()
    };
    assert!(planned(&thirty, &[elsewhere]).is_ok());
}

#[test]
fn one_queue_per_interface_and_corruption_counts_as_loss() {
    let delay = pb::Network {
        latency_ms: 100,
        ..request()
    };
    let first = planned(&delay, &[]).unwrap();
    let corrupt = pb::Network {
        corrupt_percent: 40.0,
        ..request()
    };
    assert!(refusal(&corrupt, &[first.load.unwrap()]).contains("already active on eth0"));
    let corrupting = planned(&corrupt, &[]).unwrap();
    let lossy = pb::Network {
        loss_percent: 20.0,
        ..request()
    };
    // 1 - 0.6 × 0.8 = 52%, past the cap of 50%.
    assert!(refusal(&lossy, &[corrupting.load.unwrap()]).contains("would be 52.0%"));
}

#[test]
fn what_the_kernel_cannot_do_is_unimplemented_naming_what_is_missing() {
    let no_queue = Support {
        queue: false,
        ..support()
    };
    let corrupt = pb::Network {
        corrupt_percent: 1.0,
        ..request()
    };
    let refused = plan(&corrupt, &policy(), &ControlPath::default(), &no_queue, &[]).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert!(refused.to_string().contains("nfnetlink_queue"), "{refused}");
    let no_iptables = Support {
        iptables: false,
        ..support()
    };
    let delay = pb::Network {
        latency_ms: 100,
        ..request()
    };
    let refused = plan(
        &delay,
        &policy(),
        &ControlPath::default(),
        &no_iptables,
        &[],
    )
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
}

#[test]
fn destinations_are_blocks_addresses_with_ports_or_names() {
    let spread = pb::Network {
        loss_percent: 10.0,
        to: vec![
            "10.0.2.0/24".into(),
            "10.0.3.4:5432".into(),
            "[fd00::1]:53".into(),
            "localhost:8080".into(),
        ],
        ports: vec![80],
        ..request()
    };
    let plan = planned(&spread, &[]).unwrap();
    let nets: Vec<_> = plan
        .egress
        .destinations
        .iter()
        .map(|d| (d.net, d.ports.clone()))
        .collect();
    assert!(nets.contains(&(Some(("10.0.2.0".parse().unwrap(), 24)), vec![80])));
    assert!(nets.contains(&(Some(("10.0.3.4".parse().unwrap(), 32)), vec![5432])));
    assert!(nets.contains(&(Some(("fd00::1".parse().unwrap(), 128)), vec![53])));
    assert!(nets.contains(&(Some(("127.0.0.1".parse().unwrap(), 32)), vec![8080])));
    for bad in ["10.0.0.0/33", "10.0.0.1:0", "host name", "a:b", "x;rm"] {
        let request = pb::Network {
            to: vec![bad.into()],
            ..spread.clone()
        };
        assert!(
            refusal(&request, &[]).contains(&format!("to {bad:?}")),
            "{bad}"
        );
    }
}

#[test]
fn out_of_range_values_are_refused() {
    for (request, says) in [
        (
            pb::Network {
                loss_percent: f64::NAN,
                ..request()
            },
            "loss NaN",
        ),
        (
            pb::Network {
                latency_ms: 10,
                jitter_ms: 20,
                ..request()
            },
            "jitter 20ms is more than the latency 10ms",
        ),
        (
            pb::Network {
                rate_bits_per_second: 4,
                ..request()
            },
            "use a blackhole",
        ),
        (
            pb::Network {
                loss_percent: 1.0,
                ports: vec![70_000],
                ..request()
            },
            "port 70000",
        ),
    ] {
        assert!(refusal(&request, &[]).contains(says), "{says}");
    }
}

#[test]
fn rule_names_are_derived_from_the_id_and_fit_the_tools() {
    let Undo::RemoveNetworkRules { table, chain } = undo_for("any text, even \"quotes\"") else {
        panic!("not network rules");
    };
    assert!(table.starts_with("troop_") && table.len() == 18, "{table}");
    assert!(chain.starts_with("troop-") && chain.len() <= 28, "{chain}");
    assert_ne!(undo_for("a"), undo_for("b"));
}
