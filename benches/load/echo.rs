//! The echo server as a child process: the socket ceiling (and, with a store, the durable one).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::client::Endpoint;
use crate::closed_loop::{closed_loop, ThroughputRun};

/// The echo server as a child process, so its memory is measured alone, like natter's.
pub struct EchoServer {
    child: Child,
    address: SocketAddr,
}

impl EchoServer {
    /// `store`: commit every frame to a redb file there before echoing it.
    pub fn start(store: Option<&Path>) -> anyhow::Result<EchoServer> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--echo-server");
        if let Some(store) = store {
            command.arg("--echo-store").arg(store);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the echo server")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("echo listening on ")
            .and_then(|address| address.parse().ok())
            .ok_or_else(|| anyhow!("the echo server said {line:?}"))?;
        Ok(EchoServer { child, address })
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.address, "", "")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `senders` closed-loop senders through this server for `window`.
    pub async fn closed_loop(
        &self,
        senders: usize,
        window: Duration,
    ) -> anyhow::Result<ThroughputRun> {
        closed_loop(&self.endpoint(), true, senders, window, Some(self.pid())).await
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
