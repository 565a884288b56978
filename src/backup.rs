//! Data safety: `natter backup FILE`, `natter export --format json|csv`, and the control socket they go through.
//!
//! redb lets one process open the store, so a backup taken while natter runs must come from the running server. The
//! server listens on a Unix socket in its data dir, `<data_dir>/control/natter.sock` (in a 0700 directory made before
//! the socket is bound, so there is no moment when others may connect), speaking HTTP/1.1 with one
//! route, `GET /backup`: the server opens one read transaction, copies every table into a fresh redb file (a
//! consistent snapshot: every write committed before it, none after, and the writer is never paused), and streams
//! that file. Why a Unix socket and not a route on the public listener: who may read the backup is then decided by
//! the file system, exactly as for `natter.redb` itself; no token to keep, no TLS client to trust, and no reverse
//! proxy on the same host can make a stranger look like localhost. An operator can also fetch it by hand:
//! `curl --unix-socket /var/lib/natter/control/natter.sock http://natter/backup -o natter-backup.redb`.
//!
//! When no server answers on the socket, the CLI opens the store itself and takes the same snapshot. Either way the
//! copy is written next to FILE, opened and counted before it is renamed into place, so FILE is never half a backup;
//! an export is written the same way. FILE may not be the store, its log or anything in the data dir: compared by
//! device and inode, since a copy renamed over the live store would be lost with everything written after it.
//!
//! Restore: stop natter, put the backup in the data dir as `natter.redb`, start natter (see docs/ops.md).

use std::convert::Infallible;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::config::Config;
use crate::store::{Conversation, Message, Store};
use crate::timestamp;

/// The control socket's directory in the data dir, and its file name there.
const CONTROL_DIRECTORY: &str = "control";
const CONTROL_SOCKET: &str = "natter.sock";
/// The store's file name in the data dir.
const STORE_FILE: &str = "natter.redb";
/// An earlier natter's write-ahead log in the data dir (taken into the store and removed at the first start of this one).
const LOG_FILE: &str = "natter.wal";
/// Bytes per chunk when streaming a snapshot: large enough for few syscalls, small enough to keep memory flat.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of the socket; the reader waits when the client is slow.
const CHUNKS_AHEAD: usize = 4;
/// Messages read per page when exporting.
const EXPORT_PAGE: usize = 1000;

pub fn control_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_DIRECTORY).join(CONTROL_SOCKET)
}

// ---- the server side ----

/// Binds the control socket inside a directory only natter's user may enter. A socket file takes its mode from the
/// umask when it is bound, so a `chmod` afterwards would leave a moment when anyone on the host could connect and
/// download every conversation; the directory closes that moment. The caller holds the store, so no other natter
/// uses this data dir and a socket file left there by a crash can be removed.
pub fn bind_control(data_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = control_socket_path(data_dir);
    let directory = path.parent().expect("the socket is inside its directory");
    private_directory(directory)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot remove the old {}", path.display()))
        }
    }
    UnixListener::bind(&path).with_context(|| {
        format!(
            "cannot create the control socket {} (a path shorter than 108 bytes is needed)",
            path.display()
        )
    })
}

/// Makes `directory` (0700), or makes an existing one 0700.
fn private_directory(directory: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let cannot = || {
        format!(
            "cannot make the directory {} (mode 0700)",
            directory.display()
        )
    };
    match std::fs::DirBuilder::new().mode(0o700).create(directory) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o700))
                .with_context(cannot)
        }
        Err(error) => Err(error).with_context(cannot),
    }
}

/// Serves the control socket until `shutdown` flips, then removes the socket file.
pub async fn serve_control(
    app: Arc<App>,
    listener: UnixListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = control_socket_path(&app.config.server.data_dir);
    loop {
        let stream = tokio::select! {
            () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(control_request(&app, &request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "control connection ended with an error");
            }
        });
    }
    let _ = std::fs::remove_file(path);
}

async fn control_request(app: &Arc<App>, request: &Request<Incoming>) -> Response<StreamedBody> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/backup") => match snapshot_response(app).await {
            Ok(response) => response,
            Err(error) => {
                tracing::error!("backup failed: {error:#}");
                text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("backup failed: {error:#}\n"),
                )
            }
        },
        _ => text_response(
            StatusCode::NOT_FOUND,
            "the control socket serves GET /backup\n",
        ),
    }
}

/// Takes a snapshot into a temp file in the data dir (same file system, known to be writable), opens it, removes
/// its name at once (the open handle keeps the data until the stream ends, and no stray file survives a crash), and
/// streams it.
async fn snapshot_response(app: &Arc<App>) -> anyhow::Result<Response<StreamedBody>> {
    let temp = app
        .config
        .server
        .data_dir
        .join(format!(".backup-{}.redb", uuid::Uuid::new_v4()));
    let store = app.store.clone();
    let target = temp.clone();
    let summary = tokio::task::spawn_blocking(move || store.snapshot_to(&target))
        .await
        .context("the snapshot task stopped")?
        .map_err(|error| {
            let _ = std::fs::remove_file(&temp);
            anyhow::anyhow!("{error:?}")
        })?;
    let file = tokio::fs::File::open(&temp).await;
    let _ = std::fs::remove_file(&temp);
    let mut file = file.context("cannot open the snapshot")?;
    let length = file.metadata().await?.len();
    tracing::info!(bytes = length, messages = summary.messages, "backup taken");
    let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
    tokio::spawn(async move {
        loop {
            let mut chunk = vec![0; CHUNK_BYTES];
            match file.read(&mut chunk).await {
                Ok(0) => break,
                Ok(read) => {
                    chunk.truncate(read);
                    if sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    break;
                }
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length)
        .header("x-natter-messages", summary.messages)
        .body(StreamedBody {
            receiver,
            length: Some(length),
        })
        .expect("valid response"))
}

fn text_response(status: StatusCode, text: &str) -> Response<StreamedBody> {
    let (sender, receiver) = mpsc::channel(1);
    let _ = sender.try_send(Ok(Bytes::from(text.to_string())));
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(StreamedBody {
            receiver,
            length: Some(text.len() as u64),
        })
        .expect("valid response")
}

/// A response body fed chunk by chunk from a channel, with its exact length known up front.
pub struct StreamedBody {
    receiver: mpsc::Receiver<std::io::Result<Bytes>>,
    length: Option<u64>,
}

impl hyper::body::Body for StreamedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        self.receiver
            .poll_recv(context)
            .map(|chunk| chunk.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

// ---- the command-line side ----

/// Where a backup came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The running server, through its control socket.
    Server,
    /// The store file, opened directly because no server was running.
    StoreFile,
}

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub source: Source,
    pub bytes: u64,
    pub messages: u64,
    pub conversations: u64,
}

/// `natter backup FILE`: a consistent copy of the store at `destination`, never a half-written one.
pub async fn backup(config: &Config, destination: &Path) -> anyhow::Result<BackupReport> {
    refuse_target_in_data_dir(&config.server.data_dir, destination)?;
    let parent = parent_folder(destination);
    // The copy is made in a folder of its own next to FILE and renamed over FILE once it opened (read-only, so it
    // keeps no store id: each restore of it gets its own) and counted: same file system, so the rename is atomic.
    let staging = parent.join(format!(".natter-backup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&staging)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let result = async {
        let staged = staging.join(STORE_FILE);
        let source = fetch_snapshot(config, &staged).await?;
        let (messages, conversations) = crate::store::count_copy(&staged).map_err(|error| {
            anyhow::anyhow!("the backup does not open as a natter store: {error:?}")
        })?;
        let bytes = std::fs::metadata(&staged)?.len();
        std::fs::rename(&staged, destination)
            .with_context(|| format!("cannot move the backup to {}", destination.display()))?;
        // The new name is durable only once the directory is.
        crate::store::sync_directory(&parent);
        Ok(BackupReport {
            source,
            bytes,
            messages,
            conversations,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// The folder a file goes in: its parent, or the current folder for a bare name.
fn parent_folder(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A file's identity on this machine: the same (device, inode) is the same file, however the path is spelled.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// Refuses a backup or export target that is the store, its log, or any file inside the data dir: renamed there, a
/// copy would replace the store under the running server, which goes on writing to the file it opened, and every
/// message acknowledged after that is lost at the next start. Paths are compared by device and inode, so a symbolic
/// link, a `..` or a hard link to the store is caught as well as the plain path.
pub fn refuse_target_in_data_dir(data_dir: &Path, target: &Path) -> anyhow::Result<()> {
    let Some(data_dir_identity) = file_identity(data_dir) else {
        // No data dir yet: there is no store to overwrite.
        return Ok(());
    };
    let refuse = || {
        anyhow::anyhow!(
            "{} is inside the data dir {} (or is its store): writing there would replace the live store; write the copy elsewhere, e.g. {}",
            target.display(),
            data_dir.display(),
            std::env::temp_dir().join("natter-backup.redb").display()
        )
    };
    if let Some(target_identity) = file_identity(target) {
        if [STORE_FILE, LOG_FILE]
            .iter()
            .any(|name| file_identity(&data_dir.join(name)) == Some(target_identity))
        {
            return Err(refuse());
        }
    }
    // Every folder the file would sit in, from its own up to the root: none may be the data dir.
    let parent = parent_folder(target);
    let Ok(mut folder) = std::fs::canonicalize(&parent) else {
        // A folder that does not exist holds no store; creating the file there fails with its own message.
        return Ok(());
    };
    loop {
        if file_identity(&folder) == Some(data_dir_identity) {
            return Err(refuse());
        }
        if !folder.pop() {
            return Ok(());
        }
    }
}

/// Writes a snapshot of the store to `target` (which must not exist): from the running server when one answers on
/// the control socket, from the store file otherwise.
pub async fn fetch_snapshot(config: &Config, target: &Path) -> anyhow::Result<Source> {
    let data_dir = &config.server.data_dir;
    let socket = control_socket_path(data_dir);
    match UnixStream::connect(&socket).await {
        Ok(stream) => {
            download(stream, target)
                .await
                .with_context(|| format!("backup through {}", socket.display()))?;
            Ok(Source::Server)
        }
        // No server is running: the socket was never made, or is left from a stopped one.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let store_path = data_dir.join(STORE_FILE);
            if !store_path.exists() {
                anyhow::bail!(
                    "there is no store at {}; pass the config natter runs with (--config) or its --data-dir",
                    store_path.display()
                );
            }
            let store = Store::open(data_dir)?;
            let target_path = target.to_path_buf();
            let snapshot_store = store.clone();
            let result =
                tokio::task::spawn_blocking(move || snapshot_store.snapshot_to(&target_path))
                    .await?;
            store.close().await;
            result.map_err(|error| anyhow::anyhow!("cannot copy the store: {error:?}"))?;
            Ok(Source::StoreFile)
        }
        Err(error) => Err(error).with_context(|| {
            format!(
                "cannot reach the running natter at {} (run as the user natter runs as, or root)",
                socket.display()
            )
        }),
    }
}

async fn download(stream: UnixStream, target: &Path) -> anyhow::Result<()> {
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri("/backup")
        .header(header::HOST, "natter")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        anyhow::bail!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    // Only the user taking the backup may read it: it holds every conversation.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    // hyper checks the body against Content-Length, so a server that stops half-way is an error here, not a short file.
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            file.write_all(&data)?;
        }
    }
    file.sync_all()?;
    Ok(())
}

// ---- export ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExportReport {
    pub conversations: u64,
    pub messages: u64,
}

/// `natter export`: every conversation with every message, from a snapshot (so the running server is not held up
/// and the export is consistent), written to `output`.
pub async fn export(
    config: &Config,
    format: ExportFormat,
    output: &mut dyn Write,
) -> anyhow::Result<ExportReport> {
    let staging = std::env::temp_dir().join(format!("natter-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = async {
        fetch_snapshot(config, &staging.join(STORE_FILE)).await?;
        let store = Store::open(&staging)?;
        let written = write_export(&store, format, output);
        store.close().await;
        written
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// `natter export --output FILE`: the export is written to a temp file next to FILE (mode 0600: it holds every
/// conversation) and renamed over FILE once complete, so FILE is never half an export, and never the store.
pub async fn export_to_file(
    config: &Config,
    format: ExportFormat,
    destination: &Path,
) -> anyhow::Result<ExportReport> {
    refuse_target_in_data_dir(&config.server.data_dir, destination)?;
    let temp = parent_folder(destination).join(format!(".natter-export-{}", uuid::Uuid::new_v4()));
    let result = async {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot write next to {}", destination.display()))?;
        let mut output = std::io::BufWriter::new(file);
        let report = export(config, format, &mut output).await?;
        output
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&temp, destination)
            .with_context(|| format!("cannot move the export to {}", destination.display()))?;
        Ok(report)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn write_export(
    store: &Store,
    format: ExportFormat,
    output: &mut dyn Write,
) -> anyhow::Result<ExportReport> {
    let mut conversations = store
        .conversations()
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    // Oldest first: an export reads like a ledger.
    conversations.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let mut report = ExportReport::default();
    match format {
        ExportFormat::Json => {
            writeln!(
                output,
                "{{\"format\":\"natter-export-1\",\"exported_at\":\"{}\",\"conversations\":[",
                timestamp::rfc3339(timestamp::now_millis())
            )?;
            for (index, conversation) in conversations.iter().enumerate() {
                let messages = all_messages(store, conversation)?;
                report.messages += messages.len() as u64;
                let entry = json!({
                    "id": conversation.id,
                    "visitor_name": conversation.visitor_name,
                    "email": conversation.email,
                    "created_at": timestamp::rfc3339(conversation.created_at),
                    "updated_at": timestamp::rfc3339(conversation.updated_at),
                    "page": conversation.page,
                    "messages": messages,
                });
                let separator = if index + 1 < conversations.len() {
                    ","
                } else {
                    ""
                };
                writeln!(output, "{entry}{separator}")?;
            }
            writeln!(output, "]}}")?;
        }
        ExportFormat::Csv => {
            writeln!(
                output,
                "conversation_id,visitor_name,email,message_id,sender,created_at,content,client_id"
            )?;
            for conversation in &conversations {
                for message in all_messages(store, conversation)? {
                    report.messages += 1;
                    let sender = match message.sender {
                        crate::store::Sender::Visitor => "visitor",
                        crate::store::Sender::Admin => "admin",
                    };
                    let fields = [
                        conversation.id.to_string(),
                        conversation.visitor_name.clone().unwrap_or_default(),
                        conversation.email.clone().unwrap_or_default(),
                        message.id.to_string(),
                        sender.to_string(),
                        message.created_at.clone(),
                        message.content.clone(),
                        message
                            .client_id
                            .map(|id| id.to_string())
                            .unwrap_or_default(),
                    ];
                    let row: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
                    writeln!(output, "{}", row.join(","))?;
                }
            }
        }
    }
    report.conversations = conversations.len() as u64;
    output.flush()?;
    Ok(report)
}

fn all_messages(store: &Store, conversation: &Conversation) -> anyhow::Result<Vec<Message>> {
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .conversation_messages(conversation.id, after, None, EXPORT_PAGE)
            .map_err(|error| anyhow::anyhow!("{error:?}"))?;
        after = page.messages.last().map(|message| message.id);
        messages.extend(page.messages);
        if !page.more || after.is_none() {
            return Ok(messages);
        }
    }
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. Text a visitor wrote that starts
/// with `=`, `+`, `-`, `@` or a tab would run as a formula when the owner opens the file in a spreadsheet (CSV
/// injection), so such a field gets a leading `'`, which spreadsheets show as text; the JSON export stays verbatim.
pub fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "'-1");
    }
}
