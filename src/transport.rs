//! The stream a connection runs on, chosen when it is accepted or connected: plain TCP, or TLS
//! over TCP. Everything above it (the HTTP/1 codec, the upstream codec, the pools) is written
//! once against [`Stream`].

use std::io;

use crate::rt::{Received, Stream, TcpStream};
use crate::tls::TlsStream;

#[derive(Debug, Clone)]
pub enum Transport {
    Plain(TcpStream),
    Tls(TlsStream),
}

impl Stream for Transport {
    async fn read_pooled(&self) -> io::Result<Option<Received>> {
        match self {
            Transport::Plain(s) => s.read_pooled().await,
            Transport::Tls(s) => s.read_pooled().await,
        }
    }

    async fn wait_pooled(&self, empty: bool) -> io::Result<Option<Received>> {
        match self {
            Transport::Plain(s) => s.wait_pooled(empty).await,
            Transport::Tls(s) => s.wait_pooled(empty).await,
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.readable().await,
            Transport::Tls(s) => s.readable().await,
        }
    }

    async fn read_some(&self, buf: &mut Vec<u8>, min_spare: usize) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read_some(buf, min_spare).await,
            Transport::Tls(s) => s.read_some(buf, min_spare).await,
        }
    }

    async fn write_kept(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_kept(buf).await,
            Transport::Tls(s) => s.write_kept(buf).await,
        }
    }

    async fn shutdown(&self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => Stream::shutdown(s).await,
            Transport::Tls(s) => s.shutdown().await,
        }
    }

    fn abort(&self) {
        match self {
            Transport::Plain(s) => s.abort(),
            Transport::Tls(s) => s.abort(),
        }
    }
}
