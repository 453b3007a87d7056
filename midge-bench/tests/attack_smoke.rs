//! A CI-sized check of `midge-bench attack`: one cheap attack (slow CONNECTs) against the
//! real midge for a couple of seconds produces a row of the table, with the broker's
//! memory measured and the attacker's outcome recorded. No timing thresholds.

use std::path::PathBuf;
use std::process::Command;

/// The midge binary of this target directory and profile, built if this package is
/// tested alone (`cargo test -p midge-bench`); `MIDGE_BIN` overrides.
fn midge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MIDGE_BIN") {
        return p.into();
    }
    // target/<profile>/deps/attack_smoke-<hash> -> target/<profile>/midge
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("midge");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "midge", "--bin", "midge"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build of midge failed");
    }
    bin
}

#[test]
fn attack_harness_runs_slow_connect_against_midge_and_writes_a_row() {
    let dir = std::env::temp_dir().join(format!("midge-attack-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("attacks.md");
    let midge = midge_bin();
    let output = Command::new(env!("CARGO_BIN_EXE_midge-bench"))
        .arg("attack")
        .args(["--attacks", "preauth-slow", "--brokers", "midge"])
        .arg("--midge")
        .arg(&midge)
        .args(["--secs", "2", "--hold", "1"])
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(&dir)
        .arg("--work-dir")
        .arg(dir.join("work"))
        .output()
        .expect("run midge-bench attack");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "midge-bench attack failed: {stderr}"
    );
    let md = std::fs::read_to_string(&out).expect("table written");
    let _ = std::fs::remove_dir_all(&dir);
    let row = md
        .lines()
        .find(|l| l.starts_with("| preauth-slow | midge | 1 |"))
        .unwrap_or_else(|| panic!("no row for preauth-slow in:\n{md}"));
    assert!(!row.contains("did not start"), "{row}");
    // The attacker's outcome: how many slow connections the broker still held.
    assert!(row.contains("still open after"), "{row}");
    // RSS measured before and at the peak (a number, not "-").
    let rss = row.split('|').nth(6).unwrap_or("").trim();
    let before = rss.split(' ').next().unwrap_or("-");
    assert!(before.parse::<f64>().is_ok_and(|v| v > 0.0), "{row}");
}
