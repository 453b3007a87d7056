//! Password hashes: the formats a password file may hold, decoding and checking them, and
//! writing new ones (for `midge passwd`).
//!
//! The three formats (salt and hash in base64):
//!
//! | format | layout | written by |
//! | --- | --- | --- |
//! | SHA-512 | `$6$<salt>$<hash>`: SHA-512 over the password bytes followed by the salt bytes | mosquitto_passwd 1.x, and 2.x with `-H sha512` |
//! | PBKDF2 | `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512, 64-byte output | mosquitto_passwd 2.0 (default, 101 iterations), 2.1 with `-H sha512-pbkdf2` (210000) |
//! | argon2id | `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>` | mosquitto_passwd 2.1 (default: m=47104, t=1, p=1, 64-byte salt and hash) |
//!
//! `$6$` and `$7$` use base64 with `=` padding and 12-byte (Mosquitto 2.0) or 64-byte
//! (Mosquitto 2.1) salts; argon2id is libargon2's encoded string (PHC style, base64
//! without padding).
//!
//!
//! Decoding bounds every cost a hostile file could use to stall the broker (argon2 memory
//! and passes, PBKDF2 iterations), so such a file is refused when it is loaded.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use std::fmt;
use subtle::ConstantTimeEq;

/// PBKDF2 iterations `midge passwd` uses when none are given: Mosquitto 2.1's default
/// (`PW_DEFAULT_ITERATIONS`, OWASP's figure for PBKDF2-HMAC-SHA512). Mosquitto 2.0 wrote
/// only 101, which is far too few for a GPU-equipped attacker; both versions read any count.
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 210_000;

/// Largest PBKDF2 iteration count a password file may ask for. Each CONNECT with that user
/// name costs this many HMAC-SHA512 rounds (about 5 s at 10 million), so a larger figure is
/// treated as a hostile or broken file rather than honoured.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Largest argon2 memory cost (KiB) accepted from a file: 1 GiB. Every verification
/// allocates this much, so more than this would let a file exhaust the broker's memory.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// Largest argon2 pass count (`t`) accepted from a file; beyond this a single CONNECT
/// would take seconds to minutes of CPU.
pub const MAX_ARGON2_PASSES: u32 = 64;

/// Largest argon2 lane count (`p`) accepted from a file. midge computes lanes one after the
/// other, so lanes do not add work, but nothing real uses more than a handful.
pub const MAX_ARGON2_LANES: u32 = 255;

/// Argon2id parameters of Mosquitto 2.1 (`MOSQ_ARGON2_M`, `_T`, `_P` in
/// common/password_mosq.c), used for new hashes so files stay interchangeable with it.
const ARGON2_M_KIB: u32 = 47_104;
const ARGON2_T: u32 = 1;
const ARGON2_P: u32 = 1;
/// Mosquitto 2.1 uses `HASH_LEN` (64 bytes, OpenSSL's `EVP_MAX_MD_SIZE`) for both the
/// argon2id salt and output.
const ARGON2_SALT_LEN: usize = 64;
const ARGON2_HASH_LEN: usize = 64;
/// Bounds on argon2 salt and output lengths read from a file: libargon2's minimums (8 and 4
/// bytes) and a generous maximum that keeps a hostile line from asking for huge outputs.
const ARGON2_MIN_SALT_LEN: usize = 8;
const ARGON2_MAX_SALT_LEN: usize = 256;
const ARGON2_MIN_HASH_LEN: usize = 4;
const ARGON2_MAX_HASH_LEN: usize = 256;

/// Salt length for new `$6$` and `$7$` hashes: 12 bytes, as Mosquitto 2.0 writes. Mosquitto
/// 2.1 writes 64 but reads 12, while 2.0 refuses anything but 12; since the only reason to
/// choose these older formats is an older Mosquitto, midge writes what both accept.
const SHA512_SALT_LEN: usize = 12;
/// The SHA-512 salt lengths Mosquitto accepts when reading (2.0: 12; 2.1: 12 or 64).
const SHA512_SALT_LENS: [usize; 2] = [12, 64];
/// SHA-512 and PBKDF2-HMAC-SHA512 (as Mosquitto uses it) both give 64 bytes.
const SHA512_HASH_LEN: usize = 64;

/// Base64 as Mosquitto writes it for `$6$`/`$7$` (OpenSSL's BIO base64: standard alphabet,
/// `=` padding). Reading is lenient about missing padding, as OpenSSL is.
const B64_MOSQ: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64 as libargon2 writes it in encoded hashes: standard alphabet, no padding; libargon2
/// also refuses padding and stray trailing bits, and so does this engine.
const B64_ARGON2: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// The hash formats midge can write (and read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$…`: memory-hard, Mosquitto 2.1's default and midge's.
    Argon2id,
    /// `$7$…`: PBKDF2-HMAC-SHA512, Mosquitto 2.0's default.
    Sha512Pbkdf2,
    /// `$6$…`: one round of salted SHA-512, Mosquitto 1.x's format. Fast to brute-force;
    /// only for brokers that cannot read anything better.
    Sha512,
}

impl HashKind {
    /// The name `mosquitto_passwd -H` uses for this kind.
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Argon2id => "argon2id",
            HashKind::Sha512Pbkdf2 => "sha512-pbkdf2",
            HashKind::Sha512 => "sha512",
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded hash: everything needed to check a password against it.
#[derive(Clone)]
pub(super) enum DecodedHash {
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Argon2id {
        version: Version,
        params: Params,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl DecodedHash {
    /// Derives the hash of `password` with this entry's salt and parameters. `None` only if
    /// argon2 cannot run (its memory cannot be allocated), which counts as a mismatch.
    fn derive(&self, password: &[u8]) -> Option<Vec<u8>> {
        match self {
            DecodedHash::Sha512 { salt, .. } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                Some(digest.finalize().to_vec())
            }
            DecodedHash::Pbkdf2 {
                iterations, salt, ..
            } => {
                let mut out = vec![0u8; SHA512_HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                Some(out)
            }
            DecodedHash::Argon2id {
                version,
                params,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                let argon = Argon2::new(Algorithm::Argon2id, *version, params.clone());
                match argon.hash_password_into(password, salt, &mut out) {
                    Ok(()) => Some(out),
                    Err(e) => {
                        tracing::warn!("argon2id verification failed to run: {e}");
                        None
                    }
                }
            }
        }
    }

    fn expected(&self) -> &[u8] {
        match self {
            DecodedHash::Sha512 { hash, .. }
            | DecodedHash::Pbkdf2 { hash, .. }
            | DecodedHash::Argon2id { hash, .. } => hash,
        }
    }

    /// True iff `password` hashes to the value in the file. The comparison is constant-time so
    /// the time taken does not tell an attacker how many leading bytes they got right.
    pub(super) fn matches(&self, password: &[u8]) -> bool {
        match self.derive(password) {
            Some(derived) => derived.as_slice().ct_eq(self.expected()).into(),
            None => false,
        }
    }

    /// A stand-in with the same algorithm and cost as `self`, a fixed salt and an all-zero
    /// hash, verified for unknown usernames so their rejection takes as long as a real
    /// user's wrong password.
    pub(super) fn dummy_like(&self) -> DecodedHash {
        match self {
            DecodedHash::Sha512 { salt, hash } => DecodedHash::Sha512 {
                salt: vec![0x5a; salt.len()],
                hash: vec![0; hash.len()],
            },
            DecodedHash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => DecodedHash::Pbkdf2 {
                iterations: *iterations,
                salt: vec![0x5a; salt.len()],
                hash: vec![0; hash.len()],
            },
            DecodedHash::Argon2id {
                version,
                params,
                salt,
                hash,
            } => DecodedHash::Argon2id {
                version: *version,
                params: params.clone(),
                salt: vec![0x5a; salt.len()],
                hash: vec![0; hash.len()],
            },
        }
    }

    /// The dummy for a file with no entries: Mosquitto 2.1's default argon2id cost.
    pub(super) fn default_dummy() -> DecodedHash {
        DecodedHash::Argon2id {
            version: Version::V0x13,
            params: mosquitto_argon2_params(),
            salt: vec![0x5a; ARGON2_SALT_LEN],
            hash: vec![0; ARGON2_HASH_LEN],
        }
    }

    pub(super) fn kind(&self) -> HashKind {
        match self {
            DecodedHash::Sha512 { .. } => HashKind::Sha512,
            DecodedHash::Pbkdf2 { .. } => HashKind::Sha512Pbkdf2,
            DecodedHash::Argon2id { .. } => HashKind::Argon2id,
        }
    }
}

/// Mosquitto 2.1's argon2id parameters. `Params::new` cannot fail for these constants; the
/// fallback to the argon2 crate's defaults only keeps this function panic-free.
fn mosquitto_argon2_params() -> Params {
    Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(ARGON2_HASH_LEN)).unwrap_or_default()
}

/// Checks whether `field` is a hash midge accepts, and which kind. `midge passwd -U` uses
/// this to leave already-hashed entries alone.
pub fn hash_kind_of(field: &str) -> Option<HashKind> {
    decode_hash(field).ok().map(|s| s.kind())
}

/// Decodes the hash field of one entry. Messages describe what is wrong without quoting
/// the field (it is secret, and may even be a plain-text password).
pub(super) fn decode_hash(field: &str) -> Result<DecodedHash, String> {
    if let Some(rest) = field.strip_prefix("$6$") {
        decode_sha512(rest)
    } else if let Some(rest) = field.strip_prefix("$7$") {
        decode_pbkdf2(rest)
    } else if let Some(rest) = field.strip_prefix("$argon2id$") {
        decode_argon2id(rest)
    } else {
        Err(unknown_format(field))
    }
}

/// Names an unrecognised format by its `$id$` prefix when it has one (the id is not secret:
/// it is the same in every hash of that kind); otherwise says the field is no hash at all,
/// without quoting it, since it may well be a plain-text password.
fn unknown_format(field: &str) -> String {
    let id = field
        .strip_prefix('$')
        .and_then(|rest| rest.split_once('$'))
        .map(|(id, _)| id)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 16
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match id {
        Some(id) => format!("unknown hash format `${id}$`"),
        None => "password field is not a hash (a plain-text password? `midge passwd -U` \
                 hashes them)"
            .to_owned(),
    }
}

/// Decodes `$6$<salt>$<hash>` (after the `$6$`).
fn decode_sha512(rest: &str) -> Result<DecodedHash, String> {
    let parts: Vec<&str> = rest.split('$').collect();
    let [salt, hash] = parts.as_slice() else {
        return Err("malformed `$6$` hash: expected `$6$<salt>$<hash>`".into());
    };
    let salt = decode_sha512_salt(salt, "$6$")?;
    let hash = decode_sha512_hash(hash, "$6$")?;
    Ok(DecodedHash::Sha512 { salt, hash })
}

/// Decodes `$7$<iterations>$<salt>$<hash>` (after the `$7$`).
fn decode_pbkdf2(rest: &str) -> Result<DecodedHash, String> {
    let parts: Vec<&str> = rest.split('$').collect();
    let [iterations, salt, hash] = parts.as_slice() else {
        return Err("malformed `$7$` hash: expected `$7$<iterations>$<salt>$<hash>`".into());
    };
    let iterations = parse_decimal(iterations)
        .ok_or_else(|| "`$7$` hash has an invalid iteration count".to_owned())?;
    if iterations == 0 {
        return Err("`$7$` hash has 0 iterations".into());
    }
    if iterations > MAX_PBKDF2_ITERATIONS {
        return Err(format!(
            "`$7$` hash asks for {iterations} PBKDF2 iterations, more than the limit of \
             {MAX_PBKDF2_ITERATIONS}"
        ));
    }
    let salt = decode_sha512_salt(salt, "$7$")?;
    let hash = decode_sha512_hash(hash, "$7$")?;
    Ok(DecodedHash::Pbkdf2 {
        iterations,
        salt,
        hash,
    })
}

fn decode_sha512_salt(b64: &str, format: &str) -> Result<Vec<u8>, String> {
    let salt = B64_MOSQ
        .decode(b64)
        .map_err(|_| format!("`{format}` salt is not valid base64"))?;
    if !SHA512_SALT_LENS.contains(&salt.len()) {
        return Err(format!(
            "`{format}` salt is {} bytes; Mosquitto uses 12 or 64",
            salt.len()
        ));
    }
    Ok(salt)
}

fn decode_sha512_hash(b64: &str, format: &str) -> Result<Vec<u8>, String> {
    let hash = B64_MOSQ
        .decode(b64)
        .map_err(|_| format!("`{format}` hash is not valid base64"))?;
    if hash.len() != SHA512_HASH_LEN {
        return Err(format!(
            "`{format}` hash is {} bytes, expected {SHA512_HASH_LEN}",
            hash.len()
        ));
    }
    Ok(hash)
}

/// Decodes libargon2's encoded form (after the `$argon2id$`):
/// `[v=<version>$]m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`. libargon2, which Mosquitto
/// 2.1 verifies with, takes the version as optional (absent means 0x10) and the three
/// parameters in exactly this order.
fn decode_argon2id(rest: &str) -> Result<DecodedHash, String> {
    const SHAPE: &str =
        "malformed `$argon2id$` hash: expected `$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`";
    let parts: Vec<&str> = rest.split('$').collect();
    let (version, params, salt, hash) = match parts.as_slice() {
        [v, params, salt, hash] => {
            let version = match v.strip_prefix("v=").map(parse_decimal) {
                Some(Some(19)) => Version::V0x13,
                Some(Some(16)) => Version::V0x10,
                Some(_) => return Err("`$argon2id$` hash has an unsupported version".into()),
                None => return Err(SHAPE.into()),
            };
            (version, *params, *salt, *hash)
        }
        [params, salt, hash] => (Version::V0x10, *params, *salt, *hash),
        _ => return Err(SHAPE.into()),
    };
    let mut values = [0u32; 3];
    let mut fields = params.split(',');
    for (value, name) in values.iter_mut().zip(["m=", "t=", "p="]) {
        *value = fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .and_then(parse_decimal)
            .ok_or_else(|| SHAPE.to_owned())?;
    }
    if fields.next().is_some() {
        return Err(SHAPE.into());
    }
    let [m, t, p] = values;
    if m > MAX_ARGON2_MEMORY_KIB {
        return Err(format!(
            "`$argon2id$` hash asks for m={m} KiB of memory, more than the limit of \
             {MAX_ARGON2_MEMORY_KIB} (1 GiB)"
        ));
    }
    if t == 0 || t > MAX_ARGON2_PASSES {
        return Err(format!(
            "`$argon2id$` hash asks for t={t} passes; the limit is 1 to {MAX_ARGON2_PASSES}"
        ));
    }
    if p == 0 || p > MAX_ARGON2_LANES {
        return Err(format!(
            "`$argon2id$` hash asks for p={p} lanes; the limit is 1 to {MAX_ARGON2_LANES}"
        ));
    }
    let salt = B64_ARGON2
        .decode(salt)
        .map_err(|_| "`$argon2id$` salt is not valid base64".to_owned())?;
    if !(ARGON2_MIN_SALT_LEN..=ARGON2_MAX_SALT_LEN).contains(&salt.len()) {
        return Err(format!(
            "`$argon2id$` salt is {} bytes; expected {ARGON2_MIN_SALT_LEN} to {ARGON2_MAX_SALT_LEN}",
            salt.len()
        ));
    }
    let hash = B64_ARGON2
        .decode(hash)
        .map_err(|_| "`$argon2id$` hash is not valid base64".to_owned())?;
    if !(ARGON2_MIN_HASH_LEN..=ARGON2_MAX_HASH_LEN).contains(&hash.len()) {
        return Err(format!(
            "`$argon2id$` hash is {} bytes; expected {ARGON2_MIN_HASH_LEN} to {ARGON2_MAX_HASH_LEN}",
            hash.len()
        ));
    }
    let params = Params::new(m, t, p, Some(hash.len()))
        .map_err(|e| format!("`$argon2id$` hash has invalid parameters ({e})"))?;
    Ok(DecodedHash::Argon2id {
        version,
        params,
        salt,
        hash,
    })
}

/// Parses a plain decimal number: ASCII digits only, no sign or spaces (Mosquitto's `atoi`
/// would accept `+12abc` as 12; a file saying that is broken, not meant).
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A new salted hash string in Mosquitto's file format for `kind`, with a random salt from
/// the operating system. `iterations` applies to `Sha512Pbkdf2` only; `None` means
/// [`DEFAULT_PBKDF2_ITERATIONS`] (Mosquitto 2.1's default), and a count outside
/// 1..=[`MAX_PBKDF2_ITERATIONS`] is clamped into it so the result always loads.
///
/// Argon2id uses Mosquitto 2.1's parameters (m=47104 KiB, t=1, p=1, 64-byte salt and hash),
/// so a file written by midge is read by Mosquitto 2.1 and vice versa. An error, never a
/// hash with a predictable salt, when the operating system's random number generator
/// fails; an error too when argon2 cannot allocate its memory.
pub fn try_hash_password(
    password: &[u8],
    kind: HashKind,
    iterations: Option<u32>,
) -> Result<String, String> {
    match kind {
        HashKind::Argon2id => {
            let salt = random_bytes(ARGON2_SALT_LEN)?;
            argon2id_encoded(password, &salt, mosquitto_argon2_params())
        }
        HashKind::Sha512Pbkdf2 => {
            let iterations = effective_iterations(iterations);
            let salt = random_bytes(SHA512_SALT_LEN)?;
            let mut hash = [0u8; SHA512_HASH_LEN];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
            Ok(format!(
                "$7${iterations}${}${}",
                B64_MOSQ.encode(&salt),
                B64_MOSQ.encode(hash)
            ))
        }
        HashKind::Sha512 => {
            let salt = random_bytes(SHA512_SALT_LEN)?;
            let mut digest = Sha512::new();
            digest.update(password);
            digest.update(&salt);
            Ok(format!(
                "$6${}${}",
                B64_MOSQ.encode(&salt),
                B64_MOSQ.encode(digest.finalize())
            ))
        }
    }
}

/// The PBKDF2 iteration count [`hash_password`] uses for `requested`.
fn effective_iterations(requested: Option<u32>) -> u32 {
    requested
        .unwrap_or(DEFAULT_PBKDF2_ITERATIONS)
        .clamp(1, MAX_PBKDF2_ITERATIONS)
}

/// Hashes with argon2id version 19 and encodes the result as libargon2's
/// `argon2id_hash_encoded` does (the function Mosquitto 2.1 calls).
fn argon2id_encoded(password: &[u8], salt: &[u8], params: Params) -> Result<String, String> {
    let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
    let mut hash = vec![0u8; params.output_len().unwrap_or(ARGON2_HASH_LEN)];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut hash)
        .map_err(|e| format!("argon2id hashing failed: {e}"))?;
    Ok(format!(
        "$argon2id$v=19$m={m},t={t},p={p}${}${}",
        B64_ARGON2.encode(salt),
        B64_ARGON2.encode(&hash)
    ))
}

fn random_bytes(len: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("the operating system's random number generator failed: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    #[test]
    fn mosquitto_pbkdf2_vector_verifies() {
        let f = file(&format!("user:{MOSQ_PBKDF2_101}\n"));
        assert!(f.verify("user", b"secret"));
        assert!(!f.verify("user", b"Secret"));
        assert!(!f.verify("user", b""));
        assert_eq!(f.hash_kind("user"), Some(HashKind::Sha512Pbkdf2));
    }

    #[test]
    fn mosquitto_pbkdf2_vector_with_explicit_iterations_verifies() {
        let f = file(&format!("user7b:{MOSQ_PBKDF2_1000}\n"));
        assert!(f.verify("user7b", b"secret"));
        assert!(!f.verify("user7b", b"secret\n"));
    }

    #[test]
    fn mosquitto_sha512_vector_verifies() {
        let f = file(&format!("user6:{MOSQ_SHA512}\n"));
        assert!(f.verify("user6", b"secret"));
        assert!(!f.verify("user6", b"secreT"));
        assert_eq!(f.hash_kind("user6"), Some(HashKind::Sha512));
    }

    #[test]
    fn mosquitto_vector_with_space_in_username_and_colon_in_password_verifies() {
        let f = file(&format!("we ird:{MOSQ_PBKDF2_ODD}\n"));
        assert!(f.verify("we ird", "p:ss wörd".as_bytes()));
        assert!(!f.verify("we ird", b"p"));
    }

    /// Mosquitto 2.1 writes 64-byte salts for `$6$` and `$7$`. No 2.1 binary is at hand, so
    /// these were computed independently of the Rust crates, with Python's hashlib (OpenSSL,
    /// as Mosquitto uses): password "secret", salt bytes (7i+3) mod 256 for i in 0..64.
    const OPENSSL_PBKDF2_SALT64: &str = "$7$1000$AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dzj6vH4/wYNFBsiKTA3PkVMU1phaG92fYSLkpmgp661vA==$CQVASh1oqIWvaiXwNVbcG/gQhCKSGDkivoKR4zDa1kYGSVRSFdaddUAA0feSc/fEdOkvf/WF8jLrXbRQkC96DA==";
    const OPENSSL_SHA512_SALT64: &str = "$6$AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dzj6vH4/wYNFBsiKTA3PkVMU1phaG92fYSLkpmgp661vA==$eOkQtrePe3CQuk5pzxew0w9ZVPcE3sA7XcpM9uFj0lb3YN7RD2O00ANB+slC/Iv663OqdBhZW+hERil2CdMrRg==";

    #[test]
    fn mosquitto_21_style_64_byte_salts_verify() {
        let f = file(&format!(
            "seven:{OPENSSL_PBKDF2_SALT64}\nsix:{OPENSSL_SHA512_SALT64}\n"
        ));
        assert!(f.verify("seven", b"secret"));
        assert!(!f.verify("seven", b"secreu"));
        assert!(f.verify("six", b"secret"));
        assert!(!f.verify("six", b"secre"));
    }

    #[test]
    fn libargon2_vector_with_mosquitto_21_parameters_verifies() {
        let f = file(&format!("a:{LIBARGON2_MOSQ21}\n"));
        assert!(f.verify("a", b"secret"));
        assert_eq!(f.hash_kind("a"), Some(HashKind::Argon2id));
    }

    #[test]
    fn libargon2_cheap_vector_verifies_and_rejects_wrong_password() {
        let f = file(&format!("a:{LIBARGON2_CHEAP}\n"));
        assert!(f.verify("a", b"secret"));
        assert!(!f.verify("a", b"secret2"));
    }

    #[test]
    fn argon2id_without_version_field_is_version_16() {
        // libargon2 reads a missing `v=` as version 0x10; the hash below is the cheap
        // vector recomputed with Version::V0x10 by the argon2 crate.
        let salt = b"saltsaltsalt1234";
        let mut out = [0u8; 32];
        let params = Params::new(64, 2, 1, Some(32)).unwrap_or_default();
        let ok = Argon2::new(Algorithm::Argon2id, Version::V0x10, params)
            .hash_password_into(b"pw", salt, &mut out);
        assert!(ok.is_ok());
        let line = format!(
            "u:$argon2id$m=64,t=2,p=1${}${}",
            B64_ARGON2.encode(salt),
            B64_ARGON2.encode(out)
        );
        let f = file(&line);
        assert!(f.verify("u", b"pw"));
        let v16 = line.replace("$argon2id$", "$argon2id$v=16$");
        assert!(file(&v16).verify("u", b"pw"));
        let v19 = line.replace("$argon2id$", "$argon2id$v=19$");
        assert!(!file(&v19).verify("u", b"pw"));
    }

    #[test]
    fn argon2id_written_by_midge_has_mosquitto_21_layout_and_verifies() {
        // The one default-cost argon2id hash and verify of the suite (about a second in a
        // debug build); other argon2 tests use cheap parameters.
        let h = hash_password(b"hunter2", HashKind::Argon2id, None);
        let Some(rest) = h.strip_prefix("$argon2id$v=19$m=47104,t=1,p=1$") else {
            panic!("unexpected prefix: {h}")
        };
        let Some((salt, hash)) = rest.split_once('$') else {
            panic!("no hash part: {h}")
        };
        assert!(!rest.contains('='), "libargon2 writes no padding: {h}");
        assert_eq!(B64_ARGON2.decode(salt).map(|s| s.len()), Ok(64));
        assert_eq!(B64_ARGON2.decode(hash).map(|s| s.len()), Ok(64));
        assert!(file(&format!("bob:{h}\n")).verify("bob", b"hunter2"));
    }

    #[test]
    fn round_trip_argon2id_with_cheap_parameters() {
        let params = Params::new(64, 1, 1, Some(32)).unwrap_or_default();
        let h = argon2id_encoded(b"hunter2", b"0123456789abcdef", params);
        let Ok(h) = h else { panic!("{h:?}") };
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        let f = file(&format!("bob:{h}\n"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"hunter3"));
    }

    #[test]
    fn argon2id_encoding_matches_libargon2_byte_for_byte() {
        let params = Params::new(64, 2, 1, Some(32)).unwrap_or_default();
        let h = argon2id_encoded(b"secret", b"saltsaltsalt1234", params);
        assert_eq!(h.as_deref(), Ok(LIBARGON2_CHEAP));
    }

    #[test]
    fn default_pbkdf2_iterations_are_mosquitto_21s() {
        assert_eq!(effective_iterations(None), 210_000);
        assert_eq!(effective_iterations(Some(101)), 101);
        assert_eq!(effective_iterations(Some(0)), 1);
        assert_eq!(effective_iterations(Some(u32::MAX)), MAX_PBKDF2_ITERATIONS);
    }

    #[test]
    fn round_trip_sha512_pbkdf2() {
        // Mosquitto's default 210000 iterations take seconds in a debug build; the count is
        // checked by `default_pbkdf2_iterations_are_mosquitto_21s`.
        let h = hash_password(b"hunter2", HashKind::Sha512Pbkdf2, Some(1000));
        assert!(h.starts_with("$7$1000$"), "{h}");
        let f = file(&format!("bob:{h}\n"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"hunter"));
    }

    #[test]
    fn round_trip_sha512_pbkdf2_custom_iterations_and_mosquitto_20_salt() {
        let h = hash_password(b"x", HashKind::Sha512Pbkdf2, Some(5));
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts.len(), 5, "{h}");
        assert_eq!(parts[2], "5");
        assert_eq!(B64_MOSQ.decode(parts[3]).map(|s| s.len()), Ok(12));
        assert_eq!(B64_MOSQ.decode(parts[4]).map(|s| s.len()), Ok(64));
        assert!(file(&format!("bob:{h}")).verify("bob", b"x"));
    }

    #[test]
    fn pbkdf2_iterations_outside_limits_are_clamped_when_hashing() {
        let h = hash_password(b"x", HashKind::Sha512Pbkdf2, Some(0));
        assert!(h.starts_with("$7$1$"), "{h}");
        assert!(file(&format!("bob:{h}")).verify("bob", b"x"));
    }

    #[test]
    fn round_trip_sha512() {
        let h = hash_password(b"hunter2", HashKind::Sha512, None);
        assert!(h.starts_with("$6$"), "{h}");
        let f = file(&format!("bob:{h}\n"));
        assert!(f.verify("bob", b"hunter2"));
        assert!(!f.verify("bob", b"hunter2 "));
    }

    #[test]
    fn hashes_are_salted() {
        let a = hash_password(b"same", HashKind::Sha512, None);
        let b = hash_password(b"same", HashKind::Sha512, None);
        assert_ne!(a, b);
    }

    #[test]
    fn password_with_nul_byte_is_hashed_whole() {
        let h = hash_password(b"ab\0cd", HashKind::Sha512, None);
        let f = file(&format!("u:{h}"));
        assert!(f.verify("u", b"ab\0cd"));
        assert!(!f.verify("u", b"ab"));
    }

    #[test]
    fn dummy_for_unknown_users_has_the_first_entrys_cost() {
        let f = file(&format!("a:{MOSQ_PBKDF2_1000}\nb:{MOSQ_SHA512}\n"));
        match &f.dummy {
            DecodedHash::Pbkdf2 {
                iterations, salt, ..
            } => {
                assert_eq!(*iterations, 1000);
                assert_eq!(salt.len(), 12);
            }
            _ => panic!("dummy should be PBKDF2 like the first entry"),
        }
        assert!(matches!(file("").dummy, DecodedHash::Argon2id { .. }));
    }

    #[test]
    fn error_unknown_hash_format_names_file_line_and_user() {
        let e = parse_err(&format!("a:{MOSQ_SHA512}\n\nbob:$9$abc$def\n"));
        assert_eq!(
            e,
            "passwords.txt line 3: unknown hash format `$9$` for user `bob`"
        );
    }

    #[test]
    fn error_plain_text_password_is_not_echoed() {
        let e = parse_err("bob:my-secret-password\n");
        assert!(e.starts_with("passwords.txt line 1: password field is not a hash"));
        assert!(e.ends_with("for user `bob`"), "{e}");
        assert!(!e.contains("my-secret"), "{e}");
        let e = parse_err("bob:$my secret$x\n");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn error_other_argon2_variants_are_unknown_formats() {
        let e = parse_err("bob:$argon2i$v=19$m=64,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\n");
        assert_eq!(
            e,
            "passwords.txt line 1: unknown hash format `$argon2i$` for user `bob`"
        );
    }

    #[test]
    fn error_bad_base64() {
        let bad_salt = MOSQ_SHA512.replacen("drY0", "d!Y0", 1);
        assert_eq!(
            parse_err(&format!("bob:{bad_salt}")),
            "passwords.txt line 1: `$6$` salt is not valid base64 for user `bob`"
        );
        let bad_hash = MOSQ_PBKDF2_101.replacen("iKbk", "iK*k", 1);
        assert_eq!(
            parse_err(&format!("bob:{bad_hash}")),
            "passwords.txt line 1: `$7$` hash is not valid base64 for user `bob`"
        );
        let padded = LIBARGON2_CHEAP.replacen("MTIzNA$", "MTIzNA==$", 1);
        assert_eq!(
            parse_err(&format!("bob:{padded}")),
            "passwords.txt line 1: `$argon2id$` salt is not valid base64 for user `bob`"
        );
    }

    #[test]
    fn error_wrong_salt_or_hash_length() {
        // 9-byte salt: Mosquitto accepts only 12 or 64.
        let e = parse_err("bob:$6$AAAAAAAAAAAA$AAAA\n");
        assert_eq!(
            e,
            "passwords.txt line 1: `$6$` salt is 9 bytes; Mosquitto uses 12 or 64 for user `bob`"
        );
        let e = parse_err("bob:$7$10$AAAAAAAAAAAAAAAA$AAAA\n");
        assert_eq!(
            e,
            "passwords.txt line 1: `$7$` hash is 3 bytes, expected 64 for user `bob`"
        );
    }

    #[test]
    fn error_malformed_layouts() {
        assert_eq!(
            parse_err("bob:$6$onlysalt"),
            "passwords.txt line 1: malformed `$6$` hash: expected `$6$<salt>$<hash>` for user `bob`"
        );
        assert!(parse_err("bob:$7$abc$AAAA$AAAA").contains("invalid iteration count"));
        assert!(parse_err("bob:$7$-5$AAAA$AAAA").contains("invalid iteration count"));
        assert!(parse_err("bob:$7$0$AAAA$AAAA").contains("0 iterations"));
        assert!(
            parse_err("bob:$argon2id$v=19$t=1,m=64,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
                .contains("malformed `$argon2id$` hash")
        );
        assert!(
            parse_err("bob:$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
                .contains("unsupported version")
        );
        assert!(
            parse_err("bob:$argon2id$v=19$m=64,t=1,p=1,x=2$c2FsdHNhbHQ$aGFzaGhhc2g")
                .contains("malformed")
        );
    }

    #[test]
    fn error_absurd_pbkdf2_iterations() {
        let e = parse_err(&format!(
            "bob:{}",
            MOSQ_PBKDF2_101.replacen("$101$", "$10000001$", 1)
        ));
        assert_eq!(
            e,
            "passwords.txt line 1: `$7$` hash asks for 10000001 PBKDF2 iterations, more than \
             the limit of 10000000 for user `bob`"
        );
        let e = parse_err(&format!(
            "bob:{}",
            MOSQ_PBKDF2_101.replacen("$101$", "$99999999999$", 1)
        ));
        assert!(e.contains("invalid iteration count"), "{e}");
    }

    #[test]
    fn error_absurd_argon2_parameters() {
        let mem = LIBARGON2_CHEAP.replacen("m=64,", "m=1048577,", 1);
        assert_eq!(
            parse_err(&format!("bob:{mem}")),
            "passwords.txt line 1: `$argon2id$` hash asks for m=1048577 KiB of memory, more \
             than the limit of 1048576 (1 GiB) for user `bob`"
        );
        let passes = LIBARGON2_CHEAP.replacen("t=2,", "t=65,", 1);
        assert_eq!(
            parse_err(&format!("bob:{passes}")),
            "passwords.txt line 1: `$argon2id$` hash asks for t=65 passes; the limit is 1 to \
             64 for user `bob`"
        );
        let lanes = LIBARGON2_CHEAP.replacen("p=1$", "p=0$", 1);
        assert!(parse_err(&format!("bob:{lanes}")).contains("p=0 lanes"));
        // Fewer than 8 KiB per lane: argon2 itself refuses.
        let little = LIBARGON2_CHEAP.replacen("m=64,", "m=4,", 1);
        assert!(parse_err(&format!("bob:{little}")).contains("invalid parameters"));
    }

    #[test]
    fn hash_kind_of_recognises_only_valid_hashes() {
        assert_eq!(hash_kind_of(MOSQ_SHA512), Some(HashKind::Sha512));
        assert_eq!(hash_kind_of(MOSQ_PBKDF2_101), Some(HashKind::Sha512Pbkdf2));
        assert_eq!(hash_kind_of(LIBARGON2_CHEAP), Some(HashKind::Argon2id));
        assert_eq!(hash_kind_of("$6$plain"), None);
        assert_eq!(hash_kind_of("secret"), None);
    }

    #[test]
    fn hash_kind_names_match_mosquitto_passwd() {
        assert_eq!(HashKind::Argon2id.to_string(), "argon2id");
        assert_eq!(HashKind::Sha512Pbkdf2.to_string(), "sha512-pbkdf2");
        assert_eq!(HashKind::Sha512.to_string(), "sha512");
    }
}
