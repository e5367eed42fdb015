//! hektor-dataflow (filled in by later work).
