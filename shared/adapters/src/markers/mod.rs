//! Backfill markers: [`redis::RedisMarkers`] (shared by every run of every instance) and
//! [`memory::MemoryMarkers`] (local run). Both implement [`trace_core::ports::BackfillMarkers`]: a
//! marker is claimed (`pending`) with a TTL, then names its job for another TTL, or is released.

pub mod memory;
pub mod redis;
