//! The topology pictures: DOT and hand-drawn SVG.

use std::path::Path;

use umldbg::lab::builtin::article_lab;
use umldbg::lab::graph::{to_dot, to_svg};
use umldbg::lab::kathara;
use umldbg::lab::spec::LabSpec;

/// Checks that every tag is closed in order (the SVG has no comments, CDATA or processing
/// instructions) and returns the number of elements.
fn balanced(svg: &str) -> usize {
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else {
            elements += 1;
            if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_owned();
                stack.push(name);
            }
        }
        // Text between tags must not hold a raw '&' that is not an entity or a stray '>'.
        let next = rest[end + 1..]
            .find('<')
            .map_or(rest.len(), |i| i + end + 1);
        let text = &rest[end + 1..next];
        assert!(!text.contains('>'), "stray '>' in text {text:?}");
        for (i, _) in text.match_indices('&') {
            let ent = &text[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "raw '&' in text {text:?}"
            );
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    elements
}

fn names_everything(out: &str, lab: &LabSpec) {
    for m in &lab.machines {
        assert!(out.contains(&m.umid), "{} missing", m.umid);
        assert!(out.contains(&m.hostname), "{} missing", m.hostname);
        for i in &m.interfaces {
            for a in &i.addresses {
                assert!(out.contains(&a.to_string()), "{a} missing");
            }
        }
    }
    for d in &lab.domains {
        assert!(out.contains(&d.name), "{} missing", d.name);
    }
}

#[test]
fn svg_is_balanced_and_names_every_machine_and_domain() {
    let lab = article_lab();
    let svg = to_svg(&lab);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(balanced(&svg) > 20);
    names_everything(&svg, &lab);
    assert!(svg.contains("lab host"), "the host sits on uplink");
    assert!(svg.contains("192.168.30.1/24"));
    assert_eq!(svg.matches("<g class=\"machine\">").count(), 3);
    assert_eq!(svg.matches("<g class=\"domain\">").count(), 3);
}

#[test]
fn svg_escapes_markup_in_names() {
    let mut lab = article_lab();
    lab.name = "a<b>&\"c\"".into();
    let svg = to_svg(&lab);
    balanced(&svg);
    assert!(svg.contains("a&lt;b&gt;&amp;&quot;c&quot;"));
}

#[test]
fn svg_of_a_kathara_lab_without_host() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lab/kathara-two");
    let lab = kathara::load_dir(&dir).unwrap().spec;
    let svg = to_svg(&lab);
    balanced(&svg);
    names_everything(&svg, &lab);
    assert!(!svg.contains("lab host"));
}

#[test]
fn dot_names_every_machine_domain_and_link() {
    let lab = article_lab();
    let dot = to_dot(&lab);
    assert!(dot.starts_with("graph \"article\" {"));
    assert!(dot.trim_end().ends_with('}'));
    names_everything(&dot, &lab);
    assert!(dot.contains("\"m:router-uml-R\" -- \"d:uplink\" [label=\"eth1\"];"));
    assert!(dot.contains("\"host\" -- \"d:uplink\" [label=\"192.168.30.1/24\"];"));
    // Every machine interface is one edge, plus the host's.
    assert_eq!(dot.matches(" -- ").count(), 5 + 1);
}

#[test]
fn dot_quotes_odd_names() {
    let mut lab = article_lab();
    lab.machines[0].hostname = "say \"hi\"\\".into();
    let dot = to_dot(&lab);
    assert!(dot.contains("say \\\"hi\\\"\\\\"), "{dot}");
}

#[test]
fn empty_lab_still_draws() {
    let lab = LabSpec {
        name: "empty".into(),
        machines: vec![],
        domains: vec![],
        shared_folder: None,
    };
    balanced(&to_svg(&lab));
    assert!(to_dot(&lab).contains("graph \"empty\""));
}
