//! The only place in the gateway where `unsafe` code is allowed: thin wrappers over the Linux
//! system calls the runtime needs. Every unsafe block carries a `// SAFETY:` note.
#![allow(unsafe_code)]

pub mod netns;
pub mod tun;
