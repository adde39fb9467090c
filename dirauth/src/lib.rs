//! dirauth library (placeholder).
