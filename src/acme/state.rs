//! What ACME keeps in `<data_dir>/acme/` (the directory 0700, each file 0600, each replaced whole by a rename):
//! `account.json`, the account key and its URL at the CA, so one account serves every order; and `certificate.json`,
//! the certificate chain and its key with the directory and names it was issued for, so a restart serves it again
//! and places no new order (Let's Encrypt issues the same names at most five times a week).

use std::path::{Path, PathBuf};

use anyhow::Context;
use instant_acme::AccountCredentials;
use serde::{Deserialize, Serialize};

const ACCOUNT_FILE: &str = "account.json";
const CERTIFICATE_FILE: &str = "certificate.json";

#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    /// The directory URL the account belongs to: another directory needs another account.
    pub directory: String,
    /// The contact the CA has for the account; a different `tls.acme_email` is sent to the CA at the next order.
    #[serde(default)]
    pub email: String,
    pub credentials: AccountCredentials,
}

#[derive(Serialize, Deserialize)]
pub struct StoredCertificate {
    pub directory: String,
    pub domains: Vec<String>,
    /// The leaf first, then the intermediates, as the CA sent them.
    pub chain_pem: String,
    pub key_pem: String,
}

/// The `acme` directory under the data dir.
pub struct State {
    directory: PathBuf,
}

impl State {
    pub fn new(data_dir: &Path) -> State {
        State {
            directory: data_dir.join("acme"),
        }
    }

    /// The stored account, when it belongs to `directory`.
    pub fn account(&self, directory: &str) -> anyhow::Result<Option<StoredAccount>> {
        Ok(self
            .read::<StoredAccount>(ACCOUNT_FILE)?
            .filter(|account| account.directory == directory))
    }

    pub fn save_account(&self, account: &StoredAccount) -> anyhow::Result<()> {
        self.write(ACCOUNT_FILE, account)
    }

    pub fn certificate(&self) -> anyhow::Result<Option<StoredCertificate>> {
        self.read(CERTIFICATE_FILE)
    }

    pub fn save_certificate(&self, certificate: &StoredCertificate) -> anyhow::Result<()> {
        self.write(CERTIFICATE_FILE, certificate)
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, name: &str) -> anyhow::Result<Option<T>> {
        let path = self.directory.join(name);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        serde_json::from_slice(&text).map(Some).with_context(|| {
            format!(
                "{} is damaged; move it away and natter starts over",
                path.display()
            )
        })
    }

    fn write(&self, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
        create_private_dir(&self.directory)?;
        let text = serde_json::to_vec_pretty(value).context("ACME state serializes")?;
        // Whole, and durable with its directory: a crash must not bring back the old certificate.
        crate::tls::replace_private(&self.directory.join(name), &text)
    }
}

fn create_private_dir(directory: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(directory).with_context(|| {
        format!(
            "cannot create {}; check server.data_dir",
            directory.display()
        )
    })
}
