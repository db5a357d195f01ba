//! Model and reference answers as HTML: Markdown rendered (pulldown-cmark), then
//! sanitised (ammonia). Model text is untrusted: raw HTML in it is filtered to a safe
//! subset, scripts and styles are dropped with their content, nothing that fetches
//! (images, media, frames) survives, and links may only be http(s) or mailto, opening with
//! `noopener noreferrer`. The page's Content-Security-Policy is a second wall.

use std::collections::HashSet;
use std::sync::OnceLock;

use pulldown_cmark::{html, Options, Parser};

/// `text` (Markdown) as sanitised HTML.
pub fn render(text: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut unsafe_html = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(text, options));
    sanitizer().clean(&unsafe_html).to_string()
}

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static SANITIZER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    SANITIZER.get_or_init(|| {
        let mut builder = ammonia::Builder::default();
        // Tags that would fetch something as the page loads.
        builder.rm_tags(["img", "picture", "source", "audio", "video", "track", "map", "area"]);
        builder.url_schemes(HashSet::from(["http", "https", "mailto"]));
        builder.link_rel(Some("noopener noreferrer nofollow"));
        builder.add_tag_attributes("input", ["type", "checked", "disabled"]);
        builder.add_tags(["input"]);
        builder
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_hostile_html_is_made_inert() {
        let html =
            render("# Title\n\n**bold** and `code`\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |");
        assert!(html.contains("<h1>Title</h1>") && html.contains("<strong>bold</strong>"));
        assert!(html.contains("<li>a</li>") && html.contains("<table>"));

        let hostile = render(
            "hi <script>alert(1)</script><img src=\"http://evil.example/x.png\" onerror=\"alert(2)\">\n\n\
             ![remote](http://evil.example/y.png) [click](javascript:alert(3)) \
             <a href=\"https://ok.example\" onclick=\"alert(4)\">ok</a>\
             <iframe src=\"http://evil.example\"></iframe><style>body{display:none}</style>",
        );
        for bad in [
            "<script",
            "alert(1)",
            "<img",
            "evil.example",
            "onerror",
            "javascript:",
            "onclick",
            "<iframe",
            "<style",
            "display:none",
        ] {
            assert!(!hostile.contains(bad), "{bad} survived: {hostile}");
        }
        assert!(hostile.contains("href=\"https://ok.example\""), "{hostile}");
        assert!(hostile.contains("rel=\"noopener noreferrer nofollow\""), "{hostile}");
    }
}
