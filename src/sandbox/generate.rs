//! Sandbox generate (stub).
