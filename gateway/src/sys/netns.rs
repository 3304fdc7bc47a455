//! TODO(scaffold): netns
