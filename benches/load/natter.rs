//! The natter process the benchmark starts, stops and restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::TcpStream;

use crate::{client::http, progress, PATIENCE};

pub const ADMIN_PASSWORD: &str = "natter load benchmark password";

/// A natter started by the benchmark, with a config that lifts the limits a real blog needs and a load test breaks.
pub struct Natter {
    child: Child,
    pub binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    address: SocketAddr,
}

/// How long start-up took, from spawning the process.
pub struct Startup {
    /// Until the port accepts a TCP connection (the listener is bound; the store may still be opening).
    pub tcp: Duration,
    /// Until `/healthz` answers 200 (natter serves).
    pub healthy: Duration,
}

impl Natter {
    pub async fn start(
        binary: &Path,
        workspace: &Path,
        address: SocketAddr,
    ) -> anyhow::Result<(Natter, Startup)> {
        if !binary.exists() {
            bail!(
                "{} does not exist: run `cargo build --release` first, or pass --natter PATH",
                binary.display()
            );
        }
        let data_dir = workspace.join("natter-data");
        let config = workspace.join("natter.toml");
        std::fs::create_dir_all(&data_dir)?;
        // Generous limits: one machine plays thousands of visitors from a few addresses, at rates no single visitor
        // reaches. Push is off: there is no push service to talk to.
        let text = format!(
            "[server]\nlisten = \"{address}\"\ndata_dir = {data_dir:?}\nlog = \"warn\"\n\n\
             [widget]\nallowed_origins = [\"http://blog.test\"]\n\n\
             [limits]\nmax_connections = 1000000\nmax_connections_per_ip = 1000000\n\
             messages_per_minute = 1000000000\nconversations_per_hour = 1000000000\n\n\
             [push]\nwhen = \"never\"\n",
            data_dir = data_dir.display().to_string(),
        );
        std::fs::write(&config, text)?;
        let mut natter = Natter {
            child: Natter::spawn(binary, &config, &workspace.join("natter.log"))?,
            binary: binary.to_path_buf(),
            config,
            log: workspace.join("natter.log"),
            address,
        };
        let startup = natter.wait_until_serving(Instant::now()).await?;
        Ok((natter, startup))
    }

    fn spawn(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .env("NATTER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // The operator's own NATTER_* settings must not leak into the benchmark's server.
        for (name, _) in std::env::vars()
            .filter(|(name, _)| name.starts_with("NATTER_") && name != "NATTER_ADMIN_PASSWORD")
        {
            command.env_remove(name);
        }
        command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn wait_until_serving(&mut self, spawned: Instant) -> anyhow::Result<Startup> {
        let deadline = spawned + PATIENCE;
        let tcp = loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "natter exited at start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            if TcpStream::connect(self.address).await.is_ok() {
                break spawned.elapsed();
            }
            if Instant::now() > deadline {
                bail!(
                    "natter did not open {} within {PATIENCE:?}; its log:\n{}",
                    self.address,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let healthy = loop {
            if let Ok(answer) = http(self.address, "GET", "/healthz", &[], None).await {
                if answer.status == 200 {
                    break spawned.elapsed();
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "natter did not answer /healthz within {PATIENCE:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        Ok(Startup { tcp, healthy })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait for natter to drain and exit; answers how long that took.
    pub async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if self.child.try_wait().ok().flatten().is_some() {
            return Duration::ZERO;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        while started.elapsed() < PATIENCE {
            if self.child.try_wait().ok().flatten().is_some() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        progress("natter did not stop within 30 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        started.elapsed()
    }

    /// Starts natter again on the same address and data dir. Answers the spawn instant.
    pub fn respawn(&mut self) -> anyhow::Result<Instant> {
        let spawned = Instant::now();
        self.child = Natter::spawn(&self.binary, &self.config, &self.log)?;
        Ok(spawned)
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}
