//! TODO(scaffold): tun
