//! Who sent a request: the client address, as the request's log span and the callbacks'
//! network allowlist see it. Behind a proxy the peer is the proxy, so the address a trusted
//! proxy (`server.trusted_proxies`) put in `X-Forwarded-For` is taken instead; anyone else's
//! `X-Forwarded-For` is ignored, since a client can write anything there.

use std::net::IpAddr;

use actix_web::HttpMessage;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::HeaderMap;

use crate::config::Networks;

/// `server.trusted_proxies`, as the HTTP workers share it.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Networks);

/// The client address of a request, computed once by the log span and read again by the
/// callback allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The client: walking back from the peer through `X-Forwarded-For` while each hop is a
/// trusted proxy, the first address that is not one. A malformed entry stops the walk at
/// the last trusted hop, which is then the best-known client.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &Networks) -> IpAddr {
    let mut client = peer;
    if !trusted.contains(client) {
        return client;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in forwarded.iter().rev() {
        let Ok(addr) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = addr;
        if !trusted.contains(addr) {
            break;
        }
    }
    client
}

/// Computes the request's [`ClientAddress`] and keeps it in its extensions; None when the
/// connection has no IP peer (not the case over TCP).
pub fn record_client(request: &ServiceRequest) -> Option<IpAddr> {
    let peer = request.peer_addr()?.ip();
    let trusted = request.app_data::<actix_web::web::Data<TrustedProxies>>();
    let addr = match trusted {
        Some(trusted) => client_address(peer, request.headers(), &trusted.0),
        None => peer,
    };
    request.extensions_mut().insert(ClientAddress(addr));
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn networks(list: &[&str]) -> Networks {
        Networks::try_from(list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peers_forwarded_for_is_ignored() {
        let headers = forwarded(&["203.0.113.9"]);
        let client = client_address(ip("198.51.100.7"), &headers, &networks(&["10.0.0.0/8"]));
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        // The client wrote a spoofed first entry; the trusted proxies appended the rest.
        let headers = forwarded(&["1.2.3.4, 203.0.113.9", "10.0.0.5"]);
        let client = client_address(ip("10.0.0.1"), &headers, &networks(&["10.0.0.0/8"]));
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn a_malformed_hop_stops_at_the_last_trusted_one() {
        let headers = forwarded(&["203.0.113.9, garbage"]);
        let client = client_address(ip("10.0.0.1"), &headers, &networks(&["10.0.0.0/8"]));
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_networks() {
        let client = client_address(
            ip("::ffff:10.0.0.1"),
            &forwarded(&["203.0.113.9"]),
            &networks(&["10.0.0.0/8"]),
        );
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn a_bad_network_is_named() {
        let error = Networks::try_from(vec!["10.0.0.0/8".into(), "10.0.0/33".into()]);
        assert!(error.unwrap_err().contains("\"10.0.0/33\""));
        assert_eq!(networks(&["127.0.0.1"]), networks(&["127.0.0.1/32"]));
    }
}
