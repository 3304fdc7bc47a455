//! TODO(scaffold): inspect
