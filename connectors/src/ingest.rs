//! Decoding ingest request bodies: gzip by magic bytes, JSON or protobuf batches, raw
//! rrweb arrays; every event validated on its own.

use std::io::Read;

use prost::Message;
use serde_json::Value;
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::{Batch, Envelope};

use crate::files::{Rejection, split_json_array};
use crate::json::{Defaults, decode_event};
use crate::rrweb::Decoder;
use crate::validate::{Limits, validate};

/// Bounds on one request.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Largest body after decompression.
    pub max_decompressed_bytes: usize,
    /// Most events in one batch.
    pub max_events: usize,
}

/// Why a whole body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the body decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body looks gzip-compressed but does not decompress: {0}")]
    Gzip(String),
    #[error("the body is not valid UTF-8 (at byte {0})")]
    Utf8(usize),
    #[error("the body is not a valid JSON batch: {0}")]
    Json(String),
    #[error("the body is not a valid protobuf Batch: {0}")]
    Protobuf(String),
    #[error("the batch has {n} events, at most {max} are accepted per request")]
    TooManyEvents { n: usize, max: usize },
    #[error("the body is empty")]
    Empty,
}

/// An accepted event, and its raw rrweb JSON when it came as one (for replay).
#[derive(Clone, Debug)]
pub struct Accepted {
    pub envelope: Envelope,
    pub raw_rrweb: Option<String>,
}

/// A decoded batch: what was accepted and what was not, by position.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The project key named in the body, if any.
    pub project: Option<String>,
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejection>,
}

/// Undoes gzip (recognised by its magic bytes, whatever the content type), refusing to
/// expand past the limit.
pub fn decompress(body: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
    if body.len() >= 2 && body[0] == 0x1f && body[1] == 0x8b {
        let mut out = Vec::new();
        let mut dec = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
        dec.read_to_end(&mut out).map_err(|e| BodyError::Gzip(e.to_string()))?;
        if out.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        Ok(std::borrow::Cow::Owned(out))
    } else if body.len() > limit {
        Err(BodyError::TooLarge { limit })
    } else {
        Ok(std::borrow::Cow::Borrowed(body))
    }
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

/// Decodes a `/track` body: a JSON batch `{"project", "device_id", "tab_id", "events": [...]}`
/// (or a bare array of events), or a protobuf `Batch`. `defaults.project` is the key the
/// request was authorised for; the identity fields of the body fill in what events omit.
pub fn decode_track(
    body: &[u8],
    content_type: Option<&str>,
    defaults: &Defaults,
    limits: &BodyLimits,
    event_limits: &Limits,
    decoder: &mut Decoder,
) -> Result<Decoded, BodyError> {
    let body = decompress(body, limits.max_decompressed_bytes)?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(BodyError::Empty);
    }
    let mut out = Decoded::default();
    if is_protobuf(content_type) {
        let batch = Batch::decode(&body[..]).map_err(|e| BodyError::Protobuf(e.to_string()))?;
        if batch.events.len() > limits.max_events {
            return Err(BodyError::TooManyEvents { n: batch.events.len(), max: limits.max_events });
        }
        if !batch.project.is_empty() {
            out.project = Some(batch.project.clone());
        }
        for (index, mut e) in batch.events.into_iter().enumerate() {
            if e.project.is_empty() {
                e.project = defaults.project.clone();
            }
            let result = match e.kind.take() {
                Some(Kind::Rrweb(raw)) => String::from_utf8(raw.json)
                    .map_err(|_| "rrweb event JSON is not valid UTF-8".to_string())
                    .and_then(|json| {
                        let v: Value =
                            serde_json::from_str(&json).map_err(|err| format!("invalid rrweb JSON: {err}"))?;
                        let tab = if e.tab_id.is_empty() { e.device_id.clone() } else { e.tab_id.clone() };
                        let env = decoder
                            .decode(&e.project, &e.device_id, &tab, e.seq, &v)
                            .map_err(|err| format!("rrweb event: {err}"))?;
                        Ok(Accepted { envelope: env, raw_rrweb: Some(json) })
                    }),
                kind => {
                    e.kind = kind;
                    Ok(Accepted { envelope: e, raw_rrweb: None })
                }
            };
            push(&mut out, index, result, &defaults.project, event_limits);
        }
        return Ok(out);
    }
    let text = utf8(&body)?;
    let v: Value = serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
    let mut defaults = defaults.clone();
    let events = match v {
        Value::Array(a) => a,
        Value::Object(mut o) => {
            if let Some(p) = o.get("project").and_then(Value::as_str) {
                out.project = Some(p.to_string());
            }
            if let Some(d) = o.get("device_id").and_then(Value::as_str) {
                defaults.device_id = d.to_string();
            }
            match o.remove("events") {
                Some(Value::Array(a)) => a,
                Some(_) => return Err(BodyError::Json("`events` must be an array".into())),
                None => return Err(BodyError::Json("a batch object needs an `events` array".into())),
            }
        }
        _ => return Err(BodyError::Json("expected an object with `events` or an array of events".into())),
    };
    if events.len() > limits.max_events {
        return Err(BodyError::TooManyEvents { n: events.len(), max: limits.max_events });
    }
    for (index, ev) in events.iter().enumerate() {
        let raw = (ev.get("type").and_then(Value::as_str) == Some("rrweb"))
            .then(|| ev.get("event").map(|x| x.to_string()))
            .flatten();
        let result =
            decode_event(ev, &defaults, index as u64, decoder).map(|envelope| Accepted { envelope, raw_rrweb: raw });
        push(&mut out, index, result, &defaults.project, event_limits);
    }
    Ok(out)
}

fn push(out: &mut Decoded, index: usize, result: Result<Accepted, String>, project: &str, limits: &Limits) {
    let checked = result.and_then(|a| {
        if a.envelope.project != project {
            return Err(format!(
                "event belongs to project {:?}, but the request is for {project:?}",
                a.envelope.project
            ));
        }
        validate(&a.envelope, limits)?;
        Ok(a)
    });
    match checked {
        Ok(a) => out.accepted.push(a),
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
    decoder: &mut Decoder,
) -> Result<Decoded, BodyError> {
    let body = decompress(body, limits.max_decompressed_bytes)?;
    let text = utf8(&body)?;
    let parts = split_json_array(text).map_err(BodyError::Json)?;
    if parts.len() > limits.max_events {
        return Err(BodyError::TooManyEvents { n: parts.len(), max: limits.max_events });
    }
    let mut out = Decoded { project: Some(project.to_string()), ..Default::default() };
    for (index, part) in parts.into_iter().enumerate() {
        let result = part.and_then(|raw| {
            let v: Value = serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
            let env = decoder.decode(project, device, tab, seq_start + index as u64, &v).map_err(|e| e.reason)?;
            Ok(Accepted { envelope: env, raw_rrweb: Some(raw.to_string()) })
        });
        push(&mut out, index, result, project, event_limits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits() -> (BodyLimits, Limits) {
        (BodyLimits { max_decompressed_bytes: 1 << 20, max_events: 100 }, Limits::any_age(1_800_000_000_000))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn track(body: &[u8], ct: Option<&str>) -> Result<Decoded, BodyError> {
        let (b, l) = limits();
        let d = Defaults { project: "demo".into(), device_id: String::new() };
        decode_track(body, ct, &d, &b, &l, &mut Decoder::new())
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
        assert!(d.rejected[0].reason.contains("`ts` must be an integer"));
        assert!(d.rejected[1].reason.contains("project"));
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
        let d = decode_rrweb(body, "demo", "d1", "d1", 10, &b, &l, &mut Decoder::new()).unwrap();
        assert_eq!(d.accepted.len(), 1);
        assert_eq!(d.accepted[0].envelope.seq, 10);
        assert!(d.accepted[0].raw_rrweb.as_deref().unwrap().starts_with(r#"{"type": 4"#));
        assert_eq!(d.rejected[0].index, 1);
    }
}
