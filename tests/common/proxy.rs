//! A TCP proxy between a `jobu` process and its database server, for injecting network
//! faults from outside the binary. It listens on 127.0.0.1 (an OS-chosen port), opens one
//! upstream connection per accepted client and forwards bytes both ways, in a [`Mode`] that
//! the test switches at run time:
//!
//! - [`Mode::Forward`]: plain forwarding.
//! - [`Mode::Blackhole`]: nothing is forwarded in either direction, yet every socket stays
//!   open, as in a network partition: queries hang and nothing errors. Switching back to
//!   `Forward` resumes forwarding on the existing connections.
//! - [`Mode::Delay`]: each chunk from client to server waits that long before it is
//!   forwarded (a slow network; replies are not delayed).
//! - [`Mode::CutReplyContaining`]: one shot. Forwards normally until the server→client
//!   stream of some connection contains the marker (found across read boundaries: a rolling
//!   tail is kept), then drops that chunk, closes that connection's client side, keeps its
//!   upstream side open for [`CUT_DRAIN`] while discarding what the server sends (so the
//!   server finishes and commits what it was doing, and the client only loses the reply),
//!   and switches every connection back to `Forward`.
//! - [`Mode::CutReplyToRequest`]: one shot, the same cut, of the reply to the first client
//!   request containing `request` on a connection whose client has sent `after` before it
//!   (for a reply that carries nothing recognisable, such as the one to a `COMMIT`).
//!
//! Dropping the [`Proxy`] closes the listener and every connection.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How long the upstream side of a cut connection stays open after its reply was cut.
pub const CUT_DRAIN: Duration = Duration::from_secs(3);

const CHUNK: usize = 16 * 1024;

/// How the proxy treats traffic; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Blackhole,
    Delay(Duration),
    CutReplyContaining(Vec<u8>),
    CutReplyToRequest { after: Vec<u8>, request: Vec<u8> },
}

struct Shared {
    mode: watch::Sender<Mode>,
    upstream: SocketAddr,
    accepted: AtomicUsize,
    cuts: AtomicUsize,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

/// A running proxy; see the module documentation.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts a proxy to `upstream` in [`Mode::Forward`].
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            mode: watch::channel(Mode::Forward).0,
            upstream,
            accepted: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    let handle = tokio::spawn(connection(client, shared.clone()));
                    shared.track(handle.abort_handle());
                }
            })
        };
        shared.track(accept.abort_handle());
        Proxy { addr, shared }
    }

    /// Starts a proxy to the server of a `postgres://` or `mysql://` URL.
    pub async fn for_url(url: &str) -> Proxy {
        let parsed = url::Url::parse(url).expect("database url");
        let host = parsed.host_str().expect("database url host");
        let port = parsed
            .port_or_known_default()
            .unwrap_or(match parsed.scheme() {
                "postgres" | "postgresql" => 5432,
                _ => 3306,
            });
        let upstream = tokio::net::lookup_host((host, port))
            .await
            .expect("resolve the database host")
            .next()
            .expect("an address for the database host");
        Proxy::start(upstream).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode.borrow().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Replies cut so far by [`Mode::CutReplyContaining`].
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let tasks = self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for task in tasks.iter() {
            task.abort();
        }
    }
}

/// What the two directions of one connection share.
struct Conn {
    /// Set once this connection's reply was cut: its client side is closed.
    cut: watch::Sender<bool>,
    /// [`Mode::CutReplyToRequest`]: 1 once the client sent `after`, 2 once it then sent
    /// `request` (the next reply is cut).
    stage: AtomicU8,
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return; // the client sees its connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let conn = Arc::new(Conn {
        cut: watch::channel(false).0,
        stage: AtomicU8::new(0),
    });
    let up = tokio::spawn(client_to_server(
        client_read,
        server_write,
        shared.clone(),
        conn.clone(),
    ));
    shared.track(up.abort_handle());
    server_to_client(server_read, client_write, shared, conn).await;
}

/// Waits while the proxy is in [`Mode::Blackhole`], then returns the mode to apply.
async fn current_mode(mode: &mut watch::Receiver<Mode>) -> Mode {
    let current = mode
        .wait_for(|m| *m != Mode::Blackhole)
        .await
        .map(|m| m.clone());
    match current {
        Ok(m) => m,
        // The proxy is gone; its tasks are being aborted.
        Err(_) => std::future::pending().await,
    }
}

/// Resolves to true once this connection's reply was cut (false if it never will be).
async fn was_cut(cut: &mut watch::Receiver<bool>) -> bool {
    cut.wait_for(|c| *c).await.is_ok()
}

/// The last bytes of one direction of a connection, so a marker split across reads is found.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    /// Whether `marker` ends inside `chunk` (it may start in the bytes before it). Matches
    /// that end earlier were seen, and acted on, with an earlier chunk.
    fn found(&self, chunk: &[u8], marker: &[u8]) -> bool {
        if marker.is_empty() {
            return false;
        }
        let keep = self.0.len().min(marker.len() - 1);
        let mut window = self.0[self.0.len() - keep..].to_vec();
        window.extend_from_slice(chunk);
        window.windows(marker.len()).any(|w| w == marker)
    }

    fn push(&mut self, chunk: &[u8]) {
        self.0.extend_from_slice(chunk);
        if self.0.len() > CHUNK {
            self.0.drain(..self.0.len() - CHUNK);
        }
    }
}

/// One shot: switches every connection back to `Forward` if the mode is still `armed`;
/// true for the one caller that did it.
fn fire(shared: &Shared, armed: &Mode) -> bool {
    let fired = shared.mode.send_if_modified(|m| {
        if m == armed {
            *m = Mode::Forward;
            true
        } else {
            false
        }
    });
    if fired {
        shared.cuts.fetch_add(1, Ordering::SeqCst);
    }
    fired
}

async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) {
    let mut mode = shared.mode.subscribe();
    let mut cut = conn.cut.subscribe();
    let mut buf = vec![0u8; CHUNK];
    let mut tail = Tail::default();
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            true = was_cut(&mut cut) => break,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // A partition does not carry the close either.
                current_mode(&mut mode).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let forward = async {
            match current_mode(&mut mode).await {
                Mode::Delay(d) => tokio::time::sleep(d).await,
                Mode::CutReplyToRequest { after, request } => {
                    // Before the request goes out, so its reply cannot be missed.
                    let stage = conn.stage.load(Ordering::SeqCst);
                    if stage == 0 && tail.found(chunk, &after) {
                        conn.stage.store(1, Ordering::SeqCst);
                    } else if stage == 1 && tail.found(chunk, &request) {
                        conn.stage.store(2, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
            tail.push(chunk);
            to.write_all(chunk).await
        };
        let written = tokio::select! {
            w = forward => w,
            true = was_cut(&mut cut) => break,
        };
        if written.is_err() {
            return;
        }
    }
    // Cut: the client side closes (this read half is dropped now); the upstream side stays
    // open so the server is not told the client left before it has finished.
    drop(from);
    tokio::time::sleep(CUT_DRAIN).await;
}

async fn server_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
) {
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; CHUNK];
    let mut tail = Tail::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                current_mode(&mut mode).await;
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let now = current_mode(&mut mode).await;
        let cut_here = match &now {
            Mode::CutReplyContaining(marker) => tail.found(chunk, marker) && fire(&shared, &now),
            Mode::CutReplyToRequest { .. } => {
                conn.stage.load(Ordering::SeqCst) == 2 && fire(&shared, &now)
            }
            _ => false,
        };
        if cut_here {
            let _ = conn.cut.send(true);
            drop(to);
            drain(from).await;
            return;
        }
        tail.push(chunk);
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Reads and discards what the server sends for [`CUT_DRAIN`], then closes.
async fn drain(mut from: OwnedReadHalf) {
    let mut buf = vec![0u8; CHUNK];
    let _ = tokio::time::timeout(CUT_DRAIN, async {
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
