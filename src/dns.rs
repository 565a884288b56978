//! Names to addresses, for everyone who dials out (Web Push endpoints, the ACME CA, the SMTP relay), through hickory,
//! a pure-Rust resolver that reads `/etc/resolv.conf`: a statically linked glibc binary cannot load the NSS modules
//! `getaddrinfo` needs. One `Resolver` also serves as hyper's resolver (a tower `Service` over hyper-util's `Name`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;

/// Which addresses a caller may reach (true: this one may be dialled).
pub type Filter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Resolver {
    /// None when the system's resolver settings cannot be read: then only IP addresses can be dialled.
    hickory: Option<Arc<TokioResolver>>,
    timeout: Duration,
    /// None: any address will do.
    filter: Option<Filter>,
}

impl Resolver {
    /// `purpose` names what is looked up ("Web Push endpoints") for the operator's warning when
    /// `/etc/resolv.conf` cannot be read; each lookup must finish within `timeout`; with a `filter`, a name that has
    /// any address it refuses is refused whole, so the connector can only ever dial an address the filter passed.
    pub fn new(purpose: &str, timeout: Duration, filter: Option<Filter>) -> Resolver {
        let hickory = match TokioResolver::builder_tokio().and_then(|builder| builder.build()) {
            Ok(resolver) => Some(Arc::new(resolver)),
            Err(error) => {
                tracing::warn!(%error, "cannot read /etc/resolv.conf: {purpose} given by name cannot be reached");
                None
            }
        };
        Resolver {
            hickory,
            timeout,
            filter,
        }
    }

    /// Every address `host` has (an IP address, bracketed or not, is its own answer), when the filter passes all
    /// of them. The error says why, for the operator.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let hickory = self
                    .hickory
                    .as_ref()
                    .ok_or("no DNS resolver (is /etc/resolv.conf readable?)")?;
                let lookup = tokio::time::timeout(self.timeout, hickory.lookup_ip(host))
                    .await
                    .map_err(|_| format!("looking up {host} took too long"))?
                    .map_err(|error| format!("cannot look up {host}: {error}"))?;
                lookup.iter().collect()
            }
        };
        if addresses.is_empty() {
            return Err(format!("{host} has no address"));
        }
        let refused = self
            .filter
            .as_ref()
            .and_then(|allows| addresses.iter().find(|ip| !allows(**ip)));
        match refused {
            Some(refused) => Err(format!(
                "{host} resolves to {refused}, which natter may not reach"
            )),
            None => Ok(addresses),
        }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = resolver
                .addresses(name.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_is_its_own_answer_and_the_filter_refuses_it_whole() {
        let any = Resolver::new("tests", Duration::from_secs(5), None);
        assert_eq!(
            any.addresses("[::1]").await,
            Ok(vec![IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])])
        );
        assert_eq!(
            any.addresses("10.0.0.1").await,
            Ok(vec![IpAddr::from([10, 0, 0, 1])])
        );
        let public_only = Resolver::new(
            "tests",
            Duration::from_secs(5),
            Some(Arc::new(|ip: IpAddr| !ip.is_loopback())),
        );
        assert_eq!(
            public_only.addresses("127.0.0.1").await,
            Err("127.0.0.1 resolves to 127.0.0.1, which natter may not reach".to_string())
        );
        assert_eq!(
            public_only.addresses("192.0.2.7").await,
            Ok(vec![IpAddr::from([192, 0, 2, 7])])
        );
    }
}
