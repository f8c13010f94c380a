//! Which packets a trace reports: a pcap-filter expression (tcpdump's syntax and meaning,
//! compiled by libpcap) decides at a packet's first sight, and from then on the packet is
//! followed by its skb's address and its data buffer's address (`head`, shared by clones)
//! whatever happens to its headers (NAT, pushes and pulls), until the kernel frees it.
//!
//! The expression is compiled twice: for Ethernet frames (used when the skb's MAC header is
//! set) and for raw IP (from the network header, for packets that have no link header yet or
//! any more, such as a locally sent packet in `ip_output`). An expression that only makes sense
//! for one of them (`ether host ...`, `arp`) matches nothing on the other.

use std::collections::HashMap;

use pcap::{BpfProgram, Capture, Linktype};

/// libpcap's `DLT_RAW` on Linux: packets that start with their IPv4 or IPv6 header.
const DLT_RAW: Linktype = Linktype(12);

#[derive(Debug, thiserror::Error)]
#[error("bad filter expression `{expr}`: {message}")]
pub struct FilterError {
    pub expr: String,
    pub message: String,
}

/// A compiled pcap-filter expression.
pub struct PacketFilter {
    expr: String,
    ethernet: Option<BpfProgram>,
    raw_ip: Option<BpfProgram>,
}

impl std::fmt::Debug for PacketFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PacketFilter({:?})", self.expr)
    }
}

fn compile(linktype: Linktype, expr: &str) -> Result<BpfProgram, String> {
    let cap = Capture::dead(linktype).map_err(|e| e.to_string())?;
    cap.compile(expr, true).map_err(|e| e.to_string())
}

impl PacketFilter {
    /// Compiles `expr`; an expression neither link type accepts is an error with libpcap's
    /// message (the Ethernet one: it accepts the most).
    pub fn compile(expr: &str) -> Result<PacketFilter, FilterError> {
        let ethernet = compile(Linktype::ETHERNET, expr);
        let raw_ip = compile(DLT_RAW, expr);
        match (ethernet, raw_ip) {
            (Err(message), Err(_)) => Err(FilterError {
                expr: expr.to_string(),
                message,
            }),
            (e, r) => Ok(PacketFilter {
                expr: expr.to_string(),
                ethernet: e.ok(),
                raw_ip: r.ok(),
            }),
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether an Ethernet frame matches.
    pub fn matches_ethernet(&self, frame: &[u8]) -> bool {
        self.ethernet.as_ref().is_some_and(|p| p.filter(frame))
    }

    /// Whether an IP packet (from its IP header) matches.
    pub fn matches_ip(&self, packet: &[u8]) -> bool {
        self.raw_ip.as_ref().is_some_and(|p| p.filter(packet))
    }

    /// Whether the packet of an skb matches: `bytes` are its copied bytes, which start `start`
    /// bytes after `head`; `mac` and `network` are the header offsets from `head` (`None` when
    /// unset), `data` the offset of `skb->data`.
    pub fn matches_skb(
        &self,
        bytes: &[u8],
        start: usize,
        mac: Option<u16>,
        network: Option<u16>,
        data: usize,
    ) -> bool {
        let from = |off: usize| off.checked_sub(start).and_then(|o| bytes.get(o..));
        if let Some(m) = mac.map(usize::from)
            && network.is_none_or(|n| usize::from(n) >= m + 14)
            && let Some(frame) = from(m)
            && frame.len() >= 14
        {
            return self.matches_ethernet(frame);
        }
        let n = network.map(usize::from).unwrap_or(data);
        from(n).is_some_and(|p| !p.is_empty() && self.matches_ip(p))
    }
}

/// How a hit's packet relates to the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// Not reported.
    No,
    /// The first hit of a newly selected packet: story `n`.
    New(u64),
    /// A later hit of story `n`.
    Again(u64),
    /// A hit of story `n` while the kernel frees its skb, after the hit that ended it.
    AfterEnd(u64),
}

/// The packets followed so far on one machine: skb and buffer addresses to their story, and
/// the stories whose end (a drop or a consume) has been seen while the kernel is still freeing
/// their skb.
#[derive(Debug, Default)]
pub struct Tracker {
    by_addr: HashMap<u64, u64>,
    ending: std::collections::HashSet<u64>,
    /// skb addresses given back while followed, not yet seen reinitialised (length 0): until
    /// then a hit there shows the old packet's bytes (a recycled skb at the entry of the
    /// function that clears it), which must not select it again.
    released: std::collections::HashSet<u64>,
    /// Each story's last hit (ns), for [`Tracker::expire`].
    last_hit: HashMap<u64, u128>,
    next: u64,
}

/// A story without a hit for this long is let go (its skb was freed on a path no probe saw).
pub const IDLE_NS: u128 = 2_000_000_000;

/// Functions that give an skb's memory back (the last hit of a packet at that address: the
/// next one there is another packet).
pub fn releases(function: &str) -> bool {
    matches!(function, "kfree_skbmem" | "napi_skb_cache_put")
}

/// Functions whose skb argument is being filled in (a new or recycled skb, a clone being made,
/// a locally sent packet whose data or headers are still being written): at their entry it
/// still holds whatever the memory held before, so they never select a packet nor follow one
/// by the stale buffer address.
pub fn fills(function: &str) -> bool {
    matches!(
        function,
        "__copy_skb_header"
            | "__skb_clone"
            | "skb_copy_header"
            | "skbuff_clear"
            | "__finalize_skb_around"
            | "__build_skb_around"
            | "kmalloc_reserve"
            // The `getfrag` callbacks of ip_append_data copy a socket's data (for raw and
            // ping sockets, the ICMP header too) into a recycled buffer before any header is
            // written: a ping built where the last UDP datagram was looked like it.
            | "ip_generic_getfrag"
            | "raw_getfrag"
            | "ping_getfrag"
            | "icmp_glue_bits"
            | "ip_reply_glue_bits"
            | "raw6_getfrag"
            | "icmpv6_getfrag"
            // Called on a UDP datagram after its IP header and before its UDP header.
            | "ip_select_ident_segs"
            | "udp_send_skb"
            | "udp_v6_send_skb"
    )
}

impl Tracker {
    /// The story of the skb at `skb` with buffer `head` if it is followed; else, when `matches`
    /// says its packet is selected, a new story that follows both addresses.
    /// `len` is the skb's length at the hit; `function` the function hit (see [`fills`]).
    pub fn select(
        &mut self,
        skb: u64,
        head: u64,
        len: u32,
        function: &str,
        time_ns: u128,
        matches: impl FnOnce() -> bool,
    ) -> Selected {
        if fills(function) {
            return match self.by_addr.get(&skb) {
                Some(&s) if self.ending.contains(&s) => Selected::AfterEnd(s),
                Some(&s) => Selected::Again(s),
                None => Selected::No,
            };
        }
        if let Some(&s) = self.by_addr.get(&skb).or_else(|| self.by_addr.get(&head)) {
            self.by_addr.insert(skb, s);
            if head != 0 {
                self.by_addr.insert(head, s);
            }
            self.last_hit.insert(s, time_ns);
            if self.ending.contains(&s) {
                return Selected::AfterEnd(s);
            }
            return Selected::Again(s);
        }
        if self.released.contains(&skb) {
            if len != 0 {
                return Selected::No;
            }
            self.released.remove(&skb);
        }
        if !matches() {
            return Selected::No;
        }
        self.next += 1;
        let s = self.next;
        self.by_addr.insert(skb, s);
        if head != 0 {
            self.by_addr.insert(head, s);
        }
        self.last_hit.insert(s, time_ns);
        Selected::New(s)
    }

    /// The packet's story ended (dropped or consumed); the freeing that follows still belongs
    /// to it.
    pub fn end(&mut self, skb: u64) {
        if let Some(&s) = self.by_addr.get(&skb) {
            self.ending.insert(s);
        }
    }

    /// The kernel gave the skb's memory back: its addresses may carry another packet from now
    /// on (a clone on the same buffer keeps the story).
    pub fn release(&mut self, skb: u64, head: u64) {
        if let Some(s) = self.by_addr.remove(&skb) {
            if self.released.len() > 65536 {
                self.released.clear();
            }
            self.released.insert(skb);
            if self.by_addr.get(&head) == Some(&s) {
                self.by_addr.remove(&head);
            }
            if !self.by_addr.values().any(|v| *v == s) {
                self.ending.remove(&s);
                self.last_hit.remove(&s);
            }
        }
    }

    /// The kernel freed a data buffer (`skb_free_head`): it may carry another packet from now
    /// on, whatever skb still names it.
    pub fn forget(&mut self, addr: u64) {
        self.by_addr.remove(&addr);
    }

    /// Lets go of the stories whose last hit is older than [`IDLE_NS`] before `now_ns`;
    /// returns the addresses no longer followed.
    pub fn expire(&mut self, now_ns: u128) -> Vec<u64> {
        let old: std::collections::HashSet<u64> = self
            .last_hit
            .iter()
            .filter(|(_, t)| now_ns.saturating_sub(**t) > IDLE_NS)
            .map(|(s, _)| *s)
            .collect();
        if old.is_empty() {
            return Vec::new();
        }
        self.last_hit.retain(|s, _| !old.contains(s));
        self.ending.retain(|s| !old.contains(s));
        let addrs: Vec<u64> = self
            .by_addr
            .iter()
            .filter(|(_, s)| old.contains(s))
            .map(|(a, _)| *a)
            .collect();
        for a in &addrs {
            self.by_addr.remove(a);
        }
        addrs
    }

    /// Whether `addr` (an skb or a buffer) is followed.
    pub fn follows(&self, addr: u64) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// The compiled programs, for the in-kernel filter: (Ethernet, raw IP).
    pub fn programs_of(f: &PacketFilter) -> (Option<&BpfProgram>, Option<&BpfProgram>) {
        (f.ethernet.as_ref(), f.raw_ip.as_ref())
    }

    /// Packets followed now.
    pub fn followed(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0x9c, 0x40]);
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    #[test]
    fn matches_ip_packets_and_ethernet_frames_like_tcpdump() {
        let f = PacketFilter::compile("udp and dst port 9999").unwrap();
        let udp = ipv4(17, [192, 168, 10, 2], [192, 168, 20, 2], 9999);
        let other = ipv4(17, [192, 168, 10, 2], [192, 168, 20, 2], 53);
        assert!(f.matches_ip(&udp));
        assert!(!f.matches_ip(&other));
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&udp);
        assert!(f.matches_ethernet(&frame));
        // Through the skb view: a MAC header at 50, network header at 64, bytes copied from 50.
        assert!(f.matches_skb(&frame, 50, Some(50), Some(64), 64));
        // No MAC header: from the network header.
        assert!(f.matches_skb(&udp, 64, None, Some(64), 64));
        assert!(!f.matches_skb(&other, 64, None, Some(64), 64));
        let icmp = PacketFilter::compile("icmp and host 192.168.20.2").unwrap();
        assert!(!icmp.matches_ip(&udp));
        assert!(icmp.matches_ip(&ipv4(1, [192, 168, 10, 2], [192, 168, 20, 2], 0)));
    }

    #[test]
    fn a_bad_expression_names_itself_and_libpcaps_reason() {
        let e = PacketFilter::compile("icmp andd host")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bad filter expression `icmp andd host`: "),
            "{e}"
        );
        assert!(e.contains("syntax error"), "{e}");
        assert_eq!(e.lines().count(), 1);
        // Link-level words compile for Ethernet only, and match no raw IP packet.
        let f = PacketFilter::compile("ether host 02:00:00:00:00:01").unwrap();
        assert!(!f.matches_ip(&ipv4(1, [1, 2, 3, 4], [5, 6, 7, 8], 0)));
    }

    #[test]
    fn a_followed_skb_stays_selected_through_rewrites_and_clones() {
        let mut t = Tracker::default();
        assert_eq!(
            t.select(0x100, 0x900, 84, "f", 0, || true),
            Selected::New(1)
        );
        // After NAT the packet no longer matches; it is followed by its address.
        assert_eq!(
            t.select(0x100, 0x900, 84, "f", 0, || false),
            Selected::Again(1)
        );
        // A clone: another skb on the same buffer.
        assert_eq!(
            t.select(0x200, 0x900, 84, "f", 0, || false),
            Selected::Again(1)
        );
        assert_eq!(t.select(0x300, 0xa00, 84, "f", 0, || false), Selected::No);
        t.end(0x100);
        // The rest of the freeing belongs to the story.
        assert_eq!(
            t.select(0x100, 0x900, 84, "f", 0, || false),
            Selected::AfterEnd(1)
        );
        t.release(0x100, 0x900);
        // The clone still carries it.
        assert_eq!(
            t.select(0x200, 0xb00, 84, "f", 0, || false),
            Selected::AfterEnd(1)
        );
        // The old address, recycled: its stale bytes do not count until it is reinitialised.
        assert_eq!(t.select(0x100, 0xc00, 84, "f", 0, || true), Selected::No);
        assert_eq!(t.select(0x100, 0xc00, 0, "f", 0, || false), Selected::No);
        assert_eq!(
            t.select(0x100, 0xc00, 84, "f", 0, || true),
            Selected::New(2)
        );
        assert!(releases("kfree_skbmem") && !releases("skb_release_data"));
        // A clone being made at a stale address on a followed buffer: not this packet (yet).
        assert_eq!(
            t.select(0x400, 0x900, 84, "__copy_skb_header", 0, || true),
            Selected::No
        );
    }

    #[test]
    fn a_ping_built_in_the_buffer_of_a_selected_udp_datagram_is_not_selected_by_its_stale_bytes() {
        // The UDP datagram was followed and freed; the ping's skb (same addresses, recycled)
        // still shows the datagram's headers while its data is copied in.
        let mut t = Tracker::default();
        assert_eq!(
            t.select(0x100, 0x900, 61, "ip_send_skb", 0, || true),
            Selected::New(1)
        );
        t.release(0x100, 0x900);
        t.forget(0x900);
        assert_eq!(
            t.select(0x100, 0x900, 0, "skb_put", 0, || false),
            Selected::No
        );
        for f in ["raw_getfrag", "ip_generic_getfrag", "ip_select_ident_segs"] {
            assert!(fills(f), "{f}");
            assert_eq!(
                t.select(0x100, 0x900, 84, f, 0, || true),
                Selected::No,
                "{f}"
            );
        }
        // Once its headers are written, the filter judges the ping itself.
        assert_eq!(
            t.select(0x100, 0x900, 84, "ip_send_skb", 0, || false),
            Selected::No
        );
        // A followed packet stays followed through them.
        assert_eq!(
            t.select(0x300, 0xa00, 61, "ip_output", 0, || true),
            Selected::New(2)
        );
        assert_eq!(
            t.select(0x300, 0xa00, 61, "ip_select_ident_segs", 0, || false),
            Selected::Again(2)
        );
    }
}
