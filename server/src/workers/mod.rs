//! Background work of the server, each worker a named loop with logged results.

pub mod gc;
pub mod retention;
