//! Fault benchmarks behind BENCHMARKS.md. Run (as root, for the private tmpfs):
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p troop-tests --bench faults
//! ```
//!
//! 1. CPU achieved vs target at 10/30/50/80/100 % on one core, idle and with a competing
//!    busy process pinned to the same core, read from the kernel's accounting (/proc).
//! 2. Filling 4 GiB and removing it, on a 5 GiB tmpfs in a private mount namespace (the
//!    bench re-runs itself under `unshare --mount`, so nothing touches a real disk).
//! 3. `troop halt` to every fault reverted, on a lab host holding a fill and a burn.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use troop_agent::host::cpu::Burner;
use troop_agent::host::disk;
use troop_tests::lab::{Lab, wait_for};

fn process_cpu_seconds() -> f64 {
    troop_tests::lab::cpu_seconds(std::process::id() as i32)
}

fn measure_burn(target: u32) -> f64 {
    let mut burner = Burner::start(target, vec![0]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, wall) = (process_cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let achieved = (process_cpu_seconds() - cpu) / wall.elapsed().as_secs_f64() * 100.0;
    burner.stop();
    achieved
}

fn bench_cpu() {
    for competing in [false, true] {
        let mut competitor = competing.then(|| {
            Command::new("taskset")
                .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        });
        let mut line = String::new();
        for target in [10, 30, 50, 80, 100] {
            let achieved = measure_burn(target);
            line.push_str(&format!("  {target}% -> {achieved:.1}%"));
        }
        println!(
            "cpu on core 0, {}:{line}",
            if competing {
                "with a busy process on the same core"
            } else {
                "idle"
            }
        );
        if let Some(child) = competitor.as_mut() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

fn time_fill(label: &str, dir: &std::path::Path) {
    let dir = disk::FillDir::open(&dir.canonicalize().unwrap()).unwrap();
    let started = Instant::now();
    dir.fill("fill", 4 << 30).unwrap();
    let filled = started.elapsed();
    let used = dir.usage().unwrap().used;
    let started = Instant::now();
    dir.remove("fill").unwrap();
    let removed = started.elapsed();
    println!(
        "fill 4 GiB on {label}: {:.3} s (statvfs then: {:.2} GiB used); removal {:.3} s",
        filled.as_secs_f64(),
        used as f64 / (1u64 << 30) as f64,
        removed.as_secs_f64()
    );
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}

/// Runs inside a private mount namespace: a 5 GiB tmpfs, and on it a loop-mounted ext4
/// image (sparse, so fallocate there writes metadata only), each filled with 4 GiB.
fn inner_fill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    run(
        "mount",
        &["-t", "tmpfs", "-o", "size=5G", "troop-bench", &root],
    );
    time_fill("tmpfs (fallocate zeroes pages)", dir.path());
    let image = format!("{root}/ext4.img");
    let ext4 = format!("{root}/ext4");
    std::fs::create_dir(&ext4).unwrap();
    run("truncate", &["-s", "4600M", &image]);
    run("mkfs.ext4", &["-q", "-F", &image]);
    run("mount", &["-o", "loop", &image, &ext4]);
    time_fill(
        "ext4 (fallocate reserves extents)",
        std::path::Path::new(&ext4),
    );
    run("umount", &[&ext4]);
    run("umount", &[&root]);
}

fn bench_fill() {
    let status = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .arg("--inner-fill")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn bench_halt() {
    let Some(mut lab) = Lab::new("halt bench") else {
        return;
    };
    lab.add_host(
        "web-1",
        &[("role", "web")],
        "allow = [\"cpu\", \"disk\", \"memory\"]",
        vec![],
    );
    let disk = lab.hosts["web-1"].disk.display().to_string();
    let mut times = Vec::new();
    for _ in 0..5 {
        for args in [
            vec![
                "attack", "disk", "--select", "", "--path", &disk, "--size", "32MiB", "--for", "5m",
            ],
            vec![
                "attack", "cpu", "--select", "", "--load", "50", "--for", "5m",
            ],
            vec![
                "attack", "memory", "--select", "", "--size", "64MiB", "--for", "5m",
            ],
        ] {
            assert_eq!(lab.troop_json(&args).0, Some(0));
        }
        let started = Instant::now();
        assert_eq!(lab.troop_json(&["halt"]).0, Some(0));
        let used = lab.hosts["web-1"].disk_usage().0;
        assert!(wait_for(Duration::from_secs(5), || lab.hosts["web-1"]
            .disk_usage()
            .0
            < used.min(1 << 20) + (1 << 20)));
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "troop halt (CLI start to answer, 3 faults: disk, cpu on every core, memory) until reverted: median {:.0} ms, max {:.0} ms",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times.last().unwrap().as_secs_f64() * 1000.0
    );
}

fn main() {
    if std::env::args().any(|arg| arg == "--inner-fill") {
        inner_fill();
        return;
    }
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    bench_cpu();
    bench_fill();
    bench_halt();
}
