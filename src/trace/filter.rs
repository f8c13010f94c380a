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
#[error("bad filter expression `{expr}`: {source}")]
pub struct FilterError {
    pub expr: String,
    #[source]
    pub source: pcap::Error,
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

fn compile(linktype: Linktype, expr: &str) -> Result<BpfProgram, pcap::Error> {
    Capture::dead(linktype)?.compile(expr, true)
}

impl PacketFilter {
    /// Compiles `expr`; an expression neither link type accepts is an error with libpcap's
    /// message (the Ethernet one: it accepts the most).
    pub fn compile(expr: &str) -> Result<PacketFilter, FilterError> {
        let ethernet = compile(Linktype::ETHERNET, expr);
        let raw_ip = compile(DLT_RAW, expr);
        match (ethernet, raw_ip) {
            (Err(source), Err(_)) => Err(FilterError {
                expr: expr.to_string(),
                source,
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

/// A followed skb: its packet's story and the data buffer it was last seen with.
#[derive(Debug, Clone, Copy)]
struct Followed {
    story: u64,
    head: u64,
}

/// The packets followed so far on one machine: skbs and data buffers to their story.
///
/// A story can have several skbs at once: clones share the data buffer of the skb they were
/// made from (`skb_clone`, as the neighbour code does for `arp_solicit` while a packet waits
/// for its next hop's address), each with its own life. So the end of a story (a drop or a
/// consume) and the giving back of the memory are per skb: freeing a clone ends the clone
/// only, the buffer stays followed while another skb of the story uses it, and an skb address
/// given back is free for the next packet, which the filter judges afresh (what a recycled skb
/// still shows of its old packet is only seen by the functions that fill it, see [`fills`]).
#[derive(Debug, Default)]
pub struct Tracker {
    skbs: HashMap<u64, Followed>,
    /// Data buffers (`head`) to their story.
    heads: HashMap<u64, u64>,
    /// skbs whose end (a drop or a consume) has been seen while the kernel is still freeing
    /// them.
    ending: std::collections::HashSet<u64>,
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
    /// The story of the skb at `skb` with buffer `head` if either is followed (an skb not seen
    /// before on a followed buffer is a clone of the packet); else, when `matches` says its
    /// packet is selected, a new story that follows both addresses. `function` is the
    /// function hit (see [`fills`]).
    pub fn select(
        &mut self,
        skb: u64,
        head: u64,
        function: &str,
        time_ns: u128,
        matches: impl FnOnce() -> bool,
    ) -> Selected {
        if fills(function) {
            return match self.skbs.get(&skb) {
                Some(f) if self.ending.contains(&skb) => Selected::AfterEnd(f.story),
                Some(f) => Selected::Again(f.story),
                None => Selected::No,
            };
        }
        let known = self.skbs.get(&skb).map(|f| f.story).or_else(|| {
            (head != 0)
                .then(|| self.heads.get(&head).copied())
                .flatten()
        });
        if let Some(s) = known {
            self.follow(skb, head, s, time_ns);
            if self.ending.contains(&skb) {
                return Selected::AfterEnd(s);
            }
            return Selected::Again(s);
        }
        if !matches() {
            return Selected::No;
        }
        self.next += 1;
        let s = self.next;
        self.follow(skb, head, s, time_ns);
        Selected::New(s)
    }

    fn follow(&mut self, skb: u64, head: u64, story: u64, time_ns: u128) {
        let was = self.skbs.insert(skb, Followed { story, head });
        if head != 0 {
            self.heads.insert(head, story);
        }
        // A buffer the skb left (a head expanded or replaced) goes once no skb uses it; the
        // kernel frees it, too (`skb_free_head`).
        if let Some(w) = was
            && w.head != head
        {
            self.drop_head_if_unused(w.head, w.story);
        }
        self.last_hit.insert(story, time_ns);
    }

    /// Stops following `head` for `story` when no followed skb names it any more.
    fn drop_head_if_unused(&mut self, head: u64, story: u64) {
        if head != 0
            && self.heads.get(&head) == Some(&story)
            && !self.skbs.values().any(|f| f.head == head)
        {
            self.heads.remove(&head);
        }
    }

    /// The story of the skb ended here (dropped or consumed): the freeing that follows still
    /// belongs to it. Other skbs of the story (the packet it was cloned from, its clones) go
    /// on.
    pub fn end(&mut self, skb: u64) {
        if self.skbs.contains_key(&skb) {
            self.ending.insert(skb);
        }
    }

    /// The kernel gave the skb's memory back: its address may carry another packet from now
    /// on. Its buffer stays followed while another skb of the story (a clone, or the packet
    /// a freed clone was made from) still uses it.
    pub fn release(&mut self, skb: u64, head: u64) {
        self.ending.remove(&skb);
        let Some(f) = self.skbs.remove(&skb) else {
            return;
        };
        self.drop_head_if_unused(head, f.story);
        self.drop_head_if_unused(f.head, f.story);
        if !self.skbs.values().any(|o| o.story == f.story)
            && !self.heads.values().any(|s| *s == f.story)
        {
            self.last_hit.remove(&f.story);
        }
    }

    /// The kernel freed a data buffer (`skb_free_head`: the last skb on it let go): it may
    /// carry another packet from now on, whatever skb still names it.
    pub fn forget(&mut self, addr: u64) {
        self.heads.remove(&addr);
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
        let skbs: Vec<u64> = self
            .skbs
            .iter()
            .filter(|(_, f)| old.contains(&f.story))
            .map(|(a, _)| *a)
            .collect();
        let heads: Vec<u64> = self
            .heads
            .iter()
            .filter(|(_, s)| old.contains(s))
            .map(|(a, _)| *a)
            .collect();
        for a in &skbs {
            self.skbs.remove(a);
            self.ending.remove(a);
        }
        for a in &heads {
            self.heads.remove(a);
        }
        skbs.into_iter().chain(heads).collect()
    }

    /// Whether `addr` (an skb or a buffer) is followed.
    pub fn follows(&self, addr: u64) -> bool {
        self.skbs.contains_key(&addr) || self.heads.contains_key(&addr)
    }

    /// The compiled programs, for the in-kernel filter: (Ethernet, raw IP).
    pub fn programs_of(f: &PacketFilter) -> (Option<&BpfProgram>, Option<&BpfProgram>) {
        (f.ethernet.as_ref(), f.raw_ip.as_ref())
    }

    /// Addresses (skbs and buffers) followed now.
    pub fn followed(&self) -> usize {
        self.skbs.len() + self.heads.len()
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
        assert_eq!(t.select(0x100, 0x900, "f", 0, || true), Selected::New(1));
        // After NAT the packet no longer matches; it is followed by its address.
        assert_eq!(t.select(0x100, 0x900, "f", 0, || false), Selected::Again(1));
        // A clone: another skb on the same buffer.
        assert_eq!(t.select(0x200, 0x900, "f", 0, || false), Selected::Again(1));
        assert_eq!(t.select(0x300, 0xa00, "f", 0, || false), Selected::No);
        t.end(0x100);
        // The rest of the freeing belongs to the story.
        assert_eq!(
            t.select(0x100, 0x900, "f", 0, || false),
            Selected::AfterEnd(1)
        );
        t.release(0x100, 0x900);
        // The clone still carries it, to its own end.
        assert_eq!(t.select(0x200, 0x900, "f", 0, || false), Selected::Again(1));
        assert!(t.follows(0x900) && !t.follows(0x100));
        // The old address, recycled: while it is being filled it still shows the old packet,
        // which selects nothing; once filled, the filter judges the new packet.
        assert_eq!(
            t.select(0x100, 0xc00, "__build_skb_around", 0, || true),
            Selected::No
        );
        assert_eq!(t.select(0x100, 0xc00, "f", 0, || false), Selected::No);
        assert_eq!(t.select(0x100, 0xc00, "f", 0, || true), Selected::New(2));
        assert!(releases("kfree_skbmem") && !releases("skb_release_data"));
        // A clone being made at a stale address on a followed buffer: not this packet (yet).
        assert_eq!(
            t.select(0x400, 0x900, "__copy_skb_header", 0, || true),
            Selected::No
        );
    }

    /// R forwards a ping to B before it knows B's MAC address: the request waits in the
    /// neighbour's queue, and `neigh_probe` clones it for `arp_solicit` and consumes the clone
    /// at once. Freeing the clone ended the request's whole story (its later hits counted as
    /// after its end, its real free showed no end), and the address the clone gave back was
    /// refused to the next packet there (the reply) until a hit showed it empty, which the
    /// in-kernel filter never records.
    #[test]
    fn a_clone_freed_by_the_neighbour_queue_does_not_end_the_packet_it_was_cloned_from() {
        let (request, clone, buf) = (0x1000, 0x2000, 0x9000);
        let mut t = Tracker::default();
        assert_eq!(
            t.select(request, buf, "ip_rcv_core", 0, || true),
            Selected::New(1)
        );
        for f in ["ip_forward", "__neigh_event_send", "skb_clone"] {
            assert_eq!(t.select(request, buf, f, 1, || false), Selected::Again(1));
        }
        // skb_clone: the new skb, still stale while it is filled, then on the shared buffer.
        assert_eq!(
            t.select(clone, buf, "__copy_skb_header", 2, || false),
            Selected::No
        );
        assert_eq!(
            t.select(clone, buf, "arp_solicit", 3, || false),
            Selected::Again(1)
        );
        // consume_skb(clone): the clone's end; the data reference it drops is not the last,
        // so the buffer is not freed (no skb_free_head), only the clone's memory.
        assert_eq!(
            t.select(clone, buf, "sk_skb_reason_drop", 4, || false),
            Selected::Again(1)
        );
        t.end(clone);
        for f in ["skb_release_all", "skb_release_data", "kfree_skbmem"] {
            assert_eq!(t.select(clone, buf, f, 5, || false), Selected::AfterEnd(1));
        }
        t.release(clone, buf);
        assert!(!t.follows(clone));
        assert!(t.follows(request) && t.follows(buf));
        // The ARP reply came: the request leaves R, still its own story, not after its end.
        for f in [
            "neigh_resolve_output",
            "__dev_queue_xmit",
            "vector_net_start_xmit",
        ] {
            assert_eq!(t.select(request, buf, f, 6, || false), Selected::Again(1));
        }
        // Its real free is its end.
        assert_eq!(
            t.select(request, buf, "sk_skb_reason_drop", 7, || false),
            Selected::Again(1)
        );
        t.end(request);
        assert_eq!(
            t.select(request, buf, "skb_free_head", 8, || false),
            Selected::AfterEnd(1)
        );
        t.forget(buf);
        assert_eq!(
            t.select(request, buf, "kfree_skbmem", 8, || false),
            Selected::AfterEnd(1)
        );
        t.release(request, buf);
        assert_eq!(t.followed(), 0);
        // The reply arrives in an skb at an address given back (slab reuse): judged afresh,
        // once it is filled.
        for (addr, story) in [(clone, 2), (request, 3)] {
            assert_eq!(
                t.select(addr, 0xa000 + addr, "__build_skb_around", 9, || true),
                Selected::No
            );
            assert_eq!(
                t.select(addr, 0xa000 + addr, "ip_rcv_core", 10, || true),
                Selected::New(story)
            );
        }
    }

    #[test]
    fn a_ping_built_in_the_buffer_of_a_selected_udp_datagram_is_not_selected_by_its_stale_bytes() {
        // The UDP datagram was followed and freed; the ping's skb (same addresses, recycled)
        // still shows the datagram's headers while its data is copied in.
        let mut t = Tracker::default();
        assert_eq!(
            t.select(0x100, 0x900, "ip_send_skb", 0, || true),
            Selected::New(1)
        );
        t.release(0x100, 0x900);
        t.forget(0x900);
        assert_eq!(t.select(0x100, 0x900, "skb_put", 0, || false), Selected::No);
        for f in ["raw_getfrag", "ip_generic_getfrag", "ip_select_ident_segs"] {
            assert!(fills(f), "{f}");
            assert_eq!(t.select(0x100, 0x900, f, 0, || true), Selected::No, "{f}");
        }
        // Once its headers are written, the filter judges the ping itself.
        assert_eq!(
            t.select(0x100, 0x900, "ip_send_skb", 0, || false),
            Selected::No
        );
        // A followed packet stays followed through them.
        assert_eq!(
            t.select(0x300, 0xa00, "ip_output", 0, || true),
            Selected::New(2)
        );
        assert_eq!(
            t.select(0x300, 0xa00, "ip_select_ident_segs", 0, || false),
            Selected::Again(2)
        );
    }
}
