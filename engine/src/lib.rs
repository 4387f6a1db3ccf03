//! Waggle's BPMN engine.
//!
//! The engine is a pure, deterministic library: the broker hands it a command, the current time and the
//! partition's state, and it answers with the records to append to the log and the responses to send.
//! It does no I/O, reads no clock and spawns nothing, so that replaying a log always gives the same state.

pub mod bpmn;
pub mod feel;
pub mod model;
pub mod processor;
pub mod state;
