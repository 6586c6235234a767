//! placeholder

pub mod coap;
