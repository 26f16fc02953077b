//! The sightflow benchmark harness as a library, so that the test command can run a
//! small smoke pass of the generator and every measurement with exact checks.

pub mod harness;
mod openloop;
pub mod soak;
pub mod traffic;
