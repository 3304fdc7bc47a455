//! TODO(scaffold): routing
