//! Which addresses viewers are offered: chosen interfaces or IPs, public addresses of a 1:1
//! NAT, IPv6. Each answer's candidates are exactly those, and viewers play through them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{TestServer, builder, exclusive, may_change_the_network, options};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use webgear_rtc::Options;
use webgear_testkit::{Endpoint, Viewer};

/// The (address, port) of every candidate in the server's answer to a real offer.
async fn answered_candidates(server: &TestServer) -> Vec<SocketAddr> {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(str0m::media::MediaKind::Video, str0m::media::Direction::RecvOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    let response = reqwest::Client::new()
        .post(server.url("/whep"))
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer = response.text().await.unwrap();
    answer
        .lines()
        .filter_map(|line| line.strip_prefix("a=candidate:"))
        .map(|candidate| {
            let fields: Vec<&str> = candidate.split_whitespace().collect();
            assert_eq!(fields[7], "host", "{candidate}");
            SocketAddr::new(fields[4].parse().unwrap(), fields[5].parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_interfaces_and_public_addresses_are_exactly_what_viewers_are_offered() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(options(json!({
        "host_addresses": ["lo"],
        "public_addresses": ["203.0.113.7"],
    }))))
    .await;
    let media = server.app.media_addrs();
    let port = media[0].port();
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
    assert_eq!(media, [v4, v6], "the loopback interface's two addresses, one port");
    let public = SocketAddr::new("203.0.113.7".parse().unwrap(), port);
    assert_eq!(server.app.public_addrs(), [public]);

    let mut offered = answered_candidates(&server).await;
    offered.sort();
    let mut expected = vec![v4, v6, public];
    expected.sort();
    assert_eq!(offered, expected, "no other interface is offered");

    for local_ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let mut viewer = Viewer::connect_from(&Endpoint::Offer(server.url("/offer")), local_ip).await.unwrap();
        let first = viewer.next_frame(Duration::from_secs(3)).await;
        assert!(first.is_some(), "a viewer on {local_ip} plays");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listening_on_ipv6_serves_an_ipv6_viewer() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(Options::default()).listen_ip(IpAddr::V6(Ipv6Addr::LOCALHOST))).await;
    let media = server.app.media_addrs();
    assert!(media.len() == 1 && media[0].is_ipv6(), "{media:?}");
    assert_eq!(answered_candidates(&server).await, media);
    let mut viewer =
        Viewer::connect_from(&Endpoint::Offer(server.url("/offer")), IpAddr::V6(Ipv6Addr::LOCALHOST)).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the IPv6 viewer plays");
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(frames.len() >= 25, "{} frames in 1 s over IPv6", frames.len());
    server.stop().await;
}

#[tokio::test]
async fn an_address_the_machine_does_not_have_is_a_clear_error() {
    for (option, needle) in [
        (json!({"host_addresses": ["nosuch0"]}), "host address \"nosuch0\" is neither"),
        (json!({"host_addresses": ["192.0.2.250"]}), "could not bind UDP 192.0.2.250:0"),
        (json!({"public_addresses": ["no-such-host.invalid"]}), "could not look up public address"),
    ] {
        let error = builder(options(option.clone())).build().await.unwrap_err().to_string();
        assert!(error.contains(needle), "{option}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_network_blocks_udp_watches_over_ice_tcp() {
    let _lock = exclusive().await;
    // Without ICE-TCP such a viewer has no candidate pair at all.
    let udp_only = TestServer::start().await;
    let mut stranded = Viewer::connect_over_tcp(&Endpoint::Offer(udp_only.url("/offer"))).await.unwrap();
    assert!(stranded.next_frame(Duration::from_secs(2)).await.is_none(), "no TCP candidates, no media");
    assert!(udp_only.app.tcp_media_addrs().is_empty());
    udp_only.stop().await;

    let server = TestServer::start_with(builder(options(json!({
        "host_addresses": ["127.0.0.1"],
        "ice_tcp_port": 0,
    }))))
    .await;
    let tcp = server.app.tcp_media_addrs();
    assert!(tcp.len() == 1 && tcp[0].ip().is_loopback(), "{tcp:?}");
    // Garbage on the TCP port (a frame of nonsense, then a frame cut short) harms nobody.
    let mut garbage = std::net::TcpStream::connect(tcp[0]).unwrap();
    std::io::Write::write_all(&mut garbage, &[0, 5, 1, 2, 3, 4, 5, 0xff, 0xff, 1]).unwrap();
    let mut viewer = Viewer::connect_over_tcp(&Endpoint::Whep { url: server.url("/whep"), token: None }).await.unwrap();
    let first = viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays over TCP");
    assert_eq!((first.width, first.height), (1024, 576));
    let frames = viewer.frames_during(Duration::from_secs(2)).await;
    assert!(frames.len() >= 50, "{} frames in 2 s over TCP", frames.len());
    common::assert_increasing(&frames);
    assert!(server.app.stats().bytes_sent > 100_000, "{:?}", server.app.stats());
    viewer.session().unwrap().end().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_beyond_a_one_to_one_nat_plays_through_the_public_address() {
    if !may_change_the_network("building a network namespace and a NAT rule") {
        return;
    }
    let _lock = exclusive().await;
    let lab = webgear_testkit::NatLab::create().expect("a NAT lab (needs root, iproute2 and iptables)");
    let private = lab.private_ip.to_string();
    let public = lab.public_ip.to_string();

    // Offered only the private address, the viewer has no way in.
    let hidden = TestServer::start_with(builder(options(json!({"host_addresses": [private]})))).await;
    let socket = lab.viewer_socket().unwrap();
    let mut stranded = Viewer::connect_with_socket(&Endpoint::Offer(hidden.url("/offer")), socket).await.unwrap();
    assert!(stranded.next_frame(Duration::from_secs(3)).await.is_none(), "the private address is unreachable");
    hidden.stop().await;

    // With the public address announced, the same viewer plays through the NAT.
    let server =
        TestServer::start_with(builder(options(json!({"host_addresses": [private], "public_addresses": [public]}))))
            .await;
    let socket = lab.viewer_socket().unwrap();
    let mut viewer = Viewer::connect_with_socket(&Endpoint::Offer(server.url("/offer")), socket).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays through the NAT");
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(frames.len() >= 25, "{} frames in 1 s through the NAT", frames.len());
    server.stop().await;
}
