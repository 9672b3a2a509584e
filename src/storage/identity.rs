//! Identity marker (being written).
