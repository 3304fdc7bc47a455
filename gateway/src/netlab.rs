//! TODO(scaffold): netlab
