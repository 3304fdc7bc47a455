//! Cross-crate integration and end-to-end tests of Bulkhead.
//!
//! The tests are in `tests/*.rs`, one test binary per file; this library holds what they share.
//! The end-to-end tests (`e2e_*.rs`) build network namespaces with [`bulkhead_lab`] and drive the
//! real `bulkhead` daemon in them, as a child process found by [`bulkhead_lab::bins`]; they need
//! root and skip, saying why, without it. `cargo test --workspace` builds the `bulkhead` binary
//! before it runs them; `cargo test -p bulkhead-tests` alone does not (build it first with
//! `cargo build -p bulkhead-gateway`, or name both packages).

pub mod e2e;
