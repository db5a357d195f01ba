//! Every row of every generator, browsable: per row the instruction, the model's and the
//! reference's answers (Markdown rendered and sanitised, [`crate::markdown`]), the
//! preference, the judge's raw output, the lengths and the dataset; filters (outcome,
//! empty answers, dataset, length against the reference, generator) and a search box.
//!
//! The rows are collapsed `<details>` elements that read fine with scripts off (all rows
//! shown, the filter form hidden). [`SCRIPT`] is the page's only script, a fixed string
//! allowed by the Content-Security-Policy's hash ([`script_hash`]); it filters on `data-*`
//! attributes and reads filters from the address (`#filter:outcome=lost&dataset=koala`;
//! the keys are the form's field names: generator, outcome, dataset, size, q).

use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use herd_core::error_analysis::char_length;
use herd_core::formats::python_float_repr;

use crate::escape::escape;
use crate::{markdown, GeneratorReport, Report};

/// The filter script. Kept free of anything row-specific so that its hash is fixed.
pub const SCRIPT: &str = r#"
(function () {
  var form = document.getElementById('filters');
  if (!form) return;
  form.hidden = false;
  var rows = Array.prototype.slice.call(document.querySelectorAll('details.row'));
  var shown = document.getElementById('shown');
  function apply() {
    var g = form.generator.value, o = form.outcome.value, d = form.dataset.value;
    var l = form.size.value, q = form.q.value.trim().toLowerCase();
    var n = 0;
    rows.forEach(function (r) {
      var s = r.dataset;
      var ok = (!g || s.generator === g)
        && (!o || (o === 'empty' ? s.empty === '1' : s.outcome === o))
        && (!d || s.dataset === d)
        && (!l || s.size === l)
        && (!q || r.textContent.toLowerCase().indexOf(q) >= 0);
      r.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n + ' of ' + rows.length + ' rows';
    document.body.setAttribute('data-shown', String(n));
  }
  var hash = decodeURIComponent(location.hash.slice(1));
  if (hash.indexOf('filter:') === 0) {
    hash.slice(7).split('&').forEach(function (pair) {
      var at = pair.indexOf('=');
      var key = pair.slice(0, at), value = pair.slice(at + 1);
      if (at > 0 && form.elements[key]) form.elements[key].value = value;
    });
  }
  form.addEventListener('input', apply);
  form.addEventListener('submit', function (e) { e.preventDefault(); });
  apply();
})();
"#;

/// `sha256-…` of [`SCRIPT`], for the page's Content-Security-Policy.
pub fn script_hash() -> String {
    let digest = Sha256::digest(SCRIPT.as_bytes());
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

/// What the judge decided on a row, as the filters name it.
fn outcome(preference: Option<f64>) -> &'static str {
    match herd_core::metrics::preferences::counted_preference(preference) {
        None => "unparsed",
        Some(p) if p < 1.5 => "lost",
        Some(p) if p > 1.5 => "won",
        Some(_) => "tied",
    }
}

/// The "All rows" section: the filter form, then each generator's rows.
pub fn section(page: &mut String, report: &Report) {
    let total: usize = report.generators.iter().map(|g| g.annotations.len()).sum();
    let _ = writeln!(page, "<h2 id=\"rows\">All rows</h2>");
    page.push_str(
        "<p class=\"note\">Every judged row. Answers are rendered from Markdown and sanitised \
         (no script, no remote content). Lost: the judge preferred the reference \
         (preference below 1.5); won: above; tied: 1.5.</p>\n",
    );
    let mut datasets: Vec<&str> = report
        .generators
        .iter()
        .flat_map(|g| g.annotations.iter().map(|a| a.dataset.as_str()))
        .collect();
    datasets.sort_unstable();
    datasets.dedup();
    page.push_str("<form id=\"filters\" class=\"filters\" hidden>\n");
    page.push_str("<label>generator <select name=\"generator\"><option value=\"\">all</option>");
    for g in &report.generators {
        let _ = write!(page, "<option>{}</option>", escape(&g.name));
    }
    page.push_str("</select></label>\n");
    page.push_str(
        "<label>outcome <select name=\"outcome\"><option value=\"\">all</option>\
         <option value=\"lost\">lost</option><option value=\"won\">won</option>\
         <option value=\"tied\">tied</option><option value=\"unparsed\">unparsed</option>\
         <option value=\"empty\">empty answer</option></select></label>\n",
    );
    page.push_str("<label>dataset <select name=\"dataset\"><option value=\"\">all</option>");
    for d in &datasets {
        let _ = write!(page, "<option>{}</option>", escape(d));
    }
    page.push_str("</select></label>\n");
    page.push_str(
        "<label>length <select name=\"size\"><option value=\"\">any</option>\
         <option value=\"shorter\">shorter than the reference</option>\
         <option value=\"longer\">longer than the reference</option></select></label>\n",
    );
    let _ = writeln!(
        page,
        "<label>search <input type=\"search\" name=\"q\" placeholder=\"instruction or answer text\"></label>\n\
         <span id=\"shown\" class=\"meta\">{total} of {total} rows</span>\n</form>"
    );
    for (gi, g) in report.generators.iter().enumerate() {
        generator_rows(page, gi, g);
    }
}

fn generator_rows(page: &mut String, gi: usize, g: &GeneratorReport) {
    let _ = writeln!(
        page,
        "<section class=\"rows\">\n<h3>{} <span class=\"meta\">· {} rows</span></h3>",
        escape(&g.name),
        g.annotations.len()
    );
    for (row, a) in g.annotations.iter().enumerate() {
        let result = outcome(a.preference);
        let (model_len, reference_len) = (char_length(&a.output_2), char_length(&a.output_1));
        let empty = a.output_2.trim().is_empty();
        let preference = a.preference.map(python_float_repr).unwrap_or_else(|| "null".into());
        let preview: String = a.instruction.chars().take(110).collect();
        let _ = write!(
            page,
            "<details class=\"row {result}\" id=\"g{gi}-row-{row}\" data-generator=\"{}\" data-outcome=\"{result}\" \
             data-empty=\"{}\" data-dataset=\"{}\" data-size=\"{}\">\n\
             <summary><span class=\"tag {result}\">{result}</span> <span class=\"meta\">#{row} · {} · preference {preference} · \
             {model_len} / {reference_len} chars{}</span> {}</summary>\n",
            escape(&g.name),
            u8::from(empty),
            escape(&a.dataset),
            if model_len > reference_len { "longer" } else { "shorter" },
            escape(&a.dataset),
            if empty { " · empty answer" } else { "" },
            escape(&preview),
        );
        let _ = write!(
            page,
            "<div class=\"label\">Instruction</div><pre class=\"instruction\">{}</pre>\n\
             <div class=\"pair\"><div><div class=\"label\">Model output · {}</div><div class=\"answer\">{}</div></div>\
             <div><div class=\"label\">Reference output · {}</div><div class=\"answer\">{}</div></div></div>\n",
            escape(&a.instruction),
            escape(&a.generator_2),
            if empty { "<p class=\"muted\">(empty)</p>".to_string() } else { markdown::render(&a.output_2) },
            escape(&a.generator_1),
            markdown::render(&a.output_1),
        );
        if let Some(raw) = a.raw_completion_text() {
            let _ = writeln!(
                page,
                "<div class=\"label\">Judge's raw output · {}</div><pre>{}</pre>",
                escape(&a.annotator),
                escape(&raw)
            );
        }
        page.push_str("</details>\n");
    }
    page.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_preference() {
        assert_eq!(outcome(Some(1.0)), "lost");
        assert_eq!(outcome(Some(1.2)), "lost");
        assert_eq!(outcome(Some(1.5)), "tied");
        assert_eq!(outcome(Some(0.0)), "tied");
        assert_eq!(outcome(Some(1.9)), "won");
        assert_eq!(outcome(None), "unparsed");
        assert_eq!(outcome(Some(f64::NAN)), "unparsed");
        assert_eq!(outcome(Some(2.5)), "unparsed");
    }

    #[test]
    fn the_script_hash_is_base64_sha256() {
        let hash = script_hash();
        assert!(hash.starts_with("sha256-") && hash.len() == 7 + 44, "{hash}");
    }
}
