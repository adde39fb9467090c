//! circuit-worker library (placeholder).
