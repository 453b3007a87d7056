//! Operations, the configuration side (issue 14): paths taken from the config file's
//! directory, `midge check-config`, no config file = memory only, the warning for a
//! listener that refuses every client, and the message for an address in use. Every test
//! runs the real binary.

mod common;

use std::net::TcpListener;
use std::path::Path;

use common::process::{midge, run, run_command, stderr, stdout, Launch, Running};
use common::*;

/// A config directory with every kind of file a config names, all given as relative
/// paths: password file (user "alice"), ACL, TLS certificate, key and CA, a log file in
/// `logs/` and the store in `store/`. Returns the config text for listener ports `plain`
/// and `tls`.
fn config_with_relative_paths(dir: &Path, plain: u16, tls: u16) -> String {
    if !dir.join("passwords").exists() {
        passwd_file(dir, &[("alice", "secret")]);
        std::fs::write(dir.join("acl"), "user alice\ntopic readwrite alice/#\n").unwrap();
        common::tls::generate(&dir.join("certs"), "device");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
    }
    format!(
        "password_file = \"passwords\"\n\
         acl_file = \"acl\"\n\
         log_dest = \"logs/midge.log\"\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {plain}\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {tls}\n\
         certfile = \"certs/server.crt\"\nkeyfile = \"certs/server.key\"\ncafile = \"certs/ca.crt\"\n\
         [persistence]\npath = \"store\"\n"
    )
}

#[test]
fn relative_paths_are_taken_from_the_config_files_directory_not_the_working_directory() {
    let conf = TempDir::new("ops-relative-conf");
    let elsewhere = TempDir::new("ops-relative-cwd");
    let config_path = conf.path().join("midge.toml");
    let (_m, port) = Running::launch_on_free_port(|port| {
        let text = config_with_relative_paths(conf.path(), port, free_port());
        let mut launch = Launch::config(&config_path, &text, &format!("127.0.0.1:{port}"));
        launch.cmd.current_dir(elsewhere.path());
        Launch {
            log_file: Some(conf.path().join("logs/midge.log")),
            ..launch
        }
    });
    let log = std::fs::read_to_string(conf.path().join("logs/midge.log")).unwrap();
    assert!(
        !event_lines(&log, "listening", &[("tls", "true")]).is_empty(),
        "the TLS listener is up:\n{log}"
    );
    // The password file was found: alice logs in, a wrong password is refused.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let login = |password: &[u8]| {
        let connect = connect_packet_with("alice-1", Some("alice"), Some(password), None);
        raw_connack(addr, &connect).1
    };
    assert_eq!(login(b"secret"), 0x00);
    assert_eq!(login(b"wrong"), 0x04);
    assert!(
        conf.path().join("store").is_dir(),
        "the store is next to the config file"
    );
    let litter: Vec<_> = std::fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        litter.is_empty(),
        "nothing is created in the working directory: {litter:?}"
    );
}

#[test]
fn check_config_says_config_ok_and_exits_0_leaving_nothing_behind() {
    let conf = TempDir::new("ops-check-ok");
    let elsewhere = TempDir::new("ops-check-ok-cwd");
    let text = config_with_relative_paths(conf.path(), free_port(), free_port());
    let config_path = conf.path().join("midge.toml");
    std::fs::write(&config_path, text).unwrap();
    let mut cmd = midge();
    cmd.arg("check-config")
        .arg("-c")
        .arg(&config_path)
        .current_dir(elsewhere.path());
    let out = run_command(cmd);
    assert!(
        out.status.success(),
        "check-config: {}\n{}",
        out.status,
        stderr(&out)
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("{}: config OK", config_path.display())
    );
    assert!(stderr(&out).is_empty(), "no warnings: {}", stderr(&out));
    // The store directory and the log file midge would create are not left behind.
    assert!(!conf.path().join("store").exists());
    assert!(!conf.path().join("logs/midge.log").exists());
}

#[test]
fn check_config_lists_every_problem_and_exits_1() {
    let dir = TempDir::new("ops-check-bad");
    std::fs::write(dir.path().join("acl"), "user alice\ntopic frobnicate a/b\n").unwrap();
    std::fs::write(dir.path().join("passwords"), "alice:$9$what\n").unwrap();
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let held_http = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_http_port = held_http.local_addr().unwrap().port();
    let config = format!(
        "max_packet_size = 0\n\
         password_file = \"passwords\"\n\
         acl_file = \"acl\"\n\
         log_dest = \"no-such-dir/midge.log\"\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {held_port}\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {}\n\
         certfile = \"missing.crt\"\nkeyfile = \"missing.key\"\n\
         [persistence]\npath = \"not-a-dir/store\"\n\
         [http]\nport = {held_http_port}\npassword_file = \"no-such-operators\"\n",
        free_port()
    );
    let config_path = dir.path().join("bad.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = run(&["check-config", "-c", &config_path.display().to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        stdout(&out).is_empty(),
        "no \"config OK\": {}",
        stdout(&out)
    );
    let expected: &[&[&str]] = &[
        &["max_packet_size = 0"],
        &["password_file", "line 1"],
        &["acl_file", "acl:2", "frobnicate"],
        &["log_dest", "no-such-dir/midge.log"],
        &["[persistence].path", "not a directory"],
        &["listener[2].certfile", "missing.crt"],
        &[
            "listener[1]",
            &format!("127.0.0.1:{held_port}"),
            "in use",
            "ss -ltnp",
        ],
        &["[http]", "no-such-operators"],
        &["[http]", &format!("127.0.0.1:{held_http_port}"), "in use"],
    ];
    for needles in expected {
        assert!(
            err.lines()
                .any(|line| needles.iter().all(|n| line.contains(n))),
            "no line names all of {needles:?}:\n{err}"
        );
    }
    assert!(
        err.trim_end()
            .ends_with(&format!("{}: 9 problems", config_path.display())),
        "{err}"
    );
    drop(held);
    drop(held_http);
}

#[test]
fn check_config_reports_a_file_that_is_not_toml_and_needs_a_config_file() {
    let dir = TempDir::new("ops-check-syntax");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "max_packet_size = \n").unwrap();
    let out = run(&["check-config", "-c", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));

    let out = run(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "clap: -c is required");
    assert!(stderr(&out).contains("--config"), "{}", stderr(&out));
}

#[test]
fn no_config_file_keeps_state_in_memory_and_writes_no_store() {
    let cwd = TempDir::new("ops-memory-only");
    let (m, _port) = Running::start_command_on_free_port(|port| {
        let mut cmd = midge();
        cmd.args(["-p", &port.to_string()]).current_dir(cwd.path());
        cmd
    });
    assert!(
        !event_lines(&m.log(), "store_disabled", &[]).is_empty(),
        "{}",
        m.log()
    );
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "no store (nor anything else) in the working directory"
    );
}

/// The refusal warning lines of a log.
fn refusal_warnings(log: &str) -> Vec<&str> {
    event_lines(log, "listener_refuses_everyone", &[])
}

#[test]
fn listener_beyond_loopback_without_credentials_warns_once_why_clients_are_refused() {
    let (m, port) = Running::launch_on_free_port(|port| {
        let mut cmd = midge();
        cmd.args(["--bind", "0.0.0.0", "-p", &port.to_string()]);
        Launch {
            cmd,
            listening_on: format!("0.0.0.0:{port}"),
            log_file: None,
        }
    });
    // What the warning is about: an anonymous client (and one with an unverifiable
    // username) gets CONNACK 0x05.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(raw_connack(addr, &connect_packet("anon")).1, 0x05);
    let with_name = connect_packet_with("named", Some("alice"), Some(b"pw"), None);
    assert_eq!(raw_connack(addr, &with_name).1, 0x05);
    let log = m.log();
    let warnings = refusal_warnings(&log);
    assert_eq!(warnings.len(), 1, "one warning line:\n{log}");
    let line = warnings[0];
    assert_eq!(log_field(line, "addr"), Some(&*format!("0.0.0.0:{port}")));
    // What it says: why, and what to set.
    for needle in [
        &format!("0.0.0.0:{port}") as &str,
        "not bound to a loopback address",
        "password_file",
        "midge passwd",
        "allow_anonymous = true",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }
}

#[test]
fn listener_beyond_loopback_with_anonymous_allowed_or_a_password_file_is_not_warned_about() {
    let dir = TempDir::new("ops-no-warning");
    let passwords = passwd_file(dir.path(), &[("alice", "secret")]);
    for (n, extra) in [
        "allow_anonymous = true\n".to_owned(),
        format!("password_file = {passwords:?}\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = dir.path().join(format!("midge-{n}.toml"));
        let (m, _port) = Running::launch_on_free_port(|port| {
            let text = format!(
                "{extra}[[listener]]\nbind = \"0.0.0.0\"\nport = {port}\n\
                 [persistence]\nenabled = false\n"
            );
            Launch::config(&config, &text, &format!("0.0.0.0:{port}"))
        });
        assert!(refusal_warnings(&m.log()).is_empty(), "{}", m.log());
    }
}

#[test]
fn address_in_use_names_the_address_and_suggests_another_port_and_how_to_find_the_owner() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let out = run(&["-p", &port.to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("midge: "))
        .unwrap_or_else(|| panic!("no \"midge: \" line:\n{err}"));
    for needle in [
        format!("cannot listen on 127.0.0.1:{port}"),
        "in use".to_owned(),
        format!("ss -ltnp 'sport = :{port}'"),
        format!("-p {}", port + 1),
    ] {
        assert!(line.contains(&needle), "{needle:?} in {line}");
    }
    drop(holder);
}

/// The unit file runs what the docs say: `check-config` before the start, the config in
/// /etc/midge, and the notify protocol the broker speaks.
#[test]
fn systemd_unit_is_type_notify_reloads_with_sighup_and_runs_as_its_own_user() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("dist/systemd/midge.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/midge -c /etc/midge/midge.toml",
        "User=midge",
        "StateDirectory=midge",
        "LogsDirectory=midge",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }
    // The config the unit starts midge with parses and validates (its store is under
    // /var/lib, which a test does not create).
    let shipped = root.join("dist/midge.toml");
    midge::Config::load(&shipped).unwrap_or_else(|e| panic!("dist/midge.toml: {e}"));
}
