//! lhopt-core: the no_std LHOPT controller.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
