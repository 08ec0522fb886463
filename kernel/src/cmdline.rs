//! The kernel command line: space-separated `key=value` words (`-append`).

/// The value of `key`, if present (`key` alone counts as an empty value).
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_ascii_whitespace().find_map(|w| match w.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        None if w == key => Some(""),
        _ => None,
    })
}
