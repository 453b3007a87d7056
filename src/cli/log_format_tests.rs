//! The text format's lines, byte for byte: the documented ones (docs/operations.md, the
//! tests' `event_lines`), and every kind of field and escape compared with what
//! tracing-subscriber's default format writes for the same events.

use std::borrow::Cow;
use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::cli::log_time;

/// A writer that keeps what is logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf); // ok: unit test; never poisoned
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap() // ok: unit test; UTF-8 lines
    }
}

/// Which formatter writes the lines.
#[derive(Clone, Copy)]
enum Formatter {
    Ours,
    /// tracing-subscriber's default `Full` format, without the time.
    Default,
}

/// What `events` logs at every level, through `formatter`.
fn log(formatter: Formatter, ansi: bool, sanitize: bool, events: fn()) -> String {
    let out = Capture::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(out.clone())
        .with_ansi(ansi)
        .with_ansi_sanitization(sanitize);
    let registry = tracing_subscriber::registry();
    match formatter {
        Formatter::Ours => {
            let layer = layer.event_format(TextFormat { timestamp: false });
            tracing::subscriber::with_default(registry.with(layer), events);
        }
        Formatter::Default => {
            let layer = layer.without_time();
            tracing::subscriber::with_default(registry.with(layer), events);
        }
    }
    out.text()
}

/// Asserts that both formatters write the same lines for `events`, with colours and
/// without, and returns ours without colours.
fn same_as_default(events: fn()) -> String {
    for (ansi, sanitize) in [(false, true), (true, true), (false, false), (true, false)] {
        let ours = log(Formatter::Ours, ansi, sanitize, events);
        let default = log(Formatter::Default, ansi, sanitize, events);
        assert!(!ours.is_empty());
        for (o, d) in ours.lines().zip(default.lines()) {
            assert_eq!(o, d, "ansi {ansi}, sanitize {sanitize}");
        }
        assert_eq!(ours, default, "ansi {ansi}, sanitize {sanitize}");
    }
    log(Formatter::Ours, false, true, events)
}

fn connection_lines() {
    let peer: std::net::SocketAddr = "127.0.0.1:50312".parse().unwrap(); // ok: unit test
    let id: Cow<'_, str> = Cow::Borrowed("sensor-1");
    let user: Option<&str> = None;
    tracing::info!(
        target: "midge::handlers::connect",
        event = "client_connected",
        %peer,
        client_id = ?id,
        protocol = 4u8,
        clean = true,
        keep_alive = 30u16,
        user = user,
        "New client connected from {peer} as {} (p{}, c{}, k{}{}).",
        id,
        4u8,
        1u8,
        30u16,
        "",
    );
    tracing::info!(target: "midge::connection", event = "connection_closed", client_id = ?id, %peer, cause = "disconnect", "client disconnected");
}

#[test]
fn the_documented_lines() {
    assert_eq!(
        same_as_default(connection_lines),
        " INFO midge::handlers::connect: New client connected from 127.0.0.1:50312 as \
         sensor-1 (p4, c1, k30). event=\"client_connected\" peer=127.0.0.1:50312 \
         client_id=\"sensor-1\" protocol=4 clean=true keep_alive=30\n \
         INFO midge::connection: client disconnected event=\"connection_closed\" \
         client_id=\"sensor-1\" peer=127.0.0.1:50312 cause=\"disconnect\"\n"
    );
}

fn every_field_kind() {
    tracing::warn!(
        s = "plain",
        quoted = "say \"hi\"\\ now",
        newline = "a\nb\tc\r\0",
        control = "\x1b[31mred\x07\u{9b}\x7f",
        unicode = "é ü \u{301}x \u{200b}",
        u = u64::MAX,
        i = i64::MIN,
        small = -5i32,
        zero = 0u8,
        f = 1.5f64,
        big = 1e20f64,
        t = true,
        no = false,
        wide = u128::MAX,
        some = Some("x"),
        dbg = ?Some("x"),
        disp = %"a\"b",
        bytes = &b"\x00\xff"[..],
        r#type = "raw",
        "message first"
    );
    tracing::error!(a = 1, "message after a field {}", 2);
    tracing::debug!(only = "fields");
    tracing::trace!("");
    tracing::info!(message = "as a str\x1b[0m", k = "v");
    tracing::info!(message = 5u8);
}

#[test]
fn every_field_kind_as_the_default_format() {
    let ours = same_as_default(every_field_kind);
    assert!(ours.starts_with(
        " WARN midge::cli::log_format::tests: message first s=\"plain\" \
         quoted=\"say \\\"hi\\\"\\\\ now\" newline=\"a\\nb\\tc\\r\\0\" \
         control=\"\\u{1b}[31mred\\u{7}\\u{9b}\\u{7f}\""
    ));
    assert!(ours.contains(
        " u=18446744073709551615 i=-9223372036854775808 small=-5 zero=0 f=1.5 big=1e20 \
         t=true no=false "
    ));
    assert!(ours.contains(" some=\"x\" dbg=Some(\"x\") disp=a\"b "));
    assert!(ours.contains(" type=\"raw\"\n"));
    assert!(ours.contains("DEBUG midge::cli::log_format::tests: only=\"fields\"\n"));
    assert!(ours.contains("TRACE midge::cli::log_format::tests: \n"));
}

fn escapes_in_the_message() {
    let id = "x\x1b]0;owned\x07\u{85}\u{9f}\u{a0}\u{c2}y";
    tracing::info!("tab\there\nnewline {id} \x08\x0c\x7f end");
    tracing::info!("{}", "\u{80}");
}

#[test]
fn the_message_is_escaped_as_the_default_format_escapes_it() {
    let ours = same_as_default(escapes_in_the_message);
    assert_eq!(
        ours,
        " INFO midge::cli::log_format::tests: tab\there\nnewline \
         x\\x1b]0;owned\\x07\\u{85}\\u{9f}\u{a0}\u{c2}y \\x08\\x0c\\x7f end\n \
         INFO midge::cli::log_format::tests: \\u{80}\n"
    );
    // Off, nothing is escaped.
    let raw = log(Formatter::Ours, false, false, escapes_in_the_message);
    assert!(raw.contains("newline x\x1b]0;owned\x07\u{85}"));
}

#[test]
fn colours_only_when_on() {
    let plain = log(Formatter::Ours, false, true, connection_lines);
    assert!(!plain.contains('\x1b'));
    let coloured = log(Formatter::Ours, true, true, connection_lines);
    assert!(coloured.starts_with(
        "\x1b[32m INFO\x1b[0m \x1b[2mmidge::handlers::connect\x1b[0m\x1b[2m:\x1b[0m New client"
    ));
    assert!(coloured.contains(" \x1b[3mevent\x1b[0m\x1b[2m=\x1b[0m\"client_connected\" "));
}

#[derive(Debug)]
struct Outer(io::Error);

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outer \x1b failure")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn errors_spans_and_log_records() {
    let alone = io::Error::other("alone");
    let chained = Outer(io::Error::other("inner"));
    tracing::info!(
        error = &alone as &(dyn std::error::Error + 'static),
        "with an error"
    );
    tracing::info!(
        error = &chained as &(dyn std::error::Error + 'static),
        after = 1,
        "chained"
    );
    let outer = tracing::info_span!("conn", id = 3, peer = "p");
    let _outer = outer.enter();
    tracing::info_span!("empty").in_scope(|| tracing::info!(x = 1, "in spans"));
    drop(_outer);
    // A dependency's `log` record, as tracing-log's LogTracer hands it over.
    tracing_log::format_trace(
        &log::Record::builder()
            .args(format_args!("from log {}", 7))
            .level(log::Level::Warn)
            .target("rustls::conn")
            .module_path(Some("rustls::conn"))
            .file(Some("conn.rs"))
            .line(Some(12))
            .build(),
    )
    .unwrap(); // ok: unit test
}

#[test]
fn errors_spans_and_log_records_as_the_default_format() {
    let ours = same_as_default(errors_spans_and_log_records);
    assert_eq!(
        ours,
        " INFO midge::cli::log_format::tests: with an error error=alone\n \
         INFO midge::cli::log_format::tests: chained error=outer \\x1b failure \
         error.sources=[inner] after=1\n \
         INFO conn{id=3 peer=\"p\"}:empty: midge::cli::log_format::tests: in spans x=1\n \
         WARN rustls::conn: from log 7\n"
    );
}

#[test]
fn the_line_starts_with_the_time() {
    let out = Capture::default();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(out.clone())
        .with_ansi(false)
        .event_format(TextFormat::default());
    let before = SystemTime::now();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        tracing::info!("x")
    });
    let line = out.text();
    let mut expected = String::new();
    assert!(log_time::TimeCache::new().write(before, &mut expected));
    let (time, rest) = line.split_at(expected.len());
    // The same hour (or, rarely, the next one).
    assert_eq!(time[..13], expected[..13], "{line:?}");
    assert_eq!(
        time.replace(|c: char| c.is_ascii_digit(), "0"),
        "0000-00-00T00:00:00.000000Z"
    );
    assert_eq!(rest, "  INFO midge::cli::log_format::tests: x\n");
}
