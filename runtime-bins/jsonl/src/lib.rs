//! `lhopt-jsonl`: a frozen LHOPT policy as a process that speaks JSON lines, so a training
//! runtime in any language can be steered by it. The protocol is in `PROTOCOL.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod protocol;
pub mod session;
