//! `umldbg trace` and `umldbg flow`: function hits with decoded packets, and packets' journeys
//! across the machines of a lab.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use umldbg::net::pcap::{PcapSink, PcapSinkError};
use umldbg::trace::flow::{self, FlowOptions};
use umldbg::trace::hit::Hit;
use umldbg::trace::session::{self, SinkError, TraceOptions};

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The machine
    #[arg(value_name = "UMID", value_parser = umldbg::uml::ids::parse_umid)]
    pub umid: String,
    /// Kernel or module functions (or 0xADDR)
    #[arg(required = true, value_name = "FUNCTION")]
    pub functions: Vec<String>,
    /// Decode each hit's sk_buff argument
    #[arg(long)]
    pub skb: bool,
    /// Stop after N hits
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after S seconds
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// One JSON object per hit, and the summary as the last line
    #[arg(long)]
    pub json: bool,
    /// Write each traced packet to a pcap file (implies --skb)
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Stop the machine at each hit with ptrace breakpoints instead of recording with probes
    #[arg(long)]
    pub stop: bool,
    /// Which argument (0 = first) is the sk_buff for functions umldbg does not know
    #[arg(long, value_name = "N")]
    pub skb_arg: Option<u8>,
    /// Only the summary, no line per hit
    #[arg(long, short)]
    pub quiet: bool,
    /// UML's directory of pid files (main passes the global --uml-dir; default ~/.uml)
    #[arg(skip)]
    pub uml_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct FlowArgs {
    /// The lab (default: the only lab that is up)
    #[arg(long, value_parser = umldbg::uml::ids::parse_lab_name)]
    pub lab: Option<String>,
    /// Comma-separated functions (default: the IPv4 path: ip_output, __dev_queue_xmit, ip_rcv,
    /// ip_rcv_core, ip_forward, ip_local_deliver, nf_hook_slow, reject_tg where loaded)
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// Seconds to trace (default: until Ctrl-C)
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Draw the journeys as an SVG sequence diagram
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Only journeys that cross at least this many machines
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_machines: usize,
    /// JSON: one object per journey, then the summaries
    #[arg(long)]
    pub json: bool,
}

fn duration(s: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match s {
        None => Ok(None),
        Some(v) if v > 0.0 => umldbg::util::seconds("--duration", v)
            .map(Some)
            .map_err(anyhow::Error::msg),
        Some(v) => anyhow::bail!("--duration {v}: give a positive number of seconds"),
    }
}

fn uml_dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(umldbg::uml::instance::default_uml_dir)
}

/// Writes to stdout; a closed stdout ends the trace quietly.
fn out_line(out: &mut impl Write, line: &str) -> Result<(), SinkError> {
    writeln!(out, "{line}").map_err(|_| SinkError::Stop)
}

pub fn run_trace(a: TraceArgs, cache: PathBuf) -> anyhow::Result<i32> {
    let opts = TraceOptions {
        umid: a.umid.clone(),
        label: None,
        functions: a.functions.clone(),
        skip_missing: false,
        skb: a.skb || a.pcap.is_some(),
        skb_arg: a.skb_arg,
        count: a.count,
        duration: duration(a.duration)?,
        stop: a.stop,
        uml_dir: uml_dir(a.uml_dir.clone()),
        cache,
    };
    let mut pcap = match &a.pcap {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
            Some(
                PcapSink::new(BufWriter::with_capacity(1 << 16, f))
                    .with_context(|| format!("write {}", p.display()))?,
            )
        }
        None => None,
    };
    session::install_stop_handlers();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let json = a.json;
    let quiet = a.quiet;
    let pcap_path = a.pcap.clone();
    let mut ready = |m: &str| eprintln!("umldbg: {m}; Ctrl-C stops");
    let mut sink = |h: &Hit| -> Result<(), SinkError> {
        if let (Some(p), Some(v)) = (pcap.as_mut(), h.skb.as_ref()) {
            let ts = Duration::from_nanos(h.time_ns as u64);
            p.write_skb(ts, v)
                .map_err(|e| pcap_failure(&pcap_path, e))?;
        }
        if quiet {
            return Ok(());
        }
        if json {
            out_line(&mut out, &serde_json::to_string(h).unwrap_or_default())
        } else {
            out_line(&mut out, &h.line())
        }
    };
    let r = session::run(&opts, &mut ready, &mut sink);
    let mut summary = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = out.flush();
            return Err(e.into());
        }
    };
    let mut failure = None;
    if let Some(p) = pcap.take() {
        let n = p.packets();
        match p.finish() {
            Ok(_) => summary.pcap_packets = Some(n),
            Err(e) => failure = Some(pcap_failure(&pcap_path, e)),
        }
    }
    if json {
        let _ = writeln!(out, "{}", serde_json::json!({ "summary": summary }));
    } else {
        let _ = writeln!(out, "{}", summary.text());
    }
    let _ = out.flush();
    if let Some(SinkError::Fail(m)) = failure {
        anyhow::bail!("{m} (the trace was stopped and the machine left running)");
    }
    if summary.ended_by == "exited" {
        anyhow::bail!("{} exited during the trace", a.umid);
    }
    Ok(0)
}

fn pcap_failure(path: &Option<PathBuf>, e: PcapSinkError) -> SinkError {
    let p = path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match e {
        PcapSinkError::DiskFull(_) => SinkError::Fail(format!("disk full while writing {p}")),
        other => SinkError::Fail(format!("{p}: {other}")),
    }
}

/// The machines of a lab, as (umid, label), with the lab's uml_dir.
fn lab_machines(lab: Option<String>) -> anyhow::Result<(Vec<(String, String)>, PathBuf)> {
    let names = umldbg::lab::state::lab_names();
    let name = match lab {
        Some(n) => n,
        None => match names.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("no lab is up: start one with `umldbg lab up`"),
            many => anyhow::bail!(
                "{} labs are up ({}): say which with --lab",
                many.len(),
                many.join(", ")
            ),
        },
    };
    let st = umldbg::lab::state::LabState::read(&umldbg::lab::state::lab_dir(&name)).with_context(
        || {
            format!(
                "no lab `{name}` (labs up: {})",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        },
    )?;
    let machines = st
        .machines
        .iter()
        .map(|m| {
            let label = if m.hostname.is_empty() {
                m.umid.clone()
            } else {
                m.hostname.clone()
            };
            (m.umid.clone(), label)
        })
        .collect();
    Ok((machines, st.uml_dir.clone()))
}

pub fn run_flow(a: FlowArgs, cache: PathBuf) -> anyhow::Result<i32> {
    let (machines, uml_dir) = lab_machines(a.lab.clone())?;
    let functions = if a.functions.is_empty() {
        flow::DEFAULT_FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        a.functions.clone()
    };
    let opts = FlowOptions {
        machines: machines.clone(),
        functions,
        duration: duration(a.duration)?,
        uml_dir,
        cache,
    };
    session::install_stop_handlers();
    let mut ready = |m: &str| eprintln!("umldbg: {m}; Ctrl-C stops");
    let r = flow::run(&opts, &mut ready)?;
    let journeys: Vec<_> = r
        .journeys
        .into_iter()
        .filter(|j| j.machines().len() >= a.min_machines)
        .collect();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if a.json {
        for j in &journeys {
            let _ = writeln!(out, "{}", serde_json::to_string(j).unwrap_or_default());
        }
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({ "summaries": r.summaries, "errors": r.errors })
        );
    } else {
        for (i, j) in journeys.iter().enumerate() {
            let _ = write!(out, "{}", j.text(i + 1));
        }
        let _ = writeln!(out, "{} packets", journeys.len());
        for s in &r.summaries {
            let _ = writeln!(out, "{}", s.text());
        }
    }
    let _ = out.flush();
    if let Some(p) = &a.svg {
        let lanes: Vec<String> = machines.iter().map(|(_, l)| l.clone()).collect();
        std::fs::write(p, umldbg::trace::svg::render(&journeys, &lanes, 200))
            .with_context(|| format!("write {}", p.display()))?;
    }
    if !r.errors.is_empty() {
        anyhow::bail!("{}", r.errors.join("; "));
    }
    Ok(0)
}
