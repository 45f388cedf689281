//! The gateway's SSE parser on arbitrary bytes, split at arbitrary points.
//!
//! Input: one byte that seeds how the stream is cut into chunks and a small
//! event size limit, then the stream. Checked, with the default limit (which
//! fuzz inputs never reach): every way of cutting the stream gives the same
//! events and the same remainder; the events' raw bytes and the remainder are
//! exactly the input; a fresh parser finds nothing complete in the remainder;
//! and the events are those of a plain reference reading of the SSE rules
//! (lines end at CRLF, LF or CR; a blank line ends an event). With the small
//! limit: every cut gives the same events, and they are the reference's with
//! each event over the limit replaced by the parser's one error event.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate::gateway::sse::{Event, SseParser};

/// Streams up to this long are also cut in two at every point.
const EVERY_SPLIT_UP_TO: usize = 192;
/// Small limits are drawn from 1 to this many bytes.
const MAX_SMALL_LIMIT: usize = 128;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let unlimited = SseParser::new;
    let whole = parse(unlimited, &[stream]);
    check_framing(stream, &whole);
    check_every_cut(unlimited, stream, seed, &whole);

    // A byte that is not a line break settles a trailing `\r` (it cannot be
    // half of `\r\n` any more), so the parser must then agree with a reading
    // of the whole stream at once.
    let mut settled = stream.to_vec();
    settled.push(b'x');
    let (expected_events, expected_remainder) = reference(&settled);
    let (events, remainder) = parse(unlimited, &[&settled]);
    assert_eq!(events, expected_events, "events differ from the reference");
    assert_eq!(
        remainder, expected_remainder,
        "remainder differs from the reference"
    );

    // The same with a limit the fuzzer can reach.
    let limit = 1 + usize::from(seed) % MAX_SMALL_LIMIT;
    let limited = || SseParser::with_limit(limit);
    let marker = oversized_marker(limit);
    let whole = parse(limited, &[stream]);
    check_every_cut(limited, stream, seed, &whole);
    let mut expected_events: Vec<Event> = expected_events
        .into_iter()
        .map(|event| match event.raw.len() > limit {
            true => marker.clone(),
            false => event,
        })
        .collect();
    let expected_remainder = match expected_remainder.len() > limit {
        true => {
            expected_events.push(marker.clone());
            &[][..]
        }
        false => expected_remainder,
    };
    let (events, remainder) = parse(limited, &[&settled]);
    assert_eq!(
        events, expected_events,
        "events differ from the reference with limit {limit}"
    );
    assert_eq!(
        remainder, expected_remainder,
        "remainder differs from the reference with limit {limit}"
    );
});

type Parsed = (Vec<Event>, Vec<u8>);

fn parse(new_parser: impl Fn() -> SseParser, chunks: &[&[u8]]) -> Parsed {
    let mut parser = new_parser();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.push(chunk));
    }
    (events, parser.remainder().to_vec())
}

/// The stream fed one byte at a time, in seeded chunks, and (when short)
/// cut in two at every point, gives what it gave whole.
fn check_every_cut(new_parser: impl Fn() -> SseParser, stream: &[u8], seed: u8, whole: &Parsed) {
    let byte_by_byte: Vec<&[u8]> = stream.chunks(1).collect();
    assert_same(
        whole,
        &parse(&new_parser, &byte_by_byte),
        "one byte at a time",
    );
    assert_same(
        whole,
        &parse(&new_parser, &seeded_chunks(stream, seed)),
        "seeded chunks",
    );
    if stream.len() <= EVERY_SPLIT_UP_TO {
        for split in 0..=stream.len() {
            let (left, right) = stream.split_at(split);
            assert_same(whole, &parse(&new_parser, &[left, right]), "cut in two");
        }
    }
}

/// The event a parser with `limit` passes on in place of a larger one.
fn oversized_marker(limit: usize) -> Event {
    let mut event = b"data: ".to_vec();
    event.resize(limit + 8, b'x');
    event.extend_from_slice(b"\n\n");
    let mut events = SseParser::with_limit(limit).push(&event);
    assert_eq!(events.len(), 1, "an event over the limit is not one event");
    events.remove(0)
}

fn assert_same(expected: &Parsed, actual: &Parsed, how: &str) {
    assert_eq!(expected.0, actual.0, "events differ when fed {how}");
    assert_eq!(expected.1, actual.1, "remainder differs when fed {how}");
}

/// Chunk lengths from 0 to 31 bytes, drawn by xorshift from the seed.
fn seeded_chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x9e37_7900;
    let mut chunks = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let length = (state % 32) as usize;
        let (chunk, tail) = rest.split_at(length.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

fn check_framing(stream: &[u8], (events, remainder): &Parsed) {
    let mut joined: Vec<u8> = events.iter().flat_map(|event| event.raw.to_vec()).collect();
    joined.extend_from_slice(remainder);
    assert_eq!(joined, stream, "raw bytes plus remainder are not the input");
    for event in events {
        assert!(
            matches!(event.raw.last(), Some(b'\n' | b'\r')),
            "an event does not end with a line break: {event:?}"
        );
        assert!(!event.data.contains('\r'), "data holds a CR: {event:?}");
        let name = event.name.as_deref().unwrap_or("");
        assert!(
            !name.contains(['\r', '\n']),
            "name holds a line break: {event:?}"
        );
    }
    let mut fresh = SseParser::new();
    assert!(
        fresh.push(remainder).is_empty(),
        "the remainder holds an event"
    );
    assert_eq!(fresh.remainder(), &remainder[..]);
}

/// The SSE rules read over the whole stream at once: split into lines (a
/// line ends at `\r\n`, `\n` or `\r`), an event ends at an empty line.
/// Field parsing follows the spec: `:` starts a comment, the first `:`
/// separates field and value, one leading space is dropped from the value.
///
/// One choice of framing is the parser's, not the spec's: an empty line that
/// is an event's first line does not end it (a stray blank line between two
/// events is forwarded with the second). The spec dispatches nothing for it
/// either way (its data is empty), so only the grouping of raw bytes differs.
fn reference(stream: &[u8]) -> (Vec<Event>, &[u8]) {
    let mut events = Vec::new();
    let mut event_start = 0;
    let mut line_start = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut first_line = true;
    let mut index = 0;
    while index < stream.len() {
        let break_length = match stream[index] {
            b'\r' if stream.get(index + 1) == Some(&b'\n') => 2,
            b'\r' | b'\n' => 1,
            _ => {
                index += 1;
                continue;
            }
        };
        let line = &stream[line_start..index];
        index += break_length;
        line_start = index;
        if line.is_empty() && !first_line {
            events.push(reference_event(&lines, &stream[event_start..index]));
            lines.clear();
            event_start = index;
            first_line = true;
        } else {
            lines.push(line);
            first_line = false;
        }
    }
    (events, &stream[event_start..])
}

fn reference_event(lines: &[&[u8]], raw: &[u8]) -> Event {
    let mut name = None;
    let mut data = Vec::new();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (&line[..], ""),
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => data.push(value.to_owned()),
            "event" => name = Some(value.to_owned()),
            _ => {}
        }
    }
    Event {
        name,
        data: data.join("\n"),
        raw: Bytes::copy_from_slice(raw),
    }
}
