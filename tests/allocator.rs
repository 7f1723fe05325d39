//! Freed memory scattered between live allocations goes back to the OS when
//! asked (the sidecar and the node ask every few seconds). One test in its own
//! process, so no other test's allocations blur the RSS it measures.

mod common;

use common::process::own_rss_kib;

#[test]
fn scattered_free_memory_is_released() {
    // 80 MiB in 4 KiB blocks, written so the pages are resident; then free 15
    // of every 16, so the free space is not at the top of the heap and malloc
    // keeps it.
    let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 4096]).collect();
    for (i, block) in blocks.iter_mut().enumerate() {
        if i % 16 != 0 {
            *block = Vec::new();
        }
    }
    let before = own_rss_kib();
    memgate::allocator::release_free_memory();
    let after = own_rss_kib();
    assert!(
        before.saturating_sub(after) > 30 * 1024,
        "RSS {before} KiB -> {after} KiB: free memory was kept"
    );
    drop(blocks);
}
