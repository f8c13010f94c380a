//! Tracing kernel functions of running UML machines: every hit of a function with the time, the
//! machine and the decoded sk_buff, at close to the machine's own speed; and the path of single
//! packets through several machines.
//!
//! `session` runs one machine's trace over the run-control of `crate::ptrace::runctl`: probes
//! that record into a ring in the kernel process (`ring`), or ptrace breakpoints. `functions`
//! and `args` find what to trace and where its skb is (from DWARF, for `--all-skb`); `filter`
//! selects packets with a pcap-filter expression and follows them by address; `hit` is what
//! comes out; `flow` and `svg` put the hits of several machines together.

pub mod args;
pub mod bpf;
pub mod filter;
pub mod flow;
pub mod functions;
pub mod hit;
pub mod ring;
pub mod session;
pub mod svg;
