//! systemd readiness notification (sd_notify) without libsystemd: one datagram to `$NOTIFY_SOCKET`.
//!
//! Under a `Type=notify` unit systemd sets `NOTIFY_SOCKET` to a filesystem
//! path (`/run/systemd/notify`) or an abstract socket name written with a
//! leading `@`. Each call sends one datagram of newline-separated
//! `KEY=value` assignments (sd_notify(3)). Outside systemd the variable is
//! unset and every function here does nothing. Failures are logged at debug
//! and otherwise ignored: readiness reporting must never stop the proxy.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd uses to pass the notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is ready (the tunnel is up), with a status line.
pub fn notify_ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// Updates the status line shown by `systemctl status`.
pub fn notify_status(status: &str) {
    notify(&format!("STATUS={}", one_line(status)));
}

/// Tells systemd the service is shutting down.
pub fn notify_stopping() {
    notify("STOPPING=1");
}

/// Sends `message` to `$NOTIFY_SOCKET` if it is set; does nothing otherwise.
fn notify(message: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    let Some(socket) = socket.to_str() else {
        log::debug!("sd_notify: NOTIFY_SOCKET is not valid UTF-8; not notifying");
        return;
    };
    if let Err(e) = send_to(socket, message) {
        log::debug!("sd_notify: sending to {socket} failed: {e}");
    }
}

/// Sends one datagram holding `message` to the socket named `socket`: a
/// filesystem path, or an abstract name when it starts with `@`.
pub fn send_to(socket: &str, message: &str) -> io::Result<()> {
    if socket.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty NOTIFY_SOCKET",
        ));
    }
    let sender = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        send_abstract(&sender, name.as_bytes(), message.as_bytes())?;
    } else {
        sender.send_to(message.as_bytes(), socket)?;
    }
    Ok(())
}

/// Sends to an abstract socket (Linux only; `SocketAddrExt` is stable since 1.70).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sender: &UnixDatagram, name: &[u8], message: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;

    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sender.send_to_addr(message, &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sender: &UnixDatagram, _name: &[u8], _message: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist only on Linux",
    ))
}

/// A status must be one line: a newline would start another assignment.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "localproxy-notify-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    fn recv(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set timeout");
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification datagram");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn ready_message_reaches_a_path_socket() {
        let dir = temp_dir("path");
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind fake NOTIFY_SOCKET");
        let path = path.to_str().expect("utf-8 path");

        send_to(path, "READY=1\nSTATUS=Tunnel up: 1 service").expect("send");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=Tunnel up: 1 service");

        send_to(path, "STOPPING=1").expect("send");
        assert_eq!(recv(&listener), "STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ready_message_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;

        let name = format!("localproxy-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract socket");

        send_to(&format!("@{name}"), "READY=1\nSTATUS=up").expect("send");
        assert_eq!(recv(&listener), "READY=1\nSTATUS=up");
    }

    #[test]
    fn missing_socket_and_bad_names_are_errors_not_panics() {
        let dir = temp_dir("missing");
        let missing = dir.join("nobody-listens");
        assert!(send_to(missing.to_str().expect("utf-8"), "READY=1").is_err());
        assert!(send_to("", "READY=1").is_err());
        assert!(send_to(&format!("@{}", "x".repeat(200)), "READY=1").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn status_is_kept_on_one_line() {
        assert_eq!(one_line("a\nREADY=0\r"), "a READY=0 ");
    }
}
