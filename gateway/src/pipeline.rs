//! TODO(scaffold): pipeline
