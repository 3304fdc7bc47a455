//! The types the data path and the command line use. Placeholder for the real modules.
