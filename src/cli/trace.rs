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
#[command(after_help = "\
Examples:
  umldbg trace router-uml-R reject_tg --skb
  umldbg trace router-uml-R --all-skb 'udp and dst port 9999'
  umldbg trace --lab article --all-skb 'icmp and host 192.168.20.2'
  umldbg trace client-uml-A,router-uml-R --match '^ip_' --filter icmp
  umldbg trace router-uml-R --all-skb --list

With --all-skb or --match, the words after the machine are the pcap-filter expression (as in
tcpdump); otherwise they are function names and the expression goes in --filter.")]
pub struct TraceArgs {
    /// The machine (several: comma-separated; none with --lab), then kernel or module functions
    /// (or 0xADDR) or, with --all-skb/--match, a pcap-filter expression
    #[arg(value_name = "UMID [FUNCTION|FILTER]...")]
    pub words: Vec<String>,
    /// Every machine of a lab (default: the only lab that is up)
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub lab: Option<String>,
    /// Every function of the kernel and of its loaded modules that takes a struct sk_buff *
    /// (from DWARF)
    #[arg(long)]
    pub all_skb: bool,
    /// Only the functions taking a struct sk_buff * whose name matches REGEX
    #[arg(long = "match", value_name = "REGEX")]
    pub match_re: Option<String>,
    /// List the functions that would be traced, and exit
    #[arg(long)]
    pub list: bool,
    /// Report only the packets this pcap-filter expression selects (tcpdump's syntax), each
    /// followed by its skb until the kernel frees it
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Packet bytes copied at each hit, from the first header
    #[arg(long, value_name = "BYTES", default_value_t = umldbg::trace::ring::DEFAULT_SNAPLEN)]
    pub snaplen: usize,
    /// The kernel stack at each hit (through the frame pointers; probes only)
    #[arg(long)]
    pub stack: bool,
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
    /// Write each traced packet to a pcap file (implies --skb; with a filter: each selected
    /// packet once, at first sight)
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Stop the machine at each hit with ptrace breakpoints instead of recording with probes
    #[arg(long)]
    pub stop: bool,
    /// Which argument (0 = first) is the sk_buff for functions umldbg does not know
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..6))]
    pub skb_arg: Option<u8>,
    /// Only the summary, no line per hit
    #[arg(long, short)]
    pub quiet: bool,
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
        Some(v) if v > 0.0 => Ok(Some(umldbg::util::seconds("--duration", v)?)),
        Some(v) => anyhow::bail!("--duration {v}: give a positive number of seconds"),
    }
}

/// Writes to stdout; a closed stdout ends the trace quietly.
/// A trace's notices on stderr: warnings as they come, then the start.
fn show_notice(n: session::Notice) {
    match n {
        session::Notice::Ready(m) => eprintln!("umldbg: {m}; Ctrl-C stops"),
        session::Notice::Warning(m) => eprintln!("umldbg: {m}"),
    }
}

fn out_line(out: &mut impl Write, line: &str) -> Result<(), SinkError> {
    writeln!(out, "{line}").map_err(|_| SinkError::Stop)
}

/// The machines (umid, label), the uml_dir, the functions and the filter a trace's words say.
struct Plan {
    machines: Vec<(String, String)>,
    uml_dir: PathBuf,
    functions: Vec<String>,
    filter: Option<String>,
}

fn plan(a: &TraceArgs, g: &super::global::Global) -> anyhow::Result<Plan> {
    let mut words = a.words.clone();
    let (machines, uml_dir) = match &a.lab {
        Some(lab) => lab_machines((!lab.is_empty()).then(|| lab.clone()))?,
        None => {
            if words.is_empty() {
                anyhow::bail!("trace: name the machine (UMID) or a lab (--lab)");
            }
            let m = words.remove(0);
            let mut list: Vec<(String, String)> = Vec::new();
            for s in m.split(',').filter(|s| !s.is_empty()) {
                let umid = umldbg::uml::ids::parse_umid(s)
                    .map_err(|e| anyhow::anyhow!("trace: machine `{s}`: {e}"))?;
                list.push((umid.clone(), umid));
            }
            (list, g.uml_dir.clone())
        }
    };
    let discovers = a.all_skb || a.match_re.is_some();
    let (functions, filter) = if discovers && a.filter.is_none() {
        let f = words.join(" ");
        (Vec::new(), (!f.trim().is_empty()).then_some(f))
    } else {
        (words, a.filter.clone())
    };
    if functions.is_empty() && !discovers {
        anyhow::bail!(
            "trace: name the functions to trace, or take every sk_buff function with --all-skb (or --match REGEX)"
        );
    }
    if a.snaplen == 0 || a.snaplen > umldbg::trace::ring::MAX_SNAPLEN {
        anyhow::bail!(
            "--snaplen {}: give 1 to {} bytes",
            a.snaplen,
            umldbg::trace::ring::MAX_SNAPLEN
        );
    }
    if let Some(f) = &filter {
        // A bad expression fails here, before any machine is touched.
        umldbg::trace::filter::PacketFilter::compile(f)?;
    }
    Ok(Plan {
        machines,
        uml_dir,
        functions,
        filter,
    })
}

pub fn run_trace(a: TraceArgs, g: &super::global::Global) -> anyhow::Result<i32> {
    let cache = g.cache.clone();
    let p = plan(&a, g)?;
    let several = p.machines.len() > 1;
    let options: Vec<TraceOptions> = p
        .machines
        .iter()
        .map(|(umid, label)| {
            let mut o = TraceOptions::new(umid, p.uml_dir.clone(), cache.clone());
            o.label = Some(label.clone());
            o.functions = p.functions.clone();
            o.skip_missing = several;
            o.skb = a.skb || a.pcap.is_some();
            o.skb_arg = a.skb_arg;
            o.count = a.count;
            o.stop = a.stop;
            o.all_skb = a.all_skb;
            o.match_re = a.match_re.clone();
            o.filter = p.filter.clone();
            o.snaplen = a.snaplen;
            o.stack = a.stack;
            o
        })
        .collect();
    let dur = duration(a.duration)?;
    let options: Vec<TraceOptions> = options
        .into_iter()
        .map(|mut o| {
            o.duration = dur;
            o
        })
        .collect();
    if a.list {
        return list(&options, a.json || g.json);
    }
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
    let json = a.json || g.json;
    let quiet = a.quiet;
    let filtered = p.filter.is_some();
    let pcap_path = a.pcap.clone();
    let mut journeys = flow::Stories::default();
    let mut ready = show_notice;
    let mut sink = |h: &Hit| -> Result<(), SinkError> {
        if let (Some(p), Some(v)) = (pcap.as_mut(), h.skb.as_ref()) {
            // With a filter, each selected packet once: at its story's first hit.
            if !filtered || h.first {
                let ts = Duration::from_nanos(h.time_ns as u64);
                p.write_skb(ts, v)
                    .map_err(|e| pcap_failure(&pcap_path, e))?;
            }
        }
        if several && filtered {
            journeys.add(h);
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
    let (mut summaries, errors) = if several {
        let r = flow::run_traces(&options, &mut ready, &mut sink);
        (r.0, r.1)
    } else {
        match session::run(&options[0], &mut ready, &mut sink) {
            Ok(s) => (vec![s], Vec::new()),
            Err(e) => {
                let _ = out.flush();
                return Err(e.into());
            }
        }
    };
    let mut failure = None;
    if let Some(p) = pcap.take() {
        let n = p.packets();
        match p.finish() {
            Ok(_) => {
                for s in &mut summaries {
                    s.pcap_packets = Some(n);
                }
            }
            Err(e) => failure = Some(pcap_failure(&pcap_path, e)),
        }
    }
    let journeys: Vec<_> = journeys.finish();
    if json {
        for j in &journeys {
            let _ = writeln!(out, "{}", serde_json::json!({ "journey": j }));
        }
        if several {
            let _ = writeln!(
                out,
                "{}",
                serde_json::json!({ "summaries": summaries, "errors": errors })
            );
        } else if let Some(s) = summaries.first() {
            let _ = writeln!(out, "{}", serde_json::json!({ "summary": s }));
        }
    } else {
        for (i, j) in journeys.iter().enumerate() {
            let _ = write!(out, "{}", j.text(i + 1));
        }
        for s in &summaries {
            let _ = writeln!(out, "{}", s.text());
        }
    }
    let _ = out.flush();
    if let Some(SinkError::Fail(m)) = failure {
        anyhow::bail!("{m} (the trace was stopped and the machine left running)");
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    if let Some(s) = summaries.iter().find(|s| s.ended_by == "exited") {
        anyhow::bail!("{} exited during the trace", s.machine);
    }
    Ok(0)
}

/// `--list`: the functions a trace would probe on each machine, with the skb argument.
fn list(options: &[TraceOptions], json: bool) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for o in options {
        let p = session::prepare(o)?;
        if json {
            for t in &p.targets {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({
                        "machine": o.label.as_deref().unwrap_or(&o.umid),
                        "function": t.func.name,
                        "addr": format!("{:#x}", t.func.addr),
                        "module": t.func.module,
                        "skb_arg": t.skb_arg,
                    })
                );
            }
        } else {
            let w = p
                .targets
                .iter()
                .map(|t| t.func.name.len())
                .max()
                .unwrap_or(0);
            for t in &p.targets {
                let _ = writeln!(
                    out,
                    "{:<w$}  {:#x}  {}  {}",
                    t.func.name,
                    t.func.addr,
                    t.skb_arg
                        .map(|a| format!("skb: argument {a}"))
                        .unwrap_or_else(|| "no skb".into()),
                    t.func.module.as_deref().unwrap_or("kernel")
                );
            }
            let _ = writeln!(out, "{} functions on {}", p.targets.len(), o.umid);
        }
    }
    let _ = out.flush();
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

pub fn run_flow(a: FlowArgs, g: &super::global::Global) -> anyhow::Result<i32> {
    let cache = g.cache.clone();
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
    let r = flow::run(&opts, &mut show_notice)?;
    let journeys: Vec<_> = r
        .journeys
        .into_iter()
        .filter(|j| j.machines().len() >= a.min_machines)
        .collect();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if a.json || g.json {
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
