use super::*;
use proptest::prelude::*;

proptest! {
    /// `Tokens` splits in a loop of its own; it must agree with `words`
    /// (spaces only, runs of spaces and leading or trailing ones ignored),
    /// including past the tokens it keeps.
    #[test]
    fn tokens_agree_with_words(line in "[a-c \\t]{0,80}") {
        let line = line.as_bytes();
        let tokens = Tokens::new(line);
        let all: Vec<&[u8]> = words(line).collect();
        prop_assert_eq!(tokens.len(), all.len());
        prop_assert_eq!(tokens.all_kept(), all.len() <= MAX_TOKENS);
        let kept: Vec<&[u8]> = tokens.iter().collect();
        prop_assert_eq!(&kept[..], &all[..all.len().min(MAX_TOKENS)]);
        for (i, word) in kept.iter().enumerate() {
            prop_assert_eq!(tokens.get(i), Some(*word));
        }
        prop_assert_eq!(tokens.get(kept.len()), None);
        prop_assert_eq!(tokens.last(), kept.last().copied());
    }

    /// The hand-written decimal parser reads what `str::parse` reads, and
    /// refuses signs, spaces and anything past `u64::MAX`.
    #[test]
    fn parse_u64_is_strtoull_on_digits(token in "[0-9+ -]{0,22}") {
        let want = match token.bytes().all(|b| b.is_ascii_digit()) {
            true => token.parse::<u64>().ok(),
            false => None,
        };
        prop_assert_eq!(parse_u64(token.as_bytes()), want);
    }
}

#[test]
fn parse_u64_bounds() {
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b"007"), Some(7));
    assert_eq!(parse_u64(b""), None);
    assert_eq!(parse_u64(b"1a"), None);
}

#[test]
fn newlines_are_found_within_the_limit_only() {
    assert_eq!(find_newline(b"get k\r\nrest", 100), Some(6));
    assert_eq!(find_newline(b"get k\r\n", 3), None);
    assert_eq!(find_newline(b"no newline", 100), None);
}
