//! The `midge` command's subcommands. These are compiled into the binary only: the
//! library (the broker) never needs them, so they use it from outside, through its public
//! API, like any other program would.

pub mod check;
pub mod log_format;
mod log_time;
pub mod logging;
pub mod passwd;
