//! Bounds on the built-in SQL functions whose output or work grows with an argument
//! rather than with their input: `repeat('a', 300000000)`, `range(1, 300000000)` or
//! `levenshtein` over two 90,000-character strings allocate gigabytes or run for
//! minutes inside one call, where neither the memory pool nor cancellation can reach.
//!
//! Each such function is replaced in a query's context by a wrapper that first
//! estimates, from the argument values of the batch, how many bytes (or steps) the call
//! will produce, and refuses the call with an error naming the function and the limit
//! when the estimate is over it. The estimates are upper bounds computed in O(rows).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's cost grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Cost {
    /// `repeat(s, n)`: len(s) * n bytes.
    Repeat,
    /// `lpad/rpad(s, n[, fill])`: n characters.
    Pad,
    /// `replace(s, from, to)`: len(s) / len(from) copies of `to`.
    Replace,
    /// `regexp_replace(s, pattern, to[, flags])`: a copy of `to` per position.
    RegexpReplace,
    /// `levenshtein(a, b)`: len(a) * len(b) steps.
    Quadratic,
    /// `range/generate_series(start, stop[, step])`: (stop - start) / step elements.
    Series,
    /// `array_repeat(e, n)` or `array_resize(a, n[, v])`: n elements.
    Count,
}

const FUNCTIONS: [(&str, Cost); 9] = [
    ("repeat", Cost::Repeat),
    ("lpad", Cost::Pad),
    ("rpad", Cost::Pad),
    ("replace", Cost::Replace),
    ("regexp_replace", Cost::RegexpReplace),
    ("levenshtein", Cost::Quadratic),
    ("range", Cost::Series),
    ("generate_series", Cost::Series),
    ("array_repeat", Cost::Count),
];

/// The limits a wrapped function is held to, per call (one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FunctionLimits {
    /// Bytes one call may produce.
    pub max_output_bytes: u64,
    /// Elements one call may produce in lists.
    pub max_elements: u64,
    /// Steps of quadratic work one call may do.
    pub max_steps: u64,
}

impl FunctionLimits {
    /// Limits derived from a query's memory budget.
    pub fn for_memory(memory_bytes: usize) -> FunctionLimits {
        let m = (memory_bytes as u64 / 8).max(1 << 20);
        FunctionLimits { max_output_bytes: m, max_elements: m / 16, max_steps: 200_000_000 }
    }
}

/// Replaces the expansive built-ins of `ctx` with bounded ones.
pub fn install(ctx: &SessionContext, limits: FunctionLimits) {
    for (name, cost) in FUNCTIONS {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner: (*inner).clone(), cost, limits }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    cost: Cost,
    limits: FunctionLimits,
}

/// Per row: the byte length of a string argument (0 for null or non-strings).
fn lengths(arg: &ColumnarValue, rows: usize) -> Vec<u64> {
    let arr: ArrayRef = match arg {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => match s.to_array_of_size(1) {
            Ok(a) => a,
            Err(_) => return vec![0; rows],
        },
    };
    let one = |i: usize| if arr.len() == 1 { 0 } else { i };
    let get: Box<dyn Fn(usize) -> u64> = match arr.data_type() {
        DataType::Utf8 => {
            let a = arr.as_string::<i32>().clone();
            Box::new(move |i| if a.is_null(i) { 0 } else { a.value(i).len() as u64 })
        }
        DataType::LargeUtf8 => {
            let a = arr.as_string::<i64>().clone();
            Box::new(move |i| if a.is_null(i) { 0 } else { a.value(i).len() as u64 })
        }
        DataType::Utf8View => {
            let a = arr.as_string_view().clone();
            Box::new(move |i| if a.is_null(i) { 0 } else { a.value(i).len() as u64 })
        }
        _ => Box::new(|_| 0),
    };
    (0..rows).map(|i| get(one(i))).collect()
}

/// Per row: an integer argument (`None` for null or what does not cast).
fn ints(arg: &ColumnarValue, rows: usize) -> Vec<Option<i64>> {
    let arr: ArrayRef = match arg {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => match s {
            // Dates and timestamps count in their own units; intervals are read below.
            ScalarValue::IntervalMonthDayNano(Some(v)) => {
                let ns = v.months as i64 * 30 * 86_400_000_000_000 + v.days as i64 * 86_400_000_000_000 + v.nanoseconds;
                return vec![Some(ns); rows];
            }
            ScalarValue::IntervalDayTime(Some(v)) => {
                return vec![Some(v.days as i64 * 86_400_000 + v.milliseconds as i64); rows];
            }
            ScalarValue::IntervalYearMonth(Some(m)) => return vec![Some(*m as i64); rows],
            _ => match s.to_array_of_size(1) {
                Ok(a) => a,
                Err(_) => return vec![None; rows],
            },
        },
    };
    let as_i64 = match arr.data_type() {
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => cast(&arr, &DataType::Int64).ok(),
        _ => cast(&arr, &DataType::Int64).ok(),
    };
    let Some(a) = as_i64 else { return vec![None; rows] };
    let a = a.as_primitive::<Int64Type>().clone();
    (0..rows)
        .map(|i| {
            let i = if a.len() == 1 { 0 } else { i };
            (i < a.len() && !a.is_null(i)).then(|| a.value(i))
        })
        .collect()
}

impl Bounded {
    fn refuse(&self, what: String) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!("{}(): {what}", self.inner.name()))
    }

    fn check(&self, args: &[ColumnarValue], rows: usize) -> Result<()> {
        let rows = rows.max(1);
        let l = self.limits;
        let arg = |i: usize| args.get(i);
        match self.cost {
            Cost::Repeat => {
                let (Some(s), Some(n)) = (arg(0), arg(1)) else { return Ok(()) };
                let total: u64 = lengths(s, rows)
                    .into_iter()
                    .zip(ints(n, rows))
                    .map(|(len, n)| len.saturating_mul(n.unwrap_or(0).max(0) as u64))
                    .fold(0, u64::saturating_add);
                if total > l.max_output_bytes {
                    return Err(self.refuse(format!(
                        "the result would be {total} bytes, at most {} are allowed",
                        l.max_output_bytes
                    )));
                }
            }
            Cost::Pad => {
                let Some(n) = arg(1) else { return Ok(()) };
                let total: u64 = ints(n, rows)
                    .into_iter()
                    .map(|n| (n.unwrap_or(0).max(0) as u64).saturating_mul(4))
                    .fold(0, u64::saturating_add);
                if total > l.max_output_bytes {
                    return Err(self.refuse(format!(
                        "the result would be up to {total} bytes, at most {} are allowed",
                        l.max_output_bytes
                    )));
                }
            }
            Cost::Replace | Cost::RegexpReplace => {
                let (Some(s), Some(to)) = (arg(0), arg(2)) else { return Ok(()) };
                let from = match self.cost {
                    Cost::Replace => arg(1).map(|f| lengths(f, rows)).unwrap_or_else(|| vec![1; rows]),
                    _ => vec![0; rows],
                };
                let s = lengths(s, rows);
                let to = lengths(to, rows);
                let total: u64 = (0..rows)
                    .map(|i| {
                        let copies = s[i] / from[i].max(1) + 1;
                        s[i].saturating_add(copies.saturating_mul(to[i]))
                    })
                    .fold(0, u64::saturating_add);
                if total > l.max_output_bytes {
                    return Err(self.refuse(format!(
                        "the result could be {total} bytes, at most {} are allowed",
                        l.max_output_bytes
                    )));
                }
            }
            Cost::Quadratic => {
                let (Some(a), Some(b)) = (arg(0), arg(1)) else { return Ok(()) };
                let steps: u64 = lengths(a, rows)
                    .into_iter()
                    .zip(lengths(b, rows))
                    .map(|(x, y)| x.saturating_mul(y))
                    .fold(0, u64::saturating_add);
                if steps > l.max_steps {
                    return Err(self.refuse(format!(
                        "comparing these strings takes {steps} steps, at most {} are allowed",
                        l.max_steps
                    )));
                }
            }
            Cost::Series => {
                // range(stop) | range(start, stop) | range(start, stop, step)
                let (start, stop, step) = match args.len() {
                    1 => (vec![Some(0); rows], ints(&args[0], rows), vec![Some(1); rows]),
                    2 => (ints(&args[0], rows), ints(&args[1], rows), vec![Some(1); rows]),
                    _ => (ints(&args[0], rows), ints(&args[1], rows), ints(&args[2], rows)),
                };
                let total: u64 = (0..rows)
                    .map(|i| match (start[i], stop[i], step[i]) {
                        (Some(a), Some(b), Some(s)) if s != 0 => {
                            ((b as i128 - a as i128).unsigned_abs() / (s as i128).unsigned_abs()).min(u64::MAX as u128)
                                as u64
                                + 1
                        }
                        _ => 0,
                    })
                    .fold(0, u64::saturating_add);
                if total > l.max_elements {
                    return Err(self.refuse(format!(
                        "the result would hold {total} elements, at most {} are allowed",
                        l.max_elements
                    )));
                }
            }
            Cost::Count => {
                let Some(n) = arg(1) else { return Ok(()) };
                let total: u64 =
                    ints(n, rows).into_iter().map(|n| n.unwrap_or(0).max(0) as u64).fold(0, u64::saturating_add);
                if total > l.max_elements {
                    return Err(self.refuse(format!(
                        "the result would hold {total} elements, at most {} are allowed",
                        l.max_elements
                    )));
                }
            }
        }
        Ok(())
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args.args, args.number_rows)?;
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(sql: &str) -> std::result::Result<usize, String> {
        let ctx = SessionContext::new();
        install(&ctx, FunctionLimits { max_output_bytes: 1 << 20, max_elements: 100_000, max_steps: 10_000_000 });
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn expansive_functions_are_refused_beyond_their_limit() {
        for (sql, needle) in [
            ("select repeat('a', 300000000)", "repeat"),
            ("select lpad('a', 300000000)", "lpad"),
            ("select replace(repeat('a', 100000), 'a', repeat('b', 100000))", "replace"),
            ("select regexp_replace(repeat('a', 10000), '', repeat('b', 1000), 'g')", "regexp_replace"),
            ("select levenshtein(repeat('a', 90000), repeat('b', 90000))", "levenshtein"),
            ("select cardinality(range(1, 300000000))", "range"),
            ("select cardinality(generate_series(1, 300000000, 1))", "generate_series"),
            ("select cardinality(array_repeat(1, 300000000))", "array_repeat"),
        ] {
            let e = run(sql).await.unwrap_err();
            assert!(e.contains(needle) && e.contains("at most"), "{sql}: {e}");
        }
        for sql in [
            "select repeat('ab', 1000)",
            "select levenshtein('kitten', 'sitting')",
            "select cardinality(range(1, 1000))",
            "select replace('aaa', 'a', 'bb')",
            "select * from range(10)",
        ] {
            assert_eq!(run(sql).await, Ok(if sql.contains("from range") { 10 } else { 1 }), "{sql}");
        }
    }
}
