//! Query results as JSON rows, CSV, text tables and Arrow IPC.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type,
    UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use crate::sql::QueryResult;

fn cell(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(row))
        };
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => {
            Number::from_f64(array.as_primitive::<Float32Type>().value(row) as f64).map_or(Value::Null, Value::Number)
        }
        DataType::Float64 => {
            Number::from_f64(array.as_primitive::<Float64Type>().value(row)).map_or(Value::Null, Value::Number)
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        _ => Value::String(text(array, row)),
    }
}

fn text(array: &dyn Array, row: usize) -> String {
    let opts = FormatOptions::default().with_null("");
    match ArrayFormatter::try_new(array, &opts) {
        Ok(f) => f.value(row).to_string(),
        Err(_) => String::new(),
    }
}

/// Column names.
pub fn columns(r: &QueryResult) -> Vec<String> {
    r.schema.fields().iter().map(|f| f.name().clone()).collect()
}

/// The JSON answer of the query API, `{"columns": [...], "rows": [[...]], "as_of": n}`,
/// written straight to bytes (no JSON tree of the whole result); `Err(max)` once it
/// would pass `max` bytes.
pub fn to_json_answer(r: &QueryResult, max: usize) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut out, &columns(r)).map_err(|_| max)?;
    out.extend_from_slice(b",\"rows\":[");
    let mut first = true;
    for b in &r.batches {
        for row in 0..b.num_rows() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'[');
            for (i, c) in b.columns().iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &cell(c.as_ref(), row)).map_err(|_| max)?;
            }
            out.push(b']');
            if out.len() > max {
                return Err(max);
            }
        }
    }
    out.extend_from_slice(format!("],\"as_of\":{}}}", r.as_of).as_bytes());
    Ok(out)
}

/// Rows as arrays of JSON values, in column order.
pub fn rows_as_arrays(r: &QueryResult) -> Vec<Value> {
    let mut out = Vec::with_capacity(r.num_rows());
    for b in &r.batches {
        for row in 0..b.num_rows() {
            out.push(Value::Array(b.columns().iter().map(|c| cell(c.as_ref(), row)).collect()));
        }
    }
    out
}

/// Rows as JSON objects keyed by column name.
pub fn rows_as_objects(r: &QueryResult) -> Vec<Value> {
    let names = columns(r);
    let mut out = Vec::with_capacity(r.num_rows());
    for b in &r.batches {
        for row in 0..b.num_rows() {
            let mut m = Map::new();
            for (name, c) in names.iter().zip(b.columns()) {
                m.insert(name.clone(), cell(c.as_ref(), row));
            }
            out.push(Value::Object(m));
        }
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a leading
/// tab or carriage return) gets a leading `'`, as OWASP advises for CSV exports; numbers
/// are left as they are.
fn neutralise(s: String) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s }
}

/// RFC 4180 CSV with a header line; text cells are neutralised against formula
/// injection.
pub fn to_csv(r: &QueryResult) -> String {
    to_csv_bounded(r, usize::MAX).unwrap_or_default()
}

/// [`to_csv`], or `Err(max)` once the text would pass `max` bytes.
pub fn to_csv_bounded(r: &QueryResult, max: usize) -> Result<String, usize> {
    let mut out = columns(r).into_iter().map(|c| csv_field(&neutralise(c))).collect::<Vec<_>>().join(",");
    out.push('\n');
    for b in &r.batches {
        for row in 0..b.num_rows() {
            let line: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    let t = text(c.as_ref(), row);
                    let is_text = matches!(c.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
                    csv_field(&if is_text { neutralise(t) } else { t })
                })
                .collect();
            out.push_str(&line.join(","));
            out.push('\n');
            if out.len() > max {
                return Err(max);
            }
        }
    }
    Ok(out)
}

/// A plain text table, with its row count and `as_of`.
pub fn to_table(r: &QueryResult) -> String {
    let footer = format!("({} rows, as_of {})", r.num_rows(), r.as_of);
    if r.batches.is_empty() {
        let cols = columns(r).join(" | ");
        return format!("{cols}\n{footer}\n");
    }
    match datafusion::arrow::util::pretty::pretty_format_batches(&r.batches) {
        Ok(t) => format!("{t}\n{footer}\n"),
        Err(e) => format!("cannot format: {e}\n"),
    }
}

/// Arrow IPC stream bytes.
pub fn to_arrow_ipc(r: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &r.schema)?;
        for b in &r.batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(buf)
}

/// A result from Arrow IPC stream bytes (the answer [`to_arrow_ipc`] gives).
pub fn from_arrow_ipc(bytes: &[u8], as_of: u64) -> Result<QueryResult, ArrowError> {
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(QueryResult { schema, batches, as_of })
}
