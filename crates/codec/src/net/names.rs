//! Names for the protocol numbers that appear in more than one header (EtherTypes, IP protocol
//! numbers) and for `skb->pkt_type`. Header-specific names (ICMP types, ARP operations) live with
//! their decoder.

/// Common name of an EtherType, as tcpdump and Wireshark print it.
pub fn ethertype_name(ethertype: u16) -> Option<&'static str> {
    Some(match ethertype {
        0x0800 => "IPv4",
        0x0806 => "ARP",
        0x8035 => "RARP",
        0x8100 => "802.1Q",
        0x88a8 => "802.1ad",
        0x86dd => "IPv6",
        0x8847 => "MPLS",
        0x8848 => "MPLS-multicast",
        0x8863 => "PPPoE-discovery",
        0x8864 => "PPPoE-session",
        0x88cc => "LLDP",
        0x88e5 => "MACsec",
        0x88f7 => "PTP",
        0x8906 => "FCoE",
        0x0004 => "802.2",
        0x0003 => "ALL",
        _ => return None,
    })
}

/// Name of an IP protocol number (IPv4 `protocol`, IPv6 `next_header`), as tcpdump prints it.
pub fn ip_protocol_name(protocol: u8) -> Option<&'static str> {
    Some(match protocol {
        0 => "HOPOPT",
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPIP",
        6 => "TCP",
        17 => "UDP",
        41 => "IPv6",
        43 => "IPv6-Route",
        44 => "IPv6-Frag",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "ICMPv6",
        59 => "IPv6-NoNxt",
        60 => "IPv6-Opts",
        89 => "OSPF",
        103 => "PIM",
        112 => "VRRP",
        132 => "SCTP",
        136 => "UDPLite",
        143 => "Ethernet",
        255 => "RAW",
        _ => return None,
    })
}

/// Name of a `PACKET_*` value held in `skb->pkt_type` (include/uapi/linux/if_packet.h).
pub fn pkt_type_name(pkt_type: u8) -> Option<&'static str> {
    Some(match pkt_type {
        0 => "HOST",
        1 => "BROADCAST",
        2 => "MULTICAST",
        3 => "OTHERHOST",
        4 => "OUTGOING",
        5 => "LOOPBACK",
        6 => "USER",
        7 => "KERNEL",
        _ => return None,
    })
}
