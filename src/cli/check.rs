//! `midge check-config -c FILE`: parses the configuration, checks every file it names and
//! whether each listener's address can be bound, and lists every problem found (exit 1),
//! or says "config OK" (exit 0). Nothing is started.

use std::path::PathBuf;

use clap::Args;
use midge::Config;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to check.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Checks the file; prints the problems (stderr) or "config OK" (stdout). Returns whether
/// the configuration is good.
pub fn run(args: &CheckArgs) -> bool {
    let path = &args.config;
    let origin = path.display().to_string();
    // A file that does not parse has nothing more to check.
    let mut config = match Config::load_unchecked(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("midge check-config: {origin}: 1 problem");
            return false;
        }
    };
    let mut problems: Vec<String> = config
        .problems(&origin)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    // As midge would run it: every path taken from the config file's directory.
    config.resolve_paths(path.parent());
    let report = midge::check::files(&config, &origin);
    problems.extend(report.problems);
    for warning in &report.warnings {
        eprintln!("warning: {origin}: {warning}");
    }
    if problems.is_empty() {
        println!("{origin}: config OK");
        return true;
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    let n = problems.len();
    eprintln!(
        "midge check-config: {origin}: {n} problem{}",
        if n == 1 { "" } else { "s" }
    );
    false
}
