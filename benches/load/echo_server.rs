//! A WebSocket echo server on the same stack as natter (tokio, hyper's HTTP/1.1 upgrade, fastwebsockets), with no
//! parsing, no state and no storage: what a socket costs before natter does anything with it. With a store, it
//! also commits each frame to redb before echoing it, in group commits like natter's writer: what a socket and a
//! durable write cost together, with nothing else.

use std::path::Path;
use std::time::Duration;

use fastwebsockets::{OpCode, WebSocketError};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::client::Socket;

use tokio::sync::oneshot;

const FRAMES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("frames");

/// A frame to commit, and who waits for it.
type Pending = (Vec<u8>, oneshot::Sender<()>);

pub fn run(store: Option<&Path>) -> anyhow::Result<()> {
    let committer = match store {
        Some(path) => {
            let database = redb::Database::create(path)?;
            let (queue, pending) = mpsc::channel::<Pending>(4096);
            std::thread::spawn(move || {
                if let Err(error) = commit_frames(&database, pending) {
                    eprintln!("echo server: {error:#}");
                    std::process::exit(1);
                }
            });
            Some(queue)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("echo listening on {}", listener.local_addr()?);
        // The parent holds our stdin; when it goes away (even killed), so do we.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let committer = committer.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                        let committer = committer.clone();
                        async move {
                            let (response, upgrade) =
                                fastwebsockets::upgrade::upgrade(&mut request)?;
                            tokio::spawn(async move {
                                if let Ok(socket) = upgrade.await {
                                    let _ = echo(socket, committer).await;
                                }
                            });
                            Ok::<_, WebSocketError>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn echo(
    mut socket: Socket,
    committer: Option<mpsc::Sender<Pending>>,
) -> Result<(), WebSocketError> {
    loop {
        let frame = socket.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                if let Some(committer) = &committer {
                    let (done, committed) = oneshot::channel();
                    if committer
                        .send((frame.payload.to_vec(), done))
                        .await
                        .is_err()
                        || committed.await.is_err()
                    {
                        return Ok(());
                    }
                }
                socket.write_frame(frame).await?
            }
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

/// Takes a frame, then every other frame already waiting, inserts them all in one transaction, commits it with
/// an fsync (`Durability::Immediate`), and only then lets their sockets echo them.
fn commit_frames(
    database: &redb::Database,
    mut pending: mpsc::Receiver<Pending>,
) -> anyhow::Result<()> {
    let mut batch = Vec::new();
    let mut next = 0u64;
    while let Some(first) = pending.blocking_recv() {
        batch.push(first);
        while let Ok(more) = pending.try_recv() {
            batch.push(more);
        }
        let transaction = database.begin_write()?;
        {
            let mut frames = transaction.open_table(FRAMES)?;
            for (payload, _) in &batch {
                frames.insert(next, payload.as_slice())?;
                next += 1;
            }
        }
        transaction.commit()?;
        for (_, done) in batch.drain(..) {
            let _ = done.send(());
        }
    }
    Ok(())
}
