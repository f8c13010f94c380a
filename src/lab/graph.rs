//! The lab's topology as a picture, like the article's figures: machines as boxes (hostname,
//! umid, each interface with its addresses), domains as ellipses, and the lab host on the domains
//! where it has an address.
//!
//! Two outputs: Graphviz DOT for people who have `dot`, and an SVG drawn here so that
//! `umldbg lab graph --format svg` needs nothing installed. The SVG layout is two rows (machines
//! above, domains below, the lab host under those) with domains ordered by the mean position of
//! the machines on them, which keeps chains such as A - R - B free of crossings.

use std::fmt::Write as _;

use umldbg_codec::xml::escape;

use super::spec::LabSpec;

/// The lab in Graphviz DOT (undirected): `m:<umid>` machine nodes, `d:<domain>` domain nodes,
/// a `host` node when any domain has a host address.
pub fn to_dot(lab: &LabSpec) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", dot_quote(&lab.name));
    let _ = writeln!(
        s,
        "  graph [label={}, labelloc=t];",
        dot_quote(&format!("lab {}", lab.name))
    );
    let _ = writeln!(s, "  node [fontname=\"Helvetica\"];");
    for m in &lab.machines {
        let mut label = format!("{}\n{}", m.hostname, m.umid);
        for i in &m.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
            let _ = write!(label, "\n{} {}", i.name, addrs.join(" "));
        }
        let id = dot_quote(&format!("m:{}", m.umid));
        let _ = writeln!(
            s,
            "  {id} [shape=box, label={}];",
            dot_quote(label.trim_end())
        );
    }
    for d in &lab.domains {
        let id = dot_quote(&format!("d:{}", d.name));
        let _ = writeln!(s, "  {id} [shape=ellipse, label={}];", dot_quote(&d.name));
    }
    let host_on: Vec<_> = lab
        .domains
        .iter()
        .filter(|d| d.host_address.is_some())
        .collect();
    if !host_on.is_empty() {
        let _ = writeln!(
            s,
            "  \"host\" [shape=box, style=dashed, label=\"lab host\"];"
        );
    }
    for m in &lab.machines {
        for i in &m.interfaces {
            let _ = writeln!(
                s,
                "  {} -- {} [label={}];",
                dot_quote(&format!("m:{}", m.umid)),
                dot_quote(&format!("d:{}", i.domain)),
                dot_quote(&i.name)
            );
        }
    }
    for d in host_on {
        let addr = d.host_address.map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(
            s,
            "  \"host\" -- {} [label={}];",
            dot_quote(&format!("d:{}", d.name)),
            dot_quote(&addr)
        );
    }
    s.push_str("}\n");
    s
}

fn dot_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const COL_W: f64 = 230.0;
const BOX_W: f64 = 200.0;
const LINE_H: f64 = 16.0;
const MARGIN: f64 = 20.0;
const TOP: f64 = 50.0;
const ROW_GAP: f64 = 90.0;
const RX: f64 = 80.0;
const RY: f64 = 20.0;

/// The lab as a standalone SVG document.
pub fn to_svg(lab: &LabSpec) -> String {
    let n_cols = lab.machines.len().max(lab.domains.len()).max(1) as f64;
    let width = 2.0 * MARGIN + n_cols * COL_W;
    let col_x = |i: usize, n: usize| {
        let row_w = n as f64 * COL_W;
        (width - row_w) / 2.0 + COL_W * (i as f64 + 0.5)
    };

    let box_h = |n_if: usize| 44.0 + LINE_H * n_if as f64;
    let max_box_h = lab
        .machines
        .iter()
        .map(|m| box_h(m.interfaces.len()))
        .fold(box_h(0), f64::max);
    let domain_y = TOP + max_box_h + ROW_GAP;
    let has_host = lab.domains.iter().any(|d| d.host_address.is_some());
    let host_y = domain_y + RY + ROW_GAP;
    let height = if has_host {
        host_y + 40.0 + MARGIN
    } else {
        domain_y + RY + MARGIN + 10.0
    };

    // Domains ordered by the mean column of their machines; unattached ones keep their order
    // at the end.
    let mut order: Vec<(f64, usize)> = lab
        .domains
        .iter()
        .enumerate()
        .map(|(di, d)| {
            let cols: Vec<f64> = lab
                .machines
                .iter()
                .enumerate()
                .filter(|(_, m)| m.interfaces.iter().any(|i| i.domain == d.name))
                .map(|(mi, _)| mi as f64)
                .collect();
            let key = if cols.is_empty() {
                f64::MAX
            } else {
                cols.iter().sum::<f64>() / cols.len() as f64
            };
            (key, di)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut domain_x = vec![0.0; lab.domains.len()];
    for (pos, (_, di)) in order.iter().enumerate() {
        domain_x[*di] = col_x(pos, lab.domains.len());
    }
    let domain_pos = |name: &str| {
        lab.domains
            .iter()
            .position(|d| d.name == name)
            .map(|di| domain_x[di])
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<title>lab {}</title>", escape(&lab.name));
    let _ = writeln!(
        s,
        "<rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{MARGIN}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">lab {}</text>",
        escape(&lab.name)
    );

    // Links first so that boxes and ellipses are drawn over their ends.
    for (mi, m) in lab.machines.iter().enumerate() {
        let cx = col_x(mi, lab.machines.len());
        let bottom = TOP + box_h(m.interfaces.len());
        let n = m.interfaces.len();
        for (ii, i) in m.interfaces.iter().enumerate() {
            let Some(dx) = domain_pos(&i.domain) else {
                continue;
            };
            let x1 = cx - BOX_W / 2.0 + BOX_W * (ii as f64 + 1.0) / (n as f64 + 1.0);
            let (x2, y2) = (dx, domain_y - RY);
            let _ = writeln!(
                s,
                "<line x1=\"{x1:.1}\" y1=\"{bottom:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#444\"/>"
            );
            let (lx, ly) = (
                x1 + (x2 - x1) * 0.18 + 4.0,
                bottom + (y2 - bottom) * 0.18 + 4.0,
            );
            let _ = writeln!(
                s,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" fill=\"#444\">{}</text>",
                escape(&i.name)
            );
        }
    }
    // Under the domains it is on, so that its links do not cross the picture.
    let host_xs: Vec<f64> = lab
        .domains
        .iter()
        .zip(&domain_x)
        .filter(|(d, _)| d.host_address.is_some())
        .map(|(_, x)| *x)
        .collect();
    let host_x = if host_xs.is_empty() {
        width / 2.0
    } else {
        let mean = host_xs.iter().sum::<f64>() / host_xs.len() as f64;
        mean.clamp(MARGIN + BOX_W / 2.0, width - MARGIN - BOX_W / 2.0)
    };
    for d in &lab.domains {
        let (Some(a), Some(dx)) = (d.host_address, domain_pos(&d.name)) else {
            continue;
        };
        let (y1, y2) = (domain_y + RY, host_y);
        let _ = writeln!(
            s,
            "<line x1=\"{dx:.1}\" y1=\"{y1:.1}\" x2=\"{host_x:.1}\" y2=\"{y2:.1}\" stroke=\"#444\" stroke-dasharray=\"4 3\"/>"
        );
        let (lx, ly) = ((dx + host_x) / 2.0 + 6.0, (y1 + y2) / 2.0);
        let _ = writeln!(
            s,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" fill=\"#444\">{a}</text>"
        );
    }

    for (mi, m) in lab.machines.iter().enumerate() {
        let cx = col_x(mi, lab.machines.len());
        let x = cx - BOX_W / 2.0;
        let h = box_h(m.interfaces.len());
        let _ = writeln!(s, "<g class=\"machine\">");
        let _ = writeln!(
            s,
            "<title>{} ({})</title>",
            escape(&m.hostname),
            escape(&m.umid)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{x:.1}\" y=\"{TOP:.1}\" width=\"{BOX_W:.0}\" height=\"{h:.0}\" rx=\"6\" \
             fill=\"#eef3fb\" stroke=\"#2b4c7e\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            TOP + 18.0,
            escape(&m.hostname)
        );
        let _ = writeln!(
            s,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            TOP + 34.0,
            escape(&m.umid)
        );
        for (ii, i) in m.interfaces.iter().enumerate() {
            let addrs: Vec<String> = i.addresses.iter().map(ToString::to_string).collect();
            let text = if addrs.is_empty() {
                i.name.clone()
            } else {
                format!("{} {}", i.name, addrs.join(" "))
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 8.0,
                TOP + 52.0 + LINE_H * ii as f64,
                escape(&text)
            );
        }
        let _ = writeln!(s, "</g>");
    }

    for (di, d) in lab.domains.iter().enumerate() {
        let cx = domain_x[di];
        let _ = writeln!(s, "<g class=\"domain\">");
        let _ = writeln!(s, "<title>domain {}</title>", escape(&d.name));
        let _ = writeln!(
            s,
            "<ellipse cx=\"{cx:.1}\" cy=\"{domain_y:.1}\" rx=\"{RX:.0}\" ry=\"{RY:.0}\" fill=\"#fdf3e1\" stroke=\"#9a6a1a\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            domain_y + 4.0,
            escape(&d.name)
        );
        let _ = writeln!(s, "</g>");
    }

    if has_host {
        let _ = writeln!(s, "<g class=\"host\">");
        let _ = writeln!(
            s,
            "<title>the lab host (inside the lab's network namespace)</title>"
        );
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{host_y:.1}\" width=\"{BOX_W:.0}\" height=\"30\" rx=\"6\" \
             fill=\"#f0f0f0\" stroke=\"#444\" stroke-dasharray=\"4 3\"/>",
            host_x - BOX_W / 2.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{host_x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">lab host</text>",
            host_y + 19.0
        );
        let _ = writeln!(s, "</g>");
    }
    s.push_str("</svg>\n");
    s
}
