//! TODO: byte-budget LRU store (being written).
