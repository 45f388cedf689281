//! Which URLs a webhook may target: http(s) only, and, unless private
//! targets are allowed, no host that resolves to a loopback, private,
//! link-local, unique-local, multicast or unspecified address (so that a
//! webhook cannot be aimed at the gateway's own network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("`{0}` is not an http or https URL")]
    NotHttp(String),
    #[error("`{0}` has no host")]
    NoHost(String),
    #[error(
        "{host} resolves to {address}, a loopback, private or link-local address (set TOLLGATE_WEBHOOK_ALLOW_PRIVATE=true to allow)"
    )]
    Private { host: String, address: IpAddr },
    #[error("cannot resolve {host}: {message}")]
    Unresolvable { host: String, message: String },
}

/// Whether an address is one a public webhook must not reach.
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return private_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::LOCALHOST
        }
    }
}

fn private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
}

/// The host and port of an http(s) URL.
pub fn host_and_port(url: &str) -> Result<(String, u16), TargetError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| TargetError::NotHttp(url.to_owned()))?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(TargetError::NotHttp(url.to_owned())),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.is_empty() {
        return Err(TargetError::NoHost(url.to_owned()));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| TargetError::NoHost(url.to_owned()))?;
        let port = after.strip_prefix(':').map(str::parse::<u16>);
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.parse::<u16>())),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(Ok(port)) => port,
        Some(Err(_)) => return Err(TargetError::NoHost(url.to_owned())),
    };
    if host.is_empty() {
        return Err(TargetError::NoHost(url.to_owned()));
    }
    Ok((host, port))
}

/// Checks a webhook URL now: every address its host resolves to must be
/// public, unless `allow_private`. (Deliveries check again, since DNS can
/// change.)
pub async fn check(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let (host, port) = host_and_port(url)?;
    if allow_private {
        return Ok(());
    }
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(address) => vec![address],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|error| TargetError::Unresolvable {
                host: host.clone(),
                message: error.to_string(),
            })?
            .map(|socket| socket.ip())
            .collect(),
    };
    match addresses.into_iter().find(|address| is_private(*address)) {
        Some(address) => Err(TargetError::Private { host, address }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(
                is_private(private.parse().unwrap_or_else(|_| panic!("{private}"))),
                "{private}"
            );
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
        ] {
            assert!(
                !is_private(public.parse().unwrap_or_else(|_| panic!("{public}"))),
                "{public}"
            );
        }
    }

    #[test]
    fn urls_are_split_into_host_and_port() {
        let cases = [
            (
                "https://hooks.example.com/x",
                Ok(("hooks.example.com".to_owned(), 443)),
            ),
            (
                "http://hooks.example.com:8080",
                Ok(("hooks.example.com".to_owned(), 8080)),
            ),
            (
                "http://user:pw@10.0.0.1:81/p",
                Ok(("10.0.0.1".to_owned(), 81)),
            ),
            ("https://[::1]:8443/x", Ok(("::1".to_owned(), 8443))),
            ("ftp://example.com", Err(())),
            ("https://", Err(())),
            ("example.com", Err(())),
            ("http://example.com:99999", Err(())),
        ];
        for (url, expected) in cases {
            assert_eq!(host_and_port(url).map_err(|_| ()), expected, "{url}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        assert!(matches!(
            check("http://127.0.0.1:9000/hook", false).await,
            Err(TargetError::Private { .. })
        ));
        assert!(matches!(
            check("http://localhost:9000/hook", false).await,
            Err(TargetError::Private { .. })
        ));
        assert_eq!(check("http://127.0.0.1:9000/hook", true).await, Ok(()));
        assert_eq!(check("http://8.8.8.8/hook", false).await, Ok(()));
    }
}
