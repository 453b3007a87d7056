//! The ACL file (`acl_file`): which topics each client may publish to, receive from and
//! subscribe to, in the format of Mosquitto's `acl_file`.
//!
//! # Format
//!
//! One statement a line. Blank lines and lines whose first non-blank character is `#` are
//! ignored (there are no comments at the end of a line: `#` there is part of the filter);
//! spaces, tabs and `\r` at either end of a line are trimmed. Words are separated by spaces
//! or tabs. Keywords and access words are case-sensitive.
//!
//! ```text
//! # Anonymous clients (no username): the topic lines before the first `user` line.
//! topic read public/#
//!
//! user alice
//! # No access word: readwrite.
//! topic sensors/#
//! topic read $SYS/#
//! topic deny sensors/secret/#
//! # The filter is the rest of the line, spaces included.
//! topic write my topic/with spaces
//!
//! # Every client, with %c = its client id and %u = its username.
//! pattern readwrite devices/%c/#
//! pattern read users/%u/inbox
//! ```
//!
//! - `topic [read|write|readwrite|deny] <filter>` adds a rule to the current section. The
//!   access word is optional (default `readwrite`); when a line has a single word after
//!   `topic`, that word is the filter, so `topic read` grants readwrite on the topic named
//!   `read` (as in Mosquitto; a warning is logged). When there are two or more, the first
//!   must be an access word and the filter is the rest of the line, spaces included.
//! - `user <username>` starts the section of the client whose CONNECT username is exactly
//!   `<username>` (the rest of the line; not the client id). A username may appear more
//!   than once: its sections add up.
//! - `topic` lines before the first `user` line form the anonymous section, for clients
//!   that connected without a username.
//! - `pattern [read|write|readwrite|deny] <filter>` applies to every client, wherever it
//!   appears in the file, with `%c` standing for the client id and `%u` for the username,
//!   anywhere in a level (`devices/%c/#`, `dev-%c/status`). In `topic` lines `%c` and
//!   `%u` are ordinary text. A pattern without either logs a warning and applies to every
//!   client as written.
//! - `<filter>` is an MQTT topic filter: `+` and `#` must stand alone in their level and
//!   `#` may only be last; at most 65535 bytes.
//!
//! An unknown keyword, an unknown access word, a missing filter or username, or an invalid
//! filter is an error naming the file and the line (`acl.conf:7: ...`), and so is a file
//! that is not UTF-8.
//!
//! # Access
//!
//! A client is governed by its section (the anonymous one when it has no username, else the
//! `user` section of its username, if any) plus the `pattern` lines. It may do something
//! only if a rule grants it and no `deny` rule matches; anything not granted is refused.
//! So an empty ACL file refuses everything, and a user with no rules of its own gets only
//! what the patterns give it.
//!
//! - **Read** (a message on topic name T is about to be delivered to the client) needs a
//!   `read` or `readwrite` rule whose filter matches T.
//! - **Write** (the client publishes to T, or names T as its will topic) needs a `write`
//!   or `readwrite` rule whose filter matches T.
//! - **Subscribe** (the client subscribes to filter S) needs a `read` or `readwrite` rule
//!   whose filter covers S: every topic S can match is matched by that rule's filter. Level
//!   by level, a rule's `#` covers whatever remains of S (including `+`, `#`, and nothing,
//!   since `a/#` matches `a`), a rule's `+` covers any one level of S except `#`, and any
//!   other level of a rule covers only the identical level of S. With `topic read
//!   sensors/#`: `sensors/+/temp`, `sensors/#` and `sensors` may be subscribed, `#` and
//!   `+/temp` may not. Granting a subscription does not grant its messages: every delivery
//!   is checked again for Read, so deny rules narrower than a subscription still apply.
//! - **Deny.** A `deny` rule refuses Read and Write on the topics its filter matches, and
//!   Subscribe to the filters it covers (a subscription that merely overlaps a deny rule,
//!   like `#` with `deny secret/#`, is granted, and the deny applies to each delivery). A
//!   matching deny wins over any grant, whether the two come from the client's section
//!   or from patterns, and whatever their order in the file.
//! - **`$` topics.** A topic or subscription that begins with `$` is matched only by a
//!   rule whose filter itself begins with `$`: `#` or `+/broker/#` never reach `$SYS/...`,
//!   a `$SYS/#` rule does. Publishing to a topic that begins with `$SYS` is always
//!   refused. Read and Write on topics beginning with `$share` are always refused; a
//!   subscription `$share/<group>/<filter>` is checked as `<filter>` (a malformed one is
//!   refused).
//! - **Patterns and anonymous clients.** Patterns apply to anonymous clients too, except
//!   those that use `%u`, which never apply to a client without a username (neither to
//!   grant nor to deny).
//! - **Unsafe names.** If the client id or the username contains `+`, `#` or `/`, no
//!   pattern grants that client anything (its own section still applies), so a client
//!   cannot widen a pattern by choosing its name. A `%c`/`%u` whose value is empty never
//!   matches in a grant. In a `deny` pattern, a `%c`/`%u` whose value is empty or
//!   contains `+`, `#` or `/` matches every level from there on, so such names can only
//!   lose access, never gain it.
//! - Read and Write only concern topic names: a topic containing `+` or `#` is refused.
//!
//! These are the rules of Mosquitto 2.0's `acl_file` (`src/security_default.c`,
//! `src/security.c`, `lib/util_topic.c`), except where Mosquitto allows more; there midge
//! refuses:
//!
//! - Mosquitto grants every SUBSCRIBE when only an `acl_file` is configured, and filters
//!   each delivery. midge also checks the subscription, with the "covers" rule above (that
//!   of Mosquitto's dynamic-security plugin and of `mosquitto_sub_matches_acl`): a
//!   subscription wider than every read grant, such as `#` when only `sensors/#` is
//!   granted, gets SUBACK 0x80, where Mosquitto would accept it and deliver the granted
//!   part.
//! - In Mosquitto a grant in the client's own section wins over a `pattern ... deny`; in
//!   midge every deny wins.
//! - Mosquitto substitutes a client id or username containing `/` as is (`a/b` reaches
//!   into the subtree of `a`), and a name beginning with `$` lets a pattern such as
//!   `%c/#` reach `$` topics; midge does neither.
//!
//! Two points of syntax differ the other way: a `#` comment may be indented (Mosquitto
//! rejects the line), and tabs separate words as spaces do (Mosquitto splits at spaces
//! only).
//!
//! Checks allocate nothing: filters are split into levels when the file is loaded, and
//! `%c`/`%u` are compared in place, level by level.
//!
//! One concept, kept in one file although it is long: the rules as the file states them
//! and the checks against them share one representation (`Filter`, its levels and
//! placeholders), and about 440 of its lines are code; the rest is this documentation of
//! the format and the unit tests.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

use crate::topic;

/// What a client asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Receive a message published on a topic name.
    Read,
    /// Publish on a topic name (also a will topic).
    Write,
    /// Subscribe to a topic filter.
    Subscribe,
}

/// A parsed ACL file.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    /// `topic` lines before the first `user` line: clients without a username.
    anonymous: Rules,
    /// `topic` lines of each `user` section, by username.
    users: HashMap<String, Rules, BuildHasherDefault<Fnv>>,
    /// `pattern` lines, for every client.
    patterns: Rules,
    /// Number of `topic` and `pattern` lines.
    rule_count: usize,
}

/// FNV-1a: quicker than the default SipHash on short usernames. Flooding is no concern:
/// the table's keys come from the ACL file, not from clients.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The rules of one section, by what they do. A `readwrite` rule is in both lists.
#[derive(Clone, Debug, Default)]
struct Rules {
    deny: Vec<Filter>,
    read: Vec<Filter>,
    write: Vec<Filter>,
}

impl Rules {
    fn add(&mut self, access: RuleAccess, filter: Filter) {
        match access {
            RuleAccess::Deny => self.deny.push(filter),
            RuleAccess::Read => self.read.push(filter),
            RuleAccess::Write => self.write.push(filter),
            RuleAccess::ReadWrite => {
                self.read.push(filter.clone());
                self.write.push(filter);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.read.is_empty() && self.write.is_empty()
    }

    fn grants(&self, access: Access) -> &[Filter] {
        match access {
            Access::Read | Access::Subscribe => &self.read,
            Access::Write => &self.write,
        }
    }
}

/// The access word of a `topic` or `pattern` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RuleAccess {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl RuleAccess {
    fn from_word(word: &str) -> Option<RuleAccess> {
        match word {
            "read" => Some(RuleAccess::Read),
            "write" => Some(RuleAccess::Write),
            "readwrite" => Some(RuleAccess::ReadWrite),
            "deny" => Some(RuleAccess::Deny),
            _ => None,
        }
    }
}

/// An ACL filter, split into levels.
#[derive(Clone, Debug)]
struct Filter {
    levels: Box<[Level]>,
    /// The filter begins with `$`: only such filters match `$` topics.
    dollar: bool,
    /// Contains `%u` (patterns only): never applies to anonymous clients.
    uses_username: bool,
}

#[derive(Clone, Debug)]
enum Level {
    /// `+`
    Plus,
    /// `#`
    Hash,
    /// A level to be equal to.
    Text(Box<str>),
    /// A level of a pattern containing `%c` or `%u`.
    Pattern(Box<[Piece]>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(Box<str>),
    ClientId,
    Username,
}

/// The client a check is made for.
struct Client<'a> {
    id: &'a str,
    username: Option<&'a str>,
    /// The client id must not be substituted: empty, or contains `+`, `#` or `/`.
    id_unsafe: bool,
    /// The same for the username (`None` included).
    username_unsafe: bool,
    /// The client id or the username contains `+`, `#` or `/`: no pattern grants it.
    dangerous: bool,
}

impl<'a> Client<'a> {
    /// Without patterns (`scan` false) the names are not looked at, and are taken as
    /// unsafe should anything ask.
    fn new(id: &'a str, username: Option<&'a str>, scan: bool) -> Client<'a> {
        if !scan {
            return Client {
                id,
                username,
                id_unsafe: true,
                username_unsafe: true,
                dangerous: true,
            };
        }
        let id_dangerous = has_wildcard_or_slash(id);
        let username_dangerous = username.is_some_and(has_wildcard_or_slash);
        Client {
            id,
            username,
            id_unsafe: id_dangerous || id.is_empty(),
            username_unsafe: username_dangerous || username.is_none_or(str::is_empty),
            dangerous: id_dangerous || username_dangerous,
        }
    }
}

/// What a pattern level makes of one level of the checked topic or filter.
enum LevelMatch {
    Equal,
    Different,
    /// A `%c`/`%u` whose value is empty or contains `+`, `#` or `/`.
    Unsafe,
}

fn has_wildcard_or_slash(name: &str) -> bool {
    name.bytes().any(|b| matches!(b, b'+' | b'#' | b'/'))
}

/// Blank characters trimmed from lines and separating words (C's `isspace`, not Unicode
/// white space, so that a topic may end in a no-break space).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n' | '\x0b' | '\x0c')
}

/// Splits off the first word; the rest starts at the next non-blank character.
fn split_word(s: &str) -> (&str, &str) {
    match s.find(is_blank) {
        Some(i) => (&s[..i], s[i..].trim_start_matches(is_blank)),
        None => (s, ""),
    }
}

impl Filter {
    fn parse(text: &str, pattern: bool) -> Result<Filter, String> {
        if text.len() > 65535 {
            return Err(format!(
                "topic filter of {} bytes, longer than 65535",
                text.len()
            ));
        }
        if text.contains('\0') {
            return Err(format!("topic filter {text:?} contains a NUL character"));
        }
        if !topic::valid_topic_filter(text) {
            return Err(format!(
                "invalid topic filter {text:?}: + and # must stand alone in their level, \
                 and # may only be the last level"
            ));
        }
        let mut uses_username = false;
        let levels = text
            .split('/')
            .map(|level| match level {
                "+" => Level::Plus,
                "#" => Level::Hash,
                _ if pattern && (level.contains("%c") || level.contains("%u")) => {
                    let pieces = split_pattern(level);
                    uses_username |= pieces.contains(&Piece::Username);
                    Level::Pattern(pieces.into_boxed_slice())
                }
                _ => Level::Text(level.into()),
            })
            .collect();
        Ok(Filter {
            levels,
            dollar: text.starts_with('$'),
            uses_username,
        })
    }

    fn has_placeholder(&self) -> bool {
        self.levels.iter().any(|l| matches!(l, Level::Pattern(_)))
    }

    /// Whether this filter covers `target`: for a topic name, whether it matches it; for a
    /// topic filter, whether it matches every topic the filter can match. `deny` selects
    /// what an unsafe `%c`/`%u` does: match everything from there on (deny rules) or
    /// nothing (grants).
    fn covers(&self, target: &str, client: &Client, deny: bool) -> bool {
        if target.starts_with('$') && !self.dollar {
            return false;
        }
        let mut rest = Levels(Some(target));
        for level in self.levels.iter() {
            match level {
                // `a/#` also matches `a`, so `#` covers zero levels too.
                Level::Hash => return true,
                Level::Plus => match rest.next() {
                    None | Some("#") => return false,
                    Some(_) => {}
                },
                Level::Text(text) => {
                    if rest.next() != Some(&**text) {
                        return false;
                    }
                }
                Level::Pattern(pieces) => match match_pattern_level(pieces, rest.next(), client) {
                    LevelMatch::Equal => {}
                    LevelMatch::Different => return false,
                    LevelMatch::Unsafe => return deny,
                },
            }
        }
        rest.next().is_none()
    }
}

/// The levels of a topic or filter: `str::split('/')`, quicker on short levels.
struct Levels<'a>(Option<&'a str>);

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let s = self.0?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                // `/` is ASCII, so `i` and `i + 1` are character boundaries.
                self.0 = Some(&s[i + 1..]);
                Some(&s[..i])
            }
            None => {
                self.0 = None;
                Some(s)
            }
        }
    }
}

/// Splits a pattern level into text and `%c`/`%u`, left to right: `%%c` is `%` followed
/// by the client id, as in Mosquitto.
fn split_pattern(level: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let bytes = level.as_bytes();
    while i < bytes.len() {
        let placeholder = match (bytes[i], bytes.get(i + 1)) {
            (b'%', Some(b'c')) => Some(Piece::ClientId),
            (b'%', Some(b'u')) => Some(Piece::Username),
            _ => None,
        };
        match placeholder {
            Some(piece) => {
                // `%` and the letter are ASCII, so these are character boundaries.
                if text_start < i {
                    pieces.push(Piece::Text(level[text_start..i].into()));
                }
                pieces.push(piece);
                i += 2;
                text_start = i;
            }
            None => i += 1,
        }
    }
    if text_start < level.len() {
        pieces.push(Piece::Text(level[text_start..].into()));
    }
    pieces
}

/// Compares one level of the checked topic or filter with a pattern level, substituting
/// the client's names in place.
fn match_pattern_level(pieces: &[Piece], level: Option<&str>, client: &Client) -> LevelMatch {
    let unsafe_piece = |piece: &Piece| match piece {
        Piece::Text(_) => false,
        Piece::ClientId => client.id_unsafe,
        Piece::Username => client.username_unsafe,
    };
    if pieces.iter().any(unsafe_piece) {
        return LevelMatch::Unsafe;
    }
    let Some(mut rest) = level else {
        return LevelMatch::Different;
    };
    for piece in pieces {
        let expected = match piece {
            Piece::Text(text) => &**text,
            Piece::ClientId => client.id,
            // Patterns with %u are skipped for anonymous clients before we get here.
            Piece::Username => client.username.unwrap_or_default(),
        };
        match rest.strip_prefix(expected) {
            Some(r) => rest = r,
            None => return LevelMatch::Different,
        }
    }
    if rest.is_empty() {
        LevelMatch::Equal
    } else {
        LevelMatch::Different
    }
}

/// The filter a subscription is checked as: `$share/<group>/<filter>` is checked as
/// `<filter>`. `None` for a malformed shared subscription.
fn subscription_filter(filter: &str) -> Option<&str> {
    let Some(shared) = filter.strip_prefix("$share/") else {
        return Some(filter);
    };
    let (group, inner) = shared.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some(inner)
}

impl AclFile {
    /// Reads and parses an ACL file. Errors name the file, and the line where there is one.
    pub fn load(path: &Path) -> Result<AclFile, String> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("{origin}: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            format!("{origin}:{line}: not valid UTF-8")
        })?;
        AclFile::parse(&text, &origin)
    }

    /// Parses the text of an ACL file; `origin` (usually the path) prefixes error messages.
    pub fn parse(text: &str, origin: &str) -> Result<AclFile, String> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.split('\n').enumerate() {
            let n = index + 1;
            let error = |what: String| format!("{origin}:{n}: {what}");
            let line = line.trim_matches(is_blank);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let (first, after) = split_word(rest);
                    if first.is_empty() {
                        return Err(error(format!("{keyword} without a topic filter")));
                    }
                    let (access, filter_text) = if after.is_empty() {
                        if RuleAccess::from_word(first).is_some() {
                            tracing::warn!(
                                "{origin}:{n}: `{line}` has no topic after the access word, \
                                 so it grants readwrite on the topic named {first:?}"
                            );
                        }
                        (RuleAccess::ReadWrite, first)
                    } else {
                        let access = RuleAccess::from_word(first).ok_or_else(|| {
                            error(format!(
                                "unknown access {first:?}: expected read, write, readwrite \
                                 or deny (a topic containing spaces needs the access word \
                                 before it)"
                            ))
                        })?;
                        (access, after)
                    };
                    let filter = Filter::parse(filter_text, pattern).map_err(&error)?;
                    if pattern {
                        if !filter.has_placeholder() {
                            tracing::warn!(
                                "{origin}:{n}: pattern {filter_text:?} contains neither %c \
                                 nor %u, so it applies to every client as written"
                            );
                        }
                        acl.patterns.add(access, filter);
                    } else {
                        match &user {
                            None => acl.anonymous.add(access, filter),
                            Some(name) => acl
                                .users
                                .entry(name.clone())
                                .or_default()
                                .add(access, filter),
                        }
                    }
                    acl.rule_count += 1;
                }
                "user" => {
                    if rest.is_empty() {
                        return Err(error("user without a username".to_owned()));
                    }
                    user = Some(rest.to_owned());
                }
                _ => {
                    return Err(error(format!(
                        "unknown keyword {keyword:?}: expected topic, pattern or user"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// Number of `topic` and `pattern` lines.
    #[cfg(test)]
    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Number of distinct usernames with `topic` lines of their own.
    #[cfg(test)]
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether the client (`client_id`, `username` None when anonymous) may do `access` on
    /// `topic` (a topic name for Read/Write; a topic filter for Subscribe).
    pub fn check(
        &self,
        client_id: &str,
        username: Option<&str>,
        topic: &str,
        access: Access,
    ) -> bool {
        let target = match access {
            Access::Read | Access::Write => {
                if !topic::valid_topic_name(topic) || topic.starts_with("$share") {
                    return false;
                }
                if access == Access::Write && topic.starts_with("$SYS") {
                    return false;
                }
                topic
            }
            Access::Subscribe => match subscription_filter(topic) {
                Some(filter) if topic::valid_topic_filter(filter) => filter,
                _ => return false,
            },
        };
        let client = Client::new(client_id, username, !self.patterns.is_empty());
        let section = match username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        };
        // Patterns with %u say nothing about anonymous clients.
        let applies = |f: &&Filter| !(f.uses_username && username.is_none());

        let denied = section
            .is_some_and(|s| s.deny.iter().any(|f| f.covers(target, &client, true)))
            || self
                .patterns
                .deny
                .iter()
                .filter(applies)
                .any(|f| f.covers(target, &client, true));
        if denied {
            return false;
        }
        if section.is_some_and(|s| {
            s.grants(access)
                .iter()
                .any(|f| f.covers(target, &client, false))
        }) {
            return true;
        }
        let patterns = self.patterns.grants(access);
        !client.dangerous
            && patterns
                .iter()
                .filter(applies)
                .any(|f| f.covers(target, &client, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Access::{Read, Subscribe, Write};

    fn acl(text: &str) -> AclFile {
        match AclFile::parse(text, "test.acl") {
            Ok(acl) => acl,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match AclFile::parse(text, "test.acl") {
            Ok(_) => panic!("{text:?} should not parse"),
            Err(e) => e,
        }
    }

    const ANON: Option<&str> = None;

    #[test]
    fn anonymous_section_is_the_topic_lines_before_the_first_user_line() {
        let a = acl("topic read public/#\nuser alice\ntopic read alice/#\n");
        assert!(a.check("c1", ANON, "public/news", Read));
        assert!(!a.check("c1", ANON, "alice/x", Read));
        // It is not a default for users: alice has only her own section.
        assert!(!a.check("c1", Some("alice"), "public/news", Read));
        assert!(a.check("c1", Some("alice"), "alice/x", Read));
        // An unknown user has no section at all.
        assert!(!a.check("c1", Some("bob"), "public/news", Read));
    }

    #[test]
    fn user_section_matches_the_username_not_the_client_id() {
        let a = acl("user alice\ntopic alice/#\nuser bob\ntopic bob/#\n");
        assert!(a.check("anything", Some("alice"), "alice/x", Write));
        assert!(!a.check("anything", Some("alice"), "bob/x", Write));
        assert!(!a.check("alice", Some("bob"), "alice/x", Write));
        assert!(!a.check("alice", ANON, "alice/x", Write));
        // Case-sensitive, exact.
        assert!(!a.check("c", Some("Alice"), "alice/x", Write));
        assert!(!a.check("c", Some("alice "), "alice/x", Write));
    }

    #[test]
    fn username_is_the_rest_of_the_line() {
        let a = acl("user John Smith \ntopic js/#\n");
        assert!(a.check("c", Some("John Smith"), "js/a", Read));
        assert!(!a.check("c", Some("John"), "js/a", Read));
    }

    #[test]
    fn repeated_user_sections_add_up() {
        let a = acl("user alice\ntopic read a\nuser bob\ntopic b\nuser alice\ntopic write c\n");
        assert!(a.check("c", Some("alice"), "a", Read));
        assert!(a.check("c", Some("alice"), "c", Write));
        assert!(!a.check("c", Some("alice"), "b", Read));
        assert_eq!(a.user_count(), 2);
        assert_eq!(a.rule_count(), 3);
    }

    #[test]
    fn read_write_readwrite_and_deny_grant_what_they_say() {
        let a = acl("topic read r\ntopic write w\ntopic readwrite rw\ntopic deny d\ntopic dflt\n");
        assert!(a.check("c", ANON, "r", Read));
        assert!(!a.check("c", ANON, "r", Write));
        assert!(!a.check("c", ANON, "w", Read));
        assert!(a.check("c", ANON, "w", Write));
        assert!(a.check("c", ANON, "rw", Read));
        assert!(a.check("c", ANON, "rw", Write));
        assert!(!a.check("c", ANON, "d", Read));
        assert!(!a.check("c", ANON, "d", Write));
        assert!(!a.check("c", ANON, "d", Subscribe));
        // No access word: readwrite.
        assert!(a.check("c", ANON, "dflt", Read));
        assert!(a.check("c", ANON, "dflt", Write));
        // Not mentioned: refused.
        assert!(!a.check("c", ANON, "other", Read));
        assert!(!a.check("c", ANON, "other", Write));
    }

    #[test]
    fn deny_overrides_a_grant_whatever_the_order() {
        let a = acl("topic readwrite home/#\ntopic deny home/secret/#\n\
             user alice\ntopic deny home/alarm\ntopic readwrite home/#\n");
        assert!(a.check("c", ANON, "home/kitchen", Write));
        assert!(!a.check("c", ANON, "home/secret", Read));
        assert!(!a.check("c", ANON, "home/secret/key", Write));
        assert!(a.check("c", Some("alice"), "home/secret", Read));
        assert!(!a.check("c", Some("alice"), "home/alarm", Read));
        assert!(a.check("c", Some("alice"), "home/alarm/x", Read));
    }

    #[test]
    fn pattern_deny_overrides_a_user_grant() {
        // Mosquitto 2.0 would let alice's own grant win; midge lets the deny win.
        let a = acl("user alice\ntopic #\npattern deny private/%c/#\n");
        assert!(a.check("c1", Some("alice"), "public/x", Read));
        assert!(!a.check("c1", Some("alice"), "private/c1/x", Read));
        assert!(a.check("c1", Some("alice"), "private/c2/x", Read));
    }

    #[test]
    fn deny_rule_does_not_match_outside_its_filter() {
        let a = acl("topic a/#\ntopic deny a/+/secret\n");
        assert!(!a.check("c", ANON, "a/x/secret", Read));
        assert!(a.check("c", ANON, "a/x/secret/more", Read));
        assert!(a.check("c", ANON, "a/secret", Read));
    }

    #[test]
    fn plus_and_hash_in_acl_filters() {
        let a = acl("topic read sensors/+/temp\ntopic write cmd/#\ntopic read +\n");
        assert!(a.check("c", ANON, "sensors/s1/temp", Read));
        assert!(a.check("c", ANON, "sensors//temp", Read));
        assert!(!a.check("c", ANON, "sensors/s1/humidity", Read));
        assert!(!a.check("c", ANON, "sensors/s1/temp/x", Read));
        assert!(!a.check("c", ANON, "sensors/temp", Read));
        // `#` matches the parent level and any depth.
        assert!(a.check("c", ANON, "cmd", Write));
        assert!(a.check("c", ANON, "cmd/a/b/c", Write));
        assert!(!a.check("c", ANON, "cmdx", Write));
        // `+` is exactly one level.
        assert!(a.check("c", ANON, "top", Read));
        assert!(!a.check("c", ANON, "top/x", Read));
        assert!(!a.check("c", ANON, "/top", Read));
    }

    #[test]
    fn hash_alone_grants_every_topic_but_dollar_ones() {
        let a = acl("topic #\n");
        assert!(a.check("c", ANON, "a", Read));
        assert!(a.check("c", ANON, "a/b/c", Write));
        assert!(a.check("c", ANON, "/", Write));
        assert!(a.check("c", ANON, "#", Subscribe));
        assert!(!a.check("c", ANON, "$SYS/broker/uptime", Read));
        assert!(!a.check("c", ANON, "$SYS/#", Subscribe));
    }

    #[test]
    fn client_id_pattern() {
        let a = acl("pattern readwrite devices/%c/#\npattern read fleet/%c\n");
        assert!(a.check("dev1", ANON, "devices/dev1/status", Write));
        assert!(a.check("dev1", Some("u"), "devices/dev1", Read));
        assert!(!a.check("dev1", ANON, "devices/dev2/status", Write));
        assert!(!a.check("dev1", ANON, "devices/dev10/status", Write));
        assert!(!a.check("dev10", ANON, "devices/dev1/status", Write));
        assert!(a.check("dev1", ANON, "fleet/dev1", Read));
        assert!(!a.check("dev1", ANON, "fleet/dev1", Write));
    }

    #[test]
    fn username_pattern() {
        let a = acl("pattern read users/%u/inbox\npattern write users/%u/outbox/%c\n");
        assert!(a.check("c1", Some("alice"), "users/alice/inbox", Read));
        assert!(!a.check("c1", Some("alice"), "users/bob/inbox", Read));
        assert!(a.check("c1", Some("alice"), "users/alice/outbox/c1", Write));
        assert!(!a.check("c1", Some("alice"), "users/alice/outbox/c2", Write));
        assert!(!a.check("alice", Some("bob"), "users/alice/inbox", Read));
    }

    #[test]
    fn placeholders_may_share_a_level_with_text() {
        let a = acl("pattern read dev-%c/st\npattern read x/%u-%c\npattern read y/%%c/%x\n");
        assert!(a.check("7", ANON, "dev-7/st", Read));
        assert!(!a.check("7", ANON, "dev-8/st", Read));
        assert!(!a.check("7", ANON, "dev-7x/st", Read));
        assert!(!a.check("7", ANON, "dev-/st", Read));
        assert!(a.check("c", Some("u"), "x/u-c", Read));
        assert!(!a.check("c", Some("u"), "x/u-c-", Read));
        assert!(!a.check("c", Some("u"), "x/c-u", Read));
        // `%%c` is `%` followed by the client id; `%x` is plain text.
        assert!(a.check("7", ANON, "y/%7/%x", Read));
        assert!(!a.check("7", ANON, "y/%c/%x", Read));
    }

    #[test]
    fn topic_lines_do_not_substitute() {
        let a = acl("topic read literal/%c\n");
        assert!(a.check("c1", ANON, "literal/%c", Read));
        assert!(!a.check("c1", ANON, "literal/c1", Read));
    }

    #[test]
    fn patterns_apply_to_anonymous_clients_unless_they_use_username() {
        let a = acl("pattern read devices/%c/#\npattern read users/%u/#\npattern read all/news\n");
        assert!(a.check("dev1", ANON, "devices/dev1/x", Read));
        assert!(a.check("dev1", ANON, "all/news", Read));
        assert!(!a.check("dev1", ANON, "users//x", Read));
        assert!(!a.check("dev1", ANON, "users/%u/x", Read));
        assert!(!a.check("dev1", ANON, "users/+/x", Subscribe));
    }

    #[test]
    fn username_deny_pattern_does_not_apply_to_anonymous_clients() {
        let a = acl("topic read users/#\npattern deny users/%u/#\n");
        assert!(a.check("c", ANON, "users/x/y", Read));
        // A user is denied their own subtree here, and keeps nothing else (no section).
        assert!(!a.check("c", Some("x"), "users/x/y", Read));
    }

    #[test]
    fn client_id_with_wildcards_or_slash_gets_nothing_from_patterns() {
        let a = acl("pattern readwrite devices/%c/#\npattern read shared/news\n");
        for id in ["+", "#", "a/b", "dev+", "x#", "/"] {
            assert!(!a.check(id, ANON, &format!("devices/{id}/x"), Read), "{id}");
            assert!(!a.check(id, ANON, "devices/a/b/x", Write), "{id}");
            assert!(!a.check(id, ANON, "devices/x/y", Write), "{id}");
            assert!(!a.check(id, ANON, "devices/+/#", Subscribe), "{id}");
            assert!(!a.check(id, ANON, "devices/#", Subscribe), "{id}");
            assert!(!a.check(id, ANON, "shared/news", Read), "{id}");
        }
        // The client "a" keeps its subtree; "a/b" cannot reach into it.
        assert!(a.check("a", ANON, "devices/a/b/x", Write));
        assert!(!a.check("a/b", ANON, "devices/a/b/x", Write));
    }

    #[test]
    fn username_with_wildcards_or_slash_gets_nothing_from_patterns() {
        let a = acl(
            "pattern readwrite users/%u/#\npattern readwrite devices/%c/#\n\
             user a+b\ntopic read own/#\n",
        );
        for name in ["+", "#", "a/b", "a+b", "x#y"] {
            assert!(!a.check("c1", Some(name), "users/a/b/x", Write), "{name}");
            assert!(!a.check("c1", Some(name), "users/x/y", Write), "{name}");
            assert!(!a.check("c1", Some(name), "users/#", Subscribe), "{name}");
            // Mosquitto 2.0's rule: all patterns, not only those with %u.
            assert!(!a.check("c1", Some(name), "devices/c1/x", Write), "{name}");
        }
        // The user's own section still applies.
        assert!(a.check("c1", Some("a+b"), "own/x", Read));
    }

    #[test]
    fn unsafe_name_in_a_deny_pattern_denies_from_that_level_on() {
        let a = acl("user u\ntopic readwrite #\npattern deny devices/%c/secret\n");
        assert!(a.check("c1", Some("u"), "devices/c1/open", Read));
        assert!(!a.check("c1", Some("u"), "devices/c1/secret", Read));
        assert!(!a.check("a/b", Some("u"), "devices/a/b/secret", Read));
        assert!(!a.check("a/b", Some("u"), "devices/anything", Read));
        assert!(!a.check("a/b", Some("u"), "devices/#", Subscribe));
        assert!(a.check("a/b", Some("u"), "other/x", Read));
        assert!(!a.check("", Some("u"), "devices/x", Read));
        assert!(a.check("", Some("u"), "elsewhere", Read));
    }

    #[test]
    fn empty_names_match_no_pattern() {
        let a = acl("pattern read devices/%c/#\npattern read users/%u\n");
        assert!(!a.check("", ANON, "devices//x", Read));
        assert!(!a.check("c", Some(""), "users/", Read));
        assert!(a.check("c", Some(""), "devices/c/x", Read));
    }

    #[test]
    fn subscribe_to_filters_narrower_than_a_read_grant() {
        let a = acl("topic read sensors/#\n");
        for ok in [
            "sensors/#",
            "sensors",
            "sensors/+",
            "sensors/+/temp",
            "sensors/s1/temp",
            "sensors/+/+/#",
            "sensors/",
        ] {
            assert!(a.check("c", ANON, ok, Subscribe), "{ok}");
        }
        for wider in [
            "#",
            "+",
            "+/temp",
            "+/#",
            "sensorsx/#",
            "other/#",
            "/sensors/#",
        ] {
            assert!(!a.check("c", ANON, wider, Subscribe), "{wider}");
        }
    }

    #[test]
    fn subscribe_with_a_plus_grant() {
        let a = acl("topic read sensors/+/temp\n");
        assert!(a.check("c", ANON, "sensors/+/temp", Subscribe));
        assert!(a.check("c", ANON, "sensors/s1/temp", Subscribe));
        assert!(!a.check("c", ANON, "sensors/#", Subscribe));
        assert!(!a.check("c", ANON, "sensors/+/+", Subscribe));
        assert!(!a.check("c", ANON, "sensors/+/temp/#", Subscribe));
        assert!(!a.check("c", ANON, "sensors/+", Subscribe));
        let b = acl("topic read a/+/#\n");
        assert!(b.check("c", ANON, "a/x", Subscribe));
        assert!(b.check("c", ANON, "a/+/#", Subscribe));
        assert!(b.check("c", ANON, "a/x/y/z", Subscribe));
        assert!(!b.check("c", ANON, "a/#", Subscribe));
        assert!(!b.check("c", ANON, "a", Subscribe));
    }

    #[test]
    fn subscribe_needs_read_not_write() {
        let a = acl("topic write out/#\ntopic readwrite both/#\n");
        assert!(!a.check("c", ANON, "out/#", Subscribe));
        assert!(a.check("c", ANON, "both/#", Subscribe));
    }

    #[test]
    fn subscribe_inside_a_deny_is_refused_overlapping_is_checked_per_message() {
        let a = acl("topic read #\ntopic deny secret/#\n");
        assert!(!a.check("c", ANON, "secret/#", Subscribe));
        assert!(!a.check("c", ANON, "secret/+/x", Subscribe));
        assert!(!a.check("c", ANON, "secret", Subscribe));
        assert!(a.check("c", ANON, "#", Subscribe));
        assert!(a.check("c", ANON, "+/x", Subscribe));
        // ...and each delivery is checked for Read.
        assert!(!a.check("c", ANON, "secret/x", Read));
        assert!(a.check("c", ANON, "public/x", Read));
    }

    #[test]
    fn subscribe_with_patterns() {
        let a = acl("pattern read devices/%c/#\n");
        assert!(a.check("dev1", ANON, "devices/dev1/#", Subscribe));
        assert!(a.check("dev1", ANON, "devices/dev1/+/temp", Subscribe));
        assert!(!a.check("dev1", ANON, "devices/+/#", Subscribe));
        assert!(!a.check("dev1", ANON, "devices/#", Subscribe));
        assert!(!a.check("dev1", ANON, "#", Subscribe));
    }

    #[test]
    fn sys_topics_are_not_matched_by_a_leading_wildcard() {
        let a = acl("topic read #\ntopic read +/broker/#\ntopic read +\n");
        assert!(!a.check("c", ANON, "$SYS/broker/uptime", Read));
        assert!(!a.check("c", ANON, "$SYS", Read));
        assert!(!a.check("c", ANON, "$SYS/#", Subscribe));
        assert!(!a.check("c", ANON, "$SYS/broker/#", Subscribe));
        let b = acl("topic read $SYS/#\n");
        assert!(b.check("c", ANON, "$SYS/broker/uptime", Read));
        assert!(b.check("c", ANON, "$SYS/broker/#", Subscribe));
        assert!(b.check("c", ANON, "$SYS/#", Subscribe));
        assert!(!b.check("c", ANON, "#", Subscribe));
        assert!(!b.check("c", ANON, "SYS/x", Read));
        // `$` deeper than the first level is ordinary.
        assert!(a.check("c", ANON, "a/$x", Read));
    }

    #[test]
    fn dollar_topics_need_a_dollar_filter_even_through_patterns() {
        let a = acl("pattern read %c/#\n");
        assert!(a.check("dev", ANON, "dev/x", Read));
        assert!(!a.check("$SYS", ANON, "$SYS/broker/uptime", Read));
        assert!(!a.check("$SYS", ANON, "$SYS/#", Subscribe));
    }

    #[test]
    fn publishing_to_sys_is_always_refused() {
        let a = acl("topic readwrite $SYS/#\ntopic readwrite $SYSTEM/#\n");
        assert!(!a.check("c", ANON, "$SYS/broker/uptime", Write));
        assert!(!a.check("c", ANON, "$SYSTEM/x", Write));
        assert!(a.check("c", ANON, "$SYS/broker/uptime", Read));
    }

    #[test]
    fn share_topics_and_shared_subscriptions() {
        let a = acl("topic readwrite #\ntopic readwrite $share/#\n");
        assert!(!a.check("c", ANON, "$share/g/x", Write));
        assert!(!a.check("c", ANON, "$share/g/x", Read));
        assert!(a.check("c", ANON, "$share/group/sensors/#", Subscribe));
        assert!(!a.check("c", ANON, "$share/group/$SYS/#", Subscribe));
        for bad in [
            "$share/",
            "$share/g",
            "$share/g/",
            "$share//x",
            "$share/+/x",
            "$share/#",
        ] {
            assert!(!a.check("c", ANON, bad, Subscribe), "{bad}");
        }
        let b = acl("topic read sensors/#\n");
        assert!(b.check("c", ANON, "$share/g/sensors/+/temp", Subscribe));
        assert!(!b.check("c", ANON, "$share/g/#", Subscribe));
    }

    #[test]
    fn read_and_write_refuse_wildcards_and_empty_topics() {
        let a = acl("topic #\n");
        assert!(!a.check("c", ANON, "a/+", Read));
        assert!(!a.check("c", ANON, "#", Write));
        assert!(!a.check("c", ANON, "", Write));
        assert!(!a.check("c", ANON, "", Subscribe));
        assert!(!a.check("c", ANON, "a/#/b", Subscribe));
    }

    #[test]
    fn user_with_no_entries_gets_nothing() {
        let a = acl("topic #\nuser idle\nuser busy\ntopic #\n");
        for access in [Read, Write, Subscribe] {
            assert!(!a.check("c", Some("idle"), "a", access));
            assert!(!a.check("c", Some("idle"), "#", access));
        }
        assert!(a.check("c", Some("busy"), "a", Read));
    }

    #[test]
    fn empty_acl_file_denies_everything() {
        for text in ["", "\n\n", "# only a comment\n", "   \r\n\t\n"] {
            let a = acl(text);
            for (client, user) in [("c", ANON), ("c", Some("alice"))] {
                for topic in ["a", "a/b", "$SYS/x"] {
                    assert!(!a.check(client, user, topic, Read));
                    assert!(!a.check(client, user, topic, Write));
                }
                assert!(!a.check(client, user, "#", Subscribe));
                assert!(!a.check(client, user, "a", Subscribe));
            }
            assert_eq!(a.rule_count(), 0);
        }
    }

    #[test]
    fn comments_blank_lines_crlf_and_surrounding_whitespace() {
        let a = acl(
            "# comment\r\n\r\n   # indented comment\n\ttopic   read   a/b  \r\n\
             user  alice \t\r\n  topic write\tx  \n",
        );
        assert!(a.check("c", ANON, "a/b", Read));
        assert!(!a.check("c", ANON, "a/b ", Read));
        assert!(a.check("c", Some("alice"), "x", Write));
        assert_eq!(a.rule_count(), 2);
    }

    #[test]
    fn filters_may_contain_spaces() {
        let a = acl("topic read my room/temp sensor\ntopic  deny   a b  \n");
        assert!(a.check("c", ANON, "my room/temp sensor", Read));
        assert!(!a.check("c", ANON, "my room/temp", Read));
        let b = acl("topic read a  b\n");
        assert!(b.check("c", ANON, "a  b", Read));
    }

    #[test]
    fn one_word_after_topic_is_the_filter() {
        // As in Mosquitto: `topic read` grants readwrite on a topic named "read".
        let a = acl("topic read\n");
        assert!(a.check("c", ANON, "read", Write));
        assert!(!a.check("c", ANON, "other", Read));
    }

    #[test]
    fn leading_byte_order_mark_is_ignored() {
        let a = acl("\u{feff}topic a\n");
        assert!(a.check("c", ANON, "a", Read));
    }

    #[test]
    fn parse_errors_name_the_file_and_line() {
        let cases = [
            ("topic a\nbogus line\n", "test.acl:2:", "bogus"),
            ("\n\ntopic rw a/b\n", "test.acl:3:", "\"rw\""),
            ("topic read a/#/b\n", "test.acl:1:", "invalid topic filter"),
            ("topic read a+\n", "test.acl:1:", "invalid topic filter"),
            (
                "pattern write dev/%c#\n",
                "test.acl:1:",
                "invalid topic filter",
            ),
            ("topic\n", "test.acl:1:", "without a topic filter"),
            ("pattern   \n", "test.acl:1:", "without a topic filter"),
            ("user alice\nuser\n", "test.acl:2:", "without a username"),
            ("user  \t \n", "test.acl:1:", "without a username"),
            ("Topic a\n", "test.acl:1:", "\"Topic\""),
            ("topic foo bar\n", "test.acl:1:", "\"foo\""),
            ("topic READ a\n", "test.acl:1:", "\"READ\""),
            ("topic read a\0b\n", "test.acl:1:", "NUL"),
        ];
        for (text, location, detail) in cases {
            let e = parse_error(text);
            assert!(e.starts_with(location), "{text:?}: {e}");
            assert!(e.contains(detail), "{text:?}: {e}");
        }
        let long = format!("topic {}\n", "a".repeat(65536));
        assert!(parse_error(&long).contains("65535"));
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = std::env::temp_dir().join(format!("midge-acl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.acl");
        std::fs::write(&good, "user alice\ntopic read a/#\n").unwrap();
        let a = AclFile::load(&good).unwrap();
        assert!(a.check("c", Some("alice"), "a/b", Read));

        let bad = dir.join("bad.acl");
        std::fs::write(&bad, "topic a\ntopic b\ntopic wrong c d\n").unwrap();
        let e = AclFile::load(&bad).err().unwrap();
        assert!(e.starts_with(&format!("{}:3:", bad.display())), "{e}");

        let binary = dir.join("binary.acl");
        std::fs::write(&binary, b"topic a\n\xff\xfe\n").unwrap();
        let e = AclFile::load(&binary).err().unwrap();
        assert_eq!(e, format!("{}:2: not valid UTF-8", binary.display()));

        let missing = dir.join("missing.acl");
        let e = AclFile::load(&missing).err().unwrap();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // The unit tests' one generator (src/testing.rs): deterministic, so the fuzz tests
    // below are reproducible.
    use crate::testing::XorShift;

    /// One of `items`, at random.
    fn pick<'a>(rng: &mut XorShift, items: &[&'a str]) -> &'a str {
        items[rng.below(items.len())]
    }

    #[test]
    fn no_panic_on_arbitrary_content() {
        let words = [
            "topic",
            "pattern",
            "user",
            "read",
            "write",
            "readwrite",
            "deny",
            "#",
            "+",
            "/",
            "a",
            "%c",
            "%u",
            "%",
            "$SYS",
            "$share",
            " ",
            "\t",
            "\r",
            "\n",
            "é",
            "\u{feff}",
            "a/+/b",
            "x/#",
            "%c%u",
            "%%c",
            "\0",
        ];
        let names = ["", "a", "+", "#", "/", "a/b", "é", "%c", "$SYS", "c1"];
        let topics = [
            "",
            "a",
            "a/b",
            "#",
            "+",
            "a/+",
            "a/#",
            "$SYS/x",
            "$share/g/a",
            "/",
            "//",
            "é/%c",
            "c1/x",
            "a/b/c/d",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.next() % 40;
            let text: String = (0..len).map(|_| pick(&mut rng, &words)).collect();
            let Ok(a) = AclFile::parse(&text, "fuzz") else {
                continue;
            };
            for _ in 0..20 {
                let id = pick(&mut rng, &names);
                let user = match rng.next() % 3 {
                    0 => None,
                    _ => Some(pick(&mut rng, &names)),
                };
                let topic = pick(&mut rng, &topics);
                for access in [Read, Write, Subscribe] {
                    let _ = a.check(id, user, topic, access);
                }
            }
        }
    }

    #[test]
    fn subscribe_check_agrees_with_matching_on_topic_names() {
        // For a topic name, "covers" must be exactly the MQTT matching of crate::topic.
        let filters = [
            "#", "+", "a/#", "a/+", "a/+/c", "+/b/#", "a/b", "$SYS/#", "/+", "a//c",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "b", "/b", "a//c", "$SYS/x", "x/b/y", "/", "a/",
        ];
        for f in filters {
            let a = acl(&format!("topic read {f}\n"));
            for t in topics {
                assert_eq!(
                    a.check("c", ANON, t, Read),
                    topic::matches(f, t),
                    "{f} vs {t}"
                );
                assert_eq!(
                    a.check("c", ANON, t, Subscribe),
                    topic::matches(f, t),
                    "{f} vs {t} as a subscription"
                );
            }
        }
    }
}
