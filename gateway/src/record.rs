//! TODO(scaffold): record
