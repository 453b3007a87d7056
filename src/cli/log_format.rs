//! The text log line (`log_format = "text"`): the same bytes as tracing-subscriber's
//! default `Full` format writes, for a fraction of the work.
//!
//! Every connection logs two lines at info (connected, closed), and through the default
//! formatter those cost more than the rest of the connection's setup and teardown: its
//! timestamp, level, numbers and field names each go through `core::fmt` and
//! `nu_ansi_term` wrappers (even with colours off), the message through an escaping
//! writer one character at a time, and every piece through a `dyn fmt::Write`. Here a
//! line is built in a buffer of the thread's own, and handed over in one piece: the
//! timestamp is a cached per-second prefix (see [`log_time`](super::log_time)), the
//! level, target and names are copied, numbers and plain strings are written directly,
//! and the message is checked for characters to escape many bytes at a time. What a
//! field's value needs `Debug` or `Display` for (`?x`, `%x`, the message's arguments)
//! still goes through `core::fmt`.
//!
//! A line: `TIMESTAMP LEVEL [span{fields}:]* target: message key=value key="string"`,
//! with ANSI colours only when the writer has them on (stderr at a terminal).

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::log_time::TimeCache;

// The escape codes nu_ansi_term writes for the styles the default format uses.
const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIMMED: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";

/// A line buffer grown past this is dropped after its line, not kept for the next.
const KEPT_CAPACITY: usize = 64 * 1024;

/// The text format's [`FormatEvent`].
pub struct TextFormat {
    /// Off only in tests, which compare lines with the default format's without time.
    timestamp: bool,
}

impl Default for TextFormat {
    fn default() -> TextFormat {
        TextFormat { timestamp: true }
    }
}

/// What a thread keeps from one line to the next.
struct Scratch {
    line: String,
    time: TimeCache,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch { line: String::new(), time: TimeCache::new() })
    };
}

/// Runs `f` with the thread's scratch, or fresh ones when the thread's are in use (a
/// value's `Debug` that logs) or gone (a thread ending).
fn with_scratch<R>(mut f: impl FnMut(&mut Scratch) -> R) -> R {
    let kept = SCRATCH.try_with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        scratch.line.clear();
        let r = f(&mut scratch);
        if scratch.line.capacity() > KEPT_CAPACITY {
            scratch.line = String::new();
        }
        Some(r)
    });
    match kept {
        Ok(Some(r)) => r,
        _ => f(&mut Scratch {
            line: String::new(),
            time: TimeCache::new(),
        }),
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = w.has_ansi_escapes();
        let sanitize = w.sanitizes_ansi_escapes();
        with_scratch(|scratch| {
            let line = &mut scratch.line;
            if self.timestamp {
                timestamp(line, &mut scratch.time, ansi);
            }
            // A `log` record (a dependency's, through tracing-log) carries its own target.
            let normalized = event.normalized_metadata();
            let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
            line.push_str(level(*meta.level(), ansi));
            spans(ctx, line, ansi);
            if ansi {
                for part in [DIMMED, meta.target(), RESET, DIMMED, ":", RESET, " "] {
                    line.push_str(part);
                }
            } else {
                line.push_str(meta.target());
                line.push_str(": ");
            }
            let mut fields = Fields {
                line,
                ansi,
                sanitize,
                first: true,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
            line.push('\n');
            w.write_str(line)
        })
    }
}

fn timestamp(line: &mut String, cache: &mut TimeCache, ansi: bool) {
    if ansi {
        line.push_str(DIMMED);
    }
    let now = SystemTime::now();
    // Before 1970 or after 9999: the default timer's forms of those.
    if !cache.write(now, line)
        && tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(line))
            .is_err()
    {
        line.push_str("<unknown time>");
    }
    if ansi {
        line.push_str(RESET);
    }
    line.push(' ');
}

/// The level, padded to five characters, and the space after it.
fn level(level: Level, ansi: bool) -> &'static str {
    match (level, ansi) {
        (Level::TRACE, false) => "TRACE ",
        (Level::DEBUG, false) => "DEBUG ",
        (Level::INFO, false) => " INFO ",
        (Level::WARN, false) => " WARN ",
        (Level::ERROR, false) => "ERROR ",
        (Level::TRACE, true) => "\x1b[35mTRACE\x1b[0m ",
        (Level::DEBUG, true) => "\x1b[34mDEBUG\x1b[0m ",
        (Level::INFO, true) => "\x1b[32m INFO\x1b[0m ",
        (Level::WARN, true) => "\x1b[33m WARN\x1b[0m ",
        (Level::ERROR, true) => "\x1b[31mERROR\x1b[0m ",
    }
}

/// The spans the event is in, outermost first: `name{fields}:` each (midge has none of
/// its own today; a dependency's would show).
fn spans<S, N>(ctx: &FmtContext<'_, S, N>, line: &mut String, ansi: bool)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let Some(scope) = ctx.event_scope() else {
        return;
    };
    let (bold, dimmed, reset) = if ansi {
        (BOLD, DIMMED, RESET)
    } else {
        ("", "", "")
    };
    let mut seen = false;
    for span in scope.from_root() {
        seen = true;
        for part in [bold, span.metadata().name(), reset] {
            line.push_str(part);
        }
        let ext = span.extensions();
        if let Some(fields) = ext.get::<FormattedFields<N>>() {
            if !fields.is_empty() {
                for part in [bold, "{", reset, fields.fields.as_str(), bold, "}", reset] {
                    line.push_str(part);
                }
            }
        }
        for part in [dimmed, ":", reset] {
            line.push_str(part);
        }
    }
    if seen {
        line.push(' ');
    }
}

/// Writes an event's fields: the message as it is (escaped), then ` name=value` each.
struct Fields<'a> {
    line: &'a mut String,
    ansi: bool,
    /// Escape ANSI and C1 control characters in the message (tracing-subscriber's
    /// default, against terminal injection).
    sanitize: bool,
    /// No field written yet (none needs a space before it).
    first: bool,
    /// A value's `Debug` or `Display` failed: the line is not written.
    result: fmt::Result,
}

/// What [`Fields::start`] found a field to be.
#[derive(PartialEq)]
enum Start {
    /// Not written: a `log` record's metadata (`log.target`, ...), which is in the line's
    /// head already.
    Skip,
    /// The message: its value follows, without a name.
    Message,
    /// `name=` was written; the value follows.
    Named,
}

impl Fields<'_> {
    /// The space before the field and its `name=`.
    fn start(&mut self, field: &Field) -> Start {
        let name = field.name();
        if name.starts_with("log.") {
            return Start::Skip;
        }
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if name == "message" {
            return Start::Message;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if self.ansi {
            for part in [ITALIC, name, RESET, DIMMED, "=", RESET] {
                self.line.push_str(part);
            }
        } else {
            self.line.push_str(name);
            self.line.push('=');
        }
        Start::Named
    }

    fn number(&mut self, field: &Field, n: u64, negative: bool) {
        if self.start(field) != Start::Skip {
            push_u64(self.line, n, negative);
        }
    }

    /// `value` in the message: escaped when sanitizing.
    fn message(&mut self, value: fmt::Arguments<'_>) {
        self.result = write_escaped(self.line, value, self.sanitize).and(self.result);
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.start(field) {
            Start::Skip => {}
            Start::Message => self.message(format_args!("{value:?}")),
            Start::Named => self.result = write!(self.line, "{value:?}").and(self.result),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            Start::Skip => {}
            Start::Message if self.sanitize => push_sanitized(self.line, value),
            Start::Message => self.line.push_str(value),
            Start::Named => push_quoted(self.line, value),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value, false);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value.unsigned_abs(), value < 0);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) != Start::Skip {
            self.line.push_str(if value { "true" } else { "false" });
        }
    }

    /// As the default format writes an error (rare: no midge line logs one): its
    /// `Display`, escaped, then ` name.sources=[...]` when it has sources.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let start = self.start(field);
        if start == Start::Skip {
            return;
        }
        let mut text = String::new();
        let mut result = write_error(&mut text, value, self.sanitize);
        if let Some(source) = value.source() {
            let (italic, dimmed, reset) = if self.ansi {
                (ITALIC, DIMMED, RESET)
            } else {
                ("", "", "")
            };
            let name = field.name();
            for part in [" ", italic, name, reset, italic, ".sources", reset] {
                text.push_str(part);
            }
            for part in [dimmed, "=", reset, "["] {
                text.push_str(part);
            }
            let mut next = Some(source);
            while let Some(error) = next {
                if !text.ends_with('[') {
                    text.push_str(", ");
                }
                result = result.and(write_error(&mut text, error, self.sanitize));
                next = error.source();
            }
            text.push(']');
        }
        self.result = result.and(self.result);
        // The message is escaped once more, as a whole.
        match start {
            Start::Message => self.message(format_args!("{text}")),
            _ => self.line.push_str(&text),
        }
    }
}

fn write_error(
    out: &mut String,
    error: &(dyn std::error::Error + 'static),
    sanitize: bool,
) -> fmt::Result {
    write_escaped(out, format_args!("{error}"), sanitize)
}

/// Appends `value`, escaped as [`push_sanitized`] does when `sanitize`. Checked once
/// written, in one pass, rather than piece by piece as `core::fmt` hands the pieces over;
/// the rare text with something to escape is written again, escaped.
fn write_escaped(out: &mut String, value: fmt::Arguments<'_>, sanitize: bool) -> fmt::Result {
    let start = out.len();
    let result = out.write_fmt(value);
    if sanitize && !plain_ascii(out.get(start..).unwrap_or_default()) {
        let raw = out.split_off(start);
        push_sanitized(out, &raw);
    }
    result
}

/// `s` as `Debug` writes it: quoted, and escaped. Most strings need no escape and are
/// copied between the quotes; others go through `Debug`.
fn push_quoted(line: &mut String, s: &str) {
    // No early exit: the compiler checks many bytes at a time.
    let plain = !s.bytes().fold(false, |escape, b| {
        escape | !(b' '..=b'~').contains(&b) | (b == b'"') | (b == b'\\')
    });
    if plain {
        line.push('"');
        line.push_str(s);
        line.push('"');
    } else {
        // Writing to a String cannot fail.
        let _ = write!(line, "{s:?}");
    }
}

/// `n` (negated when `negative`) in decimal, as `Debug` and `Display` write it.
fn push_u64(line: &mut String, mut n: u64, negative: bool) {
    let mut digits = [0u8; 20];
    let mut count = 0;
    for d in digits.iter_mut() {
        *d = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        line.push('-');
    }
    line.extend(digits.iter().take(count).rev().map(|&d| char::from(d)));
}

/// Appends `s` to `line`, escaping as tracing-subscriber's `EscapeGuard` does the
/// characters that would let a logged message drive the terminal: ESC, BEL, BS, FF, DEL
/// as `\x1b` and so on, and the C1 controls (U+0080..U+009F) as `\u{9b}`. Tabs and
/// newlines pass.
fn push_sanitized(line: &mut String, s: &str) {
    if plain_ascii(s) {
        line.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\x07' => line.push_str("\\x07"),
            '\x08' => line.push_str("\\x08"),
            '\x0c' => line.push_str("\\x0c"),
            '\x1b' => line.push_str("\\x1b"),
            '\x7f' => line.push_str("\\x7f"),
            '\u{80}'..='\u{9f}' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let c1 = c as usize;
                line.push_str("\\u{");
                line.push(char::from(HEX[c1 >> 4]));
                line.push(char::from(HEX[c1 & 0xf]));
                line.push('}');
            }
            c => line.push(c),
        }
    }
}

/// Whether `s` is printable ASCII only, so has nothing [`push_sanitized`] escapes. One
/// pass without early exit, which the compiler checks many bytes at a time.
fn plain_ascii(s: &str) -> bool {
    !s.bytes()
        .fold(false, |odd, b| odd | !(b' '..=b'~').contains(&b))
}

#[cfg(test)]
#[path = "log_format_tests.rs"]
mod tests;
