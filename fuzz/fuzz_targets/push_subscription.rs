//! The push-subscription validator stands between a browser's JSON and natter's outgoing requests: it never panics,
//! an accepted subscription is https with a usable key, and the address policy never lets a request reach a
//! loopback, private or link-local address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use natter::push::subscription::{AddressPolicy, Audience, Subscription, SubscriptionJson};

fuzz_target!(|data: &[u8]| {
    let policy = AddressPolicy { allow_loopback: false };
    if data.len() >= 16 {
        let v6 = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).unwrap()));
        let v4 = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        for ip in [v4, v6] {
            if policy.allows(ip, true) {
                let ip = ip.to_canonical();
                assert!(!ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast(), "{ip}");
                if let IpAddr::V4(v4) = ip {
                    assert!(!v4.is_private() && !v4.is_link_local(), "{v4}");
                }
            }
        }
    }
    let Ok(json) = serde_json::from_slice::<SubscriptionJson>(data) else { return };
    if let Ok(subscription) = Subscription::parse(json, Audience::Owner, policy) {
        assert!(subscription.endpoint.starts_with("https://"));
        assert!(subscription.keys().is_some());
    }
});
