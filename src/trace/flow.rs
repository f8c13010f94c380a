//! A packet's journey through several machines: the hits of each machine's trace matched by the
//! IPv4 identification and what NAT leaves alone, in the order of the host's time stamp counter
//! (one clock for every machine of a lab, since they all run on this host).
//!
//! [`Journeys`] is the matching, fed hit by hit (no I/O); [`run`] traces the machines of a lab,
//! one thread each, and feeds it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use crate::trace::hit::{Hit, Summary, clock_text, packet_line};
use crate::trace::session::{self, Notice, TraceError, TraceOptions};

/// What stays the same for one IPv4 packet from hop to hop, NAT included: addresses and ports
/// may be rewritten, the identification, protocol and length are not (ICMP: its type too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PacketKey {
    pub ip_id: u16,
    pub protocol: u8,
    pub tot_len: u16,
    pub icmp_type: Option<u8>,
}

impl PacketKey {
    pub fn of(hit: &Hit) -> Option<PacketKey> {
        let p = &hit.skb.as_ref()?.packet;
        let ip = p.ipv4.as_ref()?;
        Some(PacketKey {
            ip_id: ip.id,
            protocol: ip.protocol,
            tot_len: ip.tot_len,
            icmp_type: p.icmp.as_ref().map(|i| i.icmp_type),
        })
    }
}

/// One stop of a packet.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub tsc: u64,
    pub time_ns: u128,
    pub machine: String,
    pub function: String,
    /// The packet as this machine saw it (addresses after NAT differ).
    pub packet: String,
    /// Where the packet's story ends on this machine: `dropped: REASON` or `freed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// One packet's hits, in time order.
#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    pub key: PacketKey,
    pub steps: Vec<Step>,
}

impl Journey {
    pub fn machines(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for s in &self.steps {
            if v.last() != Some(&s.machine.as_str()) {
                v.push(&s.machine);
            }
        }
        v
    }

    pub fn text(&self, n: usize) -> String {
        let first = self.steps.first();
        let mut out = format!(
            "packet {n}: {}\n",
            first.map(|s| s.packet.as_str()).unwrap_or("")
        );
        let t0 = first.map_or(0, |s| s.time_ns);
        let w = self
            .steps
            .iter()
            .map(|s| s.machine.len())
            .max()
            .unwrap_or(0);
        let mut last_packet = first.map(|s| s.packet.clone()).unwrap_or_default();
        for s in &self.steps {
            let dt = (s.time_ns.saturating_sub(t0)) as f64 / 1e9;
            let _ = write!(
                out,
                "  {} +{dt:.6}  {:<w$}  {}",
                clock_text(s.time_ns),
                s.machine,
                s.function
            );
            if s.packet != last_packet {
                // Rewritten on the way (NAT, TTL): show what changed hands.
                let _ = write!(out, "  [{}]", s.packet);
                last_packet = s.packet.clone();
            }
            if let Some(e) = &s.end {
                let _ = write!(out, "  => {e}");
            }
            out.push('\n');
        }
        out
    }
}

/// Hits of one packet further apart than this belong to different packets with the same id.
const SAME_PACKET: Duration = Duration::from_secs(2);

/// Matches hits into journeys.
#[derive(Debug, Default)]
pub struct Journeys {
    open: BTreeMap<PacketKey, Vec<usize>>,
    all: Vec<Journey>,
}

impl Journeys {
    pub fn add(&mut self, hit: &Hit) {
        let Some(key) = PacketKey::of(hit) else {
            return;
        };
        let step = Journeys::step(hit);
        self.add_step(key, step, hit.time_ns);
    }

    fn step(hit: &Hit) -> Step {
        Step {
            tsc: hit.tsc,
            time_ns: hit.time_ns,
            machine: hit.machine.clone(),
            function: hit.function.clone(),
            packet: hit.skb.as_ref().map(packet_line_no_dev).unwrap_or_default(),
            end: match (&hit.end, &hit.reason) {
                (Some(e), Some(r)) => Some(format!("{e}: {r}")),
                (Some(e), None) => Some(e.clone()),
                _ => None,
            },
        }
    }

    fn add_step(&mut self, key: PacketKey, step: Step, time_ns: u128) {
        let window = SAME_PACKET.as_nanos();
        let found = self.open.get(&key).and_then(|v| {
            v.iter().rev().copied().find(|&i| {
                let j = &self.all[i];
                j.steps.iter().any(|s| s.time_ns.abs_diff(time_ns) < window)
            })
        });
        match found {
            Some(i) => self.all[i].steps.push(step),
            None => {
                self.all.push(Journey {
                    key,
                    steps: vec![step],
                });
                self.open.entry(key).or_default().push(self.all.len() - 1);
            }
        }
    }

    /// Every journey, steps in TSC order, journeys in order of their first step.
    pub fn finish(mut self) -> Vec<Journey> {
        for j in &mut self.all {
            j.steps.sort_by_key(|s| s.tsc);
        }
        self.all
            .sort_by_key(|j| j.steps.first().map_or(0, |s| s.tsc));
        self.all
    }
}

/// The stories of selected packets (hits that carry a packet number: a trace with a filter
/// follows each packet by address on each machine) joined across machines: one machine's
/// story is one piece, and pieces with the same IPv4 identification, protocol and length (what
/// a forwarded packet keeps, NAT included) within [`SAME_PACKET`] are one journey.
#[derive(Debug, Default)]
pub struct Stories {
    pieces: BTreeMap<(String, u64), Piece>,
}

/// One machine's hits of one selected packet, each with its key if its IPv4 header decoded.
type Piece = Vec<(Step, Option<PacketKey>)>;

impl Stories {
    pub fn add(&mut self, hit: &Hit) {
        let Some(n) = hit.packet else { return };
        let step = Journeys::step(hit);
        self.pieces
            .entry((hit.machine.clone(), n))
            .or_default()
            .push((step, PacketKey::of(hit)));
    }

    /// Every journey, steps in TSC order, journeys in order of their first step.
    pub fn finish(self) -> Vec<Journey> {
        let mut pieces: Vec<(Option<PacketKey>, Vec<Step>)> = self
            .pieces
            .into_values()
            .map(|mut v| {
                v.sort_by_key(|(s, _)| s.tsc);
                // The key once the IP header is complete (a packet being built has no length
                // or identification yet).
                let key = v
                    .iter()
                    .rev()
                    .filter_map(|(_, k)| *k)
                    .find(|k| k.tot_len > 0)
                    .or_else(|| v.iter().find_map(|(_, k)| *k));
                (key, v.into_iter().map(|(s, _)| s).collect())
            })
            .collect();
        pieces.sort_by_key(|(_, v)| v.first().map_or(0, |s| s.tsc));
        let window = SAME_PACKET.as_nanos();
        let mut out: Vec<Journey> = Vec::new();
        for (key, steps) in pieces {
            let first = steps.first().map_or(0, |s| s.time_ns);
            let joined = key.and_then(|k| {
                out.iter_mut().rev().find(|j| {
                    j.key == k
                        && j.steps
                            .last()
                            .is_some_and(|l| l.time_ns.abs_diff(first) < window)
                })
            });
            match joined {
                Some(j) => {
                    j.steps.extend(steps);
                    j.steps.sort_by_key(|s| s.tsc);
                }
                None => out.push(Journey {
                    key: key.unwrap_or(PacketKey {
                        ip_id: 0,
                        protocol: 0,
                        tot_len: 0,
                        icmp_type: None,
                    }),
                    steps,
                }),
            }
        }
        out
    }
}

fn packet_line_no_dev(v: &crate::net::skb::SkbView) -> String {
    let s = packet_line(v);
    match s.rfind(" dev ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The default functions along the IPv4 path (those a machine lacks are skipped). Both `ip_rcv`
/// and `ip_rcv_core`: drivers that hand packets up in lists (NAPI, as UML's vector driver does)
/// reach `ip_rcv_core` through `ip_list_rcv` and never call `ip_rcv`.
pub const DEFAULT_FUNCTIONS: &[&str] = &[
    "ip_output",
    "__dev_queue_xmit",
    "ip_rcv",
    "ip_rcv_core",
    "ip_forward",
    "ip_local_deliver",
    "nf_hook_slow",
    "reject_tg",
];

#[derive(Debug, Clone)]
pub struct FlowOptions {
    /// (umid, label) of each machine.
    pub machines: Vec<(String, String)>,
    pub functions: Vec<String>,
    pub duration: Option<Duration>,
    pub uml_dir: PathBuf,
    pub cache: PathBuf,
}

/// What a flow run gives.
#[derive(Debug)]
pub struct FlowResult {
    pub journeys: Vec<Journey>,
    pub summaries: Vec<Summary>,
    pub errors: Vec<String>,
}

/// Traces every machine at once (a thread each) until the duration ends or Ctrl-C; `notice`
/// hears the machines' warnings, and [`Notice::Ready`] when all are tracing.
pub fn run(opts: &FlowOptions, notice: &mut dyn FnMut(Notice)) -> Result<FlowResult, TraceError> {
    let options: Vec<TraceOptions> = opts
        .machines
        .iter()
        .map(|(umid, label)| {
            let mut to = TraceOptions::new(umid, opts.uml_dir.clone(), opts.cache.clone());
            to.label = Some(label.clone());
            to.functions = opts.functions.clone();
            to.skip_missing = true;
            to.skb = true;
            to.duration = opts.duration;
            to
        })
        .collect();
    let mut journeys = Journeys::default();
    let mut sink = |h: &Hit| {
        journeys.add(h);
        Ok(())
    };
    let (summaries, errors) = run_traces(&options, notice, &mut sink);
    Ok(FlowResult {
        journeys: journeys.finish(),
        summaries,
        errors,
    })
}

/// Runs one trace per machine, each on a thread of its own; `sink` gets every hit on the
/// calling thread, in the order they arrive; `notice` the machines' warnings, and one
/// [`Notice::Ready`] when all are tracing. One machine's failure stops the others. Returns the
/// summaries of the traces that ran and the errors.
pub fn run_traces(
    options: &[TraceOptions],
    notice: &mut dyn FnMut(Notice),
    sink: &mut dyn FnMut(&Hit) -> Result<(), session::SinkError>,
) -> (Vec<Summary>, Vec<String>) {
    /// What a machine's thread tells the caller's thread before the hits flow.
    enum Early {
        Notice(Notice),
        Failed(String),
    }
    let (tx, rx) = mpsc::channel::<Hit>();
    let (rtx, rrx) = mpsc::channel::<Early>();
    let mut handles = Vec::new();
    for to in options {
        let to = to.clone();
        let tx = tx.clone();
        let rtx = rtx.clone();
        handles.push(std::thread::spawn(move || {
            let mut notice = |n: Notice| {
                let _ = rtx.send(Early::Notice(n));
            };
            let mut sink = |h: &Hit| tx.send(h.clone()).map_err(|_| session::SinkError::Stop);
            let r = session::run(&to, &mut notice, &mut sink);
            if let Err(e) = &r {
                let _ = rtx.send(Early::Failed(e.to_string()));
            }
            r
        }));
    }
    drop(tx);
    drop(rtx);
    let mut errors = Vec::new();
    let mut ready_count = 0;
    for m in rrx.iter() {
        match m {
            Early::Failed(e) => {
                errors.push(e);
                // One machine failed: the others stop too.
                session::request_stop();
            }
            Early::Notice(Notice::Ready(_)) => ready_count += 1,
            Early::Notice(w) => notice(w),
        }
        if ready_count + errors.len() == options.len() {
            break;
        }
    }
    if errors.is_empty() {
        notice(Notice::Ready(format!("tracing {ready_count} machines")));
    }
    for h in rx.iter() {
        match sink(&h) {
            Ok(()) => {}
            Err(session::SinkError::Stop) => session::request_stop(),
            Err(session::SinkError::Fail(m)) => {
                errors.push(m);
                session::request_stop();
            }
        }
    }
    let mut summaries = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => summaries.push(s),
            Ok(Err(e)) => {
                let t = e.to_string();
                if !errors.contains(&t) {
                    errors.push(t);
                }
            }
            Err(_) => errors.push("a trace thread panicked".into()),
        }
    }
    (summaries, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(machine: &str, function: &str, tsc: u64, id: u16) -> Hit {
        let mut ip = vec![
            0x45,
            0,
            0,
            84,
            (id >> 8) as u8,
            id as u8,
            0,
            0,
            64,
            1,
            0,
            0,
            192,
            168,
            10,
            2,
            192,
            168,
            20,
            2,
        ];
        ip.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        ip.resize(84, 0);
        let packet = crate::net::packet::decode_ip(&ip);
        let view = crate::net::skb::SkbView {
            addr: 0,
            len: 84,
            data_len: 0,
            protocol: 0x0800,
            protocol_name: None,
            pkt_type: 0,
            pkt_type_name: None,
            mark: 0,
            dev: None,
            headroom: 0,
            tailroom: 0,
            headers_set: vec![],
            mac_header: None,
            network_header: Some(0),
            transport_header: None,
            packet,
            payload_len: 0,
            payload_hex: String::new(),
            head: 0,
            data: 0,
            tail: 84,
            end: 84,
            linear: ip,
            payload_limit: 0,
        };
        Hit {
            time_ns: tsc as u128,
            tsc,
            machine: machine.into(),
            function: function.into(),
            addr: 0,
            skb: Some(view),
            skb_error: None,
            skb_addr: Some(0x6100_0000),
            packet: None,
            end: None,
            reason: None,
            stack: Vec::new(),
            first: false,
        }
    }

    #[test]
    fn stories_join_across_machines_by_their_finished_header() {
        let mut st = Stories::default();
        let mut a0 = hit("A", "ip_send_skb", 100, 0);
        a0.packet = Some(1);
        let mut a1 = hit("A", "ip_output", 110, 7);
        a1.packet = Some(1);
        let mut r = hit("R", "ip_forward", 200, 7);
        r.packet = Some(4);
        r.end = Some("dropped".into());
        r.reason = Some("NETFILTER_DROP".into());
        let mut other = hit("R", "ip_forward", 300, 9);
        other.packet = Some(5);
        for h in [&r, &a1, &other, &a0] {
            st.add(h);
        }
        let v = st.finish();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key.ip_id, 7);
        let f: Vec<&str> = v[0].steps.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(f, ["ip_send_skb", "ip_output", "ip_forward"]);
        assert_eq!(
            v[0].steps[2].end.as_deref(),
            Some("dropped: NETFILTER_DROP")
        );
        assert!(v[0].text(1).contains("=> dropped: NETFILTER_DROP"));
    }

    #[test]
    fn matches_by_ip_id_and_orders_by_tsc() {
        let mut j = Journeys::default();
        // Arrival order differs from time order (threads per machine).
        j.add(&hit("B", "ip_rcv", 300, 7));
        j.add(&hit("A", "ip_output", 100, 7));
        j.add(&hit("R", "ip_forward", 210, 7));
        j.add(&hit("R", "ip_rcv", 200, 7));
        j.add(&hit("A", "ip_output", 150, 8));
        let v = j.finish();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key.ip_id, 7);
        assert_eq!(v[0].machines(), vec!["A", "R", "B"]);
        let f: Vec<&str> = v[0].steps.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(f, ["ip_output", "ip_rcv", "ip_forward", "ip_rcv"]);
        assert_eq!(v[1].key.ip_id, 8);
        assert!(
            v[0].text(1)
                .contains("packet 1: 192.168.10.2 > 192.168.20.2 ICMP")
        );
    }
}
