//! A browser's `PushSubscription`, parsed once at the door, and the rule for which addresses natter may send to.
//!
//! A subscription's endpoint is a URL the browser hands us, and natter POSTs to it later: without care that is a
//! server-side request forgery (a crafted "endpoint" on the owner's router, a cloud metadata address, a service on
//! localhost). So an endpoint must be `https`, and every address its host resolves to must be a public unicast
//! address; the sender resolves again at send time and connects only to the addresses that pass (`AddressPolicy`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64ct::{Base64UrlUnpadded, Encoding};
use http::Uri;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Origin;
use crate::error::ApiError;

/// Real endpoints (FCM, Mozilla autopush, Apple) are 100 to 500 bytes; this leaves room without storing essays.
const MAX_ENDPOINT_BYTES: usize = 2048;

/// `PushSubscription.toJSON()` as the browser sends it.
#[derive(Debug, Deserialize)]
pub struct SubscriptionJson {
    pub endpoint: String,
    pub keys: KeysJson,
    /// Milliseconds since the epoch or null; browsers rarely set it, and the push service answers 410 once it passes.
    #[serde(default, rename = "expirationTime")]
    pub _expiration_time: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct KeysJson {
    pub p256dh: String,
    pub auth: String,
}

/// Whose device a subscription reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "conversation_id")]
pub enum Audience {
    /// The owner: every visitor message while no dashboard is open.
    Owner,
    /// The visitor of this conversation: the owner's replies while the visitor has no socket open.
    Visitor(Uuid),
}

/// A checked subscription, as the store keeps it (JSON, keyed by endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub endpoint: String,
    /// The browser's P-256 public key, base64url of the 65-byte uncompressed point.
    pub p256dh: String,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: String,
    pub audience: Audience,
}

/// Which targets the sender may reach. Loopback is allowed only for tests (`push.allow_loopback`), and then plain
/// `http` too, since a fake push service on loopback has no certificate.
#[derive(Debug, Clone, Copy)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
}

impl Subscription {
    /// Checks the shape of a subscription: the URL, the key and the secret. Where the host points is checked
    /// separately (`AddressPolicy`), because it needs a DNS lookup.
    pub fn parse(
        json: SubscriptionJson,
        audience: Audience,
        policy: AddressPolicy,
    ) -> Result<Subscription, ApiError> {
        let endpoint = json.endpoint.trim().to_string();
        endpoint_uri(&endpoint, policy)?;
        let p256dh = decode_base64url(&json.keys.p256dh)
            .ok_or_else(|| ApiError::invalid("keys.p256dh is not base64url"))?;
        if p256dh.len() != 65
            || p256dh[0] != 4
            || web_push_native::p256::PublicKey::from_sec1_bytes(&p256dh).is_err()
        {
            return Err(ApiError::invalid(
                "keys.p256dh must be an uncompressed P-256 public key (65 bytes)",
            ));
        }
        let auth = decode_base64url(&json.keys.auth)
            .ok_or_else(|| ApiError::invalid("keys.auth is not base64url"))?;
        if auth.len() != 16 {
            return Err(ApiError::invalid("keys.auth must be 16 bytes"));
        }
        Ok(Subscription {
            endpoint,
            p256dh: crate::auth::base64url(&p256dh),
            auth: crate::auth::base64url(&auth),
            audience,
        })
    }

    /// The browser's public key and secret, as the encryption wants them. Stored values were checked on the way in.
    pub fn keys(&self) -> Option<(web_push_native::p256::PublicKey, web_push_native::Auth)> {
        let public =
            web_push_native::p256::PublicKey::from_sec1_bytes(&decode_base64url(&self.p256dh)?)
                .ok()?;
        let auth = decode_base64url(&self.auth)?;
        (auth.len() == 16).then(|| (public, web_push_native::Auth::clone_from_slice(&auth)))
    }
}

/// Parses an endpoint URL: `https` (or `http` when loopback is allowed), a host, no user info, bounded in size.
pub fn endpoint_uri(endpoint: &str, policy: AddressPolicy) -> Result<Uri, ApiError> {
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(ApiError::too_long(format!(
            "the endpoint is longer than {MAX_ENDPOINT_BYTES} bytes"
        )));
    }
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| ApiError::invalid("the endpoint is not a URL"))?;
    match uri.scheme_str() {
        Some("https") => {}
        // Plain http only to a loopback address written as such: no DNS answer can later point it elsewhere.
        Some("http")
            if policy.allow_loopback
                && literal_ip(&uri).is_some_and(|ip| ip.to_canonical().is_loopback()) => {}
        _ => return Err(ApiError::invalid("the endpoint must be an https URL")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ApiError::invalid("the endpoint has no host"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(ApiError::invalid("the endpoint must be a plain https URL"));
    }
    Ok(uri)
}

/// The origin of an endpoint (scheme, host, port when not the default): the `aud` of its VAPID token.
pub fn audience_origin(uri: &Uri) -> Option<Origin> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    Origin::parse(&format!("{scheme}://{authority}")).ok()
}

/// The host of an endpoint as an IP address, when it is written as one (brackets of IPv6 removed).
pub fn literal_ip(uri: &Uri) -> Option<IpAddr> {
    uri.host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl AddressPolicy {
    /// Whether natter may connect to `ip` for a push with this scheme. Everything that is not a public unicast
    /// address is refused: private, shared (CGNAT), loopback, link-local, unique-local, multicast, documentation and
    /// reserved ranges, and IPv6 forms that embed such an IPv4 address.
    pub fn allows(&self, ip: IpAddr, https: bool) -> bool {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        https && is_public(ip)
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier-grade NAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach an IPv4 address: judge that one.
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] {
        let [.., high, low] = segments;
        return is_public_v4(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)));
    }
    if segments[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from(
            (u32::from(segments[1]) << 16) | u32::from(segments[2]),
        ));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1) // local-use NAT64 (RFC 8215)
        || (segments[0] == 0x2001 && segments[1] == 0) // Teredo: a tunnel to any IPv4 address
        || (segments[0] == 0x100 && segments[1..4] == [0, 0, 0]) // discard-only (RFC 6666)
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed privately)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

/// base64url with or without padding, as browsers and tools write it.
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(text.trim().trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";
    const STRICT: AddressPolicy = AddressPolicy {
        allow_loopback: false,
    };

    fn json(endpoint: &str, p256dh: &str, auth: &str) -> SubscriptionJson {
        SubscriptionJson {
            endpoint: endpoint.into(),
            keys: KeysJson {
                p256dh: p256dh.into(),
                auth: auth.into(),
            },
            _expiration_time: None,
        }
    }

    #[test]
    fn a_browser_subscription_parses() {
        let parsed = Subscription::parse(
            json("https://fcm.googleapis.com/fcm/send/abc", P256DH, AUTH),
            Audience::Owner,
            STRICT,
        )
        .unwrap();
        assert_eq!(parsed.p256dh, P256DH);
        assert!(parsed.keys().is_some());
        let padded = format!("{AUTH}==");
        assert!(Subscription::parse(
            json("https://push.example/x", P256DH, &padded),
            Audience::Owner,
            STRICT
        )
        .is_ok());
    }

    #[test]
    fn bad_urls_keys_and_secrets_are_refused() {
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        for endpoint in [
            "http://push.example/x",
            "ftp://push.example/x",
            "https://user@push.example/x",
            "/relative",
            "",
            long.as_str(),
        ] {
            assert!(
                Subscription::parse(json(endpoint, P256DH, AUTH), Audience::Owner, STRICT).is_err(),
                "{endpoint}"
            );
        }
        let compressed = crate::auth::base64url(&[2u8; 33]);
        let not_on_curve = crate::auth::base64url(&[4u8; 65]);
        for key in [compressed.as_str(), not_on_curve.as_str(), "***", ""] {
            assert!(
                Subscription::parse(
                    json("https://push.example/x", key, AUTH),
                    Audience::Owner,
                    STRICT
                )
                .is_err(),
                "{key}"
            );
        }
        let short = crate::auth::base64url(&[1u8; 15]);
        assert!(Subscription::parse(
            json("https://push.example/x", P256DH, &short),
            Audience::Owner,
            STRICT
        )
        .is_err());
    }

    #[test]
    fn plain_http_only_with_the_test_switch() {
        let loopback = AddressPolicy {
            allow_loopback: true,
        };
        assert!(endpoint_uri("http://127.0.0.1:9/push", STRICT).is_err());
        assert!(endpoint_uri("http://127.0.0.1:9/push", loopback).is_ok());
        assert!(
            endpoint_uri("http://push.example/push", loopback).is_err(),
            "plain http only to a loopback literal"
        );
        assert!(endpoint_uri("http://10.0.0.1/push", loopback).is_err());
        assert!(loopback.allows("127.0.0.1".parse().unwrap(), false));
        assert!(!loopback.allows("10.0.0.1".parse().unwrap(), false));
        assert!(
            !loopback.allows("8.8.8.8".parse().unwrap(), false),
            "plain http only to loopback"
        );
        assert!(loopback.allows("8.8.8.8".parse().unwrap(), true));
    }

    #[test]
    fn only_public_unicast_addresses_are_targets() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "2001:db8::1",
            "fec0::1",
            "::127.0.0.1",
            // Regression (issue 15, item 8): these three were allowed.
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::808:808",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
        ] {
            assert!(
                !STRICT.allows(refused.parse().unwrap(), true),
                "{refused} must be refused"
            );
        }
        for allowed in [
            "8.8.8.8",
            "142.250.74.100",
            "2a00:1450:4001:80b::200a",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:4860:4860::8888",
            "100:0:0:1::1",
        ] {
            assert!(
                STRICT.allows(allowed.parse().unwrap(), true),
                "{allowed} must be allowed"
            );
        }
    }

    #[test]
    fn the_audience_of_a_token_is_the_endpoint_origin() {
        let uri: Uri = "https://fcm.googleapis.com:443/fcm/send/abc"
            .parse()
            .unwrap();
        assert_eq!(
            audience_origin(&uri).unwrap().as_str(),
            "https://fcm.googleapis.com"
        );
        let uri: Uri = "http://127.0.0.1:4711/push/1".parse().unwrap();
        assert_eq!(
            audience_origin(&uri).unwrap().as_str(),
            "http://127.0.0.1:4711"
        );
        assert_eq!(
            literal_ip(&"https://[::1]:8/x".parse().unwrap()),
            Some("::1".parse().unwrap())
        );
    }
}
