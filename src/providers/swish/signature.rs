//! Unsigned callbacks.
