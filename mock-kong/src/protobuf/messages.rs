//! Prost message types (spec §5.2, §5.4). Filled in by the protobuf work.
