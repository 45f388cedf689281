//! An incremental server-sent-events parser: bytes in as they arrive, whole
//! events out, each with its exact bytes so it can be forwarded unchanged.
//! Events may be split across reads anywhere, even inside a `\r\n`. Pure.

use bytes::{Bytes, BytesMut};

/// The largest event passed on, in bytes. Events are held whole until they
/// end (to be metered and forwarded in one piece), so this bounds what one
/// stream holds. It sits well above real events: the Responses API's
/// `response.completed` repeats the whole answer, generated images in
/// base64 included (a few MB each).
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// One event: its `event:` name, its `data:` lines joined with `\n`, and the
/// raw bytes including the blank line that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
    pub raw: Bytes,
}

impl Event {
    /// An event made only of `:` comment lines (keep-alives).
    pub fn is_comment(&self) -> bool {
        self.name.is_none() && self.data.is_empty()
    }
}

/// Buffers at most one incomplete event, of at most its limit
/// ([`MAX_EVENT_BYTES`]). An event over the limit is replaced by one error
/// event, in the shape of the gateway's own stream errors (OpenAI's SDKs
/// raise it, the meter records the stream as failed), and its bytes are
/// dropped as they come until it ends; the events after it come out as usual.
#[derive(Debug)]
pub struct SseParser {
    pending: BytesMut,
    /// How far `pending` has been searched for an event boundary.
    scanned: usize,
    limit: usize,
    /// Inside an event over the limit, whose bytes are being dropped.
    skipping: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// A parser whose events may be at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            pending: BytesMut::new(),
            scanned: 0,
            limit,
            skipping: false,
        }
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.boundary() {
            let raw = self.pending.split_to(end).freeze();
            self.scanned = 0;
            if self.skipping {
                // The end of an oversized event, already replaced.
                self.skipping = false;
            } else if raw.len() > self.limit {
                events.push(oversized(self.limit));
            } else {
                events.push(parse_event(raw));
            }
        }
        if !self.skipping && self.pending.len() > self.limit {
            events.push(oversized(self.limit));
            self.skipping = true;
        }
        if self.skipping {
            // Keep only the line break `boundary` could not decide on yet,
            // in a fresh buffer so the large one is freed now.
            self.pending = BytesMut::from(&self.pending[self.scanned..]);
            self.scanned = 0;
        }
        events
    }

    /// Bytes of an event that never ended (the stream stopped mid-event);
    /// none when that event was over the limit (it was replaced already).
    pub fn remainder(&self) -> &[u8] {
        match self.skipping {
            true => &[],
            false => &self.pending,
        }
    }

    /// The end (exclusive) of the first complete event: a line break
    /// followed by an empty line (`\n\n`, `\r\n\r\n`, `\r\r`, mixed).
    fn boundary(&mut self) -> Option<usize> {
        let bytes = &self.pending;
        let mut index = self.scanned;
        while index < bytes.len() {
            let line_end = match bytes[index] {
                b'\n' => index + 1,
                b'\r' if bytes.get(index + 1) == Some(&b'\n') => index + 2,
                // A lone `\r` at the end of the buffer may be half of `\r\n`.
                b'\r' if index + 1 == bytes.len() => break,
                b'\r' => index + 1,
                _ => {
                    index += 1;
                    continue;
                }
            };
            // When the next bytes cannot decide yet (the buffer ends), stop
            // at this line break so the next chunk looks at it again.
            match bytes.get(line_end) {
                Some(b'\n') => return Some(line_end + 1),
                Some(b'\r') => match bytes.get(line_end + 1) {
                    Some(b'\n') => return Some(line_end + 2),
                    Some(_) => return Some(line_end + 1),
                    None => break,
                },
                Some(_) => index = line_end,
                None => break,
            }
        }
        self.scanned = index.min(self.pending.len());
        None
    }
}

/// What is passed on in place of an event over `limit` bytes.
fn oversized(limit: usize) -> Event {
    let error = serde_json::json!({"error": {
        "message": format!("the provider sent an event over {limit} bytes; it was dropped"),
        "type": "server_error",
        "param": null,
        "code": "upstream_error",
    }});
    let data = error.to_string();
    let raw = Bytes::from(format!("data: {data}\n\n"));
    Event {
        name: None,
        data,
        raw,
    }
}

fn parse_event(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']).filter(|line| !line.is_empty()) {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => data.push(value),
            "event" => name = Some(value.to_owned()),
            _ => {}
        }
    }
    let data = data.join("\n");
    Event { name, data, raw }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"a\":1}\n\n: OPENROUTER PROCESSING\n\nevent: response.completed\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";

    fn all_events(chunks: &[&[u8]]) -> Vec<Event> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|chunk| parser.push(chunk)).collect()
    }

    #[test]
    fn events_come_out_whole_with_their_exact_bytes() {
        let events = all_events(&[STREAM.as_bytes()]);
        let data: Vec<&str> = events.iter().map(|event| event.data.as_str()).collect();
        assert_eq!(data, ["{\"a\":1}", "", "{\"b\":2}", "[DONE]"]);
        assert!(events[1].is_comment());
        assert_eq!(events[2].name.as_deref(), Some("response.completed"));
        let joined: Vec<u8> = events.iter().flat_map(|event| event.raw.to_vec()).collect();
        assert_eq!(joined, STREAM.as_bytes());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let whole = all_events(&[STREAM.as_bytes()]);
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            let (left, right) = bytes.split_at(split);
            assert_eq!(all_events(&[left, right]), whole, "split at {split}");
        }
        let one_byte_chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all_events(&one_byte_chunks), whole);
    }

    #[test]
    fn an_unfinished_event_stays_pending() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"partial\":").is_empty());
        assert_eq!(parser.remainder(), b"data: {\"partial\":");
    }

    /// A limit small enough to write oversized events by hand.
    const LIMIT: usize = 64;

    fn data_with_limit(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::with_limit(LIMIT);
        chunks
            .iter()
            .flat_map(|chunk| parser.push(chunk))
            .map(|event| match is_oversized_error(&event) {
                true => "<oversized>".to_owned(),
                false => event.data,
            })
            .collect()
    }

    fn is_oversized_error(event: &Event) -> bool {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&event.data) else {
            return false;
        };
        let fields = &value["error"];
        fields["code"] == "upstream_error"
            && fields["type"] == "server_error"
            && fields["param"].is_null()
            && fields["message"].is_string()
            && event.raw == format!("data: {}\n\n", event.data).as_bytes()
    }

    #[test]
    fn an_event_over_the_limit_is_replaced_by_one_error_event_at_every_split_point() {
        let stream = format!(
            "data: before\n\ndata: {}\r\ndata: more\r\n\r\ndata: after\n\n",
            "x".repeat(2 * LIMIT)
        );
        let bytes = stream.as_bytes();
        let expected = ["before", "<oversized>", "after"];
        assert_eq!(data_with_limit(&[bytes]), expected);
        for split in 0..=bytes.len() {
            let (left, right) = bytes.split_at(split);
            assert_eq!(
                data_with_limit(&[left, right]),
                expected,
                "split at {split}"
            );
        }
        let one_byte_chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(data_with_limit(&one_byte_chunks), expected);
    }

    #[test]
    fn an_event_of_exactly_the_limit_passes_whole() {
        let event = format!("data: {}\n\n", "y".repeat(LIMIT - "data: \n\n".len()));
        assert_eq!(event.len(), LIMIT);
        let mut parser = SseParser::with_limit(LIMIT);
        let events = parser.push(event.as_bytes());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].raw, event.as_bytes());
    }

    #[test]
    fn an_event_that_never_ends_is_dropped_as_it_comes_not_gathered() {
        let mut parser = SseParser::with_limit(LIMIT);
        let mut events = parser.push(b"data: ");
        for _ in 0..10_000 {
            events.extend(parser.push(&[b'x'; 100]));
            assert!(
                parser.pending.capacity() < 1024,
                "{} bytes held",
                parser.pending.capacity()
            );
        }
        assert_eq!(events.len(), 1);
        assert!(is_oversized_error(&events[0]));
        assert!(
            parser.remainder().is_empty(),
            "nothing of it is passed on at the end"
        );
        let after: Vec<String> = parser
            .push(b"\r\n\r\ndata: next\n\n")
            .into_iter()
            .map(|event| event.data)
            .collect();
        assert_eq!(after, ["next"]);
    }
}
