//! TODO(scaffold): runtime
