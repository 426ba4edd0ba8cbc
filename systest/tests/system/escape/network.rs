//! Escape attempts: network.

use super::*;

#[tokio::test]
async fn tcp_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    // A UDP connect only looks up a route and sends nothing; the TCP connect is tried only
    // when there is none, so even a broken sandbox sends nothing off the machine.
    // 192.0.2.1 is TEST-NET-1, which no network routes anyway.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    probe.connect(("192.0.2.1", 9))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("192.0.2.1", 80))
                    return {"connected": True}
                except OSError as e:
                    return {"probe": probe_errno, "tcp": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "tcp": ENETUNREACH}));
}

#[tokio::test]
async fn udp_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    udp.connect(("192.0.2.1", 53))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                try:
                    udp.sendto(b"escape", ("192.0.2.1", 53))
                    return {"sent": True}
                except OSError as e:
                    return {"probe": probe_errno, "sendto": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "sendto": ENETUNREACH}));
}

#[tokio::test]
async fn ipv6_to_an_outside_address_finds_no_route() {
    let sandbox = sandbox().await;
    // 2001:db8::/32 is the IPv6 documentation prefix.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                try:
                    probe.connect(("2001:db8::1", 9))
                    return {"route": True}
                except OSError as e:
                    probe_errno = e.errno
                tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("2001:db8::1", 80))
                    return {"connected": True}
                except OSError as e:
                    return {"probe": probe_errno, "tcp": e.errno}
        "#))
        .await;
    assert_result(&job, &json!({"probe": ENETUNREACH, "tcp": ENETUNREACH}));
}

#[tokio::test]
async fn tcp_to_the_api_port_on_localhost_is_refused() {
    let sandbox = sandbox().await;
    let port = sandbox
        .app
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("the API's port");
    // The API listens on the host's 127.0.0.1; the jail's loopback is its own.
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                tcp.settimeout(3)
                try:
                    tcp.connect(("127.0.0.1", {port}))
                    tcp.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                    return {{"connected": tcp.recv(100).decode(errors="replace")}}
                except OSError as e:
                    return {{"errno": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "errno": ECONNREFUSED }));
}

#[tokio::test]
async fn udp_to_a_host_socket_on_localhost_never_arrives() {
    let sandbox = sandbox().await;
    let host = UdpSocket::bind("127.0.0.1:0").expect("bind a host UDP socket");
    host.set_nonblocking(true).expect("non-blocking");
    let port = host.local_addr().expect("address").port();
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.settimeout(2)
                udp.connect(("127.0.0.1", {port}))
                udp.send(b"escape")
                try:
                    udp.recv(100)
                    return {{"answered": True}}
                except OSError as e:
                    # The jail's own loopback answers "port unreachable".
                    return {{"recv": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "recv": ECONNREFUSED }));
    let mut buf = [0u8; 100];
    let received = host.recv(&mut buf);
    assert!(
        received
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host received {received:?}"
    );
}

#[tokio::test]
async fn the_only_network_interface_is_loopback() {
    let sandbox = sandbox().await;
    // SIOCGIFCONF lists the interfaces that have an IPv4 address (netlink is refused).
    let job = sandbox
        .contain(&py(r#"
            import array
            import fcntl
            import socket
            import struct

            def main():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                buf = array.array("B", bytes(40 * 32))
                address, _ = buf.buffer_info()
                answer = fcntl.ioctl(s.fileno(), 0x8912, struct.pack("iL", len(buf), address))
                size = struct.unpack("iL", answer)[0]
                return [bytes(buf[i:i + 16]).split(b"\0")[0].decode() for i in range(0, size, 40)]
        "#))
        .await;
    assert_result(&job, &json!(["lo"]));
}

#[tokio::test]
async fn dns_lookups_fail_without_a_resolver() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                try:
                    return {"address": socket.getaddrinfo("example.com", 80)[0][4][0]}
                except socket.gaierror as e:
                    return {"gaierror": e.errno}
        "#))
        .await;
    // EAI_AGAIN: no /etc/resolv.conf, and nothing answers on the jail's own loopback.
    assert_result(&job, &json!({"gaierror": -3}));
}

#[tokio::test]
async fn sockets_of_families_other_than_unix_and_ip_are_refused() {
    let sandbox = sandbox().await;
    // Netlink would work for an unprivileged process without the seccomp filter.
    let job = sandbox
        .contain(&py(r#"
            import socket

            def main():
                seen = {}
                for name, family, kind in [
                    ("netlink", 16, socket.SOCK_RAW),
                    ("packet", 17, socket.SOCK_RAW),
                    ("key", 15, socket.SOCK_RAW),
                    ("alg", 38, socket.SOCK_SEQPACKET),
                    ("vsock", 40, socket.SOCK_STREAM),
                ]:
                    try:
                        socket.socket(family, kind).close()
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#))
        .await;
    let refused = EAFNOSUPPORT;
    assert_result(
        &job,
        &json!({"netlink": refused, "packet": refused, "key": refused, "alg": refused, "vsock": refused}),
    );
}

#[tokio::test]
async fn abstract_unix_sockets_of_the_host_are_unreachable() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    let sandbox = sandbox().await;
    let name = format!("runbox-escape-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&address).expect("listen on the host");
    listener.set_nonblocking(true).expect("non-blocking");
    // Abstract unix sockets belong to a network namespace; the jail has its own.
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect("\0{name}")
                    return {{"connected": True}}
                except OSError as e:
                    return {{"errno": e.errno}}
        "#
        )))
        .await;
    assert_result(&job, &json!({ "errno": ECONNREFUSED }));
    assert!(listener.accept().is_err(), "the host accepted a connection");
}

#[tokio::test]
async fn unix_sockets_cannot_reach_or_be_created_at_host_paths() {
    use std::os::unix::net::UnixListener;

    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("host.sock");
    let _listener = UnixListener::bind(&path).expect("listen on the host");
    let path = path.display();
    let job = sandbox
        .contain(&py(&format!(
            r#"
            import socket

            def main():
                seen = {{}}
                for name, action, target in [
                    ("connect", "connect", "{path}"),
                    ("bind_in_run", "bind", "/run/escape.sock"),
                    ("bind_in_usr", "bind", "/usr/escape.sock"),
                ]:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        getattr(s, action)(target)
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#
        )))
        .await;
    assert_result(
        &job,
        &json!({"connect": ENOENT, "bind_in_run": ENOENT, "bind_in_usr": EROFS}),
    );
}
