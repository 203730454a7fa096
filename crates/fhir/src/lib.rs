//! FHIR R4 for Sijill: the official definitions as tables, structural validation of
//! resources against them, and helpers for ids, instants and references.
//!
//! This crate is pure: no I/O, no async, no global state except the lazily built
//! definition index.

pub mod definitions;
pub mod examples;
pub mod outcome;
pub mod primitives;
pub mod references;
pub mod validate;
