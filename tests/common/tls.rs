//! Test PKI generated at run time: a fresh CA, a server certificate for localhost and client
//! certificates, written as PEM files into a test's scratch directory. Nothing here depends on
//! certificate files that could expire. Certificates and keys come from rcgen; the key-format
//! variants (PKCS#1 RSA, SEC1 EC) are converted with the `openssl` CLI.
//!
//! Keys are written as PKCS#8 (`BEGIN PRIVATE KEY`), EC P-256 unless the name says RSA, with
//! mode 0600 on Unix. Valid certificates run from 1 January of last year to 1 January three
//! years ahead; expired ones ended on 1 January of last year.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RsaKeySize, SanType,
    PKCS_RSA_SHA256,
};

/// Distinguishes the files of repeated calls (`client("bob", ..)` twice) in one directory.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A CA with its server and default client certificate, as PEM files in `dir`. The CA's
/// key stays in memory (and in `ca_key`) to sign more certificates.
pub struct Pki {
    pub dir: PathBuf,
    /// `ca.crt`: the root CA certificate, the trust anchor for server and client side.
    pub ca: PathBuf,
    /// `ca.key`: the CA's private key (PKCS#8), for tools that sign with it.
    pub ca_key: PathBuf,
    /// `server.crt`: CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1, serverAuth.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// `client.crt`: CN=`client_cn`, clientAuth.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_cn: String,
    ca_issuer: Issuer<'static, KeyPair>,
}

/// A server certificate issued by an intermediate CA, itself issued by the [`Pki`]'s root.
pub struct Chain {
    /// Leaf followed by the intermediate: what a server presents.
    pub chain: PathBuf,
    /// The leaf alone (a server configured with it cannot be verified against the root).
    pub leaf: PathBuf,
    /// The intermediate CA certificate alone.
    pub intermediate: PathBuf,
    /// The leaf's private key (PKCS#8, EC P-256).
    pub key: PathBuf,
}

/// Writes a fresh CA, a server cert for localhost/127.0.0.1/::1 signed by it, and a client
/// cert with CN `client_cn` into `dir` (created if missing; existing files are replaced).
pub fn generate(dir: &Path, client_cn: &str) -> Pki {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("tls: cannot create {}: {e}", dir.display()));
    let (ca_params, ca_key) = ca_params("midge test CA", None);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .unwrap_or_else(|e| panic!("tls: self-signing the CA: {e}"));
    let ca = write(&dir.join("ca.crt"), &ca_cert.pem());
    let ca_key_path = write_key(&dir.join("ca.key"), &ca_key);
    let ca_issuer = Issuer::new(ca_params, ca_key);

    let server_key = new_key();
    let server = server_params()
        .signed_by(&server_key, &ca_issuer)
        .unwrap_or_else(|e| panic!("tls: signing the server certificate: {e}"));
    let server_cert = write(&dir.join("server.crt"), &server.pem());
    let server_key = write_key(&dir.join("server.key"), &server_key);

    let (client_cert, client_key) = leaf_client(dir, "client", client_cn, false, &ca_issuer);
    Pki {
        dir: dir.to_path_buf(),
        ca,
        ca_key: ca_key_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
        client_cn: client_cn.to_string(),
        ca_issuer,
    }
}

impl Pki {
    /// A client cert and key (PEM paths in `dir`) with CN `cn`, signed by this CA; with
    /// `expired`, its validity ended on 1 January of last year. An empty `cn` gives a
    /// certificate whose subject has no CN at all.
    pub fn client(&self, cn: &str, expired: bool) -> (PathBuf, PathBuf) {
        let stem = unique_stem(if expired { "client-expired" } else { "client" }, cn);
        leaf_client(&self.dir, &stem, cn, expired, &self.ca_issuer)
    }

    /// `server.key` converted to SEC1 (`BEGIN EC PRIVATE KEY`) by `openssl ec`, in
    /// `server-sec1.key`.
    pub fn server_key_sec1(&self) -> PathBuf {
        sec1_key(&self.server_key, &self.dir.join("server-sec1.key"))
    }

    /// `client.key` converted to SEC1 (`BEGIN EC PRIVATE KEY`), in `client-sec1.key`.
    pub fn client_key_sec1(&self) -> PathBuf {
        sec1_key(&self.client_key, &self.dir.join("client-sec1.key"))
    }

    /// A second server certificate for localhost (same SANs as `server.crt`) with an RSA
    /// 2048 key in PKCS#1 form (`BEGIN RSA PRIVATE KEY`, converted by
    /// `openssl rsa -traditional`): `server-rsa.crt`, `server-rsa-pkcs1.key`. The PKCS#8
    /// original stays as `server-rsa.key`.
    pub fn server_rsa_pkcs1(&self) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .unwrap_or_else(|e| panic!("tls: generating an RSA key: {e}"));
        let mut params = server_params();
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        let cert = params
            .signed_by(&key, &self.ca_issuer)
            .unwrap_or_else(|e| panic!("tls: signing the RSA server certificate: {e}"));
        let cert_path = write(&self.dir.join("server-rsa.crt"), &cert.pem());
        let pkcs8 = write_key(&self.dir.join("server-rsa.key"), &key);
        let pkcs1 = self.dir.join("server-rsa-pkcs1.key");
        openssl(&[
            "rsa".as_ref(),
            "-in".as_ref(),
            pkcs8.as_os_str(),
            "-traditional".as_ref(),
            "-out".as_ref(),
            pkcs1.as_os_str(),
        ]);
        expect_pem_label(&pkcs1, "RSA PRIVATE KEY");
        restrict(&pkcs1);
        (cert_path, pkcs1)
    }

    /// A server certificate for localhost issued by an intermediate CA that this root
    /// signed: `chain.crt` (leaf + intermediate), `chain-leaf.crt`, `intermediate.crt`,
    /// `chain-leaf.key`. Clients trusting only `ca.crt` verify it through the intermediate.
    pub fn server_chain(&self) -> Chain {
        let (int_params, int_key) = ca_params("midge test intermediate CA", Some(0));
        let int_cert = int_params
            .signed_by(&int_key, &self.ca_issuer)
            .unwrap_or_else(|e| panic!("tls: signing the intermediate CA: {e}"));
        let int_issuer = Issuer::new(int_params, int_key);
        let leaf_key = new_key();
        let leaf = server_params()
            .signed_by(&leaf_key, &int_issuer)
            .unwrap_or_else(|e| panic!("tls: signing the chained server certificate: {e}"));
        Chain {
            chain: write(
                &self.dir.join("chain.crt"),
                &format!("{}{}", leaf.pem(), int_cert.pem()),
            ),
            leaf: write(&self.dir.join("chain-leaf.crt"), &leaf.pem()),
            intermediate: write(&self.dir.join("intermediate.crt"), &int_cert.pem()),
            key: write_key(&self.dir.join("chain-leaf.key"), &leaf_key),
        }
    }
}

/// A client cert and key (PEM paths in `dir`) with CN `cn`, signed by a fresh CA that no
/// [`Pki`] trusts (its certificate is written next to them, as `untrusted-<n>-<cn>-ca.crt`).
pub fn untrusted_client(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("tls: cannot create {}: {e}", dir.display()));
    let (params, key) = ca_params("untrusted test CA", None);
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("tls: self-signing the untrusted CA: {e}"));
    let stem = unique_stem("untrusted", cn);
    write(&dir.join(format!("{stem}-ca.crt")), &cert.pem());
    leaf_client(dir, &stem, cn, false, &Issuer::new(params, key))
}

/// Converts the PKCS#8 EC key `pkcs8` into SEC1 (`BEGIN EC PRIVATE KEY`) at `out`.
pub fn sec1_key(pkcs8: &Path, out: &Path) -> PathBuf {
    openssl(&[
        "ec".as_ref(),
        "-in".as_ref(),
        pkcs8.as_os_str(),
        "-out".as_ref(),
        out.as_os_str(),
    ]);
    expect_pem_label(out, "EC PRIVATE KEY");
    restrict(out);
    out.to_path_buf()
}

/// The PEM label of the first block in `path` (`CERTIFICATE`, `PRIVATE KEY`, ...).
pub fn pem_label(path: &Path) -> String {
    let text = read(path);
    text.lines()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .unwrap_or_else(|| panic!("tls: {} holds no PEM block", path.display()))
        .to_string()
}

fn new_key() -> KeyPair {
    KeyPair::generate().unwrap_or_else(|e| panic!("tls: generating an EC key: {e}"))
}

/// Root (`path_len` None) or intermediate CA parameters with a fresh key.
fn ca_params(cn: &str, path_len: Option<u8>) -> (CertificateParams, KeyPair) {
    let mut params = params_with_cn(cn, false);
    params.is_ca = IsCa::Ca(match path_len {
        None => BasicConstraints::Unconstrained,
        Some(n) => BasicConstraints::Constrained(n),
    });
    params.use_authority_key_identifier_extension = path_len.is_some();
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, new_key())
}

fn server_params() -> CertificateParams {
    let mut params = params_with_cn("localhost", false);
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().expect("tls: DNS name")),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

fn leaf_client(
    dir: &Path,
    stem: &str,
    cn: &str,
    expired: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> (PathBuf, PathBuf) {
    let mut params = params_with_cn(cn, expired);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = new_key();
    let cert = params
        .signed_by(&key, issuer)
        .unwrap_or_else(|e| panic!("tls: signing client certificate {cn:?}: {e}"));
    (
        write(&dir.join(format!("{stem}.crt")), &cert.pem()),
        write_key(&dir.join(format!("{stem}.key")), &key),
    )
}

/// Parameters with subject CN=`cn` (none if empty) and a validity window around now.
fn params_with_cn(cn: &str, expired: bool) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if !cn.is_empty() {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    let year = current_year();
    if expired {
        params.not_before = date_time_ymd(year - 3, 1, 1);
        params.not_after = date_time_ymd(year - 1, 1, 1);
    } else {
        params.not_before = date_time_ymd(year - 1, 1, 1);
        params.not_after = date_time_ymd(year + 3, 1, 1);
    }
    params
}

/// The current UTC year (to within a day; every window above has a year of margin).
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("tls: clock before 1970")
        .as_secs();
    1970 + (secs / 31_556_952) as i32 // mean Gregorian year in seconds
}

/// `{prefix}-{n}-{cn}` with the CN reduced to file-name-safe characters.
fn unique_stem(prefix: &str, cn: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let safe: String = cn
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{n}-{safe}")
}

fn write(path: &Path, contents: &str) -> PathBuf {
    fs::write(path, contents)
        .unwrap_or_else(|e| panic!("tls: cannot write {}: {e}", path.display()));
    path.to_path_buf()
}

fn write_key(path: &Path, key: &KeyPair) -> PathBuf {
    write(path, &key.serialize_pem());
    restrict(path);
    path.to_path_buf()
}

/// Mode 0600, as for any private key.
fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("tls: cannot chmod {}: {e}", path.display()));
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("tls: cannot read {}: {e}", path.display()))
}

fn expect_pem_label(path: &Path, label: &str) {
    let got = pem_label(path);
    assert_eq!(
        got,
        label,
        "tls: {} has the wrong PEM label",
        path.display()
    );
}

fn openssl(args: &[&OsStr]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("tls: cannot run openssl ({e}); install it: apt-get install -y openssl")
        });
    assert!(
        out.status.success(),
        "tls: openssl {:?} failed ({}):\n{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
