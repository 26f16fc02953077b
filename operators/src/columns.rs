//! How a row type becomes table columns, declared with the type itself.
//!
//! [`row!`](crate::row) defines a row struct and, field by field, the column each field
//! is published as (name and [`ColType`]), plus computed columns; the publisher turns
//! [`Columns`] into Arrow without knowing any view. So a view's fields are listed once.

use crate::sym::Sym;

/// The type of a published column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    /// A string from a symbol.
    Str,
    /// A string from a symbol; the empty symbol is null.
    OptStr,
    /// A session id, as 16 hex digits.
    Session,
    /// A UTC timestamp (ms).
    Ts,
    /// A 64-bit integer.
    I64,
    /// A 32-bit integer (values beyond it saturate).
    I32,
    /// A 64-bit float.
    F64,
    /// A 32-bit integer or null.
    OptI32,
    /// A 64-bit float or null.
    OptF64,
    /// A boolean.
    Bool,
    /// A funnel index, published as the funnel's name.
    Funnel,
    /// A 64-bit value as 16 hex digits.
    Hex,
    /// A static string (an enum's name).
    Label,
}

/// One published column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the table.
    pub name: &'static str,
    /// How the cell is published.
    pub ty: ColType,
}

/// One cell of a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell {
    /// A string symbol ([`ColType::Str`], [`ColType::OptStr`]).
    Sym(Sym),
    /// A session id ([`ColType::Session`]).
    Session(u64),
    /// A timestamp in ms ([`ColType::Ts`]).
    Ts(i64),
    /// [`ColType::I64`].
    I64(i64),
    /// [`ColType::I32`].
    I32(i32),
    /// [`ColType::F64`].
    F64(f64),
    /// [`ColType::OptI32`].
    OptI32(Option<i32>),
    /// [`ColType::OptF64`].
    OptF64(Option<f64>),
    /// [`ColType::Bool`].
    Bool(bool),
    /// A funnel index ([`ColType::Funnel`]).
    Funnel(u32),
    /// A value shown as hex ([`ColType::Hex`]).
    Hex(u64),
    /// A static string ([`ColType::Label`]).
    Label(&'static str),
}

/// A type whose values are published as these columns.
pub trait Columns {
    /// The columns, in table order.
    const COLUMNS: &'static [Column];
    /// The cell of column `i` (an index into [`Columns::COLUMNS`]).
    fn cell(&self, i: usize) -> Cell;
    /// Every symbol the value holds (the string table keeps them while it is held).
    fn syms(&self, f: &mut dyn FnMut(Sym));
}

/// An aggregate difference type: it says whether the key it belongs to is shown as a
/// row (a page with no page views left, an error with no occurrences, is not).
pub trait Aggregate {
    /// Whether the key is shown as a row.
    fn visible(&self) -> bool;
}

/// Converts a field into the cell of its column type.
pub mod cells {
    #![allow(non_snake_case)]
    use super::Cell;
    use crate::sym::Sym;

    /// Integers that fit a 32-bit column as the engine uses them (pixels, sizes).
    pub trait AsI32 {
        /// The value, saturated at `i32::MAX`.
        fn to_i32(self) -> i32;
    }
    impl AsI32 for i32 {
        fn to_i32(self) -> i32 {
            self
        }
    }
    impl AsI32 for u32 {
        fn to_i32(self) -> i32 {
            self.min(i32::MAX as u32) as i32
        }
    }

    /// The cell of a [`ColType::Str`](super::ColType::Str) field.
    pub fn Str(v: Sym) -> Cell {
        Cell::Sym(v)
    }
    /// The cell of a [`ColType::OptStr`](super::ColType::OptStr) field.
    pub fn OptStr(v: Sym) -> Cell {
        Cell::Sym(v)
    }
    /// The cell of a [`ColType::Session`](super::ColType::Session) field.
    pub fn Session(v: u64) -> Cell {
        Cell::Session(v)
    }
    /// The cell of a [`ColType::Ts`](super::ColType::Ts) field.
    pub fn Ts(v: i64) -> Cell {
        Cell::Ts(v)
    }
    /// The cell of a [`ColType::I64`](super::ColType::I64) field.
    pub fn I64(v: impl Into<i64>) -> Cell {
        Cell::I64(v.into())
    }
    /// The cell of a [`ColType::I32`](super::ColType::I32) field (saturated).
    pub fn I32(v: impl AsI32) -> Cell {
        Cell::I32(v.to_i32())
    }
    /// The cell of a [`ColType::OptI32`](super::ColType::OptI32) field (saturated).
    pub fn OptI32(v: Option<u32>) -> Cell {
        Cell::OptI32(v.map(|v| v.to_i32()))
    }
    /// The cell of a [`ColType::OptF64`](super::ColType::OptF64) field.
    pub fn OptF64(v: Option<f64>) -> Cell {
        Cell::OptF64(v)
    }
    /// The cell of a [`ColType::F64`](super::ColType::F64) field.
    pub fn F64(v: f64) -> Cell {
        Cell::F64(v)
    }
    /// The cell of a [`ColType::Bool`](super::ColType::Bool) field.
    pub fn Bool(v: bool) -> Cell {
        Cell::Bool(v)
    }
    /// The cell of a [`ColType::Funnel`](super::ColType::Funnel) field.
    pub fn Funnel(v: u32) -> Cell {
        Cell::Funnel(v)
    }
    /// The cell of a [`ColType::Hex`](super::ColType::Hex) field.
    pub fn Hex(v: u64) -> Cell {
        Cell::Hex(v)
    }
    /// The cell of a [`ColType::Label`](super::ColType::Label) field.
    pub fn Label(v: &'static str) -> Cell {
        Cell::Label(v)
    }
}

/// Collects the symbols of a field (symbol fields report themselves, others nothing).
pub trait FieldSyms {
    /// Calls `f` with every symbol held.
    fn field_syms(&self, f: &mut dyn FnMut(Sym));
}

impl FieldSyms for Sym {
    fn field_syms(&self, f: &mut dyn FnMut(Sym)) {
        f(*self)
    }
}

macro_rules! no_syms {
    ($($t:ty),*) => { $(impl FieldSyms for $t { fn field_syms(&self, _f: &mut dyn FnMut(Sym)) {} })* };
}
no_syms!(u64, i64, u32, i32, bool, isize, Option<u32>);

/// Defines a row struct and its published columns in one list.
///
/// Each field is `name: Type` (not published) or `name: Type as column Kind` (published
/// as `column` of [`ColType`] `Kind`); `+ column Kind (r => expr)` adds a computed
/// column at that position. A published field's doc ends with the column it is
/// published as; an unpublished field needs its own `///`.
///
/// ```
/// use sightflow_operators::{row, sym::Sym, columns::Columns};
/// row! {
///     /// A visit.
///     Visit {
///         url: Sym as url Str,
///         start: i64 as started_at Ts,
///         end: i64 as ended_at Ts,
///         + duration_ms I64 (r => r.end - r.start),
///         internal: u32,
///     }
/// }
/// assert_eq!(Visit::COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>(), ["url", "started_at", "ended_at", "duration_ms"]);
/// ```
#[macro_export]
macro_rules! row {
    ($(#[$m:meta])* $name:ident { $($body:tt)* }) => {
        $crate::row!(@munch [$(#[$m])*] $name [] [] $($body)*);
    };
    (@munch [$($m:tt)*] $name:ident [$($fields:tt)*] [$($cols:tt)*]
        $(#[$fm:meta])* $f:ident : $t:ty as $c:ident $k:ident , $($rest:tt)*) => {
        $crate::row!(@munch [$($m)*] $name
            [$($fields)* $(#[$fm])* #[doc = concat!("Published as column `", stringify!($c), "` (", stringify!($k), ").")] $f : $t,]
            [$($cols)* ($c, $k, r => r.$f),] $($rest)*);
    };
    (@munch [$($m:tt)*] $name:ident [$($fields:tt)*] [$($cols:tt)*]
        + $c:ident $k:ident ($r:ident => $e:expr) , $($rest:tt)*) => {
        $crate::row!(@munch [$($m)*] $name [$($fields)*] [$($cols)* ($c, $k, $r => $e),] $($rest)*);
    };
    (@munch [$($m:tt)*] $name:ident [$($fields:tt)*] [$($cols:tt)*]
        $(#[$fm:meta])* $f:ident : $t:ty , $($rest:tt)*) => {
        $crate::row!(@munch [$($m)*] $name [$($fields)* $(#[$fm])* $f : $t,] [$($cols)*] $($rest)*);
    };
    (@munch [$($m:tt)*] $name:ident [$($(#[$fm:meta])* $f:ident : $t:ty,)*] [$(($c:ident, $k:ident, $r:ident => $e:expr),)*]) => {
        $($m)*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl $crate::columns::Columns for $name {
            const COLUMNS: &'static [$crate::columns::Column] = &[
                $($crate::columns::Column { name: stringify!($c), ty: $crate::columns::ColType::$k }),*
            ];
            #[allow(unused_variables, unused_mut, unused_assignments)]
            fn cell(&self, i: usize) -> $crate::columns::Cell {
                let mut n = 0usize;
                $(
                    if i == n {
                        let $r = self;
                        return $crate::columns::cells::$k($e);
                    }
                    n += 1;
                )*
                panic!("{} has no column {i}", stringify!($name))
            }
            fn syms(&self, f: &mut dyn FnMut($crate::sym::Sym)) {
                $( $crate::columns::FieldSyms::field_syms(&self.$f, f); )*
            }
        }
    };
}
