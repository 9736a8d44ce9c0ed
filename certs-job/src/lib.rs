//! tokenvend-certs: creates and rotates the webhook's CA and serving certificate, in a Secret
//! (in cluster) or a directory (local), and keeps the MutatingWebhookConfiguration's caBundle
//! in step.

pub mod cluster;
pub mod config;
pub mod local;
pub mod pki;
pub mod plan;
