//! An HTTP/2 (h2c) origin on a loopback port, served by the h2 crate on a tokio runtime of its
//! own thread: it records each request's URI and headers and answers every one alike.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

impl SeenRequest {
    /// `:authority` and the path with its query.
    pub fn authority_and_path(&self) -> (String, String) {
        let authority = self.uri.authority().map_or("", |a| a.as_str());
        let path = self.uri.path_and_query().map_or("", |p| p.as_str());
        (authority.to_owned(), path.to_owned())
    }
}

/// The origin; it stops when dropped.
pub struct H2Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl H2Origin {
    /// Answers `status` with `body` and the `headers` given.
    pub fn start(
        status: u16,
        body: &'static str,
        headers: &'static [(&'static str, &'static str)],
    ) -> H2Origin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let record = seen.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        let record = record.clone();
                        tokio::spawn(async move {
                            let Ok(mut conn) = h2::server::handshake(tcp).await else {
                                return;
                            };
                            while let Some(Ok((req, mut respond))) = conn.accept().await {
                                let entry = SeenRequest {
                                    uri: req.uri().clone(),
                                    headers: req.headers().clone(),
                                };
                                record.lock().expect("lock").push(entry);
                                let mut res = http::Response::builder().status(status);
                                for (name, value) in headers {
                                    res = res.header(*name, *value);
                                }
                                let res = res.body(()).expect("response");
                                if let Ok(mut s) = respond.send_response(res, false) {
                                    let data = bytes::Bytes::from_static(body.as_bytes());
                                    let _ = s.send_data(data, true);
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        H2Origin {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }
}
