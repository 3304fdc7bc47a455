//! TODO(scaffold): demo
