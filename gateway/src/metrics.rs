//! TODO(scaffold): metrics
