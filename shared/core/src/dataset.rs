//! The reference dataset (to be written).
