//! The caches TOML: a file that loads also indexes into a login directory,
//! and saves (`to_toml`) to text that loads back to the same caches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate::node::caches::{CachesFile, Directory};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = CachesFile::parse(text) else {
        return;
    };
    let saved = file.to_toml().expect("a loaded caches file serializes");
    let reloaded = CachesFile::parse(&saved).expect("a saved caches file loads");
    assert_eq!(reloaded, file, "saved as {saved}");
    assert!(Directory::new(file).is_ok());
});
