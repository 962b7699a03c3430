//! Issue 12: with the default `server_first_dial_delay_ms = 0`, a client that is silent at
//! the first peek gets its upstream dialled at once (so server-first greetings arrive about
//! 0.1 ms after the direct ones). A client that then speaks first after all reuses that
//! connection instead of wasting it: HTTP/1 pools it, HTTP/2 makes it its pooled connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use common::*;
use http::Request;

const EARLY: &str = "tcp_detect_early_dials_total{listener=\"t\",direction=\"outbound\"}";
const UNUSED: &str = "tcp_detect_early_dials_unused_total{listener=\"t\",direction=\"outbound\"}";
const DST_OPENED: &str = "tcp_open_total{listener=\"t\",direction=\"outbound\",peer=\"dst\"}";

/// An HTTP/1.1 keep-alive upstream answering every request with `200 ok`.
fn keep_alive(c: TcpStream) {
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    loop {
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

#[test]
fn an_http1_client_silent_at_accept_reuses_the_early_connection() {
    let (up, _h) = upstream(keep_alive);
    let p = proxy(&[up], "");
    let mut c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The request went on the connection dialled during detection: one upstream connection.
    wait_metric(&p, DST_OPENED, 1.0);
    wait_metric(&p, UNUSED, 0.0);
}

#[test]
fn an_http2_client_silent_at_accept_reuses_the_early_connection() {
    let (up, _h) = upstream(|c: TcpStream| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                c.set_nonblocking(true).unwrap();
                let c = tokio::net::TcpStream::from_std(c).unwrap();
                let Ok(mut conn) = h2::server::handshake(c).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    let resp = http::Response::new(());
                    let mut s = respond.send_response(resp, false).unwrap();
                    s.send_data(Bytes::from_static(b"ok"), true).unwrap();
                }
            })
    });
    let p = proxy(&[up], "");
    let c = TcpStream::connect(addr(&p)).unwrap();
    wait_metric(&p, EARLY, 1.0);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            c.set_nonblocking(true).unwrap();
            let c = tokio::net::TcpStream::from_std(c).unwrap();
            let (send, conn) = h2::client::handshake(c).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            for _ in 0..3 {
                let mut send = send.clone().ready().await.unwrap();
                let req = Request::get("http://a/").body(()).unwrap();
                let (resp, _) = send.send_request(req, true).unwrap();
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                let mut body = resp.into_body();
                let mut got = Vec::new();
                while let Some(chunk) = body.data().await {
                    got.extend_from_slice(&chunk.unwrap());
                }
                assert_eq!(got, b"ok");
            }
        });
    // Every stream went on the connection dialled during detection.
    wait_metric(&p, DST_OPENED, 1.0);
    wait_metric(&p, UNUSED, 0.0);
}
