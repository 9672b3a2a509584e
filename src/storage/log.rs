//! Record log (being written).
