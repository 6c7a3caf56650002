//! `max_requests_per_connection` over real sockets: the last request an HTTP/1 connection may
//! carry is answered with `Connection: close` and the connection ends; an HTTP/2 connection
//! gets GOAWAY after its last stream, which still completes.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::client::raw_exchange;
use support::gateway::CatchAll;
use support::harness::T;
use support::upstream::HttpUpstream;

#[test]
fn the_last_http1_request_closes_the_connection() {
    let up = HttpUpstream::builder().start();
    let gw = CatchAll::new(up.addr())
        .listener(
            "main",
            "    max_requests_per_connection: 2\n    http2: true\n",
        )
        .start();
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let pipelined = format!("{}{}{}", get("/1"), get("/2"), get("/3"));
    let got = raw_exchange(gw.addr, pipelined.as_bytes(), T);
    let responses = got.responses();
    assert_eq!(responses.len(), 2, "{}", got.text());
    assert_eq!(responses[0].header("connection"), None);
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert_eq!(
        up.request_count(),
        2,
        "the third request was never forwarded"
    );
}

#[test]
fn an_http2_connection_gets_goaway_after_its_last_stream() {
    let up = HttpUpstream::builder().start();
    let gw = CatchAll::new(up.addr())
        .listener(
            "main",
            "    max_requests_per_connection: 3\n    http2: true\n",
        )
        .start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (statuses, refused, closed) = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let tcp = tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect");
            let (send, conn) = h2::client::handshake(tcp).await.expect("handshake");
            let driver = tokio::spawn(conn);
            let mut statuses = Vec::new();
            for i in 0..3 {
                let mut ready = send.clone().ready().await.expect("ready");
                let req = http::Request::get(format!("http://a.test/{i}"))
                    .body(())
                    .expect("request");
                let (response, _) = ready.send_request(req, true).expect("send");
                let response = response.await.expect("answered");
                statuses.push(response.status().as_u16());
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    let _: Bytes = chunk.expect("body");
                }
            }
            // A fourth stream is refused: the connection is going away.
            let fourth = async {
                let mut ready = send.clone().ready().await?;
                let req = http::Request::get("http://a.test/4")
                    .body(())
                    .expect("request");
                let (response, _) = ready.send_request(req, true)?;
                response.await
            };
            let refused = fourth.await.is_err();
            drop(send);
            (statuses, refused, driver.await.expect("driver"))
        })
        .await
        .expect("within 20 s")
    });
    assert_eq!(statuses, [200, 200, 200]);
    assert!(refused, "no fourth stream on the connection");
    assert!(closed.is_ok(), "closed with GOAWAY(NO_ERROR): {closed:?}");
    assert_eq!(up.request_count(), 3);
}
