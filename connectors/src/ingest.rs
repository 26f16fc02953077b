//! Decoding ingest request bodies: gzip by magic bytes, JSON or protobuf batches, raw
//! rrweb arrays; every event validated on its own.

use prost::Message;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sightflow_proto::v1::Envelope;
use sightflow_proto::v1::envelope::Kind;

use crate::files::{Rejection, SplitError, split_json_array};
use crate::json::{BadEvent, Defaults, EventItem, Sizes, decode_item};
use crate::rrweb::{Decoders, Note};
use crate::validate::{Limits, validate};

/// Bounds on one request.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body after decompression.
    pub max_decompressed_bytes: usize,
    /// Most events in one batch.
    pub max_events: usize,
    /// Largest single event.
    pub sizes: Sizes,
}

/// Why a whole body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body, after decompression, is larger than allowed.
    #[error("the body decompresses to more than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body starts with the gzip magic bytes but is not valid gzip.
    #[error("the body looks gzip-compressed but does not decompress: {0}")]
    Gzip(String),
    /// A JSON body is not UTF-8 (the byte offset of the first bad byte).
    #[error("the body is not valid UTF-8 (at byte {0})")]
    Utf8(usize),
    /// A JSON body is not a batch object or array as a whole.
    #[error("the body is not a valid JSON batch: {0}")]
    Json(String),
    /// A protobuf body does not decode as a `Batch`.
    #[error("the body is not a valid protobuf Batch: {0}")]
    Protobuf(String),
    /// The batch holds more events than one request may.
    #[error("the batch has {n} events, at most {max} are accepted per request")]
    TooManyEvents {
        /// Events in the batch.
        n: usize,
        /// The limit per request.
        max: usize,
    },
    /// The body has no bytes (or only whitespace).
    #[error("the body is empty")]
    Empty,
}

/// An accepted event, and its raw rrweb JSON when it came as one (for replay).
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The validated event.
    pub envelope: Envelope,
    /// The event's rrweb JSON as sent, when it came as a raw rrweb event.
    pub raw_rrweb: Option<String>,
    /// What the views could not use of a raw rrweb event (it is still stored).
    pub note: Option<Note>,
    /// Position in the request.
    pub index: usize,
}

/// A decoded batch: what was accepted and what was not, by position.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The project key named in the body, if any.
    pub project: Option<String>,
    /// The valid events, in request order.
    pub accepted: Vec<Accepted>,
    /// The events left out, in request order.
    pub rejected: Vec<Rejection>,
}

/// Undoes gzip (recognised by its magic bytes, whatever the content type), refusing to
/// expand past the limit.
pub fn decompress(body: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
    if body.len() >= 2 && body[0] == 0x1f && body[1] == 0x8b {
        // A gzip member ends with its uncompressed size (mod 2^32): room for that much saves
        // growing the buffer by copies. The claim is the sender's, so the room is also
        // bounded by what the body can plausibly expand to; past it the buffer grows.
        let size = body
            .len()
            .checked_sub(4)
            .map_or(0, |at| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as usize);
        let mut out = Vec::with_capacity(size.min(limit).min(body.len().saturating_mul(32)).saturating_add(1));
        gunzip(body, limit, &mut out)?;
        Ok(std::borrow::Cow::Owned(out))
    } else if body.len() > limit {
        Err(BodyError::TooLarge { limit })
    } else {
        Ok(std::borrow::Cow::Borrowed(body))
    }
}

thread_local! {
    /// One raw inflater per thread, reset for each gzip member: a new one costs an
    /// allocation of its window and tables per request.
    static INFLATE: std::cell::RefCell<flate2::Decompress> = std::cell::RefCell::new(flate2::Decompress::new(false));
}

/// Decodes gzip members (RFC 1952) one after another into `out`: each header, its raw
/// deflate data with the thread's inflater, and its trailer's CRC-32 and size, checked.
fn gunzip(mut input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BodyError> {
    let bad = |why: &str| BodyError::Gzip(why.to_string());
    INFLATE.with(|d| {
        let mut d = d.borrow_mut();
        loop {
            input = &input[gzip_header(input).map_err(bad)?..];
            d.reset(false);
            let start = out.len();
            loop {
                if out.len() > limit {
                    return Err(BodyError::TooLarge { limit });
                }
                if out.len() == out.capacity() {
                    // Doubling, but never past one byte more than the limit.
                    out.reserve_exact((out.capacity() - start).max(4096).min(limit + 1 - out.len()));
                }
                let (read, written) = (d.total_in() as usize, out.len());
                let status = d
                    .decompress_vec(&input[read..], out, flate2::FlushDecompress::None)
                    .map_err(|e| bad(&format!("corrupt deflate stream ({e})")))?;
                if status == flate2::Status::StreamEnd {
                    break;
                }
                if d.total_in() as usize == read && out.len() == written {
                    return Err(bad("the body ends inside the compressed data"));
                }
            }
            if out.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            input = &input[d.total_in() as usize..];
            let [c0, c1, c2, c3, n0, n1, n2, n3, ..] = *input else {
                return Err(bad("the body ends before the gzip trailer"));
            };
            let member = &out[start..];
            if u32::from_le_bytes([c0, c1, c2, c3]) != crc32fast::hash(member) {
                return Err(bad("the CRC-32 of the data does not match the gzip trailer"));
            }
            if u32::from_le_bytes([n0, n1, n2, n3]) != member.len() as u32 {
                return Err(bad("the length of the data does not match the gzip trailer"));
            }
            input = &input[8..];
            if input.is_empty() {
                return Ok(());
            }
        }
    })
}

/// The length of a gzip member's header (RFC 1952 2.3) at the start of `b`.
fn gzip_header(b: &[u8]) -> Result<usize, &'static str> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let [0x1f, 0x8b, cm, flags, ..] = *b else { return Err("invalid gzip header") };
    if cm != 8 {
        return Err("the gzip data is not deflate-compressed");
    }
    if b.len() < 10 {
        return Err("the body ends inside the gzip header");
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(&[x0, x1]) = b.get(at..at + 2) else { return Err("the body ends inside the gzip header") };
        at += 2 + u16::from_le_bytes([x0, x1]) as usize;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(end) = b.get(at..).and_then(|r| r.iter().position(|&c| c == 0)) else {
                return Err("the body ends inside the gzip header");
            };
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > b.len() {
        return Err("the body ends inside the gzip header");
    }
    Ok(at)
}

fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        let c = c.to_ascii_lowercase();
        c.starts_with("application/x-protobuf")
            || c.starts_with("application/protobuf")
            || c.starts_with("application/octet-stream")
    })
}

fn utf8(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body).map_err(|e| BodyError::Utf8(e.valid_up_to()))
}

/// A JSON batch with each event's fields left as raw text: `{"project", "device_id",
/// "events": [...]}` or a bare array. More than `max` events is an error, found without
/// keeping (or parsing) the surplus.
struct JsonBatch<'a> {
    project: Option<String>,
    device_id: Option<String>,
    events: Vec<EventItem<'a>>,
}

struct BatchSeed {
    max: usize,
}

struct EventsSeed<'v, 'a> {
    max: usize,
    out: &'v mut Vec<EventItem<'a>>,
}

impl<'de> DeserializeSeed<'de> for EventsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while self.out.len() < self.max {
            match s.next_element::<EventItem<'de>>()? {
                Some(e) => self.out.push(e),
                None => return Ok(()),
            }
        }
        let mut n = self.max;
        while s.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        if n > self.max {
            return Err(serde::de::Error::custom(TooMany(n)));
        }
        Ok(())
    }
}

/// The marker of a too-long events array inside a serde error.
struct TooMany(usize);

impl std::fmt::Display for TooMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\u{1}too many events: {}\u{1}", self.0)
    }
}

fn too_many(msg: &str) -> Option<usize> {
    let rest = msg.split("\u{1}too many events: ").nth(1)?;
    rest.split('\u{1}').next()?.parse().ok()
}

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = JsonBatch<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<JsonBatch<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = JsonBatch<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with `events` or an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<JsonBatch<'de>, A::Error> {
        let mut events = Vec::new();
        EventsSeed { max: self.max, out: &mut events }.visit_seq(s)?;
        Ok(JsonBatch { project: None, device_id: None, events })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<JsonBatch<'de>, A::Error> {
        let mut b = JsonBatch { project: None, device_id: None, events: Vec::new() };
        let mut seen_events = false;
        while let Some(k) = m.next_key::<String>()? {
            match k.as_str() {
                "project" => b.project = m.next_value::<Option<String>>()?,
                "device_id" => b.device_id = m.next_value::<Option<String>>()?,
                "events" => {
                    seen_events = true;
                    m.next_value_seed(EventsSeed { max: self.max, out: &mut b.events })?
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen_events {
            return Err(serde::de::Error::custom("a batch object needs an `events` array"));
        }
        Ok(b)
    }
}

fn json_batch(text: &str, max: usize) -> Result<JsonBatch<'_>, BodyError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let batch = BatchSeed { max }.deserialize(&mut de).and_then(|b| de.end().map(|()| b));
    batch.map_err(|e| {
        let msg = e.to_string();
        match too_many(&msg) {
            Some(n) => BodyError::TooManyEvents { n, max },
            None => BodyError::Json(msg),
        }
    })
}

/// Decodes a protobuf `Batch` one event at a time, refusing more than `max` events
/// before decoding the surplus.
fn protobuf_batch(mut body: &[u8], max: usize) -> Result<(String, Vec<Envelope>), BodyError> {
    use prost::encoding::{WireType, decode_key, decode_varint, skip_field};
    let err = |e: prost::DecodeError| BodyError::Protobuf(e.to_string());
    let mut project = String::new();
    let mut events = Vec::new();
    let mut n = 0usize;
    while !body.is_empty() {
        let (tag, wire) = decode_key(&mut body).map_err(err)?;
        match (tag, wire) {
            (1 | 2, WireType::LengthDelimited) => {
                let len = decode_varint(&mut body).map_err(err)? as usize;
                if len > body.len() {
                    return Err(BodyError::Protobuf("a field runs past the end of the body".into()));
                }
                let (field, rest) = body.split_at(len);
                body = rest;
                if tag == 1 {
                    project = String::from_utf8(field.to_vec())
                        .map_err(|_| BodyError::Protobuf("`project` is not UTF-8".into()))?;
                } else {
                    n += 1;
                    if n <= max {
                        events.push(Envelope::decode(field).map_err(err)?);
                    }
                }
            }
            (1 | 2, _) => return Err(BodyError::Protobuf(format!("field {tag} has the wrong wire type"))),
            _ => skip_field(wire, tag, &mut body, prost::encoding::DecodeContext::default()).map_err(err)?,
        }
    }
    if n > max {
        return Err(BodyError::TooManyEvents { n, max });
    }
    Ok((project, events))
}

/// Decodes a `/track` body: a JSON batch `{"project", "device_id", "tab_id", "events": [...]}`
/// (or a bare array of events), or a protobuf `Batch`. `defaults.project` is the key the
/// request was authorised for; the identity fields of the body fill in what events omit.
pub fn decode_track(
    body: &[u8],
    content_type: Option<&str>,
    defaults: &Defaults,
    limits: &BodyLimits,
    event_limits: &Limits,
    decoders: &Decoders,
) -> Result<Decoded, BodyError> {
    let body = decompress(body, limits.max_decompressed_bytes)?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(BodyError::Empty);
    }
    let mut out = Decoded::default();
    if is_protobuf(content_type) {
        let (project, events) = protobuf_batch(&body, limits.max_events)?;
        if !project.is_empty() {
            out.project = Some(project);
        }
        for (index, mut e) in events.into_iter().enumerate() {
            if e.project.is_empty() {
                e.project = defaults.project.clone();
            }
            let result = match e.kind.take() {
                Some(Kind::Rrweb(raw)) => String::from_utf8(raw.json)
                    .map_err(|e| BadEvent::NotUtf8 { at: e.utf8_error().valid_up_to() })
                    .and_then(|json| {
                        let max = limits.sizes.max_rrweb_event_bytes;
                        if json.len() > max {
                            return Err(BadEvent::RrwebTooLarge { len: json.len(), max });
                        }
                        let tab = if e.tab_id.is_empty() { e.device_id.clone() } else { e.tab_id.clone() };
                        let d = decoders.decode(&e.project, &e.device_id, &tab, e.seq, &json)?;
                        Ok(Accepted { envelope: d.envelope, raw_rrweb: Some(json), note: d.note, index: 0 })
                    }),
                kind => {
                    e.kind = kind;
                    Ok(Accepted { envelope: e, raw_rrweb: None, note: None, index: 0 })
                }
            };
            push(&mut out, index, result, &defaults.project, event_limits);
        }
        return Ok(out);
    }
    let text = utf8(&body)?;
    let batch = json_batch(text, limits.max_events)?;
    let mut defaults = defaults.clone();
    out.project = batch.project;
    if let Some(d) = batch.device_id {
        defaults.device_id = d;
    }
    for (index, ev) in batch.events.into_iter().enumerate() {
        let result = decode_item(ev, &defaults, index as u64, decoders, &limits.sizes).map(|d| Accepted {
            envelope: d.envelope,
            raw_rrweb: d.rrweb.map(str::to_string),
            note: d.note,
            index: 0,
        });
        push(&mut out, index, result, &defaults.project, event_limits);
    }
    Ok(out)
}

fn push(out: &mut Decoded, index: usize, result: Result<Accepted, BadEvent>, project: &str, limits: &Limits) {
    let checked = result.and_then(|a| {
        if a.envelope.project != project {
            return Err(BadEvent::WrongProject { event: a.envelope.project, request: project.to_string() });
        }
        validate(&a.envelope, limits)?;
        Ok(a)
    });
    match checked {
        Ok(mut a) => {
            a.index = index;
            out.accepted.push(a)
        }
        Err(reason) => out.rejected.push(Rejection { index, reason }),
    }
}

/// Decodes a raw rrweb import body: a JSON array of rrweb events of one tab. Event `i`
/// gets sequence number `seq_start + i`; raw texts are kept verbatim for replay.
#[allow(clippy::too_many_arguments)]
pub fn decode_rrweb(
    body: &[u8],
    project: &str,
    device: &str,
    tab: &str,
    seq_start: u64,
    limits: &BodyLimits,
    event_limits: &Limits,
    decoders: &Decoders,
) -> Result<Decoded, BodyError> {
    let body = decompress(body, limits.max_decompressed_bytes)?;
    let text = utf8(&body)?;
    let parts = split_json_array(text, limits.max_events).map_err(|e| match e {
        SplitError::TooMany(n) => BodyError::TooManyEvents { n, max: limits.max_events },
        other => BodyError::Json(other.to_string()),
    })?;
    let mut out = Decoded { project: Some(project.to_string()), ..Default::default() };
    let max = limits.sizes.max_rrweb_event_bytes;
    for (index, part) in parts.into_iter().enumerate() {
        let result = part.map_err(BadEvent::from).and_then(|raw| {
            if raw.len() > max {
                return Err(BadEvent::RrwebTooLarge { len: raw.len(), max });
            }
            let d = decoders.decode(project, device, tab, seq_start + index as u64, raw)?;
            Ok(Accepted { envelope: d.envelope, raw_rrweb: Some(raw.to_string()), note: d.note, index: 0 })
        });
        push(&mut out, index, result, project, event_limits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use sightflow_proto::v1::Batch;

    fn limits() -> (BodyLimits, Limits) {
        (
            BodyLimits { max_decompressed_bytes: 1 << 20, max_events: 100, sizes: Sizes::default() },
            Limits::any_age(1_800_000_000_000),
        )
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn track(body: &[u8], ct: Option<&str>) -> Result<Decoded, BodyError> {
        let (b, l) = limits();
        let d = Defaults { project: "demo".into(), device_id: String::new() };
        decode_track(body, ct, &d, &b, &l, &Decoders::default())
    }

    #[test]
    fn gzip_members_headers_and_trailers_are_checked() {
        use std::io::Read;
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{},", i * 7919 % 1000).into_bytes()).collect();
        // Two members, the second with every optional header field.
        let mut body = gzip(&text[..50_000]);
        let mut named = flate2::GzBuilder::new()
            .filename("events.json")
            .comment("from a test")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::best());
        named.write_all(&text[50_000..]).unwrap();
        body.extend(named.finish().unwrap());
        let mut want = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut want).unwrap();
        assert_eq!(want, text);
        // Twice, so that the second reuses the thread's inflater.
        for _ in 0..2 {
            assert_eq!(decompress(&body, 1 << 20).unwrap().as_ref(), &text[..]);
        }
        assert_eq!(decompress(&body, text.len() - 1), Err(BodyError::TooLarge { limit: text.len() - 1 }));
        assert_eq!(decompress(&body, text.len()).unwrap().len(), text.len());
        // Every cut of the body is an error, never a panic or a short answer.
        for cut in (2..body.len()).step_by(97).chain(body.len() - 9..body.len()) {
            assert!(matches!(decompress(&body[..cut], 1 << 20), Err(BodyError::Gzip(_))), "cut at {cut}");
        }
        let mut bad_crc = gzip(b"hello");
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        let e = decompress(&bad_crc, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("CRC-32"), "{e}");
        let mut trailing = gzip(b"hello");
        trailing.extend(b"junk");
        assert!(decompress(&trailing, 1 << 20).unwrap_err().to_string().contains("invalid gzip header"));
        let mut not_deflate = gzip(b"hello");
        not_deflate[2] = 7;
        assert!(decompress(&not_deflate, 1 << 20).unwrap_err().to_string().contains("not deflate"));
        // And the thread's inflater still works after all those errors.
        assert_eq!(decompress(&gzip(b"after"), 100).unwrap().as_ref(), b"after");
    }

    #[test]
    fn valid_events_survive_invalid_neighbours() {
        let body = br#"{"device_id": "d", "events": [
            {"type": "click", "ts": 1795342000000, "x": 1, "y": 2},
            {"type": "click", "ts": "soon", "x": 1, "y": 2},
            {"type": "page_view", "ts": 1795342000001, "url": "http://x/"},
            {"type": "click", "project": "other", "ts": 1795342000002, "x": 1, "y": 2}
        ]}"#;
        let d = track(body, Some("text/plain")).unwrap();
        assert_eq!(d.accepted.len(), 2);
        assert_eq!(d.rejected.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 3]);
        assert!(d.rejected[0].reason.to_string().contains("`ts` must be an integer"));
        assert!(matches!(d.rejected[1].reason, BadEvent::WrongProject { .. }));
        // Elements that are not events, or give a field twice, are named one by one.
        let body = br#"[{"type": "click", "device_id": "d", "ts": 1795342000000, "x": 1, "y": 2}, 7, "click", null,
            [{"type": "click"}], true, {"type": "click", "device_id": "d", "ts": 1795342000000, "x": 1, "y": 2, "y": 3},
            {"type": "click", "device_id": "d", "ts": 1795342000003, "x": 4, "y": 5}]"#;
        let d = track(body, None).unwrap();
        assert_eq!(d.accepted.iter().map(|a| a.index).collect::<Vec<_>>(), vec![0, 7]);
        let reasons: Vec<String> = d.rejected.iter().map(|r| r.reason.to_string()).collect();
        assert_eq!(
            reasons,
            [
                "an event must be a JSON object, got a number",
                "an event must be a JSON object, got a string",
                "an event must be a JSON object, got null",
                "an event must be a JSON object, got an array",
                "an event must be a JSON object, got a boolean",
                "invalid JSON: field `y` is given twice",
            ]
        );
    }

    #[test]
    fn gzip_is_recognised_by_magic_and_bombs_are_refused() {
        let body = br#"[{"type": "click", "device_id": "d", "ts": 1795342000000, "x": 1, "y": 2}]"#;
        assert_eq!(track(&gzip(body), Some("text/plain")).unwrap().accepted.len(), 1);
        let bomb = gzip(&vec![b' '; 4 << 20]);
        assert!(bomb.len() < 10_000);
        assert_eq!(track(&bomb, None).unwrap_err(), BodyError::TooLarge { limit: 1 << 20 });
        assert!(matches!(track(&[0x1f, 0x8b, 1, 2, 3], None).unwrap_err(), BodyError::Gzip(_)));
    }

    #[test]
    fn whole_body_errors_are_named() {
        assert!(matches!(track(b"{nope", None).unwrap_err(), BodyError::Json(_)));
        assert_eq!(track(&[b'[', 0xff, 0xfe, b']'], None).unwrap_err(), BodyError::Utf8(1));
        assert_eq!(track(b"   ", None).unwrap_err(), BodyError::Empty);
        assert!(matches!(track(b"\x08\x96\x01", Some("application/x-protobuf")).unwrap_err(), BodyError::Protobuf(_)));
        let many = format!("[{}]", vec![r#"{"type":"activity","device_id":"d","ts":1795342000000}"#; 101].join(","));
        assert_eq!(track(many.as_bytes(), None).unwrap_err(), BodyError::TooManyEvents { n: 101, max: 100 });
        let many = format!("{{\"events\": [{}]}}", vec!["0"; 250_000].join(","));
        assert_eq!(track(&gzip(many.as_bytes()), None).unwrap_err(), BodyError::TooManyEvents { n: 250_000, max: 100 });
        let batch = Batch { project: String::new(), events: vec![Envelope::default(); 101] };
        assert_eq!(
            track(&batch.encode_to_vec(), Some("application/x-protobuf")).unwrap_err(),
            BodyError::TooManyEvents { n: 101, max: 100 }
        );
        assert!(matches!(track(b"[1] x", None).unwrap_err(), BodyError::Json(_)));
        assert!(
            matches!(track(b"{\"device_id\": \"d\"}", None).unwrap_err(), BodyError::Json(m) if m.contains("`events`"))
        );
    }

    #[test]
    fn protobuf_batches_decode() {
        let batch = Batch {
            project: "demo".into(),
            events: vec![
                Envelope {
                    device_id: "d".into(),
                    ts: 1795342000000,
                    kind: Some(Kind::Exit(Default::default())),
                    ..Default::default()
                },
                Envelope {
                    device_id: "d".into(),
                    ts: 5,
                    kind: Some(Kind::Exit(Default::default())),
                    ..Default::default()
                },
            ],
        };
        let d = track(&batch.encode_to_vec(), Some("application/x-protobuf")).unwrap();
        assert_eq!((d.accepted.len(), d.rejected.len()), (1, 1));
        assert_eq!(d.accepted[0].envelope.project, "demo");
    }

    #[test]
    fn rrweb_imports_keep_raw_text() {
        let (b, l) = limits();
        let body = br#"[{"type": 4, "timestamp": 1795342038402, "data": {"href": "http://x.test/", "width": 800, "height": 600}}, {"type": 99, "timestamp": 1}]"#;
        let d = decode_rrweb(body, "demo", "d1", "d1", 10, &b, &l, &Decoders::default()).unwrap();
        assert_eq!(d.accepted.len(), 1);
        assert_eq!(d.accepted[0].envelope.seq, 10);
        assert!(d.accepted[0].raw_rrweb.as_deref().unwrap().starts_with(r#"{"type": 4"#));
        assert_eq!(d.rejected[0].index, 1);
    }
}
