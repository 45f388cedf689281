//! A streamed answer, forwarded event by event as it arrives and metered on
//! the way. The attempt is recorded exactly once: at the provider's last
//! event (`[DONE]`, or a Responses stream's terminal event), when the stream
//! ends, fails or goes silent, or (on drop) when the client goes away. The
//! last event is held back until the record is as safe as the recorder
//! promises, so a client that saw the end of its answer has a record even
//! if the process dies right after.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::attempt::{Attempt, Outcome};
use super::estimate;
use super::meter::{self, Disposition, StreamMeter};
use super::sse::SseParser;
use crate::recorder::Recorder;
use crate::usage::RecordStatus;

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

pub struct MeteredStream {
    upstream: Upstream,
    parser: SseParser,
    meter: StreamMeter,
    ready: VecDeque<Bytes>,
    /// Frames after the record, waiting for it to be durable.
    held: VecDeque<Bytes>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    attempt: Attempt,
    recorder: Recorder,
    injected_usage: bool,
    request_body: Bytes,
    status_code: u16,
    time_to_first_token_ms: Option<u64>,
    recorded: bool,
    ended: bool,
}

impl std::fmt::Debug for MeteredStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MeteredStream")
            .field("request_id", &self.attempt.request_id)
            .finish_non_exhaustive()
    }
}

/// How a stream stopped, when it did not end normally.
enum Failure {
    Upstream(String),
    Idle,
}

impl MeteredStream {
    pub fn new(
        response: reqwest::Response,
        attempt: Attempt,
        recorder: Recorder,
        injected_usage: bool,
        request_body: Bytes,
        idle: Duration,
    ) -> Self {
        let status_code = response.status().as_u16();
        MeteredStream {
            upstream: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            meter: StreamMeter::new(),
            ready: VecDeque::new(),
            held: VecDeque::new(),
            waiting: None,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            attempt,
            recorder,
            injected_usage,
            request_body,
            status_code,
            time_to_first_token_ms: None,
            recorded: false,
            ended: false,
        }
    }

    fn take_chunk(&mut self, chunk: &[u8]) {
        for event in self.parser.push(chunk) {
            let disposition = self
                .meter
                .observe(&event, self.attempt.task, self.injected_usage);
            if self.meter.first_output && self.time_to_first_token_ms.is_none() {
                let elapsed = self.attempt.started.elapsed().as_millis();
                self.time_to_first_token_ms = Some(u64::try_from(elapsed).unwrap_or(u64::MAX));
            }
            if self.meter.finished {
                // The provider's last event: record before passing it on.
                self.finish_normally();
            }
            if disposition == Disposition::Drop {
                continue;
            }
            let frame = match self.injected_usage {
                true => meter::without_null_usage(&event.raw).map(Bytes::from),
                false => None,
            };
            self.emit(frame.unwrap_or(event.raw));
        }
    }

    /// Queues a frame for the client, behind the record if it is not yet
    /// durable.
    fn emit(&mut self, frame: Bytes) {
        match self.waiting {
            Some(_) => self.held.push_back(frame),
            None => self.ready.push_back(frame),
        }
    }

    /// Records a stream that ended as the provider meant it to (with an
    /// error event, if it sent one).
    fn finish_normally(&mut self) {
        if let Some(error) = self.meter.error.clone() {
            tracing::debug!(%error, "the provider reported an error mid-stream");
            self.finish(RecordStatus::Error, Some("upstream_error"));
        } else {
            self.finish(RecordStatus::Ok, None);
        }
    }

    /// Records the attempt once, from what the stream showed.
    fn finish(&mut self, status: RecordStatus, error_type: Option<&'static str>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let usage = self.meter.usage.take();
        let needs_estimate = usage.is_none();
        let outcome = Outcome {
            status_code: Some(self.status_code),
            status: Some(status),
            error_type,
            usage,
            prompt_text: needs_estimate.then(|| estimate::prompt_text(&self.request_body)),
            output_text: needs_estimate.then(|| std::mem::take(&mut self.meter.output_text)),
            time_to_first_token_ms: self.time_to_first_token_ms,
            provider_request_id: self.meter.provider_id.take(),
        };
        let served = self.attempt.record(&self.recorder, outcome);
        if let Some(ticket) = served.ticket
            && !self.recorder.is_durable(ticket)
        {
            let recorder = self.recorder.clone();
            self.waiting = Some(Box::pin(async move { recorder.durable(ticket).await }));
        }
    }

    fn fail(&mut self, failure: Failure) {
        if self.recorded {
            // The provider had already sent its last event (and the client
            // has it or will): what breaks after it changes nothing.
            self.ended = true;
            return;
        }
        let (error_type, message) = match failure {
            Failure::Upstream(message) => ("upstream_error", message),
            Failure::Idle => (
                "timeout",
                format!("the provider sent nothing for {} s", self.idle.as_secs()),
            ),
        };
        self.finish(RecordStatus::Error, Some(error_type));
        let body = serde_json::json!({
            "error": {"message": message, "type": "server_error", "param": null, "code": error_type}
        });
        self.emit(Bytes::from(format!("data: {body}\n\n")));
        self.ended = true;
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(waiting) = &mut this.waiting {
                if waiting.as_mut().poll(context).is_pending() {
                    return Poll::Pending;
                }
                this.waiting = None;
                this.ready.extend(this.held.drain(..));
                continue;
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match this.upstream.as_mut().poll_next(context) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.deadline.as_mut().reset(Instant::now() + this.idle);
                    this.take_chunk(&chunk);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.fail(Failure::Upstream(format!(
                        "the provider's stream broke: {error}"
                    )));
                }
                Poll::Ready(None) => {
                    // An event the provider never finished is passed on as is.
                    this.finish_normally();
                    let rest = Bytes::copy_from_slice(this.parser.remainder());
                    if !rest.is_empty() {
                        this.emit(rest);
                    }
                    this.ended = true;
                }
                Poll::Pending => {
                    if this.deadline.as_mut().poll(context).is_ready() {
                        this.fail(Failure::Idle);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for MeteredStream {
    /// The client went away before the end: the tokens so far were billed.
    fn drop(&mut self) {
        if !self.recorded {
            self.finish(
                RecordStatus::ClientDisconnected,
                Some("client_disconnected"),
            );
        }
    }
}
