//! Burning CPU: one thread pinned to each chosen core, holding a duty cycle measured
//! against its own CPU time, so it keeps its load also when other work competes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::time::{ClockId, clock_gettime};
use nix::unistd::Pid;

/// Each period the thread spends `load` of it on the CPU, then sleeps the rest.
const PERIOD: Duration = Duration::from_millis(100);
const BURNER_NICE: libc::c_int = -10;
/// How often a spinning thread checks its CPU time and the stop flag.
const CHECK_EVERY: Duration = Duration::from_micros(500);

/// The cores this process may run on.
pub fn allowed_cores() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn thread_cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// What one burner thread achieved over its last second.
#[derive(Debug, Default)]
struct Achieved {
    /// Per mille of one core.
    load_permille: AtomicU64,
    /// Set once the burner has a window to measure over.
    measured: AtomicBool,
}

/// Burner threads; dropping or [`Burner::stop`] ends them within a millisecond (a spinning
/// one checks every [`CHECK_EVERY`], a sleeping one is woken).
#[derive(Debug)]
pub struct Burner {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    achieved: Vec<Arc<Achieved>>,
    pub target_percent: u32,
    pub cores: Vec<usize>,
}

impl Burner {
    pub fn start(load_percent: u32, cores: Vec<usize>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut achieved = Vec::new();
        for &core in &cores {
            let thread_stop = stop.clone();
            let stats = Arc::new(Achieved::default());
            achieved.push(stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("troop-cpu-{core}"))
                .spawn(move || burn(core, load_percent, &thread_stop, &stats));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    stop.store(true, Ordering::SeqCst);
                    for handle in threads {
                        let _ = handle.join();
                    }
                    return Err(error);
                }
            }
        }
        Ok(Self {
            stop,
            threads,
            achieved,
            target_percent: load_percent,
            cores,
        })
    }

    /// Mean load over the burner threads' last second, in percent of one core; `None`
    /// until every thread has measured itself.
    pub fn achieved_percent(&self) -> Option<f64> {
        if self.achieved.is_empty()
            || !self
                .achieved
                .iter()
                .all(|a| a.measured.load(Ordering::Relaxed))
        {
            return None;
        }
        let sum: u64 = self
            .achieved
            .iter()
            .map(|a| a.load_permille.load(Ordering::Relaxed))
            .sum();
        Some(sum as f64 / self.achieved.len() as f64 / 10.0)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for handle in &self.threads {
            handle.thread().unpark();
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn burn(core: usize, load_percent: u32, stop: &AtomicBool, achieved: &Achieved) {
    let mut set = CpuSet::new();
    if set.set(core).is_ok() {
        // Pid 0: this thread. Unpinned still burns, just not on a chosen core.
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
    raise_priority();
    let budget = PERIOD * load_percent / 100;
    // A one-second window of (wall, cpu) samples, one per period, for the achieved load.
    let mut window: std::collections::VecDeque<(Instant, Duration)> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let period_start = Instant::now();
        let cpu_start = thread_cpu_time();
        // Spin until this thread has had its budget of CPU time in this period, however
        // long competing work makes that take, but never past the period.
        while thread_cpu_time() - cpu_start < budget
            && period_start.elapsed() < PERIOD
            && !stop.load(Ordering::Relaxed)
        {
            let spin_until = Instant::now() + CHECK_EVERY;
            while Instant::now() < spin_until {
                std::hint::spin_loop();
            }
        }
        let rest = PERIOD.saturating_sub(period_start.elapsed());
        sleep_unless_stopped(rest, stop);
        window.push_back((Instant::now(), thread_cpu_time()));
        while window.len() > 11 {
            window.pop_front();
        }
        if let (Some(first), Some(last)) = (window.front(), window.back()) {
            let wall = last.0 - first.0;
            if !wall.is_zero() {
                let permille = (last.1 - first.1).as_secs_f64() / wall.as_secs_f64() * 1000.0;
                achieved
                    .load_permille
                    .store(permille.round() as u64, Ordering::Relaxed);
                achieved.measured.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Nice −10 for this thread: against a competing process at nice 0 the burner gets about
/// 90 % of the core while it spins, so it reaches its target also under contention; the
/// duty cycle, not the priority, decides how much it takes. Not nice −20: the agent's own
/// threads must still answer `halt` on a core burning at 100 %. Without CAP_SYS_NICE this
/// fails and the burner runs at normal priority.
fn raise_priority() {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority reads three integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BURNER_NICE) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "burner runs at normal priority");
    }
}

/// Sleeps until `duration` has passed or [`Burner::stop`] unparks this thread: a stop
/// ends the sleep at once, and a sleeping burner wakes for nothing else.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::park_timeout(left);
    }
}
