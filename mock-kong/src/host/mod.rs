//! Kong's host loop. Filled in by the core work.
