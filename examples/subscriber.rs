//! Prints the telemetry of every sensor: subscribes to `sensors/+/telemetry` at QoS 1.
//!
//!     cargo run --example subscriber -- --host 127.0.0.1 --port 1883 --count 10
//!
//! With `--count 0` it prints until interrupted.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 1883;
    let mut count: u64 = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else {
            eprintln!("subscriber: {flag} needs a value");
            std::process::exit(2);
        };
        let ok = match flag.as_str() {
            "--host" => {
                host = value;
                true
            }
            "--port" => value.parse().map(|p| port = p).is_ok(),
            "--count" => value.parse().map(|c| count = c).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("subscriber: bad flag {flag}");
            std::process::exit(2);
        }
    }
    let mut options = MqttOptions::new("telemetry-printer", host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    if let Err(e) = client
        .subscribe("sensors/+/telemetry", QoS::AtLeastOnce)
        .await
    {
        eprintln!("subscriber: {e}");
        std::process::exit(1);
    }
    let mut seen = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                println!("{} {}", p.topic, String::from_utf8_lossy(&p.payload));
                seen += 1;
                if count != 0 && seen >= count {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("subscriber: connection error: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
