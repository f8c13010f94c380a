//! Journeys as an SVG sequence diagram: one vertical lane per machine, one row per hit (time
//! runs down; rows are spaced evenly and carry the time since the packet's first hit), an arrow
//! where the packet passes from one machine to the next.

use std::fmt::Write as _;

use umldbg_codec::xml::escape;

use crate::trace::flow::Journey;

const LANE_W: usize = 260;
const ROW_H: usize = 20;
const TOP: usize = 50;
const LEFT: usize = 40;

/// Width in pixels of `chars` characters of the 12-pixel monospace font (0.6 em each).
fn text_w(chars: usize) -> usize {
    (chars * 36).div_ceil(5)
}

/// A step's label: its function and, at the end of the story, how it ended.
fn label(s: &crate::trace::flow::Step) -> String {
    match &s.end {
        Some(e) => format!("{} => {e}", s.function),
        None => s.function.clone(),
    }
}

/// Draws the journeys (at most `max`) with the lanes in `lanes` order (others appended).
pub fn render(journeys: &[Journey], lanes: &[String], max: usize) -> String {
    let mut lanes: Vec<String> = lanes.to_vec();
    for j in journeys.iter().take(max) {
        for s in &j.steps {
            if !lanes.contains(&s.machine) {
                lanes.push(s.machine.clone());
            }
        }
    }
    let x = |m: &str| LEFT + LANE_W / 2 + LANE_W * lanes.iter().position(|l| l == m).unwrap_or(0);
    let rows: usize = journeys.iter().take(max).map(|j| j.steps.len() + 2).sum();
    // Every label inside the picture: the lanes' width, or the right end of the longest label.
    let mut right = LEFT * 2 + LANE_W * lanes.len().max(1);
    for (n, j) in journeys.iter().take(max).enumerate() {
        let title = j.steps.first().map_or(0, |s| s.packet.chars().count());
        right = right.max(LEFT + text_w(title + format!("packet {}: ", n + 1).len()) + LEFT);
        for s in &j.steps {
            right = right.max(x(&s.machine) + 8 + text_w(label(s).chars().count() + 12) + 10);
        }
    }
    let width = right;
    let height = TOP + ROW_H * (rows + 1) + 20;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#c0392b"/></marker></defs>"##
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    for l in &lanes {
        let lx = x(l);
        let _ = writeln!(
            out,
            r#"<text x="{lx}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            TOP - 20,
            escape(l)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{lx}" y1="{}" x2="{lx}" y2="{}" stroke="#888" stroke-dasharray="4,3"/>"##,
            TOP - 10,
            height - 10
        );
    }
    let mut row = 0usize;
    for (n, j) in journeys.iter().take(max).enumerate() {
        let y = TOP + ROW_H * row + ROW_H / 2;
        let title = j.steps.first().map(|s| s.packet.as_str()).unwrap_or("");
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{y}" fill="#2c3e50">packet {}: {}</text>"##,
            n + 1,
            escape(title)
        );
        row += 1;
        let t0 = j.steps.first().map_or(0, |s| s.time_ns);
        let mut prev: Option<(usize, usize)> = None;
        for s in &j.steps {
            let y = TOP + ROW_H * row + ROW_H / 2;
            let sx = x(&s.machine);
            if let Some((px, py)) = prev {
                if px != sx {
                    let _ = writeln!(
                        out,
                        r##"<line x1="{px}" y1="{py}" x2="{sx}" y2="{y}" stroke="#c0392b" stroke-width="1.5" marker-end="url(#arrow)"/>"##
                    );
                } else {
                    let _ = writeln!(
                        out,
                        r##"<line x1="{px}" y1="{py}" x2="{sx}" y2="{y}" stroke="#2980b9" stroke-width="2"/>"##
                    );
                }
            }
            let dt = s.time_ns.saturating_sub(t0) as f64 / 1e3;
            let _ = writeln!(
                out,
                r##"<circle cx="{sx}" cy="{y}" r="4" fill="#2980b9"/>"##
            );
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}">{} <tspan fill="#7f8c8d">+{dt:.1}us</tspan></text>"##,
                sx + 8,
                y + 4,
                escape(&label(s))
            );
            prev = Some((sx, y));
            row += 1;
        }
        row += 1;
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::flow::{PacketKey, Step};

    #[test]
    fn draws_lanes_and_arrows() {
        let step = |m: &str, f: &str, t: u64| Step {
            tsc: t,
            time_ns: t as u128,
            machine: m.into(),
            function: f.into(),
            packet: "a > b".into(),
            end: None,
        };
        let j = Journey {
            key: PacketKey {
                ip_id: 1,
                protocol: 1,
                tot_len: 84,
                icmp_type: Some(8),
            },
            steps: vec![
                step("A", "ip_output", 0),
                step("R", "ip_rcv", 1000),
                step("B", "ip_rcv", 2000),
            ],
        };
        let svg = render(&[j], &["A".into(), "R".into(), "B".into()], 10);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("marker-end").count(), 2);
        assert!(svg.contains(">ip_rcv <tspan"));
        assert!(svg.contains("&gt; b"));
    }

    #[test]
    fn every_label_fits_inside_the_picture() {
        let long = "a_very_long_function_name_that_runs_far_past_its_lane";
        let j = Journey {
            key: PacketKey {
                ip_id: 1,
                protocol: 1,
                tot_len: 84,
                icmp_type: Some(8),
            },
            steps: vec![Step {
                tsc: 0,
                time_ns: 0,
                machine: "B".into(),
                function: long.into(),
                packet:
                    "192.168.10.2 > 192.168.20.2 ICMP echo-request id 1 seq 1 ip-id 7 ttl 64 len 84"
                        .into(),
                end: Some("dropped: NETFILTER_DROP".into()),
            }],
        };
        let svg = render(&[j], &["A".into(), "R".into(), "B".into()], 10);
        let width: usize = svg
            .split("width=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        let lane_b = LEFT + LANE_W / 2 + LANE_W * 2;
        let chars = long.len() + " => dropped: NETFILTER_DROP".len() + " +0.0us".len();
        assert!(width >= lane_b + 8 + text_w(chars), "{width}");
    }
}
