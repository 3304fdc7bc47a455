//! A criterion measurement of the CPU time of the measuring thread (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! On a machine shared with other work, wall-clock time also counts the time the benchmark
//! thread waited for a CPU; thread CPU time counts only the time it ran. Benches report both.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use rustix::time::{clock_gettime, ClockId};

/// CPU time consumed by the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadCpuTime;

fn now() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        now()
    }

    fn end(&self, started: Duration) -> Duration {
        now().saturating_sub(started)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Same unit (time) as wall-clock measurements.
        WallTime.formatter()
    }
}
