//! Text cutting shared by the map titles, the projector export and the HTML map's tooltips.

/// `s` cut to at most `max` characters, with "…" appended when something was cut.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// `s` on one line (every run of whitespace becomes one space), cut to `max` characters.
pub fn short(s: &str, max: usize) -> String {
    cut(&s.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

/// `s` with tabs and line breaks as spaces (one cell of a TSV file), cut to `max` characters.
pub fn tsv_cell(s: &str, max: usize) -> String {
    cut(&s.replace(['\t', '\n', '\r'], " "), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_characters_not_bytes() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(short("a\n\t b  c", 10), "a b c");
        assert_eq!(tsv_cell("a\tb\nc", 10), "a b c");
    }
}
