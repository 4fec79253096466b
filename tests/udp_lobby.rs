//! The text lobby over UDP (`--udp-bind`): each remote address is a session
//! in the same registry as TCP peers, one line per datagram each way.

mod common;

use std::net::{SocketAddr, UdpSocket};

use common::{READ_TIMEOUT, Server};

/// A UDP peer of the lobby.
struct UdpPeer {
    socket: UdpSocket,
    server: SocketAddr,
}

impl UdpPeer {
    fn new(server: SocketAddr) -> UdpPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client");
        socket
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        UdpPeer { socket, server }
    }

    fn send(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.server).expect("send");
    }

    /// The next datagram, which must be one line ending in `\n`.
    #[track_caller]
    fn line(&self) -> String {
        let mut buf = [0; 70_000];
        let (len, from) = self
            .socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no datagram within {READ_TIMEOUT:?}: {e}"));
        assert_eq!(from, self.server, "answered from the port it was sent to");
        let line = std::str::from_utf8(&buf[..len]).expect("UTF-8");
        let line = line.strip_suffix('\n').expect("each datagram ends in \\n");
        assert!(!line.contains('\n'), "one line per datagram: {line:?}");
        line.to_owned()
    }

    #[track_caller]
    fn expect(&self, expected: &str) {
        assert_eq!(self.line(), expected);
    }

    /// The token line a new session sends first (`TOKEN <12 hex digits>`).
    #[track_caller]
    fn token(&self) -> String {
        let token = self.line();
        let digits = token
            .strip_prefix("TOKEN ")
            .unwrap_or_else(|| panic!("expected TOKEN, got {token:?}"));
        assert!(
            digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
            "{token:?}"
        );
        token
    }

    /// Sends the first datagram, `/nick nick`, proves the address by
    /// echoing the token, and reads `WELCOME` and `NICK`.
    #[track_caller]
    fn join_as(&self, nick: &str) -> u64 {
        self.send(format!("/nick {nick}").as_bytes());
        let id = self.prove_and_welcome();
        self.expect(&format!("NICK guest{id} {nick}"));
        id
    }

    /// Reads the token, echoes it, and reads `WELCOME`: returns the id.
    #[track_caller]
    fn prove_and_welcome(&self) -> u64 {
        let token = self.token();
        self.send(token.as_bytes());
        let welcome = self.line();
        welcome
            .strip_prefix("WELCOME ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected WELCOME, got {welcome:?}"))
    }
}

#[test]
fn udp_and_tcp_peers_share_a_room() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0"]);
    let udp = UdpPeer::new(server.listener_addr("udp"));
    let mut tcp = server.named("tom");
    tcp.join("hall");
    udp.join_as("uma");
    udp.send(b"/join hall\r\n");
    udp.expect("JOIN hall uma");
    udp.expect("WHO hall tom uma");
    tcp.expect("JOIN hall uma");

    tcp.send("hello udp");
    tcp.expect("MSG hall tom hello udp");
    udp.expect("MSG hall tom hello udp");
    udp.send(b"hello tcp");
    udp.expect("MSG hall uma hello tcp");
    tcp.expect("MSG hall uma hello tcp");

    udp.send(b"two\nlines");
    assert!(udp.line().starts_with("ERR bad-encoding "));
    udp.send(b"/quit");
    udp.expect("BYE");
    tcp.expect("QUIT hall uma quit");
}

#[test]
fn a_silent_udp_peer_times_out_and_its_next_datagram_starts_afresh() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0", "--idle-timeout", "1"]);
    let udp = UdpPeer::new(server.listener_addr("udp"));
    let mut tcp = server.named("tom");
    tcp.join("hall");
    let first = udp.join_as("uma");
    udp.send(b"/join hall");
    udp.expect("JOIN hall uma");
    udp.expect("WHO hall tom uma");
    tcp.expect("JOIN hall uma");
    // The TCP member keeps talking (its own idle timeout is 1 s too) while
    // the UDP peer stays silent; the pause only paces the keep-alives.
    let mut quit_seen = false;
    for _ in 0..100 {
        tcp.send("/ping keepalive");
        let line = tcp.line();
        if line == "QUIT hall uma idle-timeout" {
            quit_seen = true;
            break;
        }
        assert_eq!(line, "PONG keepalive");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(quit_seen, "the room was told within 10 s");
    assert!(udp.line().starts_with("ERR idle-timeout "));
    let second = udp.join_as("uma");
    assert!(second > first, "a new session: {second} after {first}");
}

#[test]
fn udp_peers_count_toward_the_connection_limit() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0", "--max-connections", "1"]);
    let _tcp = server.named("tom");
    let udp = UdpPeer::new(server.listener_addr("udp"));
    // The refusal is 54 bytes: a datagram of 18 bytes or more may earn it.
    udp.send(b"/ping padded-token");
    assert!(udp.line().starts_with("ERR server-full "));
}

#[test]
fn udp_sessions_have_a_cap_of_their_own_and_short_datagrams_earn_no_refusal() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0", "--max-udp-sessions", "1"]);
    let addr = server.listener_addr("udp");
    let first = UdpPeer::new(addr);
    first.join_as("uma");
    let second = UdpPeer::new(addr);
    // 6 bytes may be answered with 18 at most: the refusal is withheld.
    second.send(b"/rooms");
    second.send(b"/ping a-long-enough-datagram");
    assert!(second.line().starts_with("ERR server-full "));
    // TCP slots are untouched by the UDP cap.
    let mut tcp = server.named("tom");
    tcp.send("/rooms");
    tcp.expect("ROOMS");
}

#[test]
fn an_unproved_address_gets_at_most_three_times_what_it_sent_and_no_command_is_carried_out() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0"]);
    let mut tom = server.named("tom");
    // Thirty rooms make `ROOMS` about 600 bytes: a large answer to 6.
    let members: Vec<_> = (0..30)
        .map(|k| {
            let mut member = server.client();
            member.join_alone(&format!("room-number-{k:02}"));
            member
        })
        .collect();
    let victim = UdpPeer::new(server.listener_addr("udp"));
    let mut sent = 0;
    for datagram in [&b"/who"[..], b"/nick victim", b"/rooms", b"/msg tom done"] {
        victim.send(datagram);
        sent += datagram.len();
    }
    // What an unproved address gets: the token and the greeting, no more.
    let token = victim.token();
    let welcome = victim.line();
    let id = welcome
        .strip_prefix("WELCOME ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("expected WELCOME, got {welcome:?}"))
        .to_owned();
    victim
        .socket
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0; 70_000];
    if let Ok((len, _)) = victim.socket.recv_from(&mut buf) {
        panic!(
            "more for an unproved address: {:?}",
            String::from_utf8_lossy(&buf[..len])
        );
    }
    let received = token.len() + welcome.len() + 2;
    assert!(received <= 3 * sent, "{received} bytes for {sent}");
    // None of its lines was carried out: tom got no message.
    tom.expect_nothing_pending();
    // Echoing the token carries them out, in order.
    victim
        .socket
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    victim.send(token.as_bytes());
    assert!(victim.line().starts_with("ERR not-in-room "));
    victim.expect(&format!("NICK guest{id} victim"));
    let rooms: Vec<String> = (0..30).map(|k| format!("room-number-{k:02}=1")).collect();
    victim.expect(&format!("ROOMS {}", rooms.join(" ")));
    victim.expect("PRIVMSG victim tom done");
    tom.expect("PRIVMSG victim tom done");
    drop(members);
}

#[test]
fn a_datagram_after_quit_starts_a_new_session() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0"]);
    let udp = UdpPeer::new(server.listener_addr("udp"));
    let first = udp.join_as("uma");
    udp.send(b"/quit");
    udp.send(b"/nick again");
    udp.expect("BYE");
    let second = udp.prove_and_welcome();
    assert!(second > first, "a new session: {second} after {first}");
    udp.expect(&format!("NICK guest{second} again"));
}

#[test]
fn udp_members_that_never_read_cost_the_server_bounded_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const UDP_MEMBERS: usize = 100;
    const LINES: usize = 3_000;
    const WINDOW: usize = 32;
    /// The endpoint's queue (4,096 datagrams of about 1 KiB here), the
    /// members' inboxes, and allocator noise.
    const BOUND: u64 = 48 << 20;
    let server = Server::start(&["--udp-bind", "127.0.0.1:0", "--room-capacity", "200"]);
    let mut flooder = server.named("flooder");
    flooder.join_alone("flood");
    let members: Vec<UdpPeer> = (0..UDP_MEMBERS)
        .map(|k| {
            let member = UdpPeer::new(server.listener_addr("udp"));
            let nick = format!("u{k}");
            member.join_as(&nick);
            member.send(b"/join flood");
            member.expect(&format!("JOIN flood {nick}"));
            let _who = member.line();
            flooder.expect(&format!("JOIN flood {nick}"));
            member
        })
        .collect();
    // From now on no member reads: the kernel drops what does not fit.
    let baseline = common::rss_bytes(server.pid());
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.pid());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(common::rss_bytes(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let text = "x".repeat(1000);
    let echo = format!("MSG flood flooder {text}");
    for sent in 0..LINES {
        flooder.send(&text);
        if sent >= WINDOW {
            flooder.expect(&echo);
        }
    }
    for _ in 0..WINDOW {
        flooder.expect(&echo);
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("{LINES} lines to {UDP_MEMBERS} udp members: peak RSS growth {growth} bytes");
    assert!(
        growth <= BOUND,
        "server RSS grew {growth} bytes, more than {BOUND}"
    );
    flooder.send("/who");
    let who = flooder.line();
    assert_eq!(who.split(' ').count(), 3 + UDP_MEMBERS, "{who:.80}");
    drop(members);
}

#[test]
fn a_retransmitted_token_is_not_a_line_of_chat() {
    let server = Server::start(&["--udp-bind", "127.0.0.1:0"]);
    let mut tom = server.named("tom");
    tom.join("hall");
    let udp = UdpPeer::new(server.listener_addr("udp"));
    udp.send(b"/join hall");
    let token = udp.token();
    udp.send(token.as_bytes());
    let welcome = udp.line();
    let nick = welcome
        .rsplit(' ')
        .next()
        .expect("WELCOME id nick")
        .to_owned();
    udp.expect(&format!("JOIN hall {nick}"));
    udp.expect(&format!("WHO hall tom {nick}"));
    tom.expect(&format!("JOIN hall {nick}"));
    udp.send(token.as_bytes());
    udp.send(b"after the repeat");
    tom.expect(&format!("MSG hall {nick} after the repeat"));
}
