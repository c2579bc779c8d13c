//! systemd's notify protocol (`Type=notify`, sd_notify(3)): `READY=1` once every role of the
//! process is up, `STOPPING=1` when a graceful shutdown begins. Nothing is sent when
//! `NOTIFY_SOCKET` is unset, i.e. when jobu was not started by systemd as a notify service.
//!
//! A few lines over a unix datagram socket rather than the `sd-notify` crate: the socket's
//! address is taken out of the environment at start, before any thread exists, so shell
//! commands do not inherit it (systemd would log a warning for every message a command sends
//! it, since only the main process may notify: `NotifyAccess=main`); the crate reads the
//! variable at every call, and removing it later, with threads running, is unsound.
//! No watchdog (`WATCHDOG=1`): the supervisor has no health state to gate it on yet.

use std::ffi::OsStr;
use std::net::SocketAddr as IpSocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

use crate::actors::Roles;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// A notification that cannot be queued within this long is dropped with a warning.
const SEND_LIMIT: Duration = Duration::from_secs(1);

/// Where notifications go, read once per process.
#[derive(Debug, Clone)]
enum Target {
    /// Not started by systemd with `Type=notify`: notifications are no-ops.
    None,
    Socket(SocketAddr),
    /// Set, but not an address this module can send to (warned about at the first send).
    Unusable(String),
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Takes `NOTIFY_SOCKET` out of the environment and keeps it for [`ready`] and [`stopping`].
/// Call it first in `main`, while the process still has a single thread: removing a variable
/// races with threads that read the environment. Without this call (a program that embeds
/// the runtime) the variable is read, and left in place, at the first notification.
pub fn take_env() {
    let target = from_env();
    std::env::remove_var(NOTIFY_SOCKET);
    let _ = TARGET.set(target);
}

fn from_env() -> Target {
    match std::env::var_os(NOTIFY_SOCKET) {
        None => Target::None,
        Some(value) => parse(&value),
    }
}

/// A path (`/run/systemd/notify`) or, with a leading `@`, a name in the abstract namespace.
fn parse(value: &OsStr) -> Target {
    let bytes = value.as_bytes();
    let parsed = match bytes.first() {
        None => return Target::None,
        Some(b'/') => SocketAddr::from_pathname(value),
        Some(b'@') => abstract_name(&bytes[1..]),
        Some(_) => {
            return Target::Unusable(format!(
                "{} is neither an absolute path nor an abstract name (@…)",
                value.to_string_lossy()
            ))
        }
    };
    match parsed {
        Ok(addr) => Target::Socket(addr),
        Err(e) => Target::Unusable(format!("{}: {e}", value.to_string_lossy())),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_name(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_name(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

/// Tells systemd the service is up. [`RunningRuntime::run_until_signal`] calls it once the
/// runtime started (the database reached and migrated, the admin port bound, the supervisor's
/// children running) and its signal handlers are installed: a SIGTERM right after READY=1
/// must begin a graceful shutdown, not meet the default action. `admin` is where the admin
/// API listens, when this process serves it.
///
/// [`RunningRuntime::run_until_signal`]: crate::actors::RunningRuntime::run_until_signal
pub fn ready(roles: Roles, admin: Option<IpSocketAddr>) {
    notify(&format!("READY=1\nSTATUS={}\n", status(roles, admin)));
}

/// Tells systemd a graceful shutdown began, and that it may take up to `budget` (the worker's
/// drain plus a margin): `EXTEND_TIMEOUT_USEC` only ever lengthens `TimeoutStopSec`, so a
/// raised `worker.shutdown_timeout_seconds` is honoured even where the unit was not edited.
pub fn stopping(budget: Duration) {
    notify(&format!(
        "STOPPING=1\nSTATUS=shutting down gracefully\nEXTEND_TIMEOUT_USEC={}\n",
        budget.as_micros()
    ));
}

/// `running dispatcher, worker pool, rescuer, admin API on 127.0.0.1:8080`.
fn status(roles: Roles, admin: Option<IpSocketAddr>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if roles.dispatcher {
        parts.push("dispatcher".into());
    }
    if roles.worker {
        parts.push("worker pool".into());
    }
    if roles.rescuer {
        parts.push("rescuer".into());
    }
    if let Some(addr) = admin {
        parts.push(format!("admin API on {addr}"));
    }
    format!("running {}", parts.join(", "))
}

fn notify(message: &str) {
    let target = TARGET.get_or_init(from_env);
    let state = message.lines().next().unwrap_or_default();
    match target {
        Target::None => {}
        Target::Unusable(reason) => {
            tracing::warn!(notify_socket = %reason, state, "cannot notify systemd")
        }
        Target::Socket(addr) => match send(addr, message) {
            Ok(()) => tracing::debug!(state, "notified systemd"),
            Err(e) => tracing::warn!(error = %e, state, "cannot notify systemd"),
        },
    }
}

fn send(addr: &SocketAddr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_LIMIT))?;
    let sent = socket.send_to_addr(message.as_bytes(), addr)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn parses_paths_and_abstract_names() {
        assert!(matches!(parse(OsStr::new("")), Target::None));
        assert!(matches!(
            parse(OsStr::new("/run/systemd/notify")),
            Target::Socket(_)
        ));
        assert!(matches!(parse(OsStr::new("@jobu/x")), Target::Socket(_)));
        assert!(matches!(
            parse(OsStr::new("relative/path")),
            Target::Unusable(_)
        ));
        assert!(matches!(
            parse(OsStr::new("vsock:2:1234")),
            Target::Unusable(_)
        ));
    }

    #[test]
    fn sends_to_a_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind");
        let Target::Socket(addr) = parse(path.as_os_str()) else {
            panic!("not a socket address");
        };
        send(&addr, "READY=1\n").expect("send");
        assert_eq!(receive(&socket), "READY=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("jobu-test-{}", uuid::Uuid::new_v4().simple());
        let bound = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let socket = UnixDatagram::bind_addr(&bound).expect("bind");
        let Target::Socket(addr) = parse(OsStr::new(&format!("@{name}"))) else {
            panic!("not a socket address");
        };
        send(&addr, "STOPPING=1\n").expect("send");
        assert_eq!(receive(&socket), "STOPPING=1\n");
    }

    #[test]
    fn status_names_the_roles() {
        let admin: IpSocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(
            status(Roles::ALL, Some(admin)),
            "running dispatcher, worker pool, rescuer, admin API on 127.0.0.1:8080"
        );
        assert_eq!(
            status(Roles::ALL, None),
            "running dispatcher, worker pool, rescuer"
        );
        assert_eq!(status(Roles::WORKER, None), "running worker pool, rescuer");
    }
}
