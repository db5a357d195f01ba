//! report.html in a real browser (Debian's Chromium, headless; scripts/test-services.sh
//! installs it): every row is on the page, the filters show what they say (driven through
//! the address, `#filter:…`), the page reads with scripts off, and a model answer holding a
//! script, an image and event handlers stays inert (no script runs, nothing is fetched).

use std::path::{Path, PathBuf};
use std::process::Command;

use herd_core::formats::{read_annotations, write_annotations, Annotation};
use herd_report::{build_report, ReportOptions};

const CHROMIUM: &str = "chromium";

fn oracle(model: &str) -> PathBuf {
    std::env::var_os("HERD_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("data/oracle/results")
        .join(model)
        .join("weighted_alpaca_eval_gpt4_turbo/annotations.json.gz")
}

/// The DOM after load.
fn dump_dom(page: &Path, fragment: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(CHROMIUM);
    command
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--virtual-time-budget=10000")
        .arg("--dump-dom");
    let url = format!("file://{}{fragment}", page.display());
    let out = command.arg(&url).output().unwrap_or_else(|e| {
        panic!("cannot run {CHROMIUM} (scripts/test-services.sh installs it): {e}")
    });
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `data-shown` count the filter script puts on `<body>`.
fn shown(dom: &str) -> usize {
    let at = dom.find("data-shown=\"").expect("the filter script ran") + "data-shown=\"".len();
    dom[at..].split('"').next().unwrap().parse().unwrap()
}

/// Whether `needle` occurs inside a tag (`<name …>`) rather than in text (where `<` is
/// serialised as `&lt;`).
fn in_a_tag(dom: &str, needle: &str) -> bool {
    dom.split('<').skip(1).any(|rest| rest.split('>').next().unwrap_or("").contains(needle))
}

/// Rows (`<details class="row …">`) the filters hid.
fn hidden_rows(dom: &str) -> usize {
    dom.split("<details class=\"row ")
        .skip(1)
        .filter(|rest| rest.split('>').next().unwrap_or("").contains(" hidden"))
        .count()
}

const HOSTILE: &str = "Sure!<script>document.title='pwned-script'</script>\
<img src=\"http://127.0.0.1:9/tracker.png\" onerror=\"document.title='pwned-img'\">\n\n\
![remote](http://127.0.0.1:9/remote.png) <a href=\"javascript:document.title='pwned-link'\">x</a>\
<svg onload=\"document.title='pwned-svg'\"></svg>";

/// alpaca-7b's 805 rows and 20 rows of claude-2.1, the first answer made hostile.
fn report_dir() -> (tempfile::TempDir, PathBuf, Vec<Annotation>, Vec<Annotation>) {
    let dir = tempfile::tempdir().unwrap();
    let big = read_annotations(oracle("alpaca-7b")).unwrap();
    let mut small = read_annotations(oracle("claude-2.1")).unwrap();
    small.truncate(20);
    small[0].output_2 = HOSTILE.into();
    let small_path = dir.path().join("claude-small").join("annotations.json");
    std::fs::create_dir_all(small_path.parent().unwrap()).unwrap();
    write_annotations(&small_path, &small).unwrap();
    let report =
        build_report(&[oracle("alpaca-7b"), small_path], &ReportOptions::default()).unwrap();
    let out = dir.path().join("out");
    report.files().write_to(&out).unwrap();
    let page = out.join("report.html");
    (dir, page, big, small)
}

#[test]
fn every_row_is_browsable_and_the_filters_show_what_they_say() {
    let (_dir, page, big, small) = report_dir();
    let total = big.len() + small.len();

    let dom = dump_dom(&page, "");
    assert_eq!(dom.matches("<details class=\"row ").count(), total);
    assert_eq!(shown(&dom), total);
    assert!(dom.contains(&format!("{total} of {total} rows")));
    assert!(
        !dom.contains("<form id=\"filters\" class=\"filters\" hidden"),
        "the script shows the filters"
    );

    let lost = big.iter().filter(|a| a.preference.is_some_and(|p| p < 1.5)).count();
    let dom = dump_dom(&page, "#filter:generator=alpaca-7b&outcome=lost");
    assert_eq!(shown(&dom), lost);
    assert_eq!(hidden_rows(&dom), total - lost, "the other rows are hidden");

    let koala = big.iter().chain(&small).filter(|a| a.dataset == "koala").count();
    assert!(koala > 0);
    let dom = dump_dom(&page, "#filter:dataset=koala");
    assert_eq!(shown(&dom), koala);

    let longer =
        small.iter().filter(|a| a.output_2.chars().count() > a.output_1.chars().count()).count();
    let dom = dump_dom(&page, "#filter:generator=claude-2.1&size=longer");
    assert_eq!(shown(&dom), longer);
}

/// Chromium's --dump-dom needs scripting on, so "scripts off" is made the way a browser
/// would block them anyway: the page's Content-Security-Policy hash no longer matches its
/// script. That also shows the policy is enforced.
#[test]
fn the_page_reads_with_its_script_blocked() {
    let (dir, page, big, small) = report_dir();
    let html = std::fs::read_to_string(&page).unwrap();
    let blocked = dir.path().join("blocked.html");
    let at = html.find("script-src 'sha256-").unwrap() + "script-src 'sha256-".len();
    std::fs::write(&blocked, format!("{}AAAA{}", &html[..at], &html[at + 4..])).unwrap();
    let dom = dump_dom(&blocked, "#filter:outcome=lost");
    assert!(!dom.contains("data-shown=\""), "the script did not run");
    assert_eq!(dom.matches("<details class=\"row ").count(), big.len() + small.len());
    assert_eq!(hidden_rows(&dom), 0, "no row hidden");
    assert!(
        dom.contains("<form id=\"filters\" class=\"filters\" hidden"),
        "no dead controls shown"
    );
}

#[test]
fn a_hostile_model_answer_stays_inert() {
    let (_dir, page, _, _) = report_dir();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<script").count(), 1, "only the page's own filter script");
    let dom = dump_dom(&page, "");
    assert!(dom.contains("<title>herd · AlpacaEval report</title>"), "the title was not rewritten");
    assert_eq!(dom.matches("<script").count(), 1, "no script element of the answer's");
    for attribute in [" onerror=", " onload=", "javascript:", " src="] {
        assert!(!in_a_tag(&dom, attribute), "{attribute} in an element of the page");
    }
    assert!(!dom.contains("<img") && !in_a_tag(&dom, "127.0.0.1:9"), "nothing to fetch");
    assert!(dom.contains("Sure!"), "the answer's text is shown");
}
