//! Safe file names from untrusted peers.
//!
//! A file message carries the name its sender gave the file. The receiver saves it under that
//! name in a directory the user chose, so the name must not be able to escape the directory
//! (`../../.bashrc`, `C:\Windows\…`), name a device (`CON`, `NUL` on Windows), hide its real
//! extension (right-to-left override: `invoice\u{202E}gpj.exe` displays as `invoiceexe.jpg`), or
//! be unusable on some file system (characters Windows forbids, trailing dots, over 255 bytes).
//! [`sanitize`] turns any string into a plain file name that is safe on Linux, macOS and Windows,
//! keeping as much of the original as it can.

use super::MAX_NAME_BYTES;

/// The name used when nothing usable is left of a peer's name.
pub const FALLBACK_NAME: &str = "file";

/// An extension longer than this (dot included) is not kept when a name is shortened: it is
/// more likely part of a long name that happens to contain a dot.
const MAX_EXTENSION_BYTES: usize = 32;

/// Characters Windows forbids in file names (the separators are handled before).
const WINDOWS_INVALID: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*'];

/// Device names Windows reserves, with or without an extension, in any case.
const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM0", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7",
    "COM8", "COM9", "LPT0", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³", "CONIN$", "CONOUT$",
];

/// Turns a file name received from a peer into a plain, safe file name.
///
/// - keeps only the last path component (`/` and `\` both separate);
/// - removes control characters, Unicode bidirectional controls and `<>:"/\|?*`;
/// - trims leading whitespace and trailing dots and whitespace (Windows drops them silently);
/// - `""`, `.`, `..` and anything that ends up empty become [`FALLBACK_NAME`];
/// - prefixes Windows device names (`CON`, `nul.txt`, `COM1`…) with `_`;
/// - caps the result at [`MAX_NAME_BYTES`] bytes on a character boundary, keeping the extension.
///
/// The result never contains a separator and is never `.` or `..`, so `dir.join(result)` stays
/// inside `dir`.
pub fn sanitize(name: &str) -> String {
    let last = name
        .split(['/', '\\'])
        .rfind(|part| !part.is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c) && !WINDOWS_INVALID.contains(&c))
        .collect();
    let trimmed = trim_name(&cleaned);
    if trimmed.is_empty() {
        return FALLBACK_NAME.to_owned();
    }
    let name = if is_windows_reserved(trimmed) {
        format!("_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    cap(&name, "")
}

/// `name` with a counter before its extension, for a name already taken: `photo.jpg`, 2 →
/// `photo (2).jpg`. Still at most [`MAX_NAME_BYTES`] bytes (the stem is shortened, never the
/// counter). `name` should come from [`sanitize`].
pub fn numbered(name: &str, n: u32) -> String {
    cap(name, &format!(" ({n})"))
}

/// Removes leading whitespace and trailing dots and whitespace.
fn trim_name(name: &str) -> &str {
    name.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// Unicode bidirectional formatting characters: they can make `exe.jpg` display as `gpj.exe`.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether Windows treats `name` as a device: the part before the first dot, trailing spaces
/// ignored, is a reserved name in any case.
fn is_windows_reserved(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name).trim_end();
    WINDOWS_RESERVED
        .iter()
        .any(|reserved| base.eq_ignore_ascii_case(reserved))
}

/// Splits `name` into stem and extension (with its dot). A leading dot (`.bashrc`) is not an
/// extension, nor is an overlong one.
fn split_extension(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES => name.split_at(dot),
        _ => (name, ""),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_to(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `stem ‖ suffix ‖ extension`, with the stem shortened so the whole fits in
/// [`MAX_NAME_BYTES`].
fn cap(name: &str, suffix: &str) -> String {
    let (stem, ext) = split_extension(name);
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len() + ext.len());
    let mut stem = truncate_to(stem, room);
    if stem.len() < name.len() - ext.len() {
        // Shortened: the cut may have left trailing dots or spaces mid-name.
        stem = stem.trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    }
    let stem = if stem.is_empty() && ext.is_empty() {
        FALLBACK_NAME
    } else {
        stem
    };
    format!("{stem}{suffix}{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components_are_stripped() {
        assert_eq!(sanitize("../../etc/passwd"), "passwd");
        assert_eq!(sanitize("/etc/shadow"), "shadow");
        assert_eq!(sanitize("C:\\x"), "x");
        assert_eq!(sanitize("..\\..\\Windows\\System32\\evil.dll"), "evil.dll");
        assert_eq!(sanitize("C:x"), "Cx");
        assert_eq!(sanitize("\\\\server\\share\\doc.txt"), "doc.txt");
        assert_eq!(sanitize("photos/"), "photos");
        assert_eq!(sanitize("a/b\\c/d.png"), "d.png");
    }

    #[test]
    fn empty_and_dot_names_fall_back() {
        for hostile in [
            "",
            ".",
            "..",
            "...",
            "/",
            "\\",
            "a/..",
            "../",
            " ",
            ". .",
            "\u{0}\u{1}",
        ] {
            assert_eq!(sanitize(hostile), FALLBACK_NAME, "{hostile:?}");
        }
    }

    #[test]
    fn forbidden_and_invisible_characters_are_removed() {
        assert_eq!(sanitize("a<b>c:d\"e|f?g*h"), "abcdefgh");
        assert_eq!(sanitize("a\u{0}b\nc\r\td\u{7f}e\u{9b}f"), "abcdef");
        assert_eq!(sanitize("invoice\u{202E}gpj.exe"), "invoicegpj.exe");
        assert_eq!(sanitize("x\u{2066}y\u{200F}z"), "xyz");
    }

    #[test]
    fn trailing_dots_and_spaces_are_trimmed() {
        assert_eq!(sanitize("name.  "), "name");
        assert_eq!(sanitize("report.pdf..."), "report.pdf");
        assert_eq!(sanitize("   lead.txt"), "lead.txt");
        assert_eq!(sanitize(".bashrc"), ".bashrc");
    }

    #[test]
    fn windows_device_names_are_defused() {
        assert_eq!(sanitize("CON"), "_CON");
        assert_eq!(sanitize("con.txt"), "_con.txt");
        assert_eq!(sanitize("Com1.log"), "_Com1.log");
        assert_eq!(sanitize("nul .tar.gz"), "_nul .tar.gz");
        assert_eq!(sanitize("lpt9"), "_lpt9");
        assert_eq!(sanitize("COM10"), "COM10");
        assert_eq!(sanitize("console.log"), "console.log");
        assert_eq!(sanitize("dir/aux"), "_aux");
    }

    #[test]
    fn unicode_is_kept() {
        assert_eq!(sanitize("résumé 日本語.pdf"), "résumé 日本語.pdf");
        assert_eq!(sanitize("🎉 party 🎉.gif"), "🎉 party 🎉.gif");
        assert_eq!(sanitize("Ünïcödé/名前.txt"), "名前.txt");
    }

    #[test]
    fn long_names_are_capped_on_a_char_boundary_keeping_the_extension() {
        let long = format!("{}.jpg", "a".repeat(300));
        let s = sanitize(&long);
        assert_eq!(s.len(), MAX_NAME_BYTES);
        assert!(s.ends_with("aaa.jpg"));

        // Two-byte characters: 255 is not a boundary, so 254 bytes of 'é' remain... minus the ext.
        let wide = format!("{}.png", "é".repeat(200));
        let s = sanitize(&wide);
        assert!(s.len() <= MAX_NAME_BYTES);
        assert!(s.ends_with("é.png"));
        assert_eq!(s.len(), 250 + 4);

        // Four-byte characters, no extension.
        let emoji = "🎉".repeat(100);
        let s = sanitize(&emoji);
        assert_eq!(s.len(), 252);
        assert!(s.chars().all(|c| c == '🎉'));

        // An overlong "extension" is not kept whole.
        let dotted = format!("x.{}", "y".repeat(300));
        let s = sanitize(&dotted);
        assert_eq!(s.len(), MAX_NAME_BYTES);
        assert!(s.starts_with("x.yyy"));

        // A cut that lands before dots or spaces does not leave them trailing.
        let spaced = format!("{} {}", "b".repeat(254), "c".repeat(10));
        assert_eq!(sanitize(&spaced), "b".repeat(254));
    }

    #[test]
    fn numbered_names_keep_extension_and_limit() {
        assert_eq!(numbered("photo.jpg", 1), "photo (1).jpg");
        assert_eq!(numbered("archive", 2), "archive (2)");
        assert_eq!(numbered(".bashrc", 3), ".bashrc (3)");
        assert_eq!(numbered("a.tar.gz", 1), "a.tar (1).gz");

        let long = sanitize(&format!("{}.jpg", "a".repeat(300)));
        let n = numbered(&long, 12);
        assert_eq!(n.len(), MAX_NAME_BYTES);
        assert!(n.ends_with("a (12).jpg"));
        assert_eq!(sanitize(&n), n, "a numbered name is itself sane");
    }
}
