//! The I/O edge: sockets, tasks and the blocking calls into `BlockIo`.
//!
//! One task reads a connection's requests in order. A small read or write
//! the backend can do at once (page-cache data) runs right there; the rest
//! go to a queue that a few workers on the blocking pool drain (BlockIo is
//! synchronous). Each reply goes to one writer task, so replies go out as
//! requests finish, in any order, as NBD allows. A per-connection byte budget bounds the memory requests in
//! flight can hold.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_native_tls::TlsAcceptor;

use crate::export::{Export, Exports, MAX_REQUEST};
use crate::negotiate::{self, Command, Negotiation, Step};
use crate::proto::{self, errno, ClientFlags, OptionHeader, Request};

/// A client must reach transmission within this long, so idle half-open
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of payload and reply data one connection may have in flight.
const CONNECTION_BUDGET: u32 = 2 * MAX_REQUEST;
/// Every request is charged at least this much of the budget, which caps a
/// connection at 128 requests in flight.
const MIN_CHARGE: u32 = CONNECTION_BUDGET / 128;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 512;
/// Requests of one connection running on the blocking pool at once. More
/// threads than this only queue on the backend's own locks (a file's inode
/// lock serialises buffered writes) and on the two cores.
const WORKERS_PER_CONNECTION: usize = 8;
/// Reads and writes up to this size are tried on the connection's task
/// first (see [`try_now`]); larger ones would hold it too long.
const NOWAIT_MAX: u32 = 128 << 10;
/// Zeros are written in pieces of this size.
const ZERO_CHUNK: usize = 1 << 20;

/// Buffers handed back after use. Large fresh allocations come from mmap
/// and fault in page by page on every request; reusing them keeps that cost
/// off the data path. Reused buffers keep their old length so growing them
/// zeroes only the new tail; every byte handed out is overwritten (a read
/// fills all of it or is truncated to the reply head on error).
#[derive(Clone, Default)]
struct Pool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers kept per connection: the in-flight cap plus the writer's one.
const POOL_KEEP: usize = 130;

impl Pool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    fn give(&self, v: Vec<u8>) {
        // A buffer from an unusually large request is not worth keeping
        // beyond the connection's usual working set.
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(v);
        }
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address; the service's default is 127.0.0.1.
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:PATH` or an absolute path when parsed).
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(ListenAddr::Unix(path.into()));
        }
        if s.starts_with('/') {
            return Ok(ListenAddr::Unix(s.into()));
        }
        s.parse().map(ListenAddr::Tcp)
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An NBD server over an [`Exports`] registry.
pub struct Server {
    listener: Listener,
    exports: Exports,
    slots: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
}

/// Server TLS credentials, laid out as qemu's `tls-creds-x509` reads them.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Reads `server-cert.pem` (the chain) and `server-key.pem` (PKCS#8)
    /// from `dir`, qemu's file names for an x509 credentials directory.
    /// Clients are not asked for certificates: the export name is what
    /// grants access; TLS keeps it and the data off the wire in clear.
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let dir = dir.as_ref();
        let cert = std::fs::read(dir.join("server-cert.pem"))?;
        let key = zeroize::Zeroizing::new(std::fs::read(dir.join("server-key.pem"))?);
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("TLS credentials: {e}"))
        })?;
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS setup: {e}")))?;
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(acceptor),
        })
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on `addr`, serving whatever `exports` holds at each
    /// connection. A stale Unix socket file at the path is replaced.
    pub async fn bind(addr: &ListenAddr, exports: Exports) -> io::Result<Self> {
        let listener = match addr {
            ListenAddr::Tcp(a) => Listener::Tcp(TcpListener::bind(a).await?),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    }
                }
                Listener::Unix(UnixListener::bind(path)?)
            }
        };
        Ok(Server {
            listener,
            exports,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            tls: None,
        })
    }

    /// Requires TLS on every connection (NBD_OPT_STARTTLS before anything
    /// about exports is said).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls.acceptor);
        self
    }

    /// The TCP address bound (useful with port 0); `None` for a Unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) {
        loop {
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let exports = self.exports.clone();
            let tls = self.tls.clone();
            match &self.listener {
                Listener::Tcp(l) => {
                    let (stream, peer) = match l.accept().await {
                        Ok(v) => v,
                        Err(e) => {
                            pause_after(e).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tracing::debug!(%peer, "nbd connection");
                    tokio::spawn(async move {
                        serve(stream, exports, tls).await;
                        drop(slot);
                    });
                }
                Listener::Unix(l) => {
                    let (stream, _) = match l.accept().await {
                        Ok(v) => v,
                        Err(e) => {
                            pause_after(e).await;
                            continue;
                        }
                    };
                    tokio::spawn(async move {
                        serve(stream, exports, tls).await;
                        drop(slot);
                    });
                }
            }
        }
    }
}

/// Accept errors (out of descriptors, a peer that reset before accept) are
/// not fatal to the listener; back off a little and go on.
async fn pause_after(e: io::Error) {
    tracing::warn!(error = %e, "nbd accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one connection from greeting to close. Never panics on what the
/// peer sends; every protocol error ends in an error reply or a close.
async fn serve<S>(mut stream: S, exports: Exports, tls: Option<TlsAcceptor>)
where
    S: AsyncRead + AsyncWrite + IntoHalves + Unpin + Send + 'static,
{
    let chosen = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let Some(flags) = greet(&mut stream).await? else {
            return Ok::<_, io::Error>(None);
        };
        let mut negotiation = match tls {
            Some(_) => Negotiation::with_tls_required(flags),
            None => Negotiation::new(flags),
        };
        match negotiate(&mut stream, &mut negotiation, &exports).await? {
            Outcome::Export(e) => Ok(Some((Conn::Plain(stream), e))),
            Outcome::Close => Ok(None),
            Outcome::StartTls => {
                let acceptor = tls.expect("STARTTLS is only accepted with TLS configured");
                let mut stream = acceptor.accept(stream).await.map_err(io::Error::other)?;
                negotiation.tls_established();
                match negotiate(&mut stream, &mut negotiation, &exports).await? {
                    Outcome::Export(e) => Ok(Some((Conn::Tls(Box::new(stream)), e))),
                    _ => Ok(None),
                }
            }
        }
    })
    .await;
    let (conn, export) = match chosen {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "nbd negotiation ended");
            return;
        }
        Err(_) => {
            tracing::debug!("nbd negotiation timed out");
            return;
        }
    };
    let result = match conn {
        Conn::Plain(s) => {
            let (rd, wr) = s.into_halves();
            transmit(rd, wr, export).await
        }
        Conn::Tls(s) => {
            let (rd, wr) = tokio::io::split(*s);
            transmit(rd, wr, export).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "nbd connection ended");
    }
}

/// Sockets split into halves that need no lock between reader and writer
/// (`tokio::io::split`'s halves share one); TLS streams still use that.
trait IntoHalves {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl IntoHalves for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl IntoHalves for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

enum Conn<S> {
    Plain(S),
    Tls(Box<tokio_native_tls::TlsStream<S>>),
}

enum Outcome {
    Export(Arc<Export>),
    StartTls,
    Close,
}

async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> io::Result<Option<ClientFlags>> {
    stream.write_all(&proto::greeting()).await?;
    stream.flush().await?;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags).await?;
    Ok(ClientFlags::read(flags).ok())
}

/// Option haggling, unbuffered: after STARTTLS the next bytes belong to the
/// TLS handshake and must still be in the socket.
async fn negotiate<S>(
    stream: &mut S,
    negotiation: &mut Negotiation,
    exports: &Exports,
) -> io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut head = [0u8; OptionHeader::LEN];
        stream.read_exact(&mut head).await?;
        let Ok(head) = OptionHeader::read(&head) else {
            return Ok(Outcome::Close);
        };
        let mut data = vec![0u8; head.len as usize];
        stream.read_exact(&mut data).await?;
        let step = negotiation.option(head.opt, &data, |name| {
            exports.get(name).map(|e| {
                let info = e.info();
                (e, info)
            })
        });
        let (reply, outcome) = match step {
            Step::Continue { reply } => (reply, None),
            Step::Transmit { reply, export, .. } => (reply, Some(Outcome::Export(export))),
            Step::StartTls { reply } => (reply, Some(Outcome::StartTls)),
            Step::Close { reply } => (reply, Some(Outcome::Close)),
        };
        stream.write_all(&reply).await?;
        stream.flush().await?;
        if let Some(o) = outcome {
            return Ok(o);
        }
    }
}

async fn transmit<R, W>(rd: R, wr: W, export: Arc<Export>) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let _busy = export.busy();
    let mut removed = export.removed();
    if *removed.borrow() {
        return Ok(());
    }
    let info = export.info();
    let budget = Arc::new(Semaphore::new(CONNECTION_BUDGET as usize));
    // A reply keeps its share of the budget until it is on the wire, so a
    // client that sends requests but never reads replies stalls, instead of
    // piling replies up in memory.
    let (tx, rx) = mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let pool = Pool::default();
    let writer = tokio::spawn(write_replies(wr, rx, pool.clone()));
    let queue = Queue::new(export.clone(), tx.clone(), pool.clone());
    let mut write_cost = WriteCost::default();
    let result = loop {
        let next = tokio::select! {
            r = read_request(&mut rd, &budget, &pool) => r,
            _ = removed.wait_for(|gone| *gone) => {
                writer.abort();
                return Ok(());
            }
        };
        let (req, payload, permit) = match next {
            Ok(Some(v)) => v,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let command = match negotiate::check(&req, &info) {
            Ok(Command::Disconnect) => break Ok(()),
            Ok(c) => c,
            Err(e) => {
                let mut reply = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
                proto::simple_reply(&mut reply, e, req.cookie);
                let _ = tx.send((reply, permit));
                continue;
            }
        };
        let is_write = matches!(command, Command::Write { .. });
        let payload = if !is_write || write_cost.cheap() {
            let started = std::time::Instant::now();
            match try_now(&export, command, req.cookie, payload, &pool) {
                Ok(reply) => {
                    if is_write {
                        write_cost.record(started.elapsed());
                    }
                    let _ = tx.send((reply, permit));
                    continue;
                }
                Err(payload) => payload,
            }
        } else {
            payload
        };
        queue.push(Job {
            command,
            cookie: req.cookie,
            payload,
            permit,
            _busy: export.busy(),
        });
    };
    // Outstanding requests finish and their replies go out before the close,
    // as proto.md asks for NBD_CMD_DISC.
    drop(tx);
    drop(queue);
    match writer.await {
        Ok(r) => r?,
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(io::Error::other(e)),
    }
    result
}

/// How long writes done on the connection's task take, so they stop being
/// done there once they cost more than a hand-off to a worker would.
///
/// A buffered 4 KiB write into the page cache usually takes a few
/// microseconds, but the kernel can make it cost far more (ext4 on large
/// folios walks every block of the folio on each write: ~60 µs measured),
/// and then the task reading requests should not also do the writing.
/// Every [`WriteCost::PROBE`]th write is tried on the task anyway, so the
/// estimate follows the backend when it gets cheap again.
#[derive(Default)]
struct WriteCost {
    /// Moving average of recent inline writes, in nanoseconds.
    average: u64,
    since_probe: u32,
}

impl WriteCost {
    /// About the cost of handing a request to a worker and back.
    const LIMIT_NS: u64 = 20_000;
    const PROBE: u32 = 64;

    fn cheap(&mut self) -> bool {
        if self.average < Self::LIMIT_NS {
            return true;
        }
        self.since_probe += 1;
        if self.since_probe >= Self::PROBE {
            self.since_probe = 0;
            return true;
        }
        false
    }

    fn record(&mut self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        self.average = (self.average * 7 + ns) / 8;
    }
}

/// A checked request waiting for a worker.
struct Job {
    command: Command,
    cookie: u64,
    payload: Vec<u8>,
    permit: OwnedSemaphorePermit,
    _busy: crate::export::Busy,
}

/// One connection's requests on their way to the blocking pool.
///
/// A worker drains the queue until it is empty rather than running one
/// request, so a burst of requests costs one thread wake-up, not one each. New workers are
/// started only while the queue grows faster than the running ones drain
/// it, up to [`WORKERS_PER_CONNECTION`], so a slow backend still sees that
/// many requests at once.
struct Queue(Arc<QueueInner>);

struct QueueInner {
    export: Arc<Export>,
    replies: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
    pool: Pool,
    state: std::sync::Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    jobs: std::collections::VecDeque<Job>,
    workers: usize,
}

impl Queue {
    fn new(
        export: Arc<Export>,
        replies: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
        pool: Pool,
    ) -> Self {
        Queue(Arc::new(QueueInner {
            export,
            replies,
            pool,
            state: Default::default(),
        }))
    }

    fn push(&self, job: Job) {
        let start = {
            let mut st = self.0.lock();
            st.jobs.push_back(job);
            let start = st.workers < WORKERS_PER_CONNECTION && st.jobs.len() > st.workers;
            if start {
                st.workers += 1;
            }
            start
        };
        if start {
            let inner = self.0.clone();
            tokio::task::spawn_blocking(move || inner.drain());
        }
    }
}

impl QueueInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(&self) {
        loop {
            let job = {
                let mut st = self.lock();
                match st.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        st.workers -= 1;
                        return;
                    }
                }
            };
            let reply = execute(&self.export, job.command, job.cookie, job.payload, &self.pool);
            let _ = self.replies.send((reply, job.permit));
        }
    }
}

/// Reads one request and its payload. `Ok(None)` is a clean end of stream;
/// a bad magic or an oversized WRITE payload (which cannot be skipped
/// without reading it all) ends the connection.
async fn read_request<R: AsyncRead + Unpin>(
    rd: &mut R,
    budget: &Arc<Semaphore>,
    pool: &Pool,
) -> io::Result<Option<(Request, Vec<u8>, OwnedSemaphorePermit)>> {
    let mut head = [0u8; Request::LEN];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let req = Request::read(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let payload = negotiate::payload_len(&req);
    if payload > MAX_REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "write payload larger than the maximum block size",
        ));
    }
    let data_len = if req.kind == proto::cmd::READ {
        req.len.min(MAX_REQUEST)
    } else {
        payload
    };
    let permit = budget
        .clone()
        .acquire_many_owned(data_len.max(MIN_CHARGE))
        .await
        .expect("budget semaphore is never closed");
    let mut data = if payload == 0 {
        Vec::new()
    } else {
        pool.take(payload as usize)
    };
    rd.read_exact(&mut data).await?;
    Ok(Some((req, data, permit)))
}

async fn write_replies<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<(Vec<u8>, OwnedSemaphorePermit)>,
    pool: Pool,
) -> io::Result<()> {
    let mut wr = BufWriter::with_capacity(256 << 10, wr);
    while let Some((reply, _permit)) = rx.recv().await {
        wr.write_all(&reply).await?;
        if reply.capacity() > 4096 {
            pool.give(reply);
        }
        if rx.is_empty() {
            wr.flush().await?;
        }
    }
    wr.flush().await?;
    wr.shutdown().await
}

fn errno_of(e: &io::Error) -> u32 {
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => errno::EPERM,
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput => errno::EINVAL,
        io::ErrorKind::WriteZero | io::ErrorKind::StorageFull => errno::ENOSPC,
        io::ErrorKind::OutOfMemory => errno::ENOMEM,
        io::ErrorKind::Unsupported => errno::ENOTSUP,
        _ => errno::EIO,
    }
}

/// Runs one checked command against the export's backend and returns the
/// encoded reply.
fn execute(
    export: &Export,
    command: Command,
    cookie: u64,
    payload: Vec<u8>,
    pool: &Pool,
) -> Vec<u8> {
    let io = export.io();
    let outcome = match command {
        Command::Read { offset, len } => {
            let mut reply = pool.take(proto::SIMPLE_REPLY_LEN + len as usize);
            let mut head = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
            proto::simple_reply(&mut head, 0, cookie);
            reply[..proto::SIMPLE_REPLY_LEN].copy_from_slice(&head);
            match io.read_at(&mut reply[proto::SIMPLE_REPLY_LEN..], offset) {
                Ok(()) => return reply,
                Err(e) => {
                    pool.give(reply);
                    Err(e)
                }
            }
        }
        Command::Write { offset, len, fua } => {
            let r = if export.needs_rmw_lock(offset, len as u64) {
                let _g = export.rmw_lock();
                io.write_at(&payload, offset)
            } else {
                io.write_at(&payload, offset)
            };
            r.and_then(|()| if fua { io.flush() } else { Ok(()) })
        }
        Command::Flush => io.flush(),
        Command::Trim { offset, len, fua } => {
            // Advisory: a backend that cannot discard keeps the data, which
            // proto.md allows.
            io.discard(offset, len as u64).map(|_| ()).and_then(|()| {
                if fua {
                    io.flush()
                } else {
                    Ok(())
                }
            })
        }
        Command::WriteZeroes { offset, len, fua } => {
            // Zeros are always written, never punched, so NO_HOLE holds and
            // a plaintext export reads back zeros rather than garbage.
            write_zeroes(export, offset, len as u64)
                .and_then(|()| if fua { io.flush() } else { Ok(()) })
        }
        Command::Disconnect => Ok(()),
    };
    if payload.capacity() > 4096 {
        pool.give(payload);
    }
    encode_outcome(outcome, command, cookie)
}

/// Runs a small READ or WRITE on the connection's own task when the backend
/// can do it without waiting (page-cache data, a buffered file write) and
/// returns the reply; otherwise hands the payload back for the queue. On a
/// page-cache file this is most 4 KiB requests, and it saves two thread
/// hand-offs each, more than the I/O itself costs.
fn try_now(
    export: &Export,
    command: Command,
    cookie: u64,
    payload: Vec<u8>,
    pool: &Pool,
) -> Result<Vec<u8>, Vec<u8>> {
    let io = export.io();
    let outcome = match command {
        Command::Read { offset, len } if len <= NOWAIT_MAX => {
            let mut reply = pool.take(proto::SIMPLE_REPLY_LEN + len as usize);
            match io.read_at_nowait(&mut reply[proto::SIMPLE_REPLY_LEN..], offset) {
                Some(Ok(())) => {
                    let mut head = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
                    proto::simple_reply(&mut head, 0, cookie);
                    reply[..proto::SIMPLE_REPLY_LEN].copy_from_slice(&head);
                    return Ok(reply);
                }
                Some(Err(e)) => {
                    pool.give(reply);
                    Err(e)
                }
                None => {
                    pool.give(reply);
                    return Err(payload);
                }
            }
        }
        Command::Write { offset, len, fua: false }
            if len <= NOWAIT_MAX && !export.needs_rmw_lock(offset, len as u64) =>
        {
            match io.write_at_nowait(&payload, offset) {
                Some(r) => r,
                None => return Err(payload),
            }
        }
        _ => return Err(payload),
    };
    if payload.capacity() > 4096 {
        pool.give(payload);
    }
    Ok(encode_outcome(outcome, command, cookie))
}

fn encode_outcome(outcome: io::Result<()>, command: Command, cookie: u64) -> Vec<u8> {
    let mut reply = Vec::with_capacity(proto::SIMPLE_REPLY_LEN);
    match outcome {
        Ok(()) => proto::simple_reply(&mut reply, 0, cookie),
        Err(e) => {
            tracing::warn!(error = %e, ?command, "nbd request failed");
            proto::simple_reply(&mut reply, errno_of(&e), cookie);
        }
    }
    reply
}

fn write_zeroes(export: &Export, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK as u64);
        let at = offset + done;
        if export.needs_rmw_lock(at, n) {
            let _g = export.rmw_lock();
            export.io().write_at(&zeros[..n as usize], at)?;
        } else {
            export.io().write_at(&zeros[..n as usize], at)?;
        }
        done += n;
    }
    Ok(())
}
