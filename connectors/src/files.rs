//! Reading recordings and event files, keeping what is valid.
//!
//! A malformed event, or a file cut off in the middle, costs only the events that are
//! bad: each is reported with its position, and the rest is imported.

use sightflow_proto::v1::Envelope;

use crate::json::{BadEvent, Defaults, Sizes, decode_event};
use crate::rrweb::Decoders;
use crate::validate::{Limits, validate};

/// An event that was not accepted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Position in the input (array index, or line number counting from 1 for NDJSON).
    pub index: usize,
    /// What is wrong with it.
    pub reason: BadEvent,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}: {}", self.index, self.reason)
    }
}

/// The outcome of reading one input.
#[derive(Debug, Default)]
pub struct Import {
    /// The valid events, in input order.
    pub envelopes: Vec<Envelope>,
    /// The events left out, in input order.
    pub rejected: Vec<Rejection>,
}

/// Why an input is not a JSON array of events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The input is empty or only whitespace.
    #[error("the input is empty; expected a JSON array of events")]
    Empty,
    /// The first non-blank character is not `[`.
    #[error("expected a JSON array of events, found {found:?} at byte {at}")]
    NotAnArray {
        /// The character found instead.
        found: char,
        /// Its byte offset in the input.
        at: usize,
    },
    /// More elements than allowed (the count).
    #[error("the array has {0} elements, more than allowed")]
    TooMany(usize),
}

/// An element of a JSON array that cannot be an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadElement {
    /// Nothing between two commas (or a comma and a bracket).
    #[error("empty element")]
    Empty,
    /// The input ends before this element does.
    #[error("truncated: the input ends inside this event (at byte {at})")]
    Truncated {
        /// The input's length in bytes.
        at: usize,
    },
    /// The input ends between elements, before the closing `]`.
    #[error("truncated: the array is not closed (input ends at byte {at})")]
    Unclosed {
        /// The input's length in bytes.
        at: usize,
    },
}

/// Splits a JSON array into the text of its elements without parsing them, so one
/// bad element does not hide the others. A truncated array yields its complete
/// elements and an error for the cut-off one. More than `max` elements is an error
/// (counted without keeping them).
pub fn split_json_array(text: &str, max: usize) -> Result<Vec<Result<&str, BadElement>>, SplitError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    if i == bytes.len() {
        return Err(SplitError::Empty);
    }
    if bytes[i] != b'[' {
        return Err(SplitError::NotAnArray { found: text[i..].chars().next().unwrap_or(' '), at: i });
    }
    let mut count = 0usize;
    i += 1;
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_str = true;
                start.get_or_insert(i);
            }
            b'{' | b'[' => {
                depth += 1;
                start.get_or_insert(i);
            }
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                if let Some(s) = start.take() {
                    count += 1;
                    if count <= max {
                        out.push(Ok(text[s..i].trim_end()));
                    }
                }
                if count > max {
                    return Err(SplitError::TooMany(count));
                }
                return Ok(out);
            }
            b',' if depth == 0 => {
                count += 1;
                if count <= max {
                    match start.take() {
                        Some(s) => out.push(Ok(text[s..i].trim_end())),
                        None => out.push(Err(BadElement::Empty)),
                    }
                } else {
                    start = None;
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    if count >= max {
        return Err(SplitError::TooMany(count + 1));
    }
    if start.is_some() || depth > 0 {
        out.push(Err(BadElement::Truncated { at: bytes.len() }));
    } else {
        out.push(Err(BadElement::Unclosed { at: bytes.len() }));
    }
    Ok(out)
}

/// Reads a raw rrweb recording (a JSON array of rrweb events) as one tab of one device.
/// `raw` receives `(seq, event JSON)` of every accepted event (for the replay store).
pub fn read_rrweb(
    text: &str,
    project: &str,
    device: &str,
    tab: &str,
    limits: &Limits,
    decoders: &Decoders,
    mut raw: Option<&mut Vec<(u64, String)>>,
) -> Result<Import, SplitError> {
    let mut import = Import::default();
    let tab = if tab.is_empty() { device } else { tab };
    for (index, element) in split_json_array(text, usize::MAX)?.into_iter().enumerate() {
        let result = element.map_err(BadEvent::from).and_then(|s| {
            let env = decoders.decode(project, device, tab, index as u64, s)?.envelope;
            validate(&env, limits)?;
            if let Some(raw) = raw.as_deref_mut() {
                raw.push((index as u64, s.to_string()));
            }
            Ok(env)
        });
        match result {
            Ok(env) => import.envelopes.push(env),
            Err(reason) => import.rejected.push(Rejection { index, reason }),
        }
    }
    Ok(import)
}

/// Reads newline-delimited JSON events (the JSON event format, one per line).
pub fn read_ndjson(text: &str, defaults: &Defaults, limits: &Limits, decoders: &Decoders) -> Import {
    let mut import = Import::default();
    let sizes = Sizes { max_event_bytes: usize::MAX, max_rrweb_event_bytes: usize::MAX };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let result = decode_event(line, defaults, i as u64, decoders, &sizes).and_then(|d| {
            let env = d.envelope;
            validate(&env, limits)?;
            Ok(env)
        });
        match result {
            Ok(env) => import.envelopes.push(env),
            Err(reason) => import.rejected.push(Rejection { index: i + 1, reason }),
        }
    }
    import
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_split_into_elements() {
        let parts = split_json_array(r#" [ {"a": "x,]"}, [1, 2], 3 ] "#, 10).unwrap();
        assert_eq!(parts, vec![Ok(r#"{"a": "x,]"}"#), Ok("[1, 2]"), Ok("3")]);
        assert_eq!(split_json_array("[]", 10).unwrap(), vec![]);
        assert_eq!(split_json_array("[1, 2, 3, 4]", 3).unwrap_err(), SplitError::TooMany(4));
        assert_eq!(split_json_array("[1, 2, 3, 4", 3).unwrap_err(), SplitError::TooMany(4));
        assert_eq!(split_json_array("[1, 2, 3]", 3).unwrap().len(), 3);
        assert!(split_json_array("é", 3).is_err());
    }

    #[test]
    fn truncated_arrays_keep_complete_elements() {
        let parts = split_json_array(r#"[{"a": 1}, {"b": [1, 2"#, 10).unwrap();
        assert_eq!(parts[0], Ok(r#"{"a": 1}"#));
        assert_eq!(parts[1], Err(BadElement::Truncated { at: 22 }));
        assert!(split_json_array("{}", 10).unwrap_err().to_string().contains("JSON array"));
        assert!(split_json_array("  ", 10).unwrap_err().to_string().contains("empty"));
    }
}
