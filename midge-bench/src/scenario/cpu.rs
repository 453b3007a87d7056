//! CPU time over a scenario's traffic: the broker's (from /proc), the load generator's,
//! and everything else's on the machine: other processes and the hypervisor (steal)
//! disturb a run, so their shares are printed beside ours.

use crate::procs;

#[derive(Default)]
pub struct CpuUse {
    pub broker: Option<f64>,
    pub bench: f64,
    /// CPU seconds of every process of the machine and taken by the hypervisor (all
    /// cores), when /proc/stat is readable.
    pub machine: Option<(f64, f64)>,
    pub wall: f64,
}

/// The counters at the start of a measurement.
pub struct CpuStart {
    broker: Option<f64>,
    bench: f64,
    machine: Option<(f64, f64)>,
    at: std::time::Instant,
}

impl CpuUse {
    pub fn start(pid: Option<u32>) -> CpuStart {
        CpuStart {
            broker: pid.and_then(procs::cpu_secs),
            bench: procs::own_cpu_secs(),
            machine: procs::machine_cpu_secs(),
            at: std::time::Instant::now(),
        }
    }

    pub fn since(pid: Option<u32>, start: CpuStart) -> CpuUse {
        let machine = match (procs::machine_cpu_secs(), start.machine) {
            (Some(now), Some(then)) => Some((now.0 - then.0, now.1 - then.1)),
            _ => None,
        };
        CpuUse {
            broker: match (pid.and_then(procs::cpu_secs), start.broker) {
                (Some(now), Some(then)) => Some(now - then),
                _ => None,
            },
            bench: procs::own_cpu_secs() - start.bench,
            machine,
            wall: start.at.elapsed().as_secs_f64(),
        }
    }

    pub fn text(&self) -> String {
        let pct = |c: f64| 100.0 * c / self.wall.max(1e-9);
        let broker = self
            .broker
            .map_or("broker ?".to_owned(), |b| format!("broker {:.0}%", pct(b)));
        // What the machine's other processes used meanwhile (tick-granular: ±10 ms a core).
        let others = match self.machine {
            Some((busy, steal)) => format!(
                ", others {:.0}%, steal {:.0}%",
                pct((busy - self.bench - self.broker.unwrap_or(0.0)).max(0.0)),
                pct(steal)
            ),
            None => String::new(),
        };
        format!(
            "cpu over {:.1} s: {broker}, bench {:.0}%{others} (of one core)",
            self.wall,
            pct(self.bench)
        )
    }
}
