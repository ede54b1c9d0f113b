//! CloudStack's API as reprise answers it at `/client/api`, the pure part:
//! how requests are signed ([`sign`]), what answers look like ([`wire`]),
//! which commands and parameters are served ([`commands`]), and reprise's
//! resources in CloudStack's words ([`objects`]). The daemon
//! (`reprise-daemon/src/cloudstack.rs`) authenticates, runs each command
//! as the native API would, and answers with these.
//!
//! See `docs/cloudstack.md`.

pub mod commands;
pub mod objects;
pub mod sign;
pub mod wire;
