//! TODO(scaffold): wire
