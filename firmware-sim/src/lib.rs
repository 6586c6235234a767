//! placeholder

pub mod raw;
