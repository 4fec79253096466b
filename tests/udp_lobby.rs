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

    /// Sends the first datagram, `/nick nick`: answered by `WELCOME` first.
    #[track_caller]
    fn join_as(&self, nick: &str) -> u64 {
        self.send(format!("/nick {nick}").as_bytes());
        let welcome = self.line();
        let id: u64 = welcome
            .strip_prefix("WELCOME ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("expected WELCOME, got {welcome:?}"));
        self.expect(&format!("NICK guest{id} {nick}"));
        id
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
    udp.send(b"/rooms");
    assert!(udp.line().starts_with("ERR server-full "));
}
