//! Sandbox server (stub).
