//! Chains the header decoders: from an Ethernet frame, or from a network header whose type is
//! known (an skb's `protocol`) or guessed from the IP version nibble.
//!
//! Each layer that decodes narrows `payload` to what it carries, so after the chain `payload` is
//! the data after the last header understood (for a truncated or unknown layer: its bytes).

use std::fmt::{self, Write as _};
use std::ops::Range;

use serde::Serialize;

use crate::net::arp::{self, ArpPacket};
use crate::net::ethernet::{self, EthernetHeader};
use crate::net::icmp::{self, ICMP_HLEN, IcmpMessage};
use crate::net::icmpv6::{self, ICMPV6_HLEN, Icmpv6Message};
use crate::net::ipv4::{self, Ipv4Header};
use crate::net::ipv6::{self, Ipv6Header};
use crate::net::names::ethertype_name;
use crate::net::tcp::{self, TcpHeader};
use crate::net::udp::{self, UdpHeader};
use crate::net::warning::{Layer, Warning};

/// The headers found in one packet. Absent layers are `None` and left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Packet {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eth: Option<EthernetHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp: Option<ArpPacket>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmpv6: Option<Icmpv6Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpHeader>,
    /// Layers that could not be decoded at all, and problems outside any one header.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// Offsets into the decoded buffer.
    #[serde(skip)]
    pub network_offset: Option<usize>,
    #[serde(skip)]
    pub transport_offset: Option<usize>,
    #[serde(skip)]
    pub payload: Range<usize>,
}

/// Decodes an Ethernet frame and what it carries.
pub fn decode_ethernet(frame: &[u8]) -> Packet {
    let mut c = Chain::new(frame);
    if let Some((ethertype, at)) = c.link(0) {
        c.network(at, Some(ethertype));
    }
    c.pkt
}

/// Decodes a packet that starts at its network header, of the given EtherType.
pub fn decode_network(ethertype: u16, bytes: &[u8]) -> Packet {
    let mut c = Chain::new(bytes);
    c.network(0, Some(ethertype));
    c.pkt
}

/// Decodes a raw IP packet, IPv4 or IPv6 by its version nibble.
pub fn decode_ip(bytes: &[u8]) -> Packet {
    let mut c = Chain::new(bytes);
    c.network(0, None);
    c.pkt
}

/// The decoding state over one buffer; offsets in the [`Packet`] are into `buf`.
pub(crate) struct Chain<'a> {
    buf: &'a [u8],
    pub pkt: Packet,
}

/// The addresses a transport checksum needs, when it covers a pseudo-header.
#[derive(Clone, Copy)]
enum Pseudo {
    V4,
    V6(std::net::Ipv6Addr, std::net::Ipv6Addr),
}

impl<'a> Chain<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        let pkt = Packet {
            payload: 0..buf.len(),
            ..Packet::default()
        };
        Chain { buf, pkt }
    }

    fn from(&self, at: usize) -> &'a [u8] {
        self.buf.get(at..).unwrap_or_default()
    }

    fn span(&self, r: Range<usize>) -> &'a [u8] {
        self.buf.get(r).unwrap_or_default()
    }

    /// Decodes an Ethernet header at `at`; returns the payload's EtherType and offset when there
    /// is a payload of a known kind to go on with.
    pub fn link(&mut self, at: usize) -> Option<(u16, usize)> {
        self.pkt.payload = at..self.buf.len();
        match ethernet::decode(self.from(at)) {
            Err(w) => {
                self.pkt.warnings.push(w);
                None
            }
            Ok(eth) => {
                let next = at + eth.header_len;
                let result = eth.has_payload_type().then_some((eth.ether_type, next));
                self.pkt.payload = next.min(self.buf.len())..self.buf.len();
                self.pkt.eth = Some(eth);
                result
            }
        }
    }

    /// Decodes the network layer at `at`: by `ethertype` when given, else by the IP version
    /// nibble. An EtherType this module does not decode leaves the bytes as payload.
    pub fn network(&mut self, at: usize, ethertype: Option<u16>) {
        self.pkt.payload = at.min(self.buf.len())..self.buf.len();
        let bytes = self.from(at);
        let ethertype = match ethertype {
            Some(t) => t,
            None => match bytes.first().map(|b| b >> 4) {
                Some(4) => 0x0800,
                Some(6) => 0x86dd,
                _ => {
                    self.pkt.warnings.push(Warning::Unsupported {
                        layer: Layer::Network,
                        what: format!(
                            "header of unknown type (first byte {})",
                            bytes
                                .first()
                                .map_or("missing".to_owned(), |b| format!("{b:#04x}"))
                        ),
                    });
                    return;
                }
            },
        };
        match ethertype {
            0x0800 => self.ipv4(at, bytes),
            0x86dd => self.ipv6(at, bytes),
            0x0806 => match arp::decode(bytes) {
                Err(w) => self.pkt.warnings.push(w),
                Ok(a) => {
                    self.pkt.network_offset = Some(at);
                    // ARP carries nothing; what follows is link-layer padding.
                    let end = (at + arp::ARP_ETH_IPV4_LEN).min(self.buf.len());
                    self.pkt.payload = end..end;
                    self.pkt.arp = Some(a);
                }
            },
            other => self.pkt.warnings.push(Warning::Unsupported {
                layer: Layer::Ethernet,
                what: match ethertype_name(other) {
                    Some(name) => format!("payload of EtherType {other:#06x} ({name})"),
                    None => format!("payload of EtherType {other:#06x}"),
                },
            }),
        }
    }

    fn ipv4(&mut self, at: usize, bytes: &[u8]) {
        match ipv4::decode(bytes) {
            Err(w) => self.pkt.warnings.push(w),
            Ok(mut ip) => {
                self.pkt.network_offset = Some(at);
                if let Some(p) = ip.payload.clone() {
                    let r = at + p.start..at + p.end;
                    self.pkt.payload = r.clone();
                    if ip.is_later_fragment() {
                        ip.warnings.push(Warning::LaterFragment {
                            layer: Layer::Ipv4,
                            offset: u32::from(ip.frag_offset),
                        });
                    } else {
                        self.transport(r, ip.protocol, ip.payload_complete, Pseudo::V4);
                    }
                }
                self.pkt.ipv4 = Some(ip);
            }
        }
    }

    fn ipv6(&mut self, at: usize, bytes: &[u8]) {
        match ipv6::decode(bytes) {
            Err(w) => self.pkt.warnings.push(w),
            Ok(mut ip) => {
                self.pkt.network_offset = Some(at);
                if let (Some(p), Some(upper)) = (ip.payload.clone(), ip.upper_protocol) {
                    let r = at + p.start..at + p.end;
                    self.pkt.payload = r.clone();
                    if ip.is_later_fragment() {
                        let offset = ip.fragment.map_or(0, |f| u32::from(f.offset));
                        ip.warnings.push(Warning::LaterFragment {
                            layer: Layer::Ipv6,
                            offset,
                        });
                    } else {
                        let pseudo = Pseudo::V6(ip.src, ip.dst);
                        self.transport(r, upper, ip.payload_complete, pseudo);
                    }
                }
                self.pkt.ipv6 = Some(ip);
            }
        }
    }

    /// Decodes the transport header occupying `r` (the IP payload). `complete` says whether `r`
    /// is all the IP header promised, without which a checksum over it means nothing.
    fn transport(&mut self, r: Range<usize>, protocol: u8, complete: bool, pseudo: Pseudo) {
        let bytes = self.span(r.clone());
        let (start, end) = (r.start, r.end);
        let after = |n: usize| (start + n).min(end)..end;
        match (protocol, pseudo) {
            (1, Pseudo::V4) => match icmp::decode(bytes) {
                Err(w) => self.pkt.warnings.push(w),
                Ok(mut m) => {
                    if !complete {
                        m.checksum_ok = None;
                    }
                    self.pkt.transport_offset = Some(start);
                    self.pkt.payload = after(ICMP_HLEN);
                    self.pkt.icmp = Some(m);
                }
            },
            (58, Pseudo::V6(src, dst)) => match icmpv6::decode(bytes, src, dst) {
                Err(w) => self.pkt.warnings.push(w),
                Ok(mut m) => {
                    if !complete {
                        m.checksum_ok = None;
                    }
                    self.pkt.transport_offset = Some(start);
                    self.pkt.payload = after(ICMPV6_HLEN);
                    self.pkt.icmpv6 = Some(m);
                }
            },
            (6, _) => match tcp::decode(bytes) {
                Err(w) => self.pkt.warnings.push(w),
                Ok(t) => {
                    self.pkt.transport_offset = Some(start);
                    if let Some(n) = t.payload_start {
                        self.pkt.payload = after(n);
                    }
                    self.pkt.tcp = Some(t);
                }
            },
            (17, _) => match udp::decode(bytes) {
                Err(w) => self.pkt.warnings.push(w),
                Ok(u) => {
                    self.pkt.transport_offset = Some(start);
                    self.pkt.payload = start + u.payload.start..start + u.payload.end;
                    self.pkt.udp = Some(u);
                }
            },
            _ => {}
        }
    }
}

impl Packet {
    /// Every warning: the packet's own, then each header's, outermost first.
    pub fn all_warnings(&self) -> Vec<&Warning> {
        let per_header = [
            self.eth.as_ref().map(|h| &h.warnings),
            self.arp.as_ref().map(|h| &h.warnings),
            self.ipv4.as_ref().map(|h| &h.warnings),
            self.ipv6.as_ref().map(|h| &h.warnings),
            self.icmp.as_ref().map(|h| &h.warnings),
            self.icmpv6.as_ref().map(|h| &h.warnings),
            self.tcp.as_ref().map(|h| &h.warnings),
            self.udp.as_ref().map(|h| &h.warnings),
        ];
        self.warnings
            .iter()
            .chain(per_header.into_iter().flatten().flatten())
            .collect()
    }

    /// Whether any part of the decode was partial.
    pub fn is_partial(&self) -> bool {
        !self.all_warnings().is_empty()
    }

    /// The bytes after the last header understood, out of the buffer this packet was decoded from.
    pub fn payload_of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.payload.clone()).unwrap_or_default()
    }

    /// Appends one line per header, each prefixed by `indent`, then one per warning.
    pub fn write_lines(&self, out: &mut String, indent: &str) {
        let headers: [Option<&dyn fmt::Display>; 8] = [
            self.eth.as_ref().map(|h| h as &dyn fmt::Display),
            self.arp.as_ref().map(|h| h as &dyn fmt::Display),
            self.ipv4.as_ref().map(|h| h as &dyn fmt::Display),
            self.ipv6.as_ref().map(|h| h as &dyn fmt::Display),
            self.icmp.as_ref().map(|h| h as &dyn fmt::Display),
            self.icmpv6.as_ref().map(|h| h as &dyn fmt::Display),
            self.tcp.as_ref().map(|h| h as &dyn fmt::Display),
            self.udp.as_ref().map(|h| h as &dyn fmt::Display),
        ];
        // Writing to a String cannot fail.
        for h in headers.into_iter().flatten() {
            let _ = writeln!(out, "{indent}{h}");
        }
        for w in self.all_warnings() {
            let _ = writeln!(out, "{indent}warning: {w}");
        }
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_lines(&mut s, "");
        f.write_str(&s)
    }
}
