//! Hardening, authorization (issue 12, findings 7, 10, 11, 12 and 14), against the real
//! `midge` binary over raw sockets:
//!
//! * a session is bound to its owner: another user reusing the client id is refused
//!   (3.1.1 0x05, 5.0 0x87) and gets nothing of it, online or offline, and the owner keeps
//!   its connection, its queue and its delayed will;
//! * queued messages are checked against the owner's ACL when sent (after a SIGHUP
//!   reload), and the owner survives a kill -9 (the secure example);
//! * a username nothing verified does not unlock that user's ACL section;
//! * no client writes `$SYS`, ACL file or not;
//! * a long client id does not make every stored message long.

mod common;

use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{passwd_file, wait_closes, Broker, Login, LoginWill, TempDir};

const ACCEPTED: u8 = 0x00;
const NOT_AUTHORIZED_311: u8 = 0x05;
const NOT_AUTHORIZED_5: u8 = 0x87;
/// How long a client waits to be sure nothing more is coming.
const QUIET: Duration = Duration::from_millis(500);

/// A broker with alice and bob in a password file, and `extra`. Anonymous clients are let
/// in, for the healthy-client probe.
fn two_users(dir: &TempDir, extra: &str) -> Broker {
    let pw = passwd_file(dir.path(), &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    Broker::start(&format!("password_file = {pw:?}\n{extra}\n"))
}

/// The anonymous section of the ACL files here: the healthy-client probe's topics.
const PROBE_ACL: &str = "topic readwrite healthy/#\n";

fn as_user<'a>(user: &'a str, password: &'a str, client_id: &'a str, clean: bool) -> Login<'a> {
    Login {
        client_id,
        clean,
        username: Some(user),
        password: Some(password),
        ..Login::default()
    }
}

fn logged_in(b: &Broker, login: &Login) -> (Raw, bool) {
    let (w, present, code) = Raw::login(b.addr(), login);
    assert_eq!(code, ACCEPTED, "CONNACK for {}", login.client_id);
    (w, present)
}

/// Bob claims alice's client id (3.1.1, then 5.0, clean or not) while alice is connected:
/// refused with the version's "not authorized", and alice stays connected and served.
#[test]
fn another_user_taking_over_a_connected_session_is_refused_and_the_owner_stays() {
    let dir = TempDir::new("takeover-online");
    let b = two_users(&dir, "");
    let (mut alice, _) = logged_in(&b, &as_user("alice", "alice-pw", "shared-id", false));
    assert_eq!(alice.subscribe(1, &[("t/#", 1)]), [1]);

    for (v5, clean, code) in [
        (false, false, NOT_AUTHORIZED_311),
        (false, true, NOT_AUTHORIZED_311),
        (true, false, NOT_AUTHORIZED_5),
        (true, true, NOT_AUTHORIZED_5),
    ] {
        let bob = Login {
            v5,
            session_expiry: v5.then_some(3600),
            ..as_user("bob", "bob-pw", "shared-id", clean)
        };
        let (mut w, present, got) = Raw::login(b.addr(), &bob);
        assert_eq!(got, code, "v5 {v5} clean {clean}");
        assert!(!present, "a refused CONNACK has session present 0");
        assert!(
            w.try_read(Duration::from_secs(5)).is_none() && w.closed,
            "the refused connection is closed"
        );
    }
    // Alice still has her connection and her subscription.
    alice.assert_alive("alice after the take-over attempts");
    let (mut publisher, _) = logged_in(&b, &as_user("bob", "bob-pw", "bob-pub", true));
    publisher.publish_acked("t/1", b"for alice", 1, false);
    let got = alice.publishes(QUIET, 10);
    assert_eq!(got, [("t/1".to_owned(), b"for alice".to_vec())]);
    assert!(b.wait_event_with(
        "connect_refused",
        &[("cause", "client_id_in_use"), ("client_id", "shared-id")],
        Duration::from_secs(5)
    ));
    b.assert_serves_healthy_client("takeover-online");
}

/// Alice's persistent session is offline with messages queued: bob claiming its client id
/// is refused, gets no session and none of her messages; alice then resumes it whole.
#[test]
fn another_user_gets_nothing_of_an_offline_session_and_the_owner_resumes_it_whole() {
    let dir = TempDir::new("takeover-offline");
    let b = two_users(&dir, "");
    let (mut alice, _) = logged_in(&b, &as_user("alice", "alice-pw", "alice-dev", false));
    assert_eq!(alice.subscribe(1, &[("inbox/#", 1)]), [1]);
    alice.go_offline(&b);

    let (mut publisher, _) = logged_in(&b, &as_user("alice", "alice-pw", "alice-pub", true));
    for i in 0..5u16 {
        publisher.publish_acked(&format!("inbox/{i}"), b"secret", i + 1, false);
    }
    for (v5, clean) in [(false, false), (false, true), (true, false)] {
        let bob = Login {
            v5,
            session_expiry: v5.then_some(3600),
            ..as_user("bob", "bob-pw", "alice-dev", clean)
        };
        let (mut w, present, code) = Raw::login(b.addr(), &bob);
        let want = if v5 {
            NOT_AUTHORIZED_5
        } else {
            NOT_AUTHORIZED_311
        };
        assert_eq!((present, code), (false, want), "v5 {v5} clean {clean}");
        assert!(
            w.publishes(QUIET, 10).is_empty(),
            "bob got alice's messages"
        );
    }
    let (mut alice, present) = logged_in(&b, &as_user("alice", "alice-pw", "alice-dev", false));
    assert!(present, "alice's session survived bob's attempts");
    let got = alice.publishes(QUIET, 10);
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["inbox/0", "inbox/1", "inbox/2", "inbox/3", "inbox/4"]
    );
    b.assert_serves_healthy_client("takeover-offline");
}

/// MQTT 5.0 delayed will: alice's connection drops, her will waits for its delay; bob
/// claiming her client id in the meantime does not cancel it (only a resumption by its
/// owner does [MQTT-3.1.3-9]).
#[test]
fn another_users_claim_does_not_cancel_the_owners_delayed_will() {
    let dir = TempDir::new("takeover-will");
    let b = two_users(&dir, "");
    let (mut watcher, _) = logged_in(&b, &as_user("bob", "bob-pw", "watcher", true));
    assert_eq!(watcher.subscribe(1, &[("wills/#", 1)]), [1]);
    let alice = Login {
        v5: true,
        session_expiry: Some(3600),
        will: Some(LoginWill {
            topic: "wills/alice",
            payload: b"alice gone",
            qos: 1,
            retain: false,
            delay: Some(2),
        }),
        ..as_user("alice", "alice-pw", "alice-will", false)
    };
    let (alice_conn, _) = logged_in(&b, &alice);
    // Dropped without DISCONNECT: the will is due after its delay.
    drop(alice_conn);
    wait_closes(&b, "alice-will", 1);
    let bob = Login {
        v5: true,
        session_expiry: Some(3600),
        ..as_user("bob", "bob-pw", "alice-will", false)
    };
    let (_bob, _, code) = Raw::login(b.addr(), &bob);
    assert_eq!(code, NOT_AUTHORIZED_5);
    let got = watcher.publishes(Duration::from_secs(10), 1);
    assert_eq!(got, [("wills/alice".to_owned(), b"alice gone".to_vec())]);
    b.assert_serves_healthy_client("takeover-will");
}

/// Anonymous clients have no identity to bind a session to: as in Mosquitto, one may take
/// over another's (the behaviour without a password file stays as it was).
#[test]
fn anonymous_clients_may_still_take_over_each_others_sessions() {
    let b = Broker::start("");
    let first = Login {
        client_id: "anon-id",
        ..Login::default()
    };
    let (mut old, _) = logged_in(&b, &first);
    let (mut new, _) = logged_in(&b, &first);
    assert!(old.try_read(Duration::from_secs(5)).is_none() && old.closed);
    new.assert_alive("the anonymous client that took over");
}

/// An anonymous client cannot squat a user's client id: the user claims it and gets a
/// fresh session of its own, which anonymous clients then cannot take.
#[test]
fn a_user_claims_a_client_id_squatted_by_an_anonymous_session_and_starts_afresh() {
    let dir = TempDir::new("squat");
    let b = two_users(&dir, "");
    let anonymous = Login {
        client_id: "alice-phone",
        clean: false,
        ..Login::default()
    };
    let (mut squatter, _) = logged_in(&b, &anonymous);
    assert_eq!(squatter.subscribe(1, &[("bait/#", 1)]), [1]);
    squatter.go_offline(&b);

    let (mut alice, present) = logged_in(&b, &as_user("alice", "alice-pw", "alice-phone", false));
    assert!(!present, "the anonymous session is not alice's to resume");
    let (mut publisher, _) = logged_in(&b, &as_user("bob", "bob-pw", "bob-pub", true));
    publisher.publish_acked("bait/1", b"x", 1, false);
    assert!(
        alice.publishes(QUIET, 1).is_empty(),
        "alice inherited the squatter's subscription"
    );
    let (_w, _, code) = Raw::login(b.addr(), &anonymous);
    assert_eq!(code, NOT_AUTHORIZED_311, "the session is alice's now");
    alice.assert_alive("alice after the anonymous claim");
}

/// The ACL changes while messages wait in an offline session's queue: after SIGHUP, what
/// the new ACL denies the owner is not sent when the client comes back.
#[test]
fn queued_messages_are_checked_against_the_acl_in_force_when_they_are_sent() {
    let dir = TempDir::new("acl-at-send");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!("{PROBE_ACL}user alice\ntopic readwrite data/#\n"),
    )
    .unwrap();
    let b = two_users(&dir, &format!("acl_file = {acl:?}"));
    let (mut alice, _) = logged_in(&b, &as_user("alice", "alice-pw", "alice-acl", false));
    assert_eq!(alice.subscribe(1, &[("data/#", 1)]), [1]);
    alice.go_offline(&b);
    let (mut publisher, _) = logged_in(&b, &as_user("alice", "alice-pw", "alice-pub", true));
    publisher.publish_acked("data/secret/1", b"s", 1, false);
    publisher.publish_acked("data/public/1", b"p", 2, false);
    publisher.publish_acked("data/secret/2", b"s", 3, false);

    std::fs::write(
        &acl,
        format!("{PROBE_ACL}user alice\ntopic write data/#\ntopic read data/public/#\n"),
    )
    .unwrap();
    b.sighup();
    assert!(b.wait_event("acl_reloaded", Duration::from_secs(5)));
    let (mut alice, present) = logged_in(&b, &as_user("alice", "alice-pw", "alice-acl", false));
    assert!(present);
    let got = alice.publishes(QUIET, 10);
    assert_eq!(got, [("data/public/1".to_owned(), b"p".to_vec())]);
    assert!(b.wait_event_with(
        "delivery_denied",
        &[("client_id", "alice-acl")],
        Duration::from_secs(5)
    ));
    b.assert_serves_healthy_client("acl-at-send");
}

/// Finding 11 with examples/secure.toml, examples/acl and examples/passwords as shipped
/// (the TLS listener left out: its certificates come from certs/generate.sh) plus a
/// durable store: the demo user's queued messages survive kill -9 and are every one
/// delivered, because the session's owner is stored with it.
#[test]
fn secure_example_queued_messages_of_the_demo_user_survive_kill_9() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("examples/secure.toml")).unwrap();
    let plain = shipped
        .split("\n[[listener]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n[[listener]]");
    assert!(plain.contains("allow_anonymous = false") && !plain.contains("certfile"));
    // Relative paths in the example are taken from its directory, examples/; the test's
    // config file lives elsewhere, so they are spelled out.
    let at = |file: &str| format!("{:?}", root.join("examples").join(file));
    let plain = plain
        .replace("\"passwords\"", &at("passwords"))
        .replace("\"acl\"", &at("acl"));
    assert!(plain.contains("examples/passwords") && plain.contains("examples/acl"));
    let mut b = Broker::start(&format!("{plain}\n[persistence]\nenabled = true\n"));
    let demo = |id, clean| as_user("demo", "demo-password", id, clean);
    let (mut device, _) = logged_in(&b, &demo("demo-device", false));
    assert_eq!(device.subscribe(1, &[("demo/#", 1)]), [1]);
    device.go_offline(&b);

    const N: u16 = 20;
    let (mut publisher, _) = logged_in(&b, &demo("demo-tool", true));
    for i in 1..=N {
        let ack = publisher.publish_acked(&format!("demo/{i}"), b"reading", i, false);
        assert_eq!(ack.len(), 2, "3.1.1 PUBACK");
    }
    drop(publisher);
    b.kill();
    b.spawn();
    // More for the device while it is still offline after the restart: routed to the
    // restored session, whose owner's ACL decides.
    let (mut publisher, _) = logged_in(&b, &demo("demo-tool", true));
    for i in N + 1..=2 * N {
        publisher.publish_acked(&format!("demo/{i}"), b"reading", i, false);
    }
    let (mut device, present) = logged_in(&b, &demo("demo-device", false));
    assert!(present, "the session survived the restart");
    let got = device.publishes(QUIET, usize::from(2 * N) + 1);
    let want: Vec<String> = (1..=2 * N).map(|i| format!("demo/{i}")).collect();
    let topics: Vec<String> = got.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        topics, want,
        "every acknowledged message delivered after kill -9"
    );
    // And the stored owner still keeps another identity out after the restart.
    let (_w, _, code) = Raw::login(
        b.addr(),
        &Login {
            client_id: "demo-device",
            ..Login::default()
        },
    );
    assert_eq!(code, NOT_AUTHORIZED_311);
}

/// Finding 12: without a password file nothing verifies a username, so claiming "alice"
/// on a listener that lets anonymous clients in gets the anonymous section, not alice's.
#[test]
fn a_username_without_a_password_file_does_not_unlock_that_users_acl_section() {
    let dir = TempDir::new("unverified");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        format!("{PROBE_ACL}topic read public/#\nuser alice\ntopic readwrite secret/#\n"),
    )
    .unwrap();
    let b = Broker::start(&format!("acl_file = {acl:?}\n"));
    let claim = Login {
        client_id: "pretender",
        clean: true,
        username: Some("alice"),
        ..Login::default()
    };
    let (mut w, _) = logged_in(&b, &claim);
    assert_eq!(w.subscribe(1, &[("secret/#", 1)]), [0x80]);
    assert_eq!(w.subscribe(2, &[("public/#", 1)]), [1]);
    // Its writes are the anonymous section's too (nothing), so nobody reads them.
    w.publish_acked("secret/x", b"forged", 3, false);
    assert!(b.wait_event_with(
        "publish_refused",
        &[("cause", "acl"), ("client_id", "pretender")],
        Duration::from_secs(5)
    ));
    b.assert_serves_healthy_client("unverified");
}

/// Finding 14: with no ACL file, a client may still not publish, retain or leave a will
/// under `$SYS` (3.1.1: PUBACK and dropped; 5.0: PUBACK 0x87; a will: CONNACK refused).
/// The reader gets the broker's own `$SYS` topics, never the forgeries.
#[test]
fn sys_topics_are_not_writable_by_clients_without_an_acl_file() {
    let b = Broker::start("");
    let login = |id| Login {
        client_id: id,
        clean: true,
        ..Login::default()
    };
    let (mut reader, _) = logged_in(&b, &login("sys-reader"));
    assert_eq!(reader.subscribe(1, &[("$SYS/#", 1)]), [1]);
    let (mut forger, _) = logged_in(&b, &login("sys-forger"));
    let ack = forger.publish_acked("$SYS/broker/uptime", b"forged", 1, true);
    assert_eq!(ack, [0x00, 0x01], "3.1.1 PUBACK, message dropped");
    // The broker's own $SYS messages come (retained, and updates); no forged one.
    let forged = |got: &[(String, Vec<u8>)]| got.iter().any(|(_, p)| p == b"forged");
    let got = reader.publishes(QUIET, 10_000);
    assert!(!forged(&got), "forged $SYS delivered: {got:?}");
    // Nor retained: a new subscriber gets the broker's uptime, not the forgery.
    let (mut late, _) = logged_in(&b, &login("sys-late"));
    assert_eq!(late.subscribe(1, &[("$SYS/#", 1)]), [1]);
    let got = late.publishes(QUIET, 10_000);
    assert!(!forged(&got), "forged $SYS retained: {got:?}");
    assert!(
        got.iter()
            .any(|(t, p)| t == "$SYS/broker/uptime" && p.ends_with(b" seconds")),
        "{got:?}"
    );

    // 5.0: PUBACK reason 0x87.
    let (mut forger5, _) = logged_in(
        &b,
        &Login {
            v5: true,
            ..login("sys-forger-5")
        },
    );
    let mut p = vec![0x32];
    let topic = b"$SYS/broker/clients";
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic);
    body.extend_from_slice(&[0x00, 0x07, 0x00]);
    body.extend_from_slice(b"forged");
    common::push_len(&mut p, body.len());
    p.extend(body);
    forger5.send(&p);
    let ack = forger5.wait_puback(7);
    assert_eq!(ack[2], NOT_AUTHORIZED_5, "5.0 PUBACK reason");

    // A will under $SYS: refused at CONNECT.
    let (_w, _, code) = Raw::login(
        b.addr(),
        &Login {
            will: Some(LoginWill {
                topic: "$SYS/broker/will",
                payload: b"x",
                ..LoginWill::default()
            }),
            ..login("sys-will")
        },
    );
    assert_eq!(code, NOT_AUTHORIZED_311);
    let got = reader.publishes(QUIET, 10_000);
    assert!(
        !forged(&got) && got.iter().all(|(t, _)| t != "$SYS/broker/will"),
        "{got:?}"
    );
    b.assert_serves_healthy_client("sys");
}

/// Finding 7: a 60 KB client id costs its bytes once, in the session's record, not in
/// every stored message: the store grows by about what a message holds.
#[test]
fn a_long_client_id_does_not_make_every_stored_message_long() {
    let b = Broker::start("[persistence]\nenabled = true\nsync = \"always\"\n");
    let store = b.dir.path().join("data");
    let id = "x".repeat(60 * 1024);
    let (mut sub, _) = logged_in(
        &b,
        &Login {
            client_id: &id,
            clean: false,
            ..Login::default()
        },
    );
    assert_eq!(sub.subscribe(1, &[("long/#", 1)]), [1]);
    sub.send(&[0xE0, 0x00]);
    drop(sub);
    // The log cuts a client id this long, so wait for any close rather than this id's.
    assert!(b.wait_event("connection_closed", Duration::from_secs(5)));
    let (mut publisher, _) = logged_in(
        &b,
        &Login {
            client_id: "long-pub",
            clean: true,
            ..Login::default()
        },
    );
    // Settle what the connections above wrote.
    publisher.publish_acked("long/0", b"1", 1, false);
    let before = Broker::dir_bytes(&store);
    const N: u64 = 50;
    for i in 1..=N {
        publisher.publish_acked(&format!("long/{i}"), b"1", (i + 1) as u16, false);
    }
    let per_message = Broker::dir_bytes(&store).saturating_sub(before) / N;
    eprintln!("store growth per 1-byte QoS 1 message, 60 KB client id: {per_message} bytes");
    // A message record, its queue entry: about 100 bytes, whatever the client id.
    assert!(
        per_message < 1024,
        "{per_message} bytes of store per 1-byte message with a 60 KB client id"
    );
    // And they are all there for the client when it comes back.
    let (mut sub, present) = logged_in(
        &b,
        &Login {
            client_id: &id,
            clean: false,
            ..Login::default()
        },
    );
    assert!(present);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < N as usize + 1 && Instant::now() < deadline {
        got.extend(sub.publishes(QUIET, N as usize + 1));
    }
    assert_eq!(got.len(), N as usize + 1);
    b.assert_serves_healthy_client("long-id");
}
