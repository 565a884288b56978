//! `tls.mode = "acme"`: natter obtains a trusted certificate for its domain(s) from an ACME CA (RFC 8555; Let's
//! Encrypt by default), keeps it in the data dir, and renews it, all in one background task.
//!
//! - Start-up never waits for the CA. A stored certificate is served from the first handshake; without one, TLS
//!   handshakes are refused (with a log line) until the first order completes, while the HTTP-01 listener (when
//!   `tls.redirect_listen` is set) already answers.
//! - Challenges: TLS-ALPN-01 on natter's own TLS listener (port 443 is enough), and HTTP-01 on the plain-HTTP
//!   redirect listener when there is one. natter tries first the one that fits the public URL (TLS-ALPN-01 when it
//!   is on port 443) and switches after a failed validation.
//! - Renewal two thirds into the certificate's lifetime, a little earlier at random; after a failure, attempts back
//!   off from 10 seconds to 6 hours (an hour at least when rate-limited). A new certificate is swapped in for new
//!   handshakes while open connections carry on with the old one.
//! - Each attempt's outcome is one log line; `/metrics` shows the expiry and the last outcome (`Status`).
//!
//! The files: `challenge` (the two challenges, the HTTP-01 answers); `state`; the CA's HTTP client: `client`; one
//! order: `order`; certificate dates: `validity`.

mod challenge;
mod client;
mod order;
mod state;
mod validity;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{Account, ExternalAccountKey, NewAccount};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::config::{Config, Origin};
use crate::timestamp::rfc3339;
use crate::tls::Tls;
pub use challenge::{Challenge, Http01};
use client::AcmeHttp;
use order::Failure;
use state::{State, StoredAccount, StoredCertificate};
pub use validity::Validity;

/// The wait after the first failed attempt; each further failure waits `BACKOFF_FACTOR` times longer, up to
/// `MAX_BACKOFF`. Ten seconds covers a CA's passing hiccup; by the fifth failure (about 15 minutes in) natter is below
/// Let's Encrypt's limit of five failed validations per name an hour.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const BACKOFF_FACTOR: u32 = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The least wait after the CA said `rateLimited`: its limits count by the hour and the week.
const RATE_LIMITED_BACKOFF: Duration = Duration::from_secs(3600);
/// The renewal task wakes at least this often, so a suspended machine or a clock that jumped is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// The least time between two orders that both succeeded, should a CA issue certificates already due for renewal.
const MIN_RENEWAL_GAP: i64 = 5;

/// What `/metrics` shows of ACME. Unix seconds; 0 means "not yet".
#[derive(Default)]
pub struct Status {
    /// `notAfter` of the certificate served now.
    pub expiry: AtomicU64,
    /// When the last attempt ended.
    pub last_attempt: AtomicU64,
    /// 1 when the last attempt obtained a certificate, 0 when it failed.
    pub last_success: AtomicU64,
    pub successes: AtomicU64,
    pub failures: AtomicU64,
}

/// The ACME side of one natter: what to ask for, where to keep it, and the task that renews it.
pub struct Acme {
    /// Shared with `/metrics`.
    status: Arc<Status>,
    tls: Arc<Tls>,
    http01: Arc<Http01>,
    state: State,
    directory: String,
    domains: Vec<String>,
    challenges: Vec<Challenge>,
    email: String,
    /// `tls.acme_ca_root`.
    ca_root: PathBuf,
    /// `tls.acme_eab_kid` and the HMAC key: sent only when natter makes its account, which it then keeps.
    external_account: Option<(String, ExternalAccountKey)>,
    /// The validity of the certificate served now, when it is the one the config asks for.
    current: Option<Validity>,
}

impl Acme {
    /// Reads the stored state and installs the stored certificate, so the first handshake already has it. Talks to
    /// no CA: that is the task's job (`spawn`).
    pub fn new(
        config: &Config,
        public_origin: &Origin,
        status: Arc<Status>,
        tls: Arc<Tls>,
        redirect: Option<SocketAddr>,
    ) -> anyhow::Result<Acme> {
        // Checks tls.acme_ca_root now, so that a wrong path stops natter at start rather than at the first order.
        drop(AcmeHttp::new(&config.tls.acme_ca_root)?);
        let external_account = config
            .tls
            .acme_external_account()
            .map_err(anyhow::Error::msg)?
            .map(|(kid, key)| (kid.clone(), ExternalAccountKey::new(kid, &key)));
        let mut acme = Acme {
            status,
            tls,
            http01: Arc::new(Http01::default()),
            state: State::new(&config.server.data_dir),
            directory: config.tls.acme_directory_url().to_string(),
            domains: config.acme_domains(),
            challenges: Challenge::in_order(public_origin, redirect),
            email: config.tls.acme_email.clone(),
            ca_root: config.tls.acme_ca_root.clone(),
            external_account,
            current: None,
        };
        match acme.state.certificate() {
            Ok(Some(stored)) => acme.install_stored(&stored),
            Ok(None) => tracing::info!(
                "ACME: no certificate yet for {}; asking {} in the background (TLS handshakes are refused until it arrives)",
                acme.domains.join(", "),
                acme.directory
            ),
            Err(error) => tracing::warn!("ACME: {error:#}; ordering a new certificate"),
        }
        Ok(acme)
    }

    /// The HTTP-01 answers, for the plain-HTTP listener.
    pub fn http01(&self) -> Arc<Http01> {
        self.http01.clone()
    }

    fn install_stored(&mut self, stored: &StoredCertificate) {
        let validity = match self.install(stored) {
            Ok(validity) => validity,
            Err(error) => {
                tracing::warn!(
                    "ACME: the stored certificate cannot be used ({error:#}); ordering a new one"
                );
                return;
            }
        };
        if stored.directory != self.directory || stored.domains != self.domains {
            tracing::info!(
                "ACME: the stored certificate is for {} from {}; ordering one for {} from {} (the old one is served meanwhile)",
                stored.domains.join(", "),
                stored.directory,
                self.domains.join(", "),
                self.directory
            );
            return;
        }
        self.current = validity;
        if let Some(validity) = validity {
            tracing::info!(
                "ACME: serving the stored certificate for {}, valid until {}",
                self.domains.join(", "),
                rfc3339(validity.not_after * 1000)
            );
        }
    }

    /// Serves a certificate from the next handshake on and answers its validity.
    fn install(&self, stored: &StoredCertificate) -> anyhow::Result<Option<Validity>> {
        self.tls
            .install_pem(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes())?;
        let validity = CertificateDer::pem_slice_iter(stored.chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .and_then(|leaf| Validity::of(&leaf));
        let expiry = validity.map_or(0, |validity| u64::try_from(validity.not_after).unwrap_or(0));
        self.status.expiry.store(expiry, Ordering::Relaxed);
        Ok(validity)
    }

    /// Runs the renewal task until `shutdown` flips.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) {
        tokio::spawn(self.run(shutdown));
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut account: Option<Account> = None;
        let mut failures = 0u32;
        let mut challenge = 0usize;
        let mut next_attempt = self
            .current
            .map_or(0, |validity| validity.renewal_time(jitter()));
        if self.current.is_some() {
            tracing::info!("ACME: renewal due from {}", rfc3339(next_attempt * 1000));
        }
        loop {
            let now = unix_now();
            if now < next_attempt {
                let wait =
                    Duration::from_secs((next_attempt - now).unsigned_abs()).min(LONGEST_SLEEP);
                tokio::select! {
                    () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
            let answer_with = self.challenges[challenge % self.challenges.len()];
            let started = Instant::now();
            tracing::info!(
                "ACME: ordering a certificate for {} from {}, answering {} on {}",
                self.domains.join(", "),
                self.directory,
                answer_with.name(),
                match answer_with {
                    Challenge::TlsAlpn01 => "natter's TLS listener",
                    Challenge::Http01 => "the plain-HTTP listener (tls.redirect_listen)",
                }
            );
            let outcome = tokio::select! {
                () = async { drop(shutdown.wait_for(|stopping| *stopping).await) } => return,
                outcome = self.attempt(&mut account, answer_with) => outcome,
            };
            let status = &self.status;
            status
                .last_attempt
                .store(unix_now().unsigned_abs(), Ordering::Relaxed);
            match outcome {
                Ok(validity) => {
                    failures = 0;
                    status.last_success.store(1, Ordering::Relaxed);
                    status.successes.fetch_add(1, Ordering::Relaxed);
                    self.current = Some(validity);
                    next_attempt = validity
                        .renewal_time(jitter())
                        .max(unix_now() + MIN_RENEWAL_GAP);
                    tracing::info!(
                        "ACME: certificate for {} obtained in {:.1}s through {}, valid until {}; renewal due from {}",
                        self.domains.join(", "),
                        started.elapsed().as_secs_f64(),
                        answer_with.name(),
                        rfc3339(validity.not_after * 1000),
                        rfc3339(next_attempt * 1000)
                    );
                }
                Err(failure) => {
                    failures += 1;
                    status.last_success.store(0, Ordering::Relaxed);
                    status.failures.fetch_add(1, Ordering::Relaxed);
                    if failure.validation {
                        challenge += 1;
                    }
                    if failure.account_gone {
                        account = None;
                    }
                    let wait = backoff(failures, failure.rate_limited);
                    next_attempt = unix_now() + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX);
                    let serving = match self.current {
                        Some(validity) => format!(
                            "the current certificate, valid until {}, stays",
                            rfc3339(validity.not_after * 1000)
                        ),
                        None => "TLS handshakes are refused until a certificate arrives".into(),
                    };
                    tracing::warn!(
                        "ACME: {}; next attempt in {}; {serving}",
                        failure.message,
                        human(wait)
                    );
                }
            }
        }
    }

    /// One order, start to finish: the account (stored, or made now), the certificate, stored and installed.
    async fn attempt(
        &self,
        account: &mut Option<Account>,
        challenge: Challenge,
    ) -> Result<Validity, Failure> {
        let account = match account {
            Some(account) => account,
            None => account.insert(self.account().await?),
        };
        let issued = order::obtain(
            account,
            &self.directory,
            &self.domains,
            challenge,
            &self.tls,
            &self.http01,
        )
        .await?;
        let stored = StoredCertificate {
            directory: self.directory.clone(),
            domains: self.domains.clone(),
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
        };
        let local = |error: anyhow::Error| {
            Failure::new(format!("the new certificate cannot be used: {error:#}"))
        };
        // Stored first: a crash right after must find it, not order again.
        self.state.save_certificate(&stored).map_err(local)?;
        let validity = self.install(&stored).map_err(local)?;
        validity.ok_or_else(|| local(anyhow::anyhow!("its validity dates cannot be read")))
    }

    /// The stored account for this directory, or a new one (stored at once, so it is made only once).
    async fn account(&self) -> Result<Account, Failure> {
        let http = || {
            AcmeHttp::new(&self.ca_root)
                .map(|http| Account::builder_with_http(Box::new(http)))
                .map_err(|error| Failure::new(format!("{error:#}")))
        };
        let contact = format!("mailto:{}", self.email);
        let contacts: Vec<&str> = if self.email.is_empty() {
            Vec::new()
        } else {
            vec![contact.as_str()]
        };
        let stored = self.state.account(&self.directory).unwrap_or_else(|error| {
            tracing::warn!("ACME: {error:#}; making a new account");
            None
        });
        if let Some(mut stored) = stored {
            let account = http()?
                .from_credentials(stored.credentials)
                .await
                .map_err(|error| Failure::request("loading the account", &self.directory, error))?;
            if stored.email != self.email {
                account.update_contacts(&contacts).await.map_err(|error| {
                    Failure::request("changing the account's contact", &self.directory, error)
                })?;
                tracing::info!("ACME: the account's contact is now {:?}", self.email);
                if let Ok(Some(again)) = self.state.account(&self.directory) {
                    stored = StoredAccount {
                        email: self.email.clone(),
                        ..again
                    };
                    self.save_account(&stored);
                }
            }
            return Ok(account);
        }
        let (account, credentials) = http()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                self.external_account.as_ref().map(|(_, key)| key),
            )
            .await
            .map_err(|error| {
                Failure::creating_account(&self.directory, error, self.external_account.is_some())
            })?;
        self.save_account(&StoredAccount {
            directory: self.directory.clone(),
            email: self.email.clone(),
            credentials,
        });
        let binding = match &self.external_account {
            Some((kid, _)) => format!(", bound to the external account {kid:?}"),
            None => String::new(),
        };
        tracing::info!(
            "ACME: account created at {} ({}{binding})",
            self.directory,
            account.id()
        );
        Ok(account)
    }

    fn save_account(&self, account: &StoredAccount) {
        if let Err(error) = self.state.save_account(account) {
            tracing::warn!(
                "ACME: the account is not stored, so the next start makes another: {error:#}"
            );
        }
    }
}

/// The wait after `failures` failed attempts in a row.
fn backoff(failures: u32, rate_limited: bool) -> Duration {
    let factor = BACKOFF_FACTOR.saturating_pow(failures.saturating_sub(1));
    let wait = FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF);
    if rate_limited {
        wait.max(RATE_LIMITED_BACKOFF)
    } else {
        wait
    }
}

/// A random number between 0 and 1, for renewal jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX)
}

fn unix_now() -> i64 {
    crate::timestamp::now_millis() / 1000
}

/// `10s`, `2m40s`, `6h`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, seconds) => format!("{seconds}s"),
        (0, minutes, 0) => format!("{minutes}m"),
        (0, minutes, seconds) => format!("{minutes}m{seconds}s"),
        (hours, 0, _) => format!("{hours}h"),
        (hours, minutes, _) => format!("{hours}h{minutes}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_ten_seconds_to_six_hours_and_waits_an_hour_when_rate_limited() {
        let waits: Vec<String> = (1..=8)
            .map(|failures| human(backoff(failures, false)))
            .collect();
        assert_eq!(
            waits,
            ["10s", "40s", "2m40s", "10m40s", "42m40s", "2h50m", "6h", "6h"]
        );
        assert_eq!(backoff(1, true), RATE_LIMITED_BACKOFF);
        assert_eq!(backoff(100, false), MAX_BACKOFF);
    }
}
