//! A simulated sensor: publishes a temperature reading at QoS 1 every `--interval-ms`.
//!
//!     cargo run --example sensor -- --host 127.0.0.1 --port 1883 --id sensor-1 --count 10
//!
//! With `--count 0` it runs until interrupted. Each reading goes to
//! `sensors/<id>/telemetry` as a small JSON document.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

struct Args {
    host: String,
    port: u16,
    id: String,
    count: u64,
    interval: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 1883,
        id: "sensor-1".into(),
        count: 10,
        interval: Duration::from_millis(1000),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host" => a.host = value,
            "--port" => a.port = value.parse().map_err(|e| format!("--port: {e}"))?,
            "--id" => a.id = value,
            "--count" => a.count = value.parse().map_err(|e| format!("--count: {e}"))?,
            "--interval-ms" => {
                a.interval =
                    Duration::from_millis(value.parse().map_err(|e| format!("--interval-ms: {e}"))?)
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sensor: {e}");
            std::process::exit(2);
        }
    };
    let mut options = MqttOptions::new(a.id.clone(), a.host.clone(), a.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let topic = format!("sensors/{}/telemetry", a.id);

    let publisher = tokio::spawn(async move {
        let mut n: u64 = 0;
        while a.count == 0 || n < a.count {
            n += 1;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            // A slowly wandering temperature, so the subscriber has something to show.
            let celsius = 20.0 + ((n as f64) / 5.0).sin() * 3.0;
            let reading = format!(r#"{{"seq":{n},"ts":{now},"celsius":{celsius:.2}}}"#);
            if client
                .publish(&topic, QoS::AtLeastOnce, false, reading)
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(a.interval).await;
        }
        let _ = client.disconnect().await;
    });

    let mut acked = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("sensor: connection error: {e}");
                break;
            }
        }
    }
    let _ = publisher.await;
    println!(
        "sensor {}: {acked} readings acknowledged by the broker",
        a.id
    );
}
