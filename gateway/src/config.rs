//! TODO(scaffold): config
