//! The host effects the agent has, each behind a narrow trait: a Linux implementation for
//! production and integration tests, and a fake that records calls for unit tests.

pub mod cpu;
pub mod disk;
pub mod fill_guard;
pub mod memory;
pub mod net;
pub mod power;
pub mod process;
pub mod residency;

/// Runs the helper process this process was started as (a memory holder or a fill
/// guard) and exits; returns if it is no helper. Binaries call this first of all, so a
/// helper never starts logging, an async runtime or anything else of the agent.
pub fn run_helper_if_asked() {
    memory::run_holder_if_asked();
    fill_guard::run_guard_if_asked();
}

/// A helper's `--flag value` arguments, if this process was started as `command`.
pub(crate) struct HelperArgs(Vec<String>);

impl HelperArgs {
    pub(crate) fn of(command: &str) -> Option<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        (args.first().map(String::as_str) == Some(command)).then_some(Self(args))
    }

    pub(crate) fn get<T: std::str::FromStr>(&self, flag: &str) -> Option<T> {
        self.0
            .windows(2)
            .find(|pair| pair[0] == flag)
            .and_then(|pair| pair[1].parse().ok())
    }
}

/// Ends a helper process: 0 done, 1 failed, 2 arguments missing (`usage` says which).
pub(crate) fn exit_helper(command: &str, usage: &str, outcome: Option<std::io::Result<()>>) -> ! {
    let code = match outcome {
        Some(Ok(())) => 0,
        Some(Err(error)) => {
            eprintln!("{command}: {error}");
            1
        }
        None => {
            eprintln!("{command}: needs {usage}");
            2
        }
    };
    std::process::exit(code)
}
