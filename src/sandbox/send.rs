//! Sandbox send (stub).
