//! The floor's store and its three commands, memcached's text replies.

use std::collections::HashMap;

const MAX_VALUE: usize = 1024 * 1024;

#[derive(Default)]
pub struct Store {
    items: HashMap<Vec<u8>, Vec<u8>>,
    hits: u64,
}

impl Store {
    /// Answers every whole request at the front of `input` into `output`,
    /// and leaves a partial one in `input`. False when the connection
    /// should close: `quit`, or a request the floor does not know.
    pub fn answer(&mut self, input: &mut Vec<u8>, output: &mut Vec<u8>) -> bool {
        let mut used = 0;
        let open = loop {
            let rest = &input[used..];
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                break true;
            };
            let line = &rest[..eol];
            if let Some(key) = line.strip_prefix(b"get ") {
                match self.items.get(key) {
                    Some(value) => {
                        self.hits += 1;
                        output.extend_from_slice(b"VALUE ");
                        output.extend_from_slice(key);
                        output.extend_from_slice(format!(" 0 {}\r\n", value.len()).as_bytes());
                        output.extend_from_slice(value);
                        output.extend_from_slice(b"\r\nEND\r\n");
                    }
                    None => output.extend_from_slice(b"END\r\n"),
                }
                used += eol + 2;
            } else if let Some(args) = line.strip_prefix(b"set ") {
                // set <key> <flags> <exptime> <bytes>
                let mut args = args.split(|&b| b == b' ');
                let key = args.next().unwrap_or_default();
                let len = args
                    .nth(2)
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .and_then(|n| n.parse::<usize>().ok());
                // memcached's item size limit bounds what is waited for.
                let Some(len) = len.filter(|&len| len <= MAX_VALUE) else {
                    break false;
                };
                let Some(data) = rest.get(eol + 2..eol + 2 + len + 2) else {
                    break true;
                };
                self.items.insert(key.to_vec(), data[..len].to_vec());
                output.extend_from_slice(b"STORED\r\n");
                used += eol + 2 + len + 2;
            } else if line == b"stats" {
                output.extend_from_slice(
                    format!("STAT get_hits {}\r\nEND\r\n", self.hits).as_bytes(),
                );
                used += eol + 2;
            } else {
                break false; // quit, or unknown
            }
        };
        input.drain(..used);
        open
    }
}
