//! The dashboard (`/ui`) and the evidence report's page: one style and one script, embedded in
//! the binary, so the page works offline (no CDN, no build step) and a report file needs
//! nothing beside it. The script writes every value from the API as text, never as markup.

use serde::Serialize;

const STYLE: &str = include_str!("../ui/linnet.css");
const SCRIPT: &str = include_str!("../ui/linnet.js");

/// What the pages may do: run their own inline script and style, and call this server only.
/// No frames (the controls cannot be clickjacked), no forms posting elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A whole page: `body` after the embedded style and script.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{STYLE}</style>\n<script>\n{SCRIPT}</script>\n</head>\n\
         <body>\n{body}\n</body>\n</html>\n",
        escape_html(title)
    )
}

/// The live dashboard.
pub fn dashboard() -> String {
    page(
        "Linnet",
        "<main id=\"app\"></main>\n<script>Linnet.dashboard(document.getElementById('app'));</script>",
    )
}

/// `v` as JSON that is safe inside a `<script>` element: no `<`, `>` or `&` can close it or
/// start markup, and the line separators JavaScript once rejected are escaped too.
pub fn script_json<T: Serialize>(v: &T) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(v)?;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_in_a_script_cannot_close_it() {
        let v = json!({"reason": "</script><script>alert(1)</script> & \u{2028}"});
        let s = script_json(&v).unwrap();
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s).unwrap(), v);
    }

    #[test]
    fn titles_are_text() {
        let p = page("a<b>\"c\"", "");
        assert!(p.contains("<title>a&lt;b&gt;&quot;c&quot;</title>"));
    }
}
