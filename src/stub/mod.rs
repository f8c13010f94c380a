//! The gdb remote-protocol server and the ptrace run-control it stands on.
