//! pcap files of packets seen at breakpoints, for the tracing feature: a thin wrapper over the
//! `pcap-file` writer that knows about sk_buffs and reports a full disk as such.
//!
//! Link type: always Ethernet (`LINKTYPE_ETHERNET`). A pcap file has one link type, and a trace
//! mixes skbs whose MAC header is set (received, or past `dev_queue_xmit`) with skbs that have
//! only a network header (locally generated, before the neighbour layer). Rather than drop either
//! kind or split files, [`PcapSink::write_skb`] synthesises an Ethernet header for the second
//! kind: both addresses zero, which no real interface uses, so the header is recognisably made
//! up, and the EtherType taken from `skb->protocol` (or the IP version when that is unset).

use std::io::{self, Write};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::net::skb::{FrameStart, SkbView};

/// Most bytes kept per packet: tcpdump's default, above the 64 KiB linear-data bound plus the
/// Ethernet header.
pub const SNAPLEN: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum PcapSinkError {
    #[error("disk full while writing the pcap file")]
    DiskFull(#[source] io::Error),

    #[error("cannot write the pcap file")]
    Io(#[source] io::Error),

    #[error("packet not written: {0}")]
    Invalid(&'static str),
}

impl From<PcapError> for PcapSinkError {
    fn from(e: PcapError) -> Self {
        match e {
            PcapError::IoError(io) => io.into(),
            PcapError::InvalidField(what) => PcapSinkError::Invalid(what),
            _ => PcapSinkError::Invalid("unexpected pcap-file error"),
        }
    }
}

impl From<io::Error> for PcapSinkError {
    fn from(e: io::Error) -> Self {
        let full = matches!(
            e.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) || matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        if full {
            PcapSinkError::DiskFull(e)
        } else {
            PcapSinkError::Io(e)
        }
    }
}

/// A pcap file being written: Ethernet link type, nanosecond timestamps, host byte order.
///
/// Wrap a file in a `BufWriter` for throughput; a full disk may then surface only at
/// [`PcapSink::finish`], which is why that returns the same typed error.
#[derive(Debug)]
pub struct PcapSink<W: Write> {
    writer: PcapWriter<W>,
    packets: u64,
}

impl<W: Write> PcapSink<W> {
    /// Writes the file header.
    pub fn new(writer: W) -> Result<Self, PcapSinkError> {
        let header = PcapHeader {
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
            ..PcapHeader::default()
        };
        Ok(PcapSink {
            writer: PcapWriter::with_header(writer, header)?,
            packets: 0,
        })
    }

    /// Writes one Ethernet frame captured at `ts` (since the Unix epoch). Frames longer than
    /// [`SNAPLEN`] are cut, keeping their original length in the record.
    pub fn write_packet(&mut self, ts: Duration, frame: &[u8]) -> Result<(), PcapSinkError> {
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.write_truncated(ts, frame, orig_len)
    }

    /// Writes the first bytes of a frame whose full length was `orig_len`.
    pub fn write_truncated(
        &mut self,
        ts: Duration,
        frame: &[u8],
        orig_len: u32,
    ) -> Result<(), PcapSinkError> {
        let kept = &frame[..frame.len().min(SNAPLEN as usize)];
        let orig_len = orig_len.max(u32::try_from(kept.len()).unwrap_or(u32::MAX));
        self.writer
            .write_packet(&PcapPacket::new(ts, orig_len, kept))?;
        self.packets += 1;
        Ok(())
    }

    /// Writes the packet an skb holds: its linear bytes from the MAC header, or from the
    /// network header (or `data`) behind a synthetic Ethernet header (see the module doc). The
    /// record's original length counts the nonlinear bytes that were not read.
    pub fn write_skb(&mut self, ts: Duration, skb: &SkbView) -> Result<(), PcapSinkError> {
        let (start, bytes) = skb.frame();
        let (at, synthetic) = match start {
            FrameStart::Mac(at) => (at, false),
            FrameStart::Network(at) | FrameStart::Data(at) => (at, true),
        };
        // Bytes before `data` that the frame includes (the MAC header on receive) count
        // on top of skb->len; bytes the frame starts after `data` come out of it.
        let data_off = usize::try_from(skb.headroom).unwrap_or(usize::MAX);
        let wire = (u64::from(skb.len) + data_off as u64).saturating_sub(at as u64);
        let orig = wire + if synthetic { 14 } else { 0 };
        let orig_len = u32::try_from(orig).unwrap_or(u32::MAX);
        if !synthetic {
            return self.write_truncated(ts, bytes, orig_len);
        }
        let ethertype = match skb.protocol {
            0x0800 | 0x86dd | 0x0806 => skb.protocol,
            _ => match bytes.first().map(|b| b >> 4) {
                Some(6) => 0x86dd,
                _ => 0x0800,
            },
        };
        let mut frame = Vec::with_capacity(14 + bytes.len());
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(bytes);
        self.write_truncated(ts, &frame, orig_len)
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, PcapSinkError> {
        let mut w = self.writer.into_writer();
        w.flush()?;
        Ok(w)
    }
}
