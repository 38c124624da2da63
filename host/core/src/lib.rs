//! # pyhost-core
//!
//! What pyhost decides about a request before any Python runs, with no interpreter in sight:
//! the config file ([`config`]), request-target decoding ([`target`]), routing ([`routing`],
//! from the route declarations of [`spec`]), parameter and body validation ([`validation`]),
//! and the two steps that apply them all to one request ([`admission`]), producing the
//! handler's [`request::RequestData`] or the [`reply::Reply`] that refuses it; and what the
//! host's own middleware decides ([`middleware`]: CORS, compression, allowed hosts).
//!
//! The `pyhost` crate serves requests with exactly these functions; the fuzzer and the
//! property tests call them the same way, without linking libpython.

pub mod admission;
pub mod authority;
pub mod config;
pub mod error;
pub mod form;
pub mod middleware;
#[doc(hidden)]
pub mod probe;
pub mod reply;
pub mod request;
pub mod routing;
pub mod spec;
pub mod target;
pub mod validation;
pub mod websocket;
