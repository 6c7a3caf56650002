//! HTTP/1: head parsing and encoding (httparse), body framing.

pub mod body;
pub mod head;
