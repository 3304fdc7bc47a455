//! TODO(scaffold): logsink
