//! Mosquitto-compatible password files (`password_file` in mosquitto.conf).
//!
//! A password file holds one `username:hash` entry per line. midge reads every hash format
//! that `mosquitto_passwd` 2.0 and 2.1 write, so an existing Mosquitto installation can move
//! to midge with its password file unchanged, and writes the format Mosquitto 2.1 writes by
//! default (argon2id), so a file edited with `midge passwd` still works with Mosquitto 2.1.
//!
//! The hash formats, and decoding and writing hashes, are in `hash.rs`; this file reads the
//! file itself: lines, comments, usernames, and the checks on each entry.
//!
//! The file is untrusted input: every line is checked when the file is loaded, and costs a
//! hostile file could use to stall the broker (argon2 memory and passes, PBKDF2 iterations)
//! are bounded then, so the broker refuses the file at start-up instead of hanging on a
//! CONNECT later.

mod hash;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hash::{decode_hash, DecodedHash};
pub use hash::{
    hash_kind_of, try_hash_password, HashKind, DEFAULT_PBKDF2_ITERATIONS, MAX_ARGON2_LANES,
    MAX_ARGON2_MEMORY_KIB, MAX_ARGON2_PASSES, MAX_PBKDF2_ITERATIONS,
};

/// Mosquitto 2.0 and 2.1 skip usernames and password fields longer than this; midge
/// refuses them. (An MQTT username cannot be longer anyway.)
const MAX_FIELD_LEN: usize = 65_535;

/// A parsed password file: username -> its decoded hash.
#[derive(Clone)]
pub struct PasswordFile {
    users: HashMap<String, DecodedHash>,
    /// Verified for usernames not in the file, so that the time to reject a CONNECT does
    /// not reveal which usernames exist. Same algorithm and cost as the file's first entry.
    dummy: DecodedHash,
}

/// Shows only the number of users: hashes must not end up in logs.
impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// Reads and parses `path`. Errors are one-line messages naming the file and line, e.g.
    /// "passwords.txt line 3: unknown hash format `$9$` for user `bob`". Never includes a
    /// hash or password in a message.
    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("{origin}: {e}"))?;
        let text = text_from_bytes(bytes, &origin)?;
        PasswordFile::parse(&text, &origin)
    }

    /// Parses the text of a password file; `origin` names the file in messages.
    ///
    /// Follows Mosquitto's reader where it is well defined, and refuses with an error where
    /// Mosquitto would silently skip or guess:
    /// - a line starting with `#` is a comment; a line of only whitespace is skipped;
    /// - otherwise the username is everything before the first `:` and the hash everything
    ///   after it, each with surrounding whitespace (including a trailing `\r`) trimmed, as
    ///   Mosquitto trims them;
    /// - errors (Mosquitto skips these lines, sometimes with a log notice): a line without
    ///   `:`, an empty username or hash, a username or hash over 65535 bytes, a hash that is
    ///   not one of the formats above (plain-text passwords included), a second `:` after
    ///   the hash (Mosquitto ignores the rest), and a duplicate username (Mosquitto 2.0 then
    ///   uses one of the entries, depending on its hash table's state; 2.1 the first).
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users: HashMap<String, (usize, DecodedHash)> = HashMap::new();
        // Verified for unknown users: the first entry's algorithm and cost.
        let mut dummy: Option<DecodedHash> = None;
        for (index, line) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let Some((username, field)) = split_entry(line) else {
                continue;
            };
            let at = |msg: String| format!("{origin} line {line_no}: {msg}");
            let Some(username) = username else {
                return Err(at(
                    "missing `:` between the username and the password hash".into()
                ));
            };
            if username.is_empty() {
                return Err(at("empty username".into()));
            }
            if username.len() > MAX_FIELD_LEN {
                return Err(at(format!("username longer than {MAX_FIELD_LEN} bytes")));
            }
            let who = show_user(username);
            if field.is_empty() {
                return Err(at(format!("missing password hash for user {who}")));
            }
            if field.len() > MAX_FIELD_LEN {
                return Err(at(format!(
                    "password hash longer than {MAX_FIELD_LEN} bytes for user {who}"
                )));
            }
            if field.contains(':') {
                return Err(at(format!(
                    "unexpected `:` after the password hash for user {who}"
                )));
            }
            let decoded = decode_hash(field).map_err(|e| at(format!("{e} for user {who}")))?;
            if let Some((earlier, _)) = users.get(username) {
                return Err(at(format!(
                    "duplicate user {who} (first defined on line {earlier})"
                )));
            }
            if dummy.is_none() {
                dummy = Some(decoded.dummy_like());
            }
            users.insert(username.to_owned(), (line_no, decoded));
        }
        Ok(PasswordFile {
            users: users.into_iter().map(|(u, (_, s))| (u, s)).collect(),
            dummy: dummy.unwrap_or_else(DecodedHash::default_dummy),
        })
    }

    /// True iff `username` is in the file and `password` matches its hash. The derived hash
    /// is compared in constant time. For an unknown user a dummy hash with the same cost as
    /// the file's first entry is verified anyway, so response time does not reveal which
    /// users exist. CPU-heavy (argon2): call it from `spawn_blocking`.
    ///
    /// The whole password is hashed, NUL bytes included (Mosquitto stops at the first NUL,
    /// so it would also accept any password that merely starts with the right one).
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.matches(password),
            None => {
                std::hint::black_box(self.dummy.matches(password));
                false
            }
        }
    }

    /// True iff `username` has an entry (whatever its password).
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The format of `username`'s hash, if the user exists.
    pub fn hash_kind(&self, username: &str) -> Option<HashKind> {
        self.users.get(username).map(DecodedHash::kind)
    }

    /// The number of users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True iff the file has no users (every CONNECT with a username will be refused).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Whitespace as C's `isspace` sees it, which is what Mosquitto trims around usernames and
/// hashes (`str::trim` would also strip Unicode spaces, which Mosquitto keeps).
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn trim_c_space(s: &str) -> &str {
    s.trim_matches(is_c_space)
}

/// Splits one line of a password file the way midge's reader and `midge passwd` both see it.
///
/// Returns `None` for lines without an entry (comments: `#` in the first column, as in
/// Mosquitto; and lines of only whitespace); `Some((None, rest))` for a non-blank line
/// without `:`; otherwise `Some((Some(username), field))`, both trimmed.
pub fn split_entry(line: &str) -> Option<(Option<&str>, &str)> {
    if line.starts_with('#') || trim_c_space(line).is_empty() {
        return None;
    }
    match line.split_once(':') {
        Some((user, field)) => Some((Some(trim_c_space(user)), trim_c_space(field))),
        None => Some((None, trim_c_space(line))),
    }
}

/// Turns file bytes into text, naming the first line that is not UTF-8 (usernames in MQTT
/// are UTF-8, so such a line could never match anyway).
pub fn text_from_bytes(bytes: Vec<u8>, origin: &str) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("{origin} line {line}: not valid UTF-8")
    })
}

/// A username as shown in messages: in backticks, with control characters escaped so a
/// hostile file cannot forge log lines.
pub fn show_user(username: &str) -> String {
    format!("`{}`", username.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`try_hash_password`] for the tests, which have a working random number generator.
    pub(super) fn hash_password(
        password: &[u8],
        kind: HashKind,
        iterations: Option<u32>,
    ) -> String {
        match try_hash_password(password, kind, iterations) {
            Ok(hash) => hash,
            Err(e) => panic!("{e}"),
        }
    }

    /// Written by the real `mosquitto_passwd` 2.0.11: `mosquitto_passwd -b -c pw user secret`
    /// (its default, `$7$` with 101 iterations and a 12-byte salt).
    pub(super) const MOSQ_PBKDF2_101: &str = "$7$101$1STlTNz9Ws5gvSDw$iKbkUY4Fh4fb/qOusCGJwwS2zE8VGaBKgwWlMnkqjebmVDNimPXkiYCFaSWBdh23wDtdMzBMOKYkMOs8CoEsGA==";
    /// `mosquitto_passwd -I 1000 -b pw user7b secret` (2.0.11).
    pub(super) const MOSQ_PBKDF2_1000: &str = "$7$1000$fMfPbpf7b8QHZ1VE$IQ84Hxkljx8Tby4uf73tZ00kqubVbGne4b/CNRfj6ybnp8oBC1TDElDuIXVFoNmFtTRAGMKpZxi6r3GekhMhRw==";
    /// `mosquitto_passwd -H sha512 -b pw user6 secret` (2.0.11).
    pub(super) const MOSQ_SHA512: &str = "$6$drY0xgQp2iz+vdv6$j+lD3eeiuKoM30NBv7QEHaIKYnnwnKGvPO1q8bG4Kx1u2SKbHeDB11hFJAgU2I1IZjGy8fUUqO5SJ0tnAVvLbw==";
    /// Password "p:ss wörd" for user "we ird", by `mosquitto_passwd -b pw 'we ird' 'p:ss wörd'`.
    pub(super) const MOSQ_PBKDF2_ODD: &str = "$7$101$3t7C9g2sCkseaMLF$20YAoEX6kNDqzvHFfqQvI5q9TjF/0CGtUimddZGODZ5XZPIIB7/bNch4s5InL37PMIbxPbKdaZRd5rU5xWB2tg==";
    /// Password "secret", by libargon2 20171227 (the reference C library Mosquitto 2.1
    /// links) through `argon2id_hash_encoded` with exactly Mosquitto 2.1's call: t=1,
    /// m=47104, p=1, 64-byte random salt, 64-byte output.
    pub(super) const LIBARGON2_MOSQ21: &str = "$argon2id$v=19$m=47104,t=1,p=1$he3ayzKBBuVsrXssXfDxRwL4okZBYuL2eQ7REpnbG1Ck5NEcHfPOq3kSiwheV+qNn47KvX+o1FaiZw2JZkel9Q$gCFkumk5Tf9t5MIjLz4ag45kvMy6fHoaQ5QC8me4QEQmFtIlTVJd0tNVAju+JOTRHYz3rOYKnZoJDTECgKxwyw";
    /// Password "secret", by libargon2 with cheap parameters (t=2, m=64, p=1, salt
    /// "saltsaltsalt1234", 32-byte output), for fast tests.
    pub(super) const LIBARGON2_CHEAP: &str =
        "$argon2id$v=19$m=64,t=2,p=1$c2FsdHNhbHRzYWx0MTIzNA$yxw+Yn3YMubMJZuGCpwAcfUYnytZ7ZDrA0cixPjb6yI";

    pub(super) fn file(text: &str) -> PasswordFile {
        match PasswordFile::parse(text, "test.txt") {
            Ok(f) => f,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    pub(super) fn parse_err(text: &str) -> String {
        match PasswordFile::parse(text, "passwords.txt") {
            Ok(_) => panic!("expected a parse error for {text:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unknown_user_is_refused() {
        let f = file(&format!("user:{MOSQ_PBKDF2_101}\n"));
        assert!(!f.verify("nobody", b"secret"));
        assert!(!f.verify("", b"secret"));
        assert!(!f.verify("User", b"secret"));
        assert!(!f.contains("nobody"));
        assert!(f.contains("user"));
    }

    #[test]
    fn empty_file_has_no_users() {
        let f = file("# nobody yet\n\n");
        assert!(f.is_empty());
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn unknown_user_with_argon2_file_is_refused() {
        let f = file(&format!("a:{LIBARGON2_CHEAP}\n"));
        assert!(!f.verify("b", b"secret"));
        assert!(matches!(f.dummy, DecodedHash::Argon2id { .. }));
    }

    #[test]
    fn comments_blank_lines_crlf_and_whitespace_follow_mosquitto() {
        let text = format!(
            "# a comment: with a colon\n\n   \t\n user :\t{MOSQ_PBKDF2_101} \r\nuser6:{MOSQ_SHA512}\r\n\n"
        );
        let f = file(&text);
        assert_eq!(f.len(), 2);
        assert!(f.verify("user", b"secret"));
        assert!(f.verify("user6", b"secret"));
        assert!(!f.contains(" user "));
    }

    #[test]
    fn last_line_without_newline_and_leading_bom_are_read() {
        let f = file(&format!("\u{feff}user:{MOSQ_PBKDF2_101}"));
        assert!(f.verify("user", b"secret"));
    }

    #[test]
    fn hash_in_column_one_is_a_comment_but_elsewhere_part_of_a_username() {
        let f = file(&format!("#user:{MOSQ_SHA512}\n #user:{MOSQ_SHA512}\n"));
        assert_eq!(f.len(), 1);
        assert!(f.verify("#user", b"secret"));
    }

    #[test]
    fn unicode_username_is_read() {
        let f = file(&format!("Jürgen 🚀:{MOSQ_SHA512}\n"));
        assert!(f.verify("Jürgen 🚀", b"secret"));
    }

    #[test]
    fn error_missing_colon() {
        let e = parse_err(&format!("a:{MOSQ_SHA512}\nbob\n"));
        assert_eq!(
            e,
            "passwords.txt line 2: missing `:` between the username and the password hash"
        );
    }

    #[test]
    fn error_empty_username_or_hash() {
        assert_eq!(
            parse_err(&format!(" :{MOSQ_SHA512}")),
            "passwords.txt line 1: empty username"
        );
        assert_eq!(
            parse_err("bob:  \n"),
            "passwords.txt line 1: missing password hash for user `bob`"
        );
    }

    #[test]
    fn error_extra_colon_after_hash() {
        assert_eq!(
            parse_err(&format!("bob:{MOSQ_SHA512}:extra")),
            "passwords.txt line 1: unexpected `:` after the password hash for user `bob`"
        );
    }

    #[test]
    fn error_duplicate_user() {
        let e = parse_err(&format!("bob:{MOSQ_SHA512}\n# x\nbob :{MOSQ_PBKDF2_101}\n"));
        assert_eq!(
            e,
            "passwords.txt line 3: duplicate user `bob` (first defined on line 1)"
        );
    }

    #[test]
    fn error_over_long_fields() {
        let long_user = "u".repeat(65_536);
        let e = parse_err(&format!("{long_user}:{MOSQ_SHA512}"));
        assert_eq!(e, "passwords.txt line 1: username longer than 65535 bytes");
        let long_hash = format!("$6${}", "A".repeat(65_536));
        let e = parse_err(&format!("bob:{long_hash}"));
        assert_eq!(
            e,
            "passwords.txt line 1: password hash longer than 65535 bytes for user `bob`"
        );
    }

    #[test]
    fn error_invalid_utf8_names_the_line() {
        let bytes = b"# ok\nbob:\xff\n".to_vec();
        assert_eq!(
            text_from_bytes(bytes, "pw"),
            Err("pw line 2: not valid UTF-8".to_owned())
        );
    }

    #[test]
    fn load_reads_a_file_and_reports_io_errors_with_the_path() {
        let dir = std::env::temp_dir().join(format!("midge-pwtest-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("pw.txt");
        assert!(std::fs::write(&path, format!("user:{MOSQ_SHA512}\n")).is_ok());
        match PasswordFile::load(&path) {
            Ok(f) => assert!(f.verify("user", b"secret")),
            Err(e) => panic!("{e}"),
        }
        let missing = dir.join("missing.txt");
        match PasswordFile::load(&missing) {
            Ok(_) => panic!("loaded a missing file"),
            Err(e) => assert!(e.starts_with(&missing.display().to_string()), "{e}"),
        }
        assert!(std::fs::write(&path, "bob:$9$x$y\n").is_ok());
        match PasswordFile::load(&path) {
            Ok(_) => panic!("loaded a bad file"),
            Err(e) => assert_eq!(
                e,
                format!(
                    "{} line 1: unknown hash format `$9$` for user `bob`",
                    path.display()
                )
            ),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn usernames_with_control_characters_are_escaped_in_messages() {
        let e = parse_err("bo\u{1b}[2Jb:$9$x$y");
        assert!(e.contains("`bo\\u{1b}[2Jb`"), "{e}");
    }

    #[test]
    fn debug_output_hides_hashes() {
        let f = file(&format!("user:{MOSQ_SHA512}\n"));
        let shown = format!("{f:?}");
        assert!(!shown.contains("drY0"), "{shown}");
        assert!(shown.contains("users: 1"), "{shown}");
    }
}
