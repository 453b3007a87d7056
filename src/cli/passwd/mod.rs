//! `midge passwd`: manages password files, a work-alike of `mosquitto_passwd`.
//!
//! The command line follows `mosquitto_passwd` 2.x so that scripts and habits carry over:
//!
//! ```text
//! midge passwd [-H argon2id|sha512-pbkdf2|sha512] [-I iterations] [-c | -D] <file> <username>
//! midge passwd [-H ...] [-I iterations] [-c] -b <file> <username> <password>
//! midge passwd [-H ...] [-I iterations] -U <file>
//! ```
//!
//! Where midge differs, it is to avoid a way `mosquitto_passwd` loses data or misleads:
//! - comments and blank lines are kept (`mosquitto_passwd` stops at the first one with
//!   "Corrupt password file" and, for an update, drops every line after it);
//! - the file is replaced atomically (temporary file in the same directory, fsync, rename),
//!   keeping the old file's permissions and owner, so a crash or a full disk never leaves
//!   half a file; a new file is created with mode 0600;
//! - `-U` leaves entries that already hold a hash alone instead of hashing the hash, and
//!   hashes everything after the first `:` (Mosquitto cuts a password at a second `:`);
//! - `-I` without `-H sha512-pbkdf2` is an error rather than silently ignored;
//! - usernames that the reader would not see as written (leading `#`, leading or trailing
//!   whitespace) are refused, as Mosquitto already refuses `:` and control characters.
//!
//! This file is the command and the edits to the file's text; `replace.rs` writes the
//! result over the old file atomically.

mod replace;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use midge::auth::password::{self, HashKind, MAX_PBKDF2_ITERATIONS};

use replace::write_atomically;

/// Longest username or password `mosquitto_passwd` accepts (the MQTT limit for a string).
const MAX_LEN: usize = 65_535;

/// Arguments of `midge passwd`. `Debug` is written by hand so that a `-b` password never
/// reaches a log through `{:?}`.
#[derive(clap::Args)]
#[command(
    about = "Manage a Mosquitto-compatible password file",
    after_help = "Without -b, the password is read from the terminal, twice.\n\
                  Hashes written: argon2id as Mosquitto 2.1 writes it (default); $7$ \
                  sha512-pbkdf2 (readable by Mosquitto 2.0 and 2.1); $6$ sha512 (Mosquitto \
                  1.6 and earlier; weak)."
)]
pub struct PasswdArgs {
    /// Hash algorithm for new passwords
    #[arg(short = 'H', long = "hash", value_enum, default_value_t = HashArg::Argon2id)]
    pub hash: HashArg,

    /// PBKDF2 iterations (with -H sha512-pbkdf2 only) [default: 210000]
    #[arg(
        short = 'I',
        long = "iterations",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PBKDF2_ITERATIONS))
    )]
    pub iterations: Option<u32>,

    /// Create a new password file, overwriting an existing one (`-` as the file prints the
    /// entry on standard output)
    #[arg(short = 'c', long = "create", conflicts_with_all = ["delete", "upgrade"])]
    pub create: bool,

    /// Delete the user instead of adding or updating its password
    #[arg(short = 'D', long = "delete", conflicts_with_all = ["upgrade", "batch"])]
    pub delete: bool,

    /// Batch mode: take the password from the command line
    #[arg(short = 'b', long = "batch")]
    pub batch: bool,

    /// Upgrade a plain-text `user:password` file in place to hashed passwords
    #[arg(short = 'U', long = "upgrade")]
    pub upgrade: bool,

    /// The password file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The user to add, update or delete
    #[arg(value_name = "USERNAME")]
    pub username: Option<String>,

    /// The password (with -b only)
    #[arg(value_name = "PASSWORD", allow_hyphen_values = true)]
    pub password: Option<String>,
}

impl std::fmt::Debug for PasswdArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswdArgs")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .field("create", &self.create)
            .field("delete", &self.delete)
            .field("batch", &self.batch)
            .field("upgrade", &self.upgrade)
            .field("file", &self.file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `-H` values, with `mosquitto_passwd`'s names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HashArg {
    /// argon2id, as Mosquitto 2.1 writes it
    #[value(name = "argon2id")]
    Argon2id,
    /// $7$ PBKDF2-HMAC-SHA512, Mosquitto 2.0's default
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    /// $6$ salted SHA-512, Mosquitto 1.6 and earlier (fast to brute-force)
    #[value(name = "sha512")]
    Sha512,
}

impl From<HashArg> for HashKind {
    fn from(arg: HashArg) -> HashKind {
        match arg {
            HashArg::Argon2id => HashKind::Argon2id,
            HashArg::Sha512Pbkdf2 => HashKind::Sha512Pbkdf2,
            HashArg::Sha512 => HashKind::Sha512,
        }
    }
}

/// Runs `midge passwd`. Progress goes to standard output as `mosquitto_passwd` prints it;
/// the caller prints an error as "midge passwd: {e}" and exits with status 1.
pub fn run(args: PasswdArgs) -> Result<(), String> {
    let plan = Plan::from_args(args)?;
    let outcome = plan.execute(prompt_twice)?;
    let mut stdout = io::stdout().lock();
    for line in &outcome.stdout {
        writeln!(stdout, "{line}").map_err(|e| format!("cannot write to standard output: {e}"))?;
    }
    for warning in &outcome.warnings {
        eprintln!("midge passwd: warning: {warning}");
    }
    Ok(())
}

/// Reads the password from the terminal twice, as `mosquitto_passwd` does, so a typo does
/// not lock the user out.
fn prompt_twice() -> Result<String, String> {
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            format!("cannot read the password from the terminal ({e}); use -b to pass it as an argument")
        })
    };
    let first = read("Password: ")?;
    if first.is_empty() {
        return Err("empty password".into());
    }
    let second = read("Reenter password: ")?;
    if first != second {
        return Err("passwords do not match".into());
    }
    check_password(&first)?;
    Ok(first)
}

/// Where `-c` writes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    /// `-c -`: print the entry instead (Mosquitto 2.1 does the same).
    Stdout,
}

/// What one invocation will do, after its arguments were checked. (No `Debug`: it holds
/// the password.)
enum Action {
    /// `-c`: a file holding just this user. `password` is `None` until prompted for.
    Create {
        target: Target,
        username: String,
        password: Option<String>,
    },
    /// Add the user, or replace its password.
    Set {
        file: PathBuf,
        username: String,
        password: Option<String>,
    },
    /// `-D`.
    Delete { file: PathBuf, username: String },
    /// `-U`.
    Upgrade { file: PathBuf },
}

struct Plan {
    action: Action,
    kind: HashKind,
    iterations: Option<u32>,
}

/// What `execute` has to say: lines for standard output and warnings for standard error.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    stdout: Vec<String>,
    warnings: Vec<String>,
}

impl Plan {
    /// Checks the argument combinations `mosquitto_passwd` checks (clap already refuses
    /// `-c` with `-D` or `-U`, `-D` with `-U` or `-b`) and the username and password.
    fn from_args(args: PasswdArgs) -> Result<Plan, String> {
        let kind = HashKind::from(args.hash);
        if args.iterations.is_some() && kind != HashKind::Sha512Pbkdf2 {
            return Err("-I (iterations) applies only to -H sha512-pbkdf2".into());
        }
        let file = args.file;
        let is_stdout = file.as_os_str() == "-";
        if is_stdout && !args.create {
            return Err("`-` (standard output) as the file works only with -c".into());
        }
        let action = if args.upgrade {
            if args.batch || args.username.is_some() {
                return Err("-U takes only the password file".into());
            }
            Action::Upgrade { file }
        } else {
            let Some(username) = args.username else {
                return Err(if args.batch {
                    "-b needs the password file, the username and the password".into()
                } else {
                    "the password file and the username are missing".into()
                });
            };
            check_username(&username)?;
            let password = match (args.batch, args.password) {
                (true, Some(p)) => {
                    check_password(&p)?;
                    Some(p)
                }
                (true, None) => {
                    return Err("-b needs the password file, the username and the password".into())
                }
                (false, Some(_)) if args.delete => {
                    return Err("-D takes only the password file and the username".into())
                }
                (false, Some(_)) => {
                    return Err("a password on the command line needs -b (batch mode)".into())
                }
                (false, None) => None,
            };
            if args.delete {
                Action::Delete { file, username }
            } else if args.create {
                let target = if is_stdout {
                    Target::Stdout
                } else {
                    Target::File(file)
                };
                Action::Create {
                    target,
                    username,
                    password,
                }
            } else {
                Action::Set {
                    file,
                    username,
                    password,
                }
            }
        };
        Ok(Plan {
            action,
            kind,
            iterations: args.iterations,
        })
    }

    fn hash(&self, password: &str) -> Result<String, String> {
        password::try_hash_password(password.as_bytes(), self.kind, self.iterations)
    }

    /// Performs the action. The password to hash for `-c` and add/update is the `-b` one,
    /// or else comes from `prompt`, which is called only after the file to update was read:
    /// as with `mosquitto_passwd`, a missing or corrupt file is reported before anyone
    /// types a password.
    fn execute(&self, prompt: impl FnOnce() -> Result<String, String>) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        let batch = match &self.action {
            Action::Create { password, .. } | Action::Set { password, .. } => password.clone(),
            Action::Delete { .. } | Action::Upgrade { .. } => None,
        };
        let password = move || match batch {
            Some(p) => Ok(p),
            None => prompt(),
        };
        match &self.action {
            Action::Create {
                target, username, ..
            } => {
                let entry = format!("{username}:{}", self.hash(&password()?)?);
                match target {
                    Target::Stdout => outcome.stdout.push(entry),
                    Target::File(path) => {
                        outcome
                            .stdout
                            .push(format!("Adding password for user {username}"));
                        let warning = write_atomically(path, format!("{entry}\n").as_bytes())?;
                        outcome.warnings.extend(warning);
                    }
                }
            }
            Action::Set { file, username, .. } => {
                let text = read_existing(file)?;
                lines(&text, &origin(file))?;
                let hashed = self.hash(&password()?)?;
                let (new_text, edit) = set_entry(&text, &origin(file), username, &hashed)?;
                outcome.stdout.push(if edit.updated {
                    format!("Updating password for user {username}")
                } else {
                    format!("Adding password for user {username}")
                });
                for line in edit.removed_duplicates {
                    outcome.stdout.push(format!(
                        "Removed another entry for user {username} (line {line})"
                    ));
                }
                outcome
                    .warnings
                    .extend(write_atomically(file, new_text.as_bytes())?);
            }
            Action::Delete { file, username } => {
                let text = read_existing(file)?;
                let new_text = delete_entry(&text, &origin(file), username)?;
                outcome.stdout.push(format!("Deleted user {username}"));
                outcome
                    .warnings
                    .extend(write_atomically(file, new_text.as_bytes())?);
            }
            Action::Upgrade { file } => {
                let text = read_existing(file)?;
                let (new_text, counts) = upgrade_entries(&text, &origin(file), |p| self.hash(p))?;
                outcome.stdout.push(format!(
                    "Hashed {} password{}; {} entr{} already hashed, left as {}",
                    counts.hashed,
                    if counts.hashed == 1 { "" } else { "s" },
                    counts.already_hashed,
                    if counts.already_hashed == 1 {
                        "y was"
                    } else {
                        "ies were"
                    },
                    if counts.already_hashed == 1 {
                        "it was"
                    } else {
                        "they were"
                    },
                ));
                outcome
                    .warnings
                    .extend(write_atomically(file, new_text.as_bytes())?);
            }
        }
        Ok(outcome)
    }
}

/// Refuses usernames that `mosquitto_passwd` refuses (too long, `:`, control characters)
/// and those the file reader would not see as written: a leading `#` makes the line a
/// comment, and surrounding whitespace is trimmed when reading.
fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("the username must not be empty".into());
    }
    if username.len() > MAX_LEN {
        return Err(format!("the username must be at most {MAX_LEN} bytes long"));
    }
    if username.contains(':') {
        return Err("the username must not contain the ':' character".into());
    }
    if username.chars().any(char::is_control) {
        return Err("the username must not contain control characters".into());
    }
    if username.starts_with('#') {
        return Err(
            "the username must not start with '#' (the line would be read as a comment)".into(),
        );
    }
    if username.starts_with(char::is_whitespace) || username.ends_with(char::is_whitespace) {
        return Err(
            "the username must not start or end with whitespace (it is trimmed when the file \
             is read)"
                .into(),
        );
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_LEN {
        return Err(format!("the password must be at most {MAX_LEN} bytes long"));
    }
    Ok(())
}

fn origin(file: &Path) -> String {
    file.display().to_string()
}

/// Reads the file to edit; without `-c` it must exist, as with `mosquitto_passwd`.
fn read_existing(file: &Path) -> Result<String, String> {
    let shown = origin(file);
    let bytes = fs::read(file).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!("{shown}: no such file (use -c to create it)")
        } else {
            format!("{shown}: {e}")
        }
    })?;
    password::text_from_bytes(bytes, &shown)
}

/// One line of a password file as the editor sees it.
struct Line<'a> {
    /// The line with its terminator (`\n` or `\r\n`, or none for a last line without one).
    raw: &'a str,
    /// The username, if the line is an entry (not a comment or blank).
    username: Option<&'a str>,
    /// The text after the first `:`, trimmed.
    field: &'a str,
    /// The line's terminator, kept when the line is replaced.
    ending: &'a str,
}

/// Splits `text` into lines, refusing a line that is neither a comment, blank nor an entry
/// (`mosquitto_passwd` refuses those too: without the `:` the username is unknown).
fn lines<'a>(text: &'a str, origin: &str) -> Result<Vec<Line<'a>>, String> {
    let mut out = Vec::new();
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let body = raw.strip_suffix('\n').unwrap_or(raw);
        let body = body.strip_suffix('\r').unwrap_or(body);
        let ending = &raw[body.len()..];
        let (username, field) = match password::split_entry(body) {
            None => (None, ""),
            Some((Some(user), field)) => (Some(user), field),
            Some((None, _)) => {
                return Err(format!(
                    "{origin} line {}: missing `:` between the username and the password; \
                     fix the file by hand",
                    index + 1
                ))
            }
        };
        out.push(Line {
            raw,
            username,
            field,
            ending,
        });
    }
    Ok(out)
}

/// How [`set_entry`] changed the file.
#[derive(Debug, PartialEq, Eq)]
struct SetEdit {
    /// The user existed (its first entry was replaced in place).
    updated: bool,
    /// Lines (1-based, in the old file) of further entries for the same user, removed so
    /// the file stays loadable (midge refuses duplicate users).
    removed_duplicates: Vec<usize>,
}

/// Gives `username` the hash `hashed`: replaces its entry where it is, or appends one.
/// Every other line is kept byte for byte.
fn set_entry(
    text: &str,
    origin: &str,
    username: &str,
    hashed: &str,
) -> Result<(String, SetEdit), String> {
    let mut out = String::with_capacity(text.len() + hashed.len() + username.len() + 2);
    let mut edit = SetEdit {
        updated: false,
        removed_duplicates: Vec::new(),
    };
    for (index, line) in lines(text, origin)?.iter().enumerate() {
        if line.username != Some(username) {
            out.push_str(line.raw);
        } else if edit.updated {
            edit.removed_duplicates.push(index + 1);
        } else {
            edit.updated = true;
            out.push_str(&format!("{username}:{hashed}{}", line.ending));
        }
    }
    if !edit.updated {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{username}:{hashed}\n"));
    }
    Ok((out, edit))
}

/// Removes every entry of `username`; an error if there is none (as `mosquitto_passwd`).
fn delete_entry(text: &str, origin: &str, username: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in lines(text, origin)? {
        if line.username == Some(username) {
            found = true;
        } else {
            out.push_str(line.raw);
        }
    }
    if !found {
        return Err(format!("user {username} not found in {origin}"));
    }
    Ok(out)
}

/// What [`upgrade_entries`] did.
#[derive(Debug, PartialEq, Eq)]
struct UpgradeCounts {
    hashed: usize,
    already_hashed: usize,
}

/// Replaces each plain-text password with its hash (made by `hash`). Entries whose field is
/// already a hash midge accepts are left alone, so running `-U` twice is harmless
/// (`mosquitto_passwd -U` would hash the hashes, locking every user out).
fn upgrade_entries(
    text: &str,
    origin: &str,
    mut hash: impl FnMut(&str) -> Result<String, String>,
) -> Result<(String, UpgradeCounts), String> {
    let mut out = String::with_capacity(text.len() * 2);
    let mut counts = UpgradeCounts {
        hashed: 0,
        already_hashed: 0,
    };
    for (index, line) in lines(text, origin)?.iter().enumerate() {
        let Some(username) = line.username else {
            out.push_str(line.raw);
            continue;
        };
        if password::hash_kind_of(line.field).is_some() {
            counts.already_hashed += 1;
            out.push_str(line.raw);
            continue;
        }
        let at = || format!("{origin} line {}", index + 1);
        if username.is_empty() {
            return Err(format!("{}: empty username", at()));
        }
        if line.field.is_empty() {
            return Err(format!(
                "{}: empty password for user {}",
                at(),
                password::show_user(username)
            ));
        }
        check_password(line.field).map_err(|e| format!("{}: {e}", at()))?;
        let hashed = hash(line.field)?;
        counts.hashed += 1;
        out.push_str(&format!("{username}:{hashed}{}", line.ending));
    }
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use midge::auth::password::PasswordFile;

    /// Mounts `PasswdArgs` as the real binary does (`midge passwd ...`).
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Passwd(PasswdArgs),
    }

    fn parse(args: &[&str]) -> Result<PasswdArgs, String> {
        let argv = ["midge", "passwd"].iter().chain(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                cmd: Cmd::Passwd(a),
            }) => Ok(a),
            Err(e) => Err(e.to_string()),
        }
    }

    pub(super) fn run_args(args: &[&str]) -> Result<(), String> {
        run(parse(args)?)
    }

    /// A fresh directory per test, removed when dropped.
    pub(super) struct TempDir(pub(super) PathBuf);

    impl TempDir {
        pub(super) fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "midge-passwd-{}-{name}-{:08x}",
                std::process::id(),
                getrandom::u32().unwrap_or(0)
            ));
            let _ = fs::remove_dir_all(&dir);
            if let Err(e) = fs::create_dir_all(&dir) {
                panic!("cannot create {}: {e}", dir.display());
            }
            TempDir(dir)
        }

        pub(super) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        pub(super) fn arg(&self, name: &str) -> String {
            self.path(name).display().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn read(path: &Path) -> String {
        match fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        }
    }

    pub(super) fn load(path: &Path) -> PasswordFile {
        match PasswordFile::load(path) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    pub(super) fn ok<T>(r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    pub(super) fn err<T: std::fmt::Debug>(r: Result<T, String>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    /// Stands in for the terminal prompt: tests use -b, so it must never be called.
    fn no_prompt() -> Result<String, String> {
        panic!("the test tried to prompt for a password")
    }

    /// Fast hashing for tests that only need some valid hash.
    const FAST: [&str; 4] = ["-H", "sha512-pbkdf2", "-I", "10"];

    pub(super) fn with_fast<'a>(args: &[&'a str]) -> Vec<&'a str> {
        FAST.iter().copied().chain(args.iter().copied()).collect()
    }

    #[test]
    fn debug_output_hides_the_password() {
        let a = ok(parse(&["-b", "pw", "bob", "hunter2"]));
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("bob"),
            "{shown}"
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_mosquitto_passwd_style_command_lines() {
        let a = ok(parse(&["-c", "-b", "pw", "bob", "secret"]));
        assert!(a.create && a.batch && !a.delete && !a.upgrade);
        assert_eq!(a.hash, HashArg::Argon2id);
        assert_eq!(a.file, PathBuf::from("pw"));
        assert_eq!(a.username.as_deref(), Some("bob"));
        assert_eq!(a.password.as_deref(), Some("secret"));
        let a = ok(parse(&["-H", "sha512-pbkdf2", "-I", "1000", "pw", "bob"]));
        assert_eq!(a.hash, HashArg::Sha512Pbkdf2);
        assert_eq!(a.iterations, Some(1000));
        let a = ok(parse(&["-b", "pw", "bob", "-starts-with-dash"]));
        assert_eq!(a.password.as_deref(), Some("-starts-with-dash"));
        assert!(ok(parse(&["-U", "pw"])).upgrade);
        assert!(ok(parse(&["-D", "pw", "bob"])).delete);
    }

    #[test]
    fn conflicting_flags_are_refused_like_mosquitto_passwd() {
        assert!(parse(&["-c", "-D", "pw", "bob"]).is_err());
        assert!(parse(&["-c", "-U", "pw"]).is_err());
        assert!(parse(&["-D", "-U", "pw"]).is_err());
        assert!(parse(&["-D", "-b", "pw", "bob", "x"]).is_err());
        assert!(parse(&["-H", "md5", "pw", "bob"]).is_err());
        assert!(parse(&["-I", "0", "-H", "sha512-pbkdf2", "pw", "bob"]).is_err());
        assert!(parse(&["-I", "10000001", "-H", "sha512-pbkdf2", "pw", "bob"]).is_err());
    }

    #[test]
    fn argument_combinations_are_checked() {
        let e = err(run_args(&["-I", "1000", "-b", "pw", "bob", "x"]));
        assert_eq!(e, "-I (iterations) applies only to -H sha512-pbkdf2");
        let e = err(run_args(&["-b", "pw", "bob"]));
        assert_eq!(
            e,
            "-b needs the password file, the username and the password"
        );
        let e = err(run_args(&["pw", "bob", "x"]));
        assert_eq!(e, "a password on the command line needs -b (batch mode)");
        let e = err(run_args(&["pw"]));
        assert_eq!(e, "the password file and the username are missing");
        let e = err(run_args(&["-U", "pw", "bob"]));
        assert_eq!(e, "-U takes only the password file");
        let e = err(run_args(&["-D", "pw", "bob", "x"]));
        assert_eq!(e, "-D takes only the password file and the username");
        let e = err(run_args(&["-b", "-", "bob", "x"]));
        assert_eq!(e, "`-` (standard output) as the file works only with -c");
    }

    #[test]
    fn bad_usernames_are_refused() {
        for (name, msg) in [
            ("a:b", "the username must not contain the ':' character"),
            ("a\tb", "the username must not contain control characters"),
            ("#a", "the username must not start with '#'"),
            (" a", "the username must not start or end with whitespace"),
            ("a ", "the username must not start or end with whitespace"),
            ("", "the username must not be empty"),
        ] {
            let e = err(run_args(&["-b", "-c", "pw", name, "x"]));
            assert!(e.starts_with(msg), "{name:?}: {e}");
        }
        let long = "u".repeat(65_536);
        let e = err(run_args(&["-b", "-c", "pw", &long, "x"]));
        assert_eq!(e, "the username must be at most 65535 bytes long");
        assert!(check_username("a b").is_ok());
        assert!(check_username("Jürgen").is_ok());
    }

    #[test]
    fn over_long_password_is_refused() {
        let long = "p".repeat(65_536);
        let e = err(run_args(&["-b", "-c", "pw", "bob", &long]));
        assert_eq!(e, "the password must be at most 65535 bytes long");
    }

    #[test]
    fn create_batch_writes_a_0600_file_with_default_argon2id() {
        let dir = TempDir::new("create");
        let pw = dir.arg("pw");
        ok(run_args(&["-c", "-b", &pw, "bob", "s3cret"]));
        let text = read(&dir.path("pw"));
        assert!(
            text.starts_with("bob:$argon2id$v=19$m=47104,t=1,p=1$"),
            "{text}"
        );
        assert!(text.ends_with('\n') && text.lines().count() == 1);
        let f = load(&dir.path("pw"));
        assert!(f.verify("bob", b"s3cret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path("pw")).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        let leftovers: Vec<_> = fs::read_dir(&dir.0)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary file left behind: {leftovers:?}"
        );
    }

    #[test]
    fn create_overwrites_an_existing_file() {
        let dir = TempDir::new("overwrite");
        let pw = dir.arg("pw");
        assert!(fs::write(dir.path("pw"), "# old\nold:$6$x$y\n").is_ok());
        ok(run_args(&with_fast(&["-c", "-b", &pw, "new", "pass"])));
        let text = read(&dir.path("pw"));
        assert!(text.starts_with("new:$7$10$"), "{text}");
        assert_eq!(text.lines().count(), 1);
        assert!(load(&dir.path("pw")).verify("new", b"pass"));
    }

    #[test]
    fn create_to_stdout_writes_no_file() {
        let plan = ok(Plan::from_args(ok(parse(&[
            "-H", "sha512", "-c", "-b", "-", "bob", "pw",
        ]))));
        let outcome = ok(plan.execute(no_prompt));
        assert_eq!(outcome.stdout.len(), 1);
        let line = &outcome.stdout[0];
        assert!(line.starts_with("bob:$6$"), "{line}");
        let f = ok(PasswordFile::parse(line, "stdout"));
        assert!(f.verify("bob", b"pw"));
        assert!(!Path::new("-").exists());
    }

    #[test]
    fn every_hash_kind_can_be_chosen() {
        let dir = TempDir::new("kinds");
        let pw = dir.arg("pw");
        ok(run_args(&["-H", "sha512", "-c", "-b", &pw, "six", "a"]));
        ok(run_args(&[
            "-H",
            "sha512-pbkdf2",
            "-I",
            "1000",
            "-b",
            &pw,
            "seven",
            "b",
        ]));
        let text = read(&dir.path("pw"));
        assert!(
            text.contains("six:$6$") && text.contains("seven:$7$1000$"),
            "{text}"
        );
        let f = load(&dir.path("pw"));
        assert!(f.verify("six", b"a") && f.verify("seven", b"b"));
        assert!(!f.verify("six", b"b"));
    }

    #[test]
    fn update_replaces_the_users_line_and_keeps_everything_else() {
        let dir = TempDir::new("update");
        let pw = dir.arg("pw");
        ok(run_args(&with_fast(&["-c", "-b", &pw, "alice", "one"])));
        ok(run_args(&with_fast(&["-b", &pw, "bob", "two"])));
        let before = read(&dir.path("pw"));
        let alice_line = before.lines().next().unwrap_or_default().to_owned();
        // Add a comment, a blank line and CRLF line endings by hand.
        let edited = format!("# users\r\n\r\n{}", before.replace('\n', "\r\n"));
        assert!(fs::write(dir.path("pw"), &edited).is_ok());

        let outcome = ok(ok(Plan::from_args(ok(parse(&with_fast(&[
            "-b", &pw, "bob", "three",
        ])))))
        .execute(no_prompt));
        assert_eq!(outcome.stdout, ["Updating password for user bob"]);

        let after = read(&dir.path("pw"));
        let lines: Vec<&str> = after.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 4, "{after}");
        assert_eq!(lines[0], "# users\r\n");
        assert_eq!(lines[1], "\r\n");
        assert_eq!(lines[2], format!("{alice_line}\r\n"));
        assert!(lines[3].starts_with("bob:$7$10$") && lines[3].ends_with("\r\n"));
        let f = load(&dir.path("pw"));
        assert!(f.verify("bob", b"three"));
        assert!(!f.verify("bob", b"two"));
        assert!(f.verify("alice", b"one"));
    }

    #[test]
    fn adding_a_user_to_a_file_without_final_newline_starts_a_new_line() {
        let (text, edit) = ok(set_entry("# c\nalice:$6$a$b", "pw", "bob", "HASH"));
        assert_eq!(text, "# c\nalice:$6$a$b\nbob:HASH\n");
        assert_eq!(
            edit,
            SetEdit {
                updated: false,
                removed_duplicates: vec![]
            }
        );
        let (text, _) = ok(set_entry("", "pw", "bob", "HASH"));
        assert_eq!(text, "bob:HASH\n");
    }

    #[test]
    fn update_matches_trimmed_usernames_and_removes_duplicates() {
        let text = "a:1\n bob :old\nc:2\nbob:older\n#bob:comment\n";
        let (out, edit) = ok(set_entry(text, "pw", "bob", "NEW"));
        assert_eq!(out, "a:1\nbob:NEW\nc:2\n#bob:comment\n");
        assert_eq!(
            edit,
            SetEdit {
                updated: true,
                removed_duplicates: vec![4]
            }
        );
    }

    #[test]
    fn corrupt_line_stops_an_edit_with_its_line_number() {
        let e = err(set_entry("a:1\njunk\n", "pw", "bob", "NEW"));
        assert_eq!(
            e,
            "pw line 2: missing `:` between the username and the password; fix the file by hand"
        );
    }

    #[test]
    fn interactive_mode_uses_the_prompted_password_after_checking_the_file() {
        let dir = TempDir::new("prompt");
        let pw = dir.arg("pw");
        let plan = ok(Plan::from_args(ok(parse(&with_fast(&[&pw, "bob"])))));
        let e = err(plan.execute(no_prompt));
        assert_eq!(e, format!("{pw}: no such file (use -c to create it)"));
        assert!(fs::write(dir.path("pw"), "corrupt\n").is_ok());
        let e = err(plan.execute(no_prompt));
        assert!(e.starts_with(&format!("{pw} line 1: missing `:`")), "{e}");
        assert!(fs::remove_file(dir.path("pw")).is_ok());
        let plan = ok(Plan::from_args(ok(parse(&with_fast(&["-c", &pw, "bob"])))));
        ok(plan.execute(|| Ok("typed".to_owned())));
        assert!(load(&dir.path("pw")).verify("bob", b"typed"));
        let plan = ok(Plan::from_args(ok(parse(&with_fast(&[&pw, "bob"])))));
        let e = err(plan.execute(|| Err("passwords do not match".to_owned())));
        assert_eq!(e, "passwords do not match");
        assert!(load(&dir.path("pw")).verify("bob", b"typed"));
    }

    #[test]
    fn update_without_create_needs_an_existing_file() {
        let dir = TempDir::new("missing");
        let pw = dir.arg("pw");
        let e = err(run_args(&with_fast(&["-b", &pw, "bob", "x"])));
        assert_eq!(e, format!("{pw}: no such file (use -c to create it)"));
        assert!(!dir.path("pw").exists());
    }

    #[test]
    fn delete_removes_the_user_and_keeps_the_rest() {
        let dir = TempDir::new("delete");
        let pw = dir.arg("pw");
        ok(run_args(&with_fast(&["-c", "-b", &pw, "alice", "one"])));
        ok(run_args(&with_fast(&["-b", &pw, "bob", "two"])));
        let mut text = read(&dir.path("pw"));
        text.insert_str(0, "# keep me\n");
        assert!(fs::write(dir.path("pw"), &text).is_ok());
        ok(run_args(&["-D", &pw, "alice"]));
        let after = read(&dir.path("pw"));
        assert!(after.starts_with("# keep me\nbob:$7$10$"), "{after}");
        let f = load(&dir.path("pw"));
        assert!(!f.contains("alice"));
        assert!(f.verify("bob", b"two"));
    }

    #[test]
    fn deleting_an_unknown_user_is_an_error_and_changes_nothing() {
        let dir = TempDir::new("delete-missing");
        let pw = dir.arg("pw");
        assert!(fs::write(dir.path("pw"), "# only a comment\n").is_ok());
        let e = err(run_args(&["-D", &pw, "nobody"]));
        assert_eq!(e, format!("user nobody not found in {pw}"));
        assert_eq!(read(&dir.path("pw")), "# only a comment\n");
    }

    #[test]
    fn upgrade_hashes_plain_text_and_keeps_comments_and_existing_hashes() {
        let dir = TempDir::new("upgrade");
        let pw = dir.arg("pw");
        let existing = ok(password::try_hash_password(
            b"already",
            HashKind::Sha512,
            None,
        ));
        let text =
            format!("# plain-text file\n\nalice: pass:word \r\ncarol:{existing}\nbob:hunter2");
        assert!(fs::write(dir.path("pw"), &text).is_ok());
        let plan = ok(Plan::from_args(ok(parse(&with_fast(&["-U", &pw])))));
        let outcome = ok(plan.execute(no_prompt));
        assert_eq!(
            outcome.stdout,
            ["Hashed 2 passwords; 1 entry was already hashed, left as it was"]
        );
        let after = read(&dir.path("pw"));
        assert!(
            after.starts_with("# plain-text file\n\nalice:$7$10$"),
            "{after}"
        );
        assert!(
            after.contains(&format!("\r\ncarol:{existing}\nbob:$7$10$")),
            "{after}"
        );
        let f = load(&dir.path("pw"));
        assert!(f.verify("alice", b"pass:word"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(f.verify("carol", b"already"));

        // A second run changes nothing.
        ok(run_args(&with_fast(&["-U", &pw])));
        assert_eq!(read(&dir.path("pw")), after);
    }

    #[test]
    fn upgrade_refuses_an_empty_password() {
        let e = err(upgrade_entries("a:x\nbob:  \n", "pw", |p| Ok(p.to_owned())));
        assert_eq!(e, "pw line 2: empty password for user `bob`");
    }
}
