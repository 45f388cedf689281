//! An incremental server-sent-events parser: bytes in as they arrive, whole
//! events out, each with its exact bytes so it can be forwarded unchanged.
//! Events may be split across reads anywhere, even inside a `\r\n`. Pure.

use bytes::{Bytes, BytesMut};

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

/// Buffers at most one incomplete event.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: BytesMut,
    /// How far `pending` has been searched for an event boundary.
    scanned: usize,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.boundary() {
            let raw = self.pending.split_to(end).freeze();
            self.scanned = 0;
            events.push(parse_event(raw));
        }
        events
    }

    /// Bytes of an event that never ended (the stream stopped mid-event).
    pub fn remainder(&self) -> &[u8] {
        &self.pending
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
}
