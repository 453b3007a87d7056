//! A CI-sized soak (examples/soak, run in process): 20 seconds of mixed QoS 0/1/2 load
//! with retained messages, persistent subscribers that come and go, churning clients and
//! a kill -9 of the broker in the middle. No acknowledged QoS 1/2 message may be lost.

#[path = "../examples/soak/mqtt.rs"]
mod mqtt;
#[path = "../examples/soak/run.rs"]
mod run;
#[path = "../examples/soak/workers.rs"]
mod workers;

use std::time::Duration;

#[test]
fn soak_20s_with_kill9_restart_loses_no_acknowledged_message() {
    let opts = run::Opts {
        midge: env!("CARGO_BIN_EXE_midge").into(),
        duration: Duration::from_secs(20),
        drain: Duration::from_secs(20),
        sample_every: Duration::from_secs(2),
        restart: run::Restart::Kill,
        rate: 20,
        ..run::Opts::default()
    };
    let mut out = Vec::new();
    let report = run::run(&opts, &mut out).expect("soak ran");
    run::print(&opts, &report, &mut out);
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert_eq!(report.lost, 0, "acknowledged messages lost:\n{text}");
    assert_eq!(report.sessions_lost, 0, "sessions lost:\n{text}");
    assert_eq!(report.retained_stale, 0, "stale retained messages:\n{text}");
    assert_eq!(report.unexpected_exits, 0, "the broker died:\n{text}");
    assert!(
        report.acked[1] > 0 && report.acked[2] > 0,
        "no load ran:\n{text}"
    );
    assert!(report.retained_checks > 0, "no retained check ran:\n{text}");
    assert!(report.ok());
}
