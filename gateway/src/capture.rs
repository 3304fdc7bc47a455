//! TODO(scaffold): capture
