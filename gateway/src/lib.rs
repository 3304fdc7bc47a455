//! The Bulkhead spoke gateway.
