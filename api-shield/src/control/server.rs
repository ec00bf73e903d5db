//! The daemon's side of the control socket: binding it safely, vetting each peer, and
//! answering requests with a `Handler`.

use std::ffi::CString;
use std::fs::{self, DirBuilder, Permissions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt, chown};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::body::{self, BodyError, BodyLimits};
use super::protocol::{self, ControlErrorCode, MAX_REQUEST_BYTES, Request, Response};

/// Owner read/write, group read/write: root and the control group, nobody else.
const SOCKET_MODE: u32 = 0o660;
/// Owner all, group search and list.
const DIR_MODE: u32 = 0o750;
/// Only the binding process may see the socket before its mode is set.
const PRIVATE_DIR_MODE: u32 = 0o700;
const ROOT_UID: u32 = 0;
/// A connection that sends nothing for this long is closed, so idle peers cannot pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request bodies (imports) read at once: each may hold up to `import.max_bytes` and its parse,
/// so a control-group member opening many connections cannot multiply the memory.
const MAX_BODIES_IN_FLIGHT: usize = 2;
/// Control connections served at once: each may hold a request line of up to
/// `MAX_REQUEST_BYTES` and what it decodes into, so their number bounds that memory. Far above
/// what operators and their tools open; the rest are refused at once.
const MAX_CONNECTIONS: usize = 64;
/// Pause after a failed `accept` (such as running out of descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who is on the other end of a connection, as the kernel reports it (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// What followed a request line: nothing, a body read whole, or a body that was refused (the
/// handler answers and audits the refusal like any other).
#[derive(Debug)]
pub enum RequestBody {
    None,
    Bytes(Vec<u8>),
    Refused(BodyError),
}

/// Answers requests. Synchronous, and called off the async workers: a request may wait for the
/// daemon's state lock or parse a large list, and must not stall the other connections.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, peer: &PeerCred, req: Request, body: RequestBody) -> Response;
    /// Limits on the body of a request that carries one, read at each such request so a
    /// reload applies to the next one.
    fn body_limits(&self) -> BodyLimits;
}

/// Who may use the socket: root always, plus the members of one group if configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    group: Option<u32>,
}

impl PeerPolicy {
    pub const fn root_only() -> Self {
        Self { group: None }
    }

    pub const fn with_group(gid: u32) -> Self {
        Self { group: Some(gid) }
    }

    pub const fn group(&self) -> Option<u32> {
        self.group
    }

    /// Whether `peer` may send requests. Membership counts the peer's effective gid and the
    /// primary and supplementary groups of its user in the user database.
    ///
    /// May block on the user database (NSS).
    pub fn permits(&self, peer: &PeerCred) -> bool {
        if peer.uid == ROOT_UID {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        peer.gid == group || user_in_group(peer.uid, group)
    }
}

fn user_in_group(uid: u32, group: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid.as_raw() == group {
        return true;
    }
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|groups| groups.contains(&Gid::from_raw(group)))
}

/// The gid of the group called `name`.
pub fn resolve_group(name: &str) -> io::Result<u32> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no group named `{name}`"),
        )),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Binds the control socket at `path`, mode 0660 owned by `root:group`, never
/// world-accessible even for an instant. Must be called within a Tokio runtime.
///
/// Creates the parent directory (mode 0750, group `group`) if missing. A socket left by a dead
/// daemon is replaced; one that still answers is not.
pub fn bind(path: &Path, group: Option<u32>) -> io::Result<UnixListener> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a socket file", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    prepare_parent(parent, group)?;
    clear_stale_socket(path)?;

    // The socket is born with the umask's mode; bind it inside a directory only we can enter,
    // set its mode and owner, then link it into place (link, unlike rename, never replaces
    // a socket that appeared meanwhile).
    let mut private_name = std::ffi::OsString::from(".");
    private_name.push(file_name);
    private_name.push(format!(".{}.bind", std::process::id()));
    let private_dir = parent.join(private_name);
    if private_dir.exists() {
        fs::remove_dir_all(&private_dir)?;
    }
    DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(&private_dir)?;
    let staged = private_dir.join(file_name);
    let result = bind_staged(&staged, path, group);
    // The socket lives on under `path`; the staging name and directory are no longer needed.
    let cleanup = fs::remove_file(&staged).and_then(|()| fs::remove_dir(&private_dir));
    let listener = result?;
    cleanup?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

fn bind_staged(
    staged: &Path,
    path: &Path,
    group: Option<u32>,
) -> io::Result<std::os::unix::net::UnixListener> {
    let listener = std::os::unix::net::UnixListener::bind(staged)?;
    fs::set_permissions(staged, Permissions::from_mode(SOCKET_MODE))?;
    if let Some(gid) = group {
        chown(staged, None, Some(gid))?;
    }
    fs::hard_link(staged, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} appeared while binding; is another daemon starting?",
                    path.display()
                ),
            )
        } else {
            e
        }
    })?;
    Ok(listener)
}

/// Creates the directory if missing. An existing one keeps its mode, but if this process owns
/// it, it is handed to `group` so members can reach the socket after the group is configured.
fn prepare_parent(dir: &Path, group: Option<u32>) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if let Some(gid) = group
                && meta.uid() == Uid::effective().as_raw()
                && meta.gid() != gid
            {
                chown(dir, None, Some(gid))?;
            }
            Ok(())
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
            // The mode given to mkdir is masked by the umask.
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
            if let Some(gid) = group {
                chown(dir, None, Some(gid))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn clear_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another daemon is already listening on {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// Accepts connections until `shutdown` completes, then drops those still open.
pub async fn serve(
    listener: UnixListener,
    policy: PeerPolicy,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    let bodies = Arc::new(Semaphore::new(MAX_BODIES_IN_FLIGHT));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(connection(
                            stream,
                            policy,
                            Arc::clone(&handler),
                            Arc::clone(&bodies),
                            slot,
                        ));
                    }
                    Err(_) => {
                        connections.spawn(turn_away(stream));
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "control connection task failed");
                }
            }
        }
    }
    connections.shutdown().await;
}

/// Answers a connection over [`MAX_CONNECTIONS`] with a refusal and closes it.
async fn turn_away(stream: UnixStream) {
    let (_, mut write) = stream.into_split();
    let busy = Response::error(
        ControlErrorCode::Refused,
        format!("the daemon already serves {MAX_CONNECTIONS} control connections; try again"),
    );
    let _ = tokio::time::timeout(IDLE_TIMEOUT, send(&mut write, &busy)).await;
}

async fn connection(
    stream: UnixStream,
    policy: PeerPolicy,
    handler: Arc<dyn Handler>,
    bodies: Arc<Semaphore>,
    // Held for the connection's life.
    _slot: OwnedSemaphorePermit,
) {
    let peer = match stream.peer_cred() {
        Ok(cred) => PeerCred {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "control socket: cannot read peer credentials");
            return;
        }
    };
    let (read, mut write) = stream.into_split();

    let permitted = tokio::task::spawn_blocking(move || policy.permits(&peer))
        .await
        .unwrap_or(false);
    if !permitted {
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            "control socket: refused a peer that is neither root nor in the control group"
        );
        let refusal = Response::error(
            ControlErrorCode::PermissionDenied,
            "permission denied: only root and members of the control group may use the \
             api-shield control socket",
        );
        // The peer is leaving either way; a failed write changes nothing.
        let _ = send(&mut write, &refusal).await;
        return;
    }

    let mut reader = BufReader::new(read);
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader)).await {
            Ok(Ok(Line::Complete(line))) => line,
            Ok(Ok(Line::TooLong)) => {
                let error = Response::error(
                    ControlErrorCode::InvalidInput,
                    format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
                );
                let _ = send(&mut write, &error).await;
                return;
            }
            Ok(Ok(Line::End)) | Err(_) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "control connection read failed");
                return;
            }
        };
        let (response, last) = match protocol::parse_request(&line) {
            Ok(request) if request.carries_body() => {
                with_body(&handler, peer, request, &mut reader, &bodies).await
            }
            Ok(request) => (
                dispatch(&handler, peer, request, RequestBody::None).await,
                false,
            ),
            Err(e) => (
                Response::error(
                    ControlErrorCode::InvalidInput,
                    format!("malformed request: {e}"),
                ),
                false,
            ),
        };
        if let Err(e) = send(&mut write, &response).await {
            tracing::debug!(error = %e, "control connection write failed");
            return;
        }
        if last {
            return;
        }
    }
}

/// Reads the body of `request` and answers it. Returns the response and whether the
/// connection must close: a refused body leaves the stream inside a frame.
async fn with_body(
    handler: &Arc<dyn Handler>,
    peer: PeerCred,
    request: Request,
    reader: &mut BufReader<OwnedReadHalf>,
    bodies: &Semaphore,
) -> (Response, bool) {
    let limits = handler.body_limits();
    let Ok(Ok(_permit)) = tokio::time::timeout(limits.read_timeout, bodies.acquire()).await else {
        let busy = RequestBody::Refused(BodyError::Busy(limits.read_timeout));
        return (dispatch(handler, peer, request, busy).await, true);
    };
    // The permit is held until the request is answered: the body and its parse are the memory.
    match body::read(reader, limits).await {
        Ok(bytes) => (
            dispatch(handler, peer, request, RequestBody::Bytes(bytes)).await,
            false,
        ),
        Err(e) => (
            dispatch(handler, peer, request, RequestBody::Refused(e)).await,
            true,
        ),
    }
}

async fn dispatch(
    handler: &Arc<dyn Handler>,
    peer: PeerCred,
    request: Request,
    body: RequestBody,
) -> Response {
    let handler = Arc::clone(handler);
    tokio::task::spawn_blocking(move || handler.handle(&peer, request, body))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "control request handler failed");
            Response::error(
                ControlErrorCode::Internal,
                "the request failed inside the daemon",
            )
        })
}

enum Line {
    Complete(Vec<u8>),
    TooLong,
    End,
}

async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Line> {
    // One byte past the limit leaves room for the newline of a line of exactly the limit.
    let cap = MAX_REQUEST_BYTES + 1;
    let mut line = Vec::new();
    (&mut *reader)
        .take(cap as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Line::Complete(line));
    }
    if line.len() >= cap {
        return Ok(Line::TooLong);
    }
    // The peer closed after a last line without a newline: take it as complete.
    Ok(Line::Complete(line))
}

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::Command;

    use serde_json::json;
    use tempfile::TempDir;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::control::client::{self, ClientError};

    /// `nobody` and `nogroup` on Debian.
    const NOBODY: u32 = 65_534;
    const CHILD_SOCKET_ENV: &str = "API_SHIELD_TEST_PEER_SOCKET";
    const CHILD_MARKER: &str = "CHILD-OUTCOME:";
    const CLIENT_REFUSED: &str = "client_permission_denied";
    const WORLD_ACCESSIBLE: u32 = 0o666;
    const WORLD_SEARCHABLE: u32 = 0o755;
    const MODE_BITS: u32 = 0o7777;

    struct Echo;
    const ECHO_READ_TIMEOUT: Duration = Duration::from_secs(1);

    impl Handler for Echo {
        fn handle(&self, peer: &PeerCred, req: Request, body: RequestBody) -> Response {
            let body = match body {
                RequestBody::None => json!(null),
                RequestBody::Bytes(b) => json!(String::from_utf8_lossy(&b)),
                RequestBody::Refused(e) => json!({"refused": e.to_string()}),
            };
            Response::ok(json!({"op": req.op(), "uid": peer.uid, "request": req, "body": body}))
        }

        fn body_limits(&self) -> BodyLimits {
            BodyLimits {
                max_bytes: 1 << 20,
                read_timeout: ECHO_READ_TIMEOUT,
            }
        }
    }

    struct Server {
        dir: TempDir,
        path: PathBuf,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Server {
        fn start(policy: PeerPolicy) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ctl.sock");
            let listener = bind(&path, None).unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, policy, Arc::new(Echo), async {
                let _ = stopped.await;
            }));
            Self {
                dir,
                path,
                stop,
                task,
            }
        }

        async fn stop(self) {
            self.stop.send(()).unwrap();
            self.task.await.unwrap();
        }
    }

    /// Lets whoever runs the tests in, root or not.
    fn own_policy() -> PeerPolicy {
        PeerPolicy::with_group(Gid::effective().as_raw())
    }

    async fn ask(path: &Path, req: Request) -> Result<Response, ClientError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || client::request(&path, &req))
            .await
            .unwrap()
    }

    fn error_code(response: &Response) -> Option<ControlErrorCode> {
        match response {
            Response::Error { code, .. } => Some(*code),
            Response::Ok { .. } => None,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & MODE_BITS
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn round_trip() {
        let server = Server::start(own_policy());
        let request = Request::Block {
            nets: vec!["198.18.0.0/24".into()],
            ttl_secs: Some(60),
            reason: Some("test".into()),
            force: false,
            list: None,
        };
        let response = ask(&server.path, request.clone()).await.unwrap();
        let Response::Ok { body } = response else {
            panic!("{response:?}")
        };
        assert_eq!(body["op"], "block");
        assert_eq!(body["uid"], Uid::effective().as_raw());
        assert_eq!(
            serde_json::from_value::<Request>(body["request"].clone()).unwrap(),
            request
        );
        server.stop().await;
    }

    fn import_request() -> Request {
        Request::Import {
            list: "l".into(),
            source: Some("test".into()),
            format: crate::lists::formats::Format::Auto,
            skip_invalid: false,
            force: false,
            allow_shrink: false,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_body_arrives_whole_with_its_request() {
        let server = Server::start(own_policy());
        let path = server.path.clone();
        let response = tokio::task::spawn_blocking(move || {
            let source: client::BodySource =
                Box::new(std::io::Cursor::new(b"198.18.0.1\n".to_vec()));
            client::request_with_body(&path, &import_request(), source)
        })
        .await
        .unwrap()
        .unwrap();
        let Response::Ok { body } = response else {
            panic!("{response:?}")
        };
        assert_eq!(body["body"], "198.18.0.1\n");
        server.stop().await;
    }

    /// Bodies read at once are bounded: a peer holding connections open cannot make the daemon
    /// hold more than `MAX_BODIES_IN_FLIGHT` lists; a further import waits, then is refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn bodies_in_flight_are_bounded() {
        use std::io::Write;
        let server = Server::start(own_policy());
        let mut line = serde_json::to_vec(&import_request()).unwrap();
        line.push(b'\n');
        let trickle = Duration::from_millis(200);
        let holders: Vec<_> = (0..MAX_BODIES_IN_FLIGHT)
            .map(|_| {
                let path = server.path.clone();
                let line = line.clone();
                tokio::task::spawn_blocking(move || {
                    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
                    s.write_all(&line).unwrap();
                    // One byte a frame, often enough to stay within the read timeout, for
                    // longer than the waiting import below waits.
                    for _ in 0..(3 * ECHO_READ_TIMEOUT.as_millis() / trickle.as_millis()) {
                        s.write_all(&[0, 0, 0, 1, b'#']).unwrap();
                        std::thread::sleep(trickle);
                    }
                    s.write_all(&[0, 0, 0, 0]).unwrap();
                    let mut answer = String::new();
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut answer)
                        .unwrap();
                    serde_json::from_str::<Response>(&answer).unwrap()
                })
            })
            .collect();
        tokio::time::sleep(trickle).await;
        let path = server.path.clone();
        let refused = tokio::task::spawn_blocking(move || {
            let source: client::BodySource = Box::new(std::io::Cursor::new(b"x".to_vec()));
            client::request_with_body(&path, &import_request(), source)
        })
        .await
        .unwrap()
        .unwrap();
        let Response::Ok { body } = &refused else {
            panic!("{refused:?}")
        };
        assert!(
            body["body"]["refused"]
                .as_str()
                .unwrap_or("")
                .contains("other imports kept the daemon busy"),
            "{body}"
        );
        for h in holders {
            let answer = h.await.unwrap();
            assert!(matches!(answer, Response::Ok { .. }), "{answer:?}");
        }
        server.stop().await;
    }

    /// Idle connections cannot pile up past `MAX_CONNECTIONS`: the next one is refused at once,
    /// and a slot freed is served again.
    #[tokio::test(flavor = "multi_thread")]
    async fn connections_past_the_cap_are_refused_at_once() {
        let server = Server::start(own_policy());
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(UnixStream::connect(&server.path).await.unwrap());
        }
        // Accepted in order: wait until the server has taken every slot.
        let path = server.path.clone();
        let refused = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match client::request(&path, &Request::Status) {
                    Ok(Response::Error { message, .. }) => return message,
                    _ if std::time::Instant::now() > deadline => panic!("never refused"),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
        .await
        .unwrap();
        assert!(refused.contains("control connections"), "{refused}");
        held.clear();
        let path = server.path.clone();
        let served = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                match client::request(&path, &Request::Status) {
                    Ok(Response::Ok { .. }) => return,
                    _ if std::time::Instant::now() > deadline => panic!("never served again"),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        served.await.unwrap();
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_connection_carries_several_exchanges() {
        let server = Server::start(own_policy());
        let path = server.path.clone();
        let lines = tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, Write};
            let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
            stream
                .write_all(b"not json\n{\"op\":\"status\"}\n{\"op\":\"stats\"}")
                .unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            std::io::BufReader::new(stream)
                .lines()
                .map(|l| serde_json::from_str::<Response>(&l.unwrap()).unwrap())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(error_code(&lines[0]), Some(ControlErrorCode::InvalidInput));
        assert!(matches!(&lines[1], Response::Ok { body } if body["op"] == "status"));
        assert!(matches!(&lines[2], Response::Ok { body } if body["op"] == "stats"));
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn oversize_line_is_refused() {
        let server = Server::start(own_policy());
        let huge = Request::Unblock {
            nets: vec!["x".repeat(MAX_REQUEST_BYTES)],
            list: None,
        };
        let response = ask(&server.path, huge).await.unwrap();
        assert_eq!(error_code(&response), Some(ControlErrorCode::InvalidInput));
        let Response::Error { message, .. } = response else {
            unreachable!()
        };
        assert!(message.contains("longer than"), "{message}");
        // The server lives on.
        assert!(matches!(
            ask(&server.path, Request::Status).await,
            Ok(Response::Ok { .. })
        ));
        server.stop().await;
    }

    /// Run by `non_root_peer_is_refused` in a child process as `nobody`; does nothing when the
    /// suite runs normally.
    #[test]
    #[ignore = "helper: run in a child process as uid 65534 by non_root_peer_is_refused"]
    fn peer_child() {
        let Some(path) = std::env::var_os(CHILD_SOCKET_ENV) else {
            return;
        };
        let outcome = match client::request(Path::new(&path), &Request::Status) {
            Ok(response) => serde_json::to_string(&response).unwrap(),
            Err(ClientError::PermissionDenied { .. }) => json!(CLIENT_REFUSED).to_string(),
            Err(e) => json!(e.to_string()).to_string(),
        };
        println!("{CHILD_MARKER}{outcome}");
    }

    fn ask_as_nobody(path: &Path) -> serde_json::Value {
        let (_crate, module) = module_path!().split_once("::").unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                &format!("{module}::peer_child"),
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_SOCKET_ENV, path)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}{stderr}");
        let outcome = stdout
            .lines()
            // libtest writes the test's name on the same line first.
            .find_map(|l| l.split_once(CHILD_MARKER).map(|(_, outcome)| outcome))
            .unwrap_or_else(|| panic!("no outcome from the child: {stdout}{stderr}"));
        serde_json::from_str(outcome).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn non_root_peer_is_refused() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root to run a client as another user");
            return;
        }
        let server = Server::start(PeerPolicy::root_only());
        // Open the file system's door so the server's own check is what refuses.
        fs::set_permissions(server.dir.path(), Permissions::from_mode(WORLD_SEARCHABLE)).unwrap();
        fs::set_permissions(&server.path, Permissions::from_mode(WORLD_ACCESSIBLE)).unwrap();
        let path = server.path.clone();
        let outcome = tokio::task::spawn_blocking(move || ask_as_nobody(&path))
            .await
            .unwrap();
        let response: Response = serde_json::from_value(outcome.clone())
            .unwrap_or_else(|_| panic!("not a response: {outcome}"));
        assert_eq!(
            error_code(&response),
            Some(ControlErrorCode::PermissionDenied)
        );

        // With the socket's own mode, the file system already keeps the peer out.
        fs::set_permissions(&server.path, Permissions::from_mode(SOCKET_MODE)).unwrap();
        let path = server.path.clone();
        let outcome = tokio::task::spawn_blocking(move || ask_as_nobody(&path))
            .await
            .unwrap();
        assert_eq!(outcome, json!(CLIENT_REFUSED));
        server.stop().await;
    }

    #[tokio::test]
    async fn socket_is_0660_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let _listener = bind(&path, None).unwrap();
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        assert_eq!(mode(&path), SOCKET_MODE);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ctl.sock"]);
    }

    #[tokio::test]
    async fn creates_the_parent_for_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api-shield/ctl.sock");
        let group = Gid::effective().as_raw();
        let _listener = bind(&path, Some(group)).unwrap();
        let parent = path.parent().unwrap();
        assert_eq!(mode(parent), DIR_MODE);
        assert_eq!(fs::metadata(parent).unwrap().gid(), group);
        assert_eq!(fs::metadata(&path).unwrap().gid(), group);
        if Uid::effective().is_root() {
            let other = tempfile::tempdir().unwrap();
            let path = other.path().join("sub/ctl.sock");
            let _listener = bind(&path, Some(NOBODY)).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().gid(), NOBODY);
            assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().gid(), NOBODY);
        }
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&path, None).unwrap();
        let err = bind(&path, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            err.to_string(),
            format!("another daemon is already listening on {}", path.display())
        );
        drop(live);
        // The file is left behind by the dropped listener, and nothing answers now.
        assert!(bind(&path, None).is_ok());
    }

    #[tokio::test]
    async fn does_not_replace_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        fs::write(&path, "precious").unwrap();
        let err = bind(&path, None).unwrap_err();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
    }

    #[test]
    fn policy() {
        let root = PeerCred {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let nobody = PeerCred {
            uid: NOBODY,
            gid: 0,
            pid: Some(1),
        };
        assert!(PeerPolicy::root_only().permits(&root));
        assert!(!PeerPolicy::root_only().permits(&nobody));
        // The peer's own gid counts.
        assert!(PeerPolicy::with_group(0).permits(&nobody));
        if User::from_uid(Uid::from_raw(NOBODY))
            .ok()
            .flatten()
            .is_some()
        {
            // Through the user database: nobody's primary group is nogroup.
            assert!(PeerPolicy::with_group(NOBODY).permits(&nobody));
        }
        let stranger = PeerCred {
            uid: 4_000_000,
            gid: 4_000_000,
            pid: None,
        };
        assert!(!PeerPolicy::with_group(NOBODY).permits(&stranger));
    }

    #[test]
    fn resolves_groups() {
        assert_eq!(resolve_group("root").unwrap(), 0);
        let err = resolve_group("no-such-group-here").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
