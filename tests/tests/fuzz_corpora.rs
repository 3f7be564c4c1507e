//! Replays every stored fuzz corpus and every crash the fuzzers found (each a file under
//! `fuzz/corpus/TARGET/` or `fuzz/regressions/TARGET/`) through the fuzz targets' own
//! bodies: what once crashed stays fixed, without libFuzzer or a nightly toolchain.

use std::path::Path;

use troop_tests::fuzz::TARGETS;

#[test]
fn every_stored_fuzz_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(
                    outcome.is_ok(),
                    "fuzz target {name} fails on {}",
                    path.display()
                );
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= TARGETS.len(),
        "only {replayed} stored fuzz inputs found"
    );
}
