//! The operator's HTTP listener from the outside: its address (from midge's log), a
//! minimal HTTP/1.1 client over std sockets (plain and TLS), the Prometheus text parser of
//! Debian's python3-prometheus-client, and headless Chromium from Debian's chromium.
//! Missing tools fail the test naming the package (scripts/test.sh installs them): no
//! test skips.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::{tool, wait_child, Broker, TempDir};

/// Where `[http]` listens: read from midge's `HTTP API listening on http://ADDR/` line
/// (the configs of these tests say `port = 0`, so no port can be taken by another test).
pub fn http_addr(b: &Broker) -> SocketAddr {
    assert!(
        b.wait_event("http_listening", Duration::from_secs(10)),
        "midge did not log its HTTP listener; log:\n{}",
        b.log_tail(40)
    );
    let log = b.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("event=\"http_listening\""))
        .expect("the line just seen");
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("address {addr:?} in {line:?}: {e}"))
}

/// What the listener answered.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn parse(raw: &[u8]) -> Response {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }
}

/// Sends `request` as it is and reads the answer until the server closes.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request).expect("write request");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    Response::parse(&raw)
}

fn request_bytes(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// `GET path` with extra headers.
pub fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    raw_request(addr, &request_bytes("GET", addr, path, headers))
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, &[])
}

/// `method path`, no body.
pub fn call(method: &str, addr: SocketAddr, path: &str) -> Response {
    raw_request(addr, &request_bytes(method, addr, path, &[]))
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `GET path` over TLS, trusting `ca` and expecting the name `localhost`.
pub fn get_tls(addr: SocketAddr, ca: &Path, path: &str) -> Response {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(&request_bytes("GET", addr, path, &[]))
        .expect("TLS handshake and request");
    let mut raw = Vec::new();
    // A server may close without close_notify after `Connection: close`: keep what came.
    let _ = tls.read_to_end(&mut raw);
    Response::parse(&raw)
}

/// One sample as Python's Prometheus parser read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Debian's Python 3, where apt puts python3-prometheus-client (a `python3` earlier on
/// PATH, such as pyenv's, may not see it).
fn debian_python() -> PathBuf {
    let python = PathBuf::from("/usr/bin/python3");
    let ok = python.is_file()
        && Command::new(&python)
            .args([
                "-c",
                "import prometheus_client.parser, prometheus_client.openmetrics.parser",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "/usr/bin/python3 cannot import prometheus_client. This test needs Debian's \
         python3-prometheus-client package: run scripts/test.sh (which installs it) or \
         `apt-get install python3-prometheus-client`."
    );
    python
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
out = []
for family in parse(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "kind": family.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// `text` parsed by `prometheus_client.parser.text_string_to_metric_families` (or, with
/// `openmetrics`, the strict OpenMetrics parser); panics with the parser's error.
pub fn parse_metrics(text: &str, openmetrics: bool) -> Vec<Sample> {
    let format = if openmetrics {
        "openmetrics"
    } else {
        "prometheus"
    };
    let mut child = Command::new(debian_python())
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the {format} parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    parsed
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap_or_default().to_owned(),
            kind: s["kind"].as_str().unwrap_or_default().to_owned(),
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            labels: s["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels`, if there is one.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`) and returns its
/// standard output. Virtual time lets the page's fetches and timers run to completion
/// without waiting in real time.
pub fn chromium(url: &str, args: &[&str]) -> String {
    let profile = TempDir::new("chromium");
    let out_path = profile.path().join("stdout");
    let out = std::fs::File::create(&out_path).expect("chromium output file");
    let mut child = Command::new(tool("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let status = wait_child(&mut child, Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium {args:?} {url} failed: {status:?}"
    );
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// The text inside the element with `id="<id>"` (up to its first child tag or its end).
pub fn element_text(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = at + html[at..].find('>')? + 1;
    let len = html[start..].find('<')?;
    Some(html[start..start + len].to_owned())
}

/// In the table row `<tr data-client-id="<client_id>">`, the text of the first cell
/// whose class list has `class`.
pub fn row_cell(html: &str, client_id: &str, class: &str) -> Option<String> {
    let row_at = html.find(&format!("data-client-id=\"{client_id}\""))?;
    let row = &html[row_at..];
    let row = &row[..row.find("</tr>")?];
    let mut rest = row;
    while let Some(td) = rest.find("<td class=\"") {
        rest = &rest[td + 11..];
        let classes = &rest[..rest.find('"')?];
        if classes.split(' ').any(|c| c == class) {
            let start = rest.find('>')? + 1;
            let len = rest[start..].find('<')?;
            return Some(rest[start..start + len].to_owned());
        }
    }
    None
}

/// `target/test-artifacts/<name>` (under CARGO_TARGET_DIR when it is set elsewhere), made
/// if missing: files a test keeps for people to look at.
pub fn artifact(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary> -> target/
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create test-artifacts");
    dir.join(name)
}
