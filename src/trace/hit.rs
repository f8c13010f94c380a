//! One traced hit, its one-line and JSON forms, the clock that dates hits, and the summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::net::skb::SkbView;

/// A function hit on a machine.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u128,
    /// The host's time stamp counter at the hit: orders hits across machines exactly.
    pub tsc: u64,
    pub machine: String,
    pub function: String,
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skb: Option<SkbView>,
    /// Why the skb could not be shown, when it was to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skb_error: Option<String>,
    /// The skb pointer argument (also when it could not be decoded).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub skb_addr: Option<u64>,
    /// With a packet filter: the selected packet this hit belongs to (numbered per machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<u64>,
    /// The end of the packet's story at this hit: `dropped` or `freed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// For a drop: the kernel's reason (`enum skb_drop_reason`, without its prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kernel stack at the hit, innermost caller first (with `--stack`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// The first hit of a selected packet (the pcap takes it then).
    #[serde(skip)]
    pub first: bool,
}

fn hex_opt<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(&format_args!("{v:#x}")),
        None => s.serialize_none(),
    }
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:#x}"))
}

/// `HH:MM:SS.uuuuuu` (UTC) of a time in ns since the epoch.
pub fn clock_text(ns: u128) -> String {
    let secs = (ns / 1_000_000_000) as u64;
    let us = (ns % 1_000_000_000) / 1000;
    format!(
        "{:02}:{:02}:{:02}.{us:06}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The packet of an skb in one line: addresses, protocol, the fields that tell packets apart.
pub fn packet_line(v: &SkbView) -> String {
    let p = &v.packet;
    let mut out = String::new();
    if let Some(ip) = &p.ipv4 {
        let (sp, dp) = match (&p.udp, &p.tcp) {
            (Some(u), _) => (Some(u.sport), Some(u.dport)),
            (_, Some(t)) => (Some(t.sport), Some(t.dport)),
            _ => (None, None),
        };
        match (sp, dp) {
            (Some(s), Some(d)) => {
                let _ = write!(out, "{}:{s} > {}:{d}", ip.src, ip.dst);
            }
            _ => {
                let _ = write!(out, "{} > {}", ip.src, ip.dst);
            }
        }
        let proto = ip
            .protocol_name
            .map(str::to_uppercase)
            .unwrap_or_else(|| format!("proto {}", ip.protocol));
        let _ = write!(out, " {proto}");
        if let Some(i) = &p.icmp {
            let name = i.type_name.unwrap_or("type");
            let _ = write!(out, " {name}");
            if let (Some(id), Some(seq)) = (i.id, i.seq) {
                let _ = write!(out, " id {id} seq {seq}");
            }
        }
        let _ = write!(out, " ip-id {} ttl {} len {}", ip.id, ip.ttl, ip.tot_len);
    } else if let Some(ip6) = &p.ipv6 {
        let _ = write!(out, "{} > {} IPv6", ip6.src, ip6.dst);
    } else if let Some(a) = &p.arp {
        let _ = write!(out, "{a}");
    } else {
        let _ = write!(out, "proto {:#06x} len {}", v.protocol, v.len);
    }
    if v.payload_len > 0 {
        let _ = write!(out, " payload {}", v.payload_len);
    }
    if let Some(d) = &v.dev {
        let _ = write!(out, " dev {d}");
    }
    out
}

impl Hit {
    /// The text line of a hit.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}", clock_text(self.time_ns), self.machine);
        if let Some(a) = self.skb_addr {
            let _ = write!(s, " {a:#x}");
        }
        let _ = write!(s, " {}", self.function);
        if let Some(v) = &self.skb {
            let _ = write!(s, " {}", packet_line(v));
            if v.mark != 0 {
                let _ = write!(s, " mark {:#x}", v.mark);
            }
        } else if let Some(e) = &self.skb_error {
            let _ = write!(s, " (skb: {e})");
        }
        match (&self.end, &self.reason) {
            (Some(e), Some(r)) => {
                let _ = write!(s, " => {e}: {r}");
            }
            (Some(e), None) => {
                let _ = write!(s, " => {e}");
            }
            _ => {}
        }
        for f in &self.stack {
            let _ = write!(s, "\n    {f}");
        }
        s
    }
}

/// Converts TSC values to wall-clock time: a reference pair taken at start, and a rate measured
/// against the monotonic clock over the run.
#[derive(Debug, Clone)]
pub struct TscClock {
    tsc0: u64,
    mono0: std::time::Instant,
    wall0_ns: u128,
    /// TSC ticks per nanosecond.
    rate: f64,
}

pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

impl TscClock {
    /// Calibrates over `calib` (10 ms is enough for microsecond dates over minutes).
    pub fn new(calib: Duration) -> TscClock {
        let mono0 = std::time::Instant::now();
        let tsc0 = rdtsc();
        let wall0_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        std::thread::sleep(calib);
        let mut c = TscClock {
            tsc0,
            mono0,
            wall0_ns,
            rate: 1.0,
        };
        c.refine();
        c
    }

    /// Re-measures the rate over the time since start.
    pub fn refine(&mut self) {
        let dt = self.mono0.elapsed().as_nanos() as f64;
        let dtsc = rdtsc().wrapping_sub(self.tsc0) as f64;
        if dt > 1e6 && dtsc > 0.0 {
            self.rate = dtsc / dt;
        }
    }

    pub fn wall_ns(&self, tsc: u64) -> u128 {
        let d = (tsc as i128 - self.tsc0 as i128) as f64 / self.rate;
        (self.wall0_ns as i128 + d as i128).max(0) as u128
    }
}

/// What a trace did, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub machine: String,
    /// `probe` (no stop per hit) or `stop` (ptrace breakpoints).
    pub mode: String,
    pub hits: u64,
    pub per_function: BTreeMap<String, u64>,
    pub seconds: f64,
    pub hits_per_second: f64,
    pub lost: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub decode_errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcap_packets: Option<u64>,
    /// Functions probed (or with breakpoints).
    pub functions: usize,
    /// Functions that could not be probed, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// With a filter: packets selected, and hits of packets it did not select.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unselected_hits: Option<u64>,
    /// Of those, the hits the ring carried to the tracer (the rest the kernel only counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unselected_read: Option<u64>,
    /// Seconds from attach until every probe was in.
    pub arm_seconds: f64,
    /// Why the trace ended: count, duration, interrupted, exited, error.
    pub ended_by: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}: {} hits in {:.3} s ({:.1} hits/s), {} lost, mode {}, ended by {}",
            self.machine,
            self.hits,
            self.seconds,
            self.hits_per_second,
            self.lost,
            self.mode,
            self.ended_by
        );
        if self.decode_errors > 0 {
            let _ = write!(s, ", {} skbs not decoded", self.decode_errors);
        }
        if let Some(n) = self.pcap_packets {
            let _ = write!(s, ", {n} packets in the pcap");
        }
        if let (Some(p), Some(u)) = (self.packets, self.unselected_hits) {
            let _ = write!(s, ", {p} packets selected ({u} other hits)");
        }
        if !self.skipped.is_empty() {
            let _ = write!(s, ", {} functions not probed", self.skipped.len());
        }
        let _ = write!(
            s,
            ", {} functions armed in {:.2} s",
            self.functions, self.arm_seconds
        );
        let many = self.per_function.len() > 20;
        let shown: Vec<(&String, &u64)> = self
            .per_function
            .iter()
            .filter(|(_, n)| !many || **n > 0)
            .collect();
        let w = shown.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        for (f, n) in shown {
            let _ = write!(s, "\n  {f:<w$}  {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_text_is_utc_time_of_day() {
        assert_eq!(clock_text(3_723_000_456_789), "01:02:03.000456");
    }

    #[test]
    fn tsc_clock_moves_with_time() {
        let c = TscClock::new(Duration::from_millis(5));
        let a = c.wall_ns(rdtsc());
        std::thread::sleep(Duration::from_millis(20));
        let b = c.wall_ns(rdtsc());
        let d = b - a;
        assert!(d > 15_000_000 && d < 200_000_000, "{d}");
    }
}
