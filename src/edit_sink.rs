//! The response sink of a request with header edits: the final response head from the
//! upstream goes to the client with the edits of the route, virtual host and listener applied
//! (interim 1xx heads and the gateway's own error answers go unedited, see README "Header
//! edits").

use crate::header_edit::Plan;
use crate::message::{Headers, ResponseHead};
use crate::proxy::ResponseSink;

/// Another sink, and the request's edit plan (None: nothing to edit, one branch per response).
pub struct EditSink<'p, S> {
    pub inner: S,
    pub plan: Option<Plan<'p>>,
}

impl<S: ResponseSink> ResponseSink for EditSink<'_, S> {
    async fn send_continue(&mut self) -> Result<(), crate::error::ProxyError> {
        self.inner.send_continue().await
    }

    async fn send_interim(&mut self, head: &ResponseHead) -> Result<(), crate::error::ProxyError> {
        self.inner.send_interim(head).await
    }

    fn start_response(&mut self, head: &ResponseHead) {
        let Some(plan) = self.plan.as_ref().filter(|p| p.edits_response()) else {
            return self.inner.start_response(head);
        };
        // The upstream's head stays as it came (a retry may still read it); the client gets
        // an edited copy, from this core's free list.
        let mut edited = ResponseHead::take();
        edited.status = head.status;
        edited.set_reason(head.reason());
        for (name, value) in head.headers.iter() {
            edited.headers.append(name, value);
        }
        edited.body = head.body;
        edited.declared_length = head.declared_length;
        plan.apply_response(&mut edited);
        self.inner.start_response(&edited);
        edited.recycle();
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), crate::error::ProxyError> {
        self.inner.push_body(data)
    }

    fn end_body(&mut self, trailers: Option<&Headers>) -> Result<(), crate::error::ProxyError> {
        self.inner.end_body(trailers)
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    async fn flush(&mut self) -> Result<(), crate::error::ProxyError> {
        self.inner.flush().await
    }
}
