//! CPU time over a scenario's traffic: the broker's (from /proc) and the load generator's.

use crate::procs;

#[derive(Default)]
pub struct CpuUse {
    pub broker: Option<f64>,
    pub bench: f64,
    pub wall: f64,
}

impl CpuUse {
    pub fn start(pid: Option<u32>) -> (Option<f64>, f64, std::time::Instant) {
        (
            pid.and_then(procs::cpu_secs),
            procs::own_cpu_secs(),
            std::time::Instant::now(),
        )
    }

    pub fn since(pid: Option<u32>, start: (Option<f64>, f64, std::time::Instant)) -> CpuUse {
        CpuUse {
            broker: match (pid.and_then(procs::cpu_secs), start.0) {
                (Some(b), Some(a)) => Some(b - a),
                _ => None,
            },
            bench: procs::own_cpu_secs() - start.1,
            wall: start.2.elapsed().as_secs_f64(),
        }
    }

    pub fn text(&self) -> String {
        let pct = |c: f64| 100.0 * c / self.wall.max(1e-9);
        let broker = self
            .broker
            .map_or("broker ?".to_owned(), |b| format!("broker {:.0}%", pct(b)));
        format!(
            "cpu over {:.1} s: {broker}, bench {:.0}% (of one core)",
            self.wall,
            pct(self.bench)
        )
    }
}
