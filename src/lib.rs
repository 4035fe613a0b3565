//! keyorch: a key orchestrator. `keyorchd` owns an HSM through PKCS#11 and manages key
//! lifecycles across keystores; `keyorch` is its CLI.
//!
//! Layers, one way only: `api` → `service` → (`domain`, `store`, `hsm`).
//! `domain` is pure (no I/O); `store` is sled; `hsm` is cryptoki.

#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod hsm;
pub mod paths;
pub mod proto;
pub mod secret;
pub mod service;
pub mod store;
pub mod targets;
