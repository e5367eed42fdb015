//! The intake topic re-partitioner (not built yet).
