//! The behavioural suite against the embedded SQLite store.

mod common;

suite_tests!(common::embedded());
