//! edge library (placeholder).
