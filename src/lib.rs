//! Pixelport: a self-hosted image CDN in one daemon: an S3-compatible store, an
//! imgproxy-compatible image endpoint and a derivative cache. See docs/ and ARCHITECTURE.

pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod disk;
pub mod edge;
pub mod fatal;
pub mod http;
pub mod image_service;
pub mod imaging;
pub mod logs;
pub mod metrics;
pub mod os_memory;
pub mod reload;
pub mod s3;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tunnel;
