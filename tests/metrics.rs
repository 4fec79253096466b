//! `GET /metrics` parsed back with a Prometheus text parser: after a
//! scripted session of a text and a WebSocket client, every counter moved by
//! exactly what the script did.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{READ_TIMEOUT, Server};

/// Every sample of one scrape: `name{labels}` → value.
fn scrape(http: SocketAddr) -> HashMap<String, f64> {
    let mut stream = TcpStream::connect(http).expect("connect to HTTP");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a whole response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    parsed
        .samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(key, value)| format!("{key}=\"{value}\""))
                .collect();
            labels.sort();
            let key = if labels.is_empty() {
                sample.metric
            } else {
                format!("{}{{{}}}", sample.metric, labels.join(","))
            };
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {key}: {other:?}"),
            };
            (key, value)
        })
        .collect()
}

#[track_caller]
fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {samples:#?}"))
}

#[tokio::test]
async fn counters_move_as_a_scripted_session_says() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let server = Server::start(&["--http-bind", "127.0.0.1:0"]);
    let http = server.listener_addr("http");
    let before = scrape(http);
    for transport in ["tcp-text", "tcp-json", "udp", "ws"] {
        let key = format!("switchboard_sessions{{transport=\"{transport}\"}}");
        assert_eq!(value(&before, &key), 0.0);
    }
    assert_eq!(value(&before, "switchboard_lines_in_total"), 0.0);
    assert_eq!(value(&before, "switchboard_rooms"), 0.0);

    // Text: WELCOME, /nick, /join (JOIN, WHO).
    let mut tex = server.named("tex");
    tex.join_alone("hall");
    // WebSocket: welcome, join (join, who).
    let (mut web, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect("upgrade");
    match tokio::time::timeout(READ_TIMEOUT, web.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => assert!(text.contains("welcome"), "{text}"),
        other => panic!("expected the welcome, got {other:?}"),
    }
    let join = r#"{"cmd":"join","room":"hall"}"#;
    web.send(Message::text(join)).await.unwrap();
    tex.expect_prefix("JOIN hall guest");

    let during = scrape(http);
    assert_eq!(
        value(&during, "switchboard_sessions{transport=\"tcp-text\"}"),
        1.0
    );
    assert_eq!(
        value(&during, "switchboard_sessions{transport=\"ws\"}"),
        1.0
    );
    assert_eq!(value(&during, "switchboard_rooms"), 1.0);

    for text in ["one", "two", "three"] {
        tex.send(text);
        tex.expect(&format!("MSG hall tex {text}"));
    }
    tex.send("/quit");
    tex.expect("BYE");
    // The WebSocket client reads all it is owed, tex's quit last, then
    // vanishes without a close frame: a reset.
    let mut seen = Vec::new();
    while !seen
        .last()
        .is_some_and(|text: &String| text.contains("\"quit\""))
    {
        assert!(seen.len() < 10, "{seen:?}");
        match tokio::time::timeout(READ_TIMEOUT, web.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => seen.push(text.to_string()),
            other => panic!("expected an event, got {other:?} after {seen:?}"),
        }
    }
    assert_eq!(seen.len(), 6, "join, who, three msg, quit: {seen:?}");
    drop(web);

    // Sessions end asynchronously: poll (bounded) until both are gone.
    let mut after = scrape(http);
    for _ in 0..200 {
        let gone = value(&after, "switchboard_disconnects_total{reason=\"reset\"}") == 1.0
            && value(&after, "switchboard_disconnects_total{reason=\"quit\"}") == 1.0;
        if gone {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
        after = scrape(http);
    }
    assert_eq!(
        value(&after, "switchboard_disconnects_total{reason=\"quit\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "switchboard_disconnects_total{reason=\"reset\"}"),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "switchboard_disconnects_total{reason=\"slow-consumer\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&after, "switchboard_sessions{transport=\"tcp-text\"}"),
        0.0
    );
    assert_eq!(value(&after, "switchboard_sessions{transport=\"ws\"}"), 0.0);
    assert_eq!(value(&after, "switchboard_rooms"), 0.0);
    // In: /nick, /join, three lines, /quit from tex; one join from the
    // WebSocket.
    assert_eq!(value(&after, "switchboard_lines_in_total"), 7.0);
    let bytes_in = [
        "/nick tex",
        "/join hall",
        "one",
        "two",
        "three",
        "/quit",
        join,
    ]
    .iter()
    .map(|line| line.len())
    .sum::<usize>();
    assert_eq!(value(&after, "switchboard_bytes_in_total"), bytes_in as f64);
    // Out: tex got WELCOME, NICK, JOIN, WHO, the guest's JOIN, three MSG,
    // BYE; the WebSocket got welcome, join, who, three msg and tex's quit.
    assert_eq!(value(&after, "switchboard_lines_out_total"), 16.0);
    assert_eq!(value(&after, "switchboard_slow_consumer_drops_total"), 0.0);
    assert_eq!(
        value(
            &after,
            "switchboard_refused_connections_total{cause=\"limit\"}"
        ),
        0.0
    );
    assert!(after.contains_key("switchboard_outbound_queue_high_water"));
    assert!(after.contains_key("switchboard_sequencer_queue_depth{thread=\"0\"}"));
    // No per-room or per-nick labels anywhere.
    assert!(
        after
            .keys()
            .all(|key| !key.contains("\"hall\"") && !key.contains("\"tex\"")),
        "{after:?}"
    );
}
