use super::*;
use crate::host::process::{FakeProcessTable, ancestors_of};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn process(pid: i32, ppid: i32, name: &str) -> ProcessInfo {
    ProcessInfo {
        pid,
        ppid,
        name: name.into(),
        exe: Some(PathBuf::from(format!("/usr/bin/{name}"))),
        cmdline: vec![name.into(), format!("--id={pid}")],
        uid: Some(1000),
        start_time: pid as u64 * 10,
        kernel_thread: false,
        zombie: false,
    }
}

fn host() -> Vec<ProcessInfo> {
    let mut kthread = process(2, 0, "kthreadd");
    kthread.kernel_thread = true;
    kthread.exe = None;
    vec![
        process(1, 0, "init"),
        kthread,
        process(10, 1, "sshd"),
        process(20, 1, "supervisor"),
        process(30, 20, "troop-agent"),
        process(40, 1, "nginx"),
        process(41, 40, "nginx"),
        process(42, 40, "nginx"),
        // Entered the host's PID namespace from outside, as `docker exec` does.
        process(50, 0, "debug-shell"),
        ProcessInfo {
            zombie: true,
            ..process(43, 40, "nginx")
        },
    ]
}

fn spec(by: pb::process_match::By, all_matches: bool) -> KillSpec {
    KillSpec::from_pb(&pb::Kill {
        target: Some(pb::ProcessMatch { by: Some(by) }),
        signal: 0,
        all_matches,
        repeat_every_ms: 0,
    })
    .unwrap()
}

fn choose(spec: &KillSpec) -> Result<Vec<i32>, Refusal> {
    let processes = host();
    let agent = AgentLineage {
        pid: 30,
        ancestors: ancestors_of(30, |pid| {
            processes.iter().find(|p| p.pid == pid).map(|p| p.ppid)
        }),
    };
    let mut rng = StdRng::seed_from_u64(1);
    choose_victims(spec, &processes, &agent, &Policy::default(), &mut rng)
        .map(|victims| victims.iter().map(|v| v.pid).collect())
}

use pb::process_match::By;

#[test]
fn all_matches_or_one_at_random() {
    assert_eq!(
        choose(&spec(By::Name("nginx".into()), true)),
        Ok(vec![40, 41, 42])
    );
    let one = choose(&spec(By::Name("nginx".into()), false)).unwrap();
    assert_eq!(one.len(), 1);
    assert!([40, 41, 42].contains(&one[0]));
}

#[test]
fn every_way_of_matching() {
    assert_eq!(
        choose(&spec(By::Exe("/usr/bin/nginx".into()), true)),
        Ok(vec![40, 41, 42])
    );
    assert_eq!(
        choose(&spec(By::CmdlinePattern("--id=4[12]$".into()), true)),
        Ok(vec![41, 42])
    );
    assert_eq!(choose(&spec(By::Pid(41), true)), Ok(vec![41]));
    // uid 1000 matches everything here; only the unprotected remain.
    assert_eq!(
        choose(&spec(By::User("1000".into()), true)),
        Ok(vec![40, 41, 42, 50])
    );
}

#[test]
fn a_process_that_entered_from_outside_is_not_a_kernel_thread() {
    assert_eq!(
        choose(&spec(By::Name("debug-shell".into()), true)),
        Ok(vec![50])
    );
}

#[test]
fn lifelines_are_never_chosen() {
    for (pid, reason) in [
        (1, "init"),
        (2, "kernel thread"),
        (10, "policy.protected_processes"),
        (20, "ancestor"),
        (30, "agent itself"),
    ] {
        let refusal = choose(&spec(By::Pid(pid), true)).unwrap_err();
        assert!(matches!(refusal, Refusal::Policy(_)), "{pid}: {refusal}");
        assert!(refusal.to_string().contains(reason), "{pid}: {refusal}");
    }
}

#[test]
fn no_match_says_what_was_looked_for() {
    let refusal = choose(&spec(By::Name("postgres".into()), true)).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::NotFound("no process matches name \"postgres\"".into())
    );
}

#[test]
fn bad_parameters_are_refused() {
    let kill = |by: Option<By>, signal: i32| pb::Kill {
        target: Some(pb::ProcessMatch { by }),
        signal,
        all_matches: false,
        repeat_every_ms: 0,
    };
    for (kill, needle) in [
        (kill(Some(By::Pid(5)), 65), "signal 65"),
        (kill(Some(By::Pid(5)), -9), "signal -9"),
        (kill(None, 9), "no target"),
        (kill(Some(By::Pid(0)), 9), "pid 0"),
        (kill(Some(By::Name(String::new())), 9), "name is empty"),
        (kill(Some(By::Exe("nginx".into())), 9), "absolute"),
        (kill(Some(By::CmdlinePattern("(".into())), 9), "pattern"),
        (
            kill(Some(By::User("no-such-user-troop".into())), 9),
            "no user",
        ),
    ] {
        let refusal = KillSpec::from_pb(&kill).unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal}");
        assert!(refusal.to_string().contains(needle), "{needle}: {refusal}");
    }
}

#[test]
fn apply_signals_through_the_table_and_skips_the_departed() {
    let table = FakeProcessTable::new(host());
    table.make_gone(41);
    let mut rng = StdRng::seed_from_u64(1);
    let spec = spec(By::Name("nginx".into()), true);
    let signalled = apply(&spec, &table, &Policy::default(), &mut rng).unwrap();
    let pids: Vec<i32> = signalled.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [40, 42]);
    assert_eq!(
        table.signalled(),
        [(40, libc::SIGKILL), (42, libc::SIGKILL)]
    );
}

#[test]
fn a_pid_reused_between_listing_and_signalling_is_not_signalled() {
    let table = FakeProcessTable::new(host());
    table.reuse_pid_after_listing(41);
    let mut rng = StdRng::seed_from_u64(1);
    let spec = spec(By::Name("nginx".into()), true);
    let signalled = apply(&spec, &table, &Policy::default(), &mut rng).unwrap();
    let pids: Vec<i32> = signalled.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [40, 42]);
    assert!(table.signalled().iter().all(|(pid, _)| *pid != 41));
}

#[test]
fn a_repeating_kill_kills_again_until_reverted() {
    let table = Arc::new(FakeProcessTable::new(host()));
    let spec = spec(By::Pid(40), true);
    let mut applied = start_repeating(spec, MIN_REPEAT, table.clone(), Policy::default(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while table.signalled().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(table.signalled().len() >= 2);
    applied.effect.revert().unwrap();
    let after = table.signalled().len();
    std::thread::sleep(MIN_REPEAT * 3);
    assert_eq!(table.signalled().len(), after, "kills after revert");
}

#[test]
fn a_name_is_the_kernel_name_or_the_whole_of_a_name_the_kernel_cut() {
    let script = ProcessInfo {
        exe: Some(PathBuf::from("/usr/bin/bash")),
        ..process(60, 1, "backup.sh")
    };
    // The kernel keeps 15 bytes of "postgres-exporter"; its exe has the whole name.
    let long = ProcessInfo {
        exe: Some(PathBuf::from("/opt/bin/postgres-exporter")),
        ..process(61, 1, "postgres-export")
    };
    let impostor = ProcessInfo {
        exe: Some(PathBuf::from("/usr/bin/postgres-exporter")),
        ..process(62, 1, "sh")
    };
    let name = |name: &str| spec(By::Name(name.into()), true).target;
    assert!(name("backup.sh").matches(&script));
    assert!(
        !name("bash").matches(&script),
        "as pkill: not the interpreter"
    );
    assert!(name("postgres-exporter").matches(&long));
    assert!(name("postgres-export").matches(&long));
    assert!(!name("postgres-exporter-2").matches(&long));
    assert!(!name("postgres-exporter").matches(&impostor));
}
