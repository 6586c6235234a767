//! CPU time of processes, read from `/proc`, to say which side limited a measurement.

/// Clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far; 0 if it cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// CPU seconds of several processes together.
pub fn total(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// CPU use over an interval, in percent of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuUse {
    /// This process: the load generator (and anything else it runs meanwhile).
    pub generator: f64,
    /// The system under test (all its processes together).
    pub system: f64,
}

/// Starts at a point of a measurement and reads the CPU used since, by the generator and by
/// the system under test, so a figure and its CPU come from the same interval.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    pids: Vec<u32>,
    system0: f64,
    generator0: f64,
    t0: std::time::Instant,
}

impl CpuMeter {
    /// Starts measuring the system's `pids` and this process.
    pub fn start(pids: &[u32]) -> Self {
        CpuMeter {
            pids: pids.to_vec(),
            system0: total(pids),
            generator0: cpu_seconds(std::process::id()),
            t0: std::time::Instant::now(),
        }
    }

    /// CPU used since [`CpuMeter::start`].
    pub fn read(&self) -> CpuUse {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        CpuUse {
            generator: (cpu_seconds(std::process::id()) - self.generator0) / wall * 100.0,
            system: (total(&self.pids) - self.system0) / wall * 100.0,
        }
    }
}
