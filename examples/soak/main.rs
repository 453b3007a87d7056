//! Soak test: mixed MQTT load against a midge it starts itself, for a bounded time, with
//! a broker restart in the middle. Publishers at QoS 0/1/2 (3.1.1 and 5.0), retained
//! messages and a checker of them, persistent subscribers that leave and come back,
//! clients that connect and go all the time. Reports sent / acknowledged / delivered /
//! lost, and the broker's RSS and open file descriptors over time. Exits 1 if an
//! acknowledged QoS 1/2 message never reached a persistent subscriber, a session or a
//! retained message went missing, or the broker died on its own.
//!
//!     cargo run --release --example soak -- --minutes 3
//!
//! scripts/soak.sh builds and runs it. Flags: --minutes M (default 30) or --seconds S,
//! --midge PATH (default: the midge binary next to this example's directory),
//! --restart kill|term|none (default kill), --sample-secs N (10), --rate MSGS_PER_SEC
//! per publisher (50), --publishers N per QoS (2), --subscribers N (3), --churners N (2),
//! --max-messages N per publisher (10000000), --payload BYTES (64).
//! Only 127.0.0.1.

mod mqtt;
mod run;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

fn parse(args: &[String]) -> Result<run::Opts, String> {
    let mut o = run::Opts::default();
    if let Ok(exe) = std::env::current_exe() {
        // target/<profile>/examples/soak -> target/<profile>/midge
        if let Some(dir) = exe.parent().and_then(|d| d.parent()) {
            o.midge = dir.join("midge");
        }
    }
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--minutes" => {
                o.duration = Duration::from_secs_f64(num(value)?.clamp(0.0, 24.0 * 60.0) * 60.0)
            }
            "--seconds" => o.duration = Duration::from_secs_f64(num(value)?.clamp(0.0, 86_400.0)),
            "--midge" => o.midge = value.into(),
            "--restart" => {
                o.restart = match value.as_str() {
                    "kill" => run::Restart::Kill,
                    "term" => run::Restart::Term,
                    "none" => run::Restart::None,
                    other => return Err(format!("--restart: kill, term or none, not {other}")),
                }
            }
            "--sample-secs" => o.sample_every = Duration::from_secs_f64(num(value)?.max(0.1)),
            "--rate" => o.rate = num(value)?.clamp(1.0, 100_000.0) as u32,
            "--publishers" => o.publishers_per_qos = num(value)?.clamp(1.0, 100.0) as usize,
            "--subscribers" => o.subscribers = num(value)?.clamp(1.0, 100.0) as usize,
            "--churners" => o.churners = num(value)?.clamp(0.0, 100.0) as usize,
            "--max-messages" => o.max_messages = num(value)?.max(1.0) as u64,
            "--payload" => o.payload_size = num(value)?.clamp(8.0, 1_000_000.0) as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    match run::run(&opts, &mut out) {
        Ok(report) => {
            run::print(&opts, &report, &mut out);
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}
