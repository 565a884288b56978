//! DNS for the push client, through hickory, a pure-Rust resolver: a statically linked glibc binary cannot load the
//! NSS modules `getaddrinfo` needs. It answers only with addresses the policy allows.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;

use super::subscription::AddressPolicy;

/// A DNS lookup must finish within this.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// DNS for the push client that answers only with addresses the policy allows: a name that resolves to any private,
/// loopback or otherwise internal address is refused whole, so the connector can only ever connect to a checked
/// address. (Endpoints written as IP literals skip the resolver; `send_once` checks those itself.)
#[derive(Clone)]
pub struct GuardedResolver {
    dns: Option<Arc<TokioResolver>>,
    policy: AddressPolicy,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy) -> GuardedResolver {
        let dns = match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Some(Arc::new(resolver)),
            Err(error) => {
                tracing::warn!(%error, "cannot read /etc/resolv.conf: Web Push endpoints given by name cannot be reached");
                None
            }
        };
        GuardedResolver { dns, policy }
    }

    /// Every address `host` has, when all of them may be reached over `https` (or plain http to loopback).
    pub async fn checked_addresses(&self, host: &str, https: bool) -> Result<Vec<IpAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let dns = self
                    .dns
                    .as_ref()
                    .ok_or("no DNS resolver (is /etc/resolv.conf readable?)")?;
                let lookup = tokio::time::timeout(DNS_TIMEOUT, dns.lookup_ip(host))
                    .await
                    .map_err(|_| format!("looking up {host} took too long"))?
                    .map_err(|error| format!("cannot look up {host}: {error}"))?;
                lookup.iter().collect()
            }
        };
        if addresses.is_empty() {
            return Err(format!("{host} has no address"));
        }
        match addresses.iter().find(|ip| !self.policy.allows(**ip, https)) {
            Some(refused) => Err(format!(
                "{host} resolves to {refused}, which is not a public address"
            )),
            None => Ok(addresses),
        }
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            // The connector resolves for both schemes; plain http only ever passes for loopback, which the
            // policy allows regardless of scheme, so asking with `https = true` is exact for every other address.
            let addresses = resolver
                .checked_addresses(name.as_str(), true)
                .await
                .map_err(std::io::Error::other)?;
            Ok(addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}
