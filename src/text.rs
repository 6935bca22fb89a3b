//! Text from a model file, a plugin or a device driver is data, not terminal commands or extra
//! lines: control characters (C0 such as newline, DEL, C1 such as CSI) and the bidirectional
//! overrides that reorder what a reader sees are written as `\u{..}` escapes wherever such text
//! reaches a person: log messages and the command line's output.

use std::borrow::Cow;

/// Whether `c` is written as an escape: a control character or a bidirectional override.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character [`needs_escape`] picks written by `write` instead; `None` when
/// there is none.
pub fn escape_with(text: &str, write: fn(&mut String, u32)) -> Option<String> {
    if !text.chars().any(needs_escape) {
        return None;
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            write(&mut escaped, c as u32);
        } else {
            escaped.push(c);
        }
    }
    Some(escaped)
}

/// `text` with every character [`needs_escape`] picks written as `\u{hex}`: one line, no
/// terminal commands.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_with(text, |out, c| out.push_str(&format!("\\u{{{c:x}}}")))
        .map_or(Cow::Borrowed(text), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_overrides_become_escapes_and_other_text_is_kept() {
        assert!(matches!(escape("cpu: x86_64 (avx2) é"), Cow::Borrowed(_)));
        assert_eq!(
            escape("1.0\n\u{1b}[2J\u{0}\u{9b}\u{202e}x"),
            "1.0\\u{a}\\u{1b}[2J\\u{0}\\u{9b}\\u{202e}x"
        );
    }
}
