//! The two kinds of route whose bodies are not read whole before dispatch: `stream=True`
//! routes, whose handler reads the body as it arrives, and routes declaring a form, whose body
//! is parsed as one (streamed into `multer`, large files spooled to disk) before dispatch.
//! The byte movers themselves are in `crate::streaming`.

use std::sync::Arc;

use bytes::Bytes;

use super::{Admitted, Answer, HttpService};
use crate::streaming::channel;
use crate::streaming::form::{self, Spool};
use crate::streaming::request_body::{BodySource, Frames, STREAM_CAPACITY, feed};
use pyhost_core::form::FormKind;

impl HttpService {
    /// A `stream=True` route (its `Content-Length` within `limit`, checked by the caller):
    /// dispatched at once (taking its slot now), its body fed to the
    /// handler while the reply is awaited, no faster than the handler reads it.
    pub(super) async fn serve_stream<B>(
        self: &Arc<Self>,
        request: Admitted,
        body: B,
        limit: u64,
    ) -> Answer
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = request.request_id.clone();
        let (tx, rx) = channel::to_loop(STREAM_CAPACITY);
        let pending = match self.submit(request, Bytes::new(), BodySource::Stream(rx)) {
            Ok(pending) => pending,
            Err(answer) => return answer.closed(),
        };
        let mut frames = Frames::new(body, limit, self.body_timeout);
        let mut answer = {
            let feeding = feed(&mut frames, tx);
            let waiting = self.wait(pending, &request_id);
            tokio::pin!(feeding, waiting);
            tokio::select! {
                answer = &mut waiting => answer,
                () = &mut feeding => waiting.await,
            }
        };
        // A handler that stopped reading, or a body that failed: what is left of it in the
        // connection is not worth reading.
        if !frames.finished() {
            answer.close = true;
        }
        answer
    }

    /// A route declaring a form: its head admitted first (a bad query is answered before any
    /// of the body is read), then its body parsed as a form, its declared fields checked, and
    /// only then the handler run. The form's temporary files are removed when this ends.
    pub(super) async fn serve_form<B>(
        self: &Arc<Self>,
        request: Admitted,
        body: B,
        limit: u64,
    ) -> Answer
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = request.request_id.clone();
        let kind = FormKind::of(&request.parts.headers);
        let (mut data, route, head) = match self.admit(request, Bytes::new()) {
            Ok(admitted) => admitted,
            Err(answer) => return answer.closed(),
        };
        let mut frames = Frames::new(body, limit, self.body_timeout);
        let mut spool = Spool::default();
        let parsed = match kind {
            Ok(kind) => form::parse_body(&mut frames, kind, &self.forms, &mut spool).await,
            Err(err) => Err(err),
        };
        let (form, raw) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                return Answer {
                    reply: err.into_reply(),
                    body: None,
                    head,
                    close: !frames.finished(),
                };
            }
        };
        let close = !frames.finished();
        if let Err(rejection) = self.admission.admit_form(&route, &mut data, &form) {
            return Answer {
                close: close || rejection.close,
                ..rejection.into()
            };
        }
        data.body = raw;
        let answer = match self.dispatch(data, &route, head, BodySource::Form(Box::new(form))) {
            Ok(pending) => self.wait(pending, &request_id).await,
            Err(answer) => answer,
        };
        // The handler is done with the files (or was cancelled): they go now.
        drop(spool);
        Answer {
            close: answer.close || close,
            ..answer
        }
    }
}
