#!/usr/bin/env bash
# Record real GDB/MI transcripts for the golden tests (crates/codec/tests/gdbmi_golden.rs).
#
# Compiles fixtures/gdbmi/prog.c with gcc -g in a temporary directory, drives gdb through MI one
# command at a time (each command waits for its own ^result, so the transcript is what a client
# sees, in gdb's order), and writes for each session:
#   fixtures/gdbmi/<session>.in   the commands sent
#   fixtures/gdbmi/<session>.mi   gdb's raw output
# Then run `UMLDBG_BLESS=1 cargo test -p umldbg-codec --test gdbmi_golden` to write the expected <session>.json.
#
# Usage: scripts/record-mi-fixture.sh [GDB]      (default: gdb from PATH)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
fixtures=$repo/fixtures/gdbmi
gdb=${1:-gdb}
tmp=$(mktemp -d)
looper=

cleanup() {
	# Only what this script started: the attach target and the gdb coprocess, by pid.
	if [[ -n $looper ]]; then kill "$looper" 2>/dev/null || true; fi
	if [[ -n ${GDB_PID:-} ]]; then kill "$GDB_PID" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

cp "$fixtures/prog.c" "$tmp/prog.c"
cd "$tmp"
# Relative paths keep gdb's file="prog.c" short; fullname still carries the temp directory.
gcc -g -O0 -o prog prog.c
loop_line=$(grep -n 'total += scale' prog.c | cut -d: -f1)

session=
token=0

start_session() {
	session=$1
	token=0
	: >"$fixtures/$session.in"
	: >"$fixtures/$session.mi"
	coproc GDB { exec "$gdb" --interpreter=mi3 -q -nx 2>>"$tmp/$session.stderr"; }
}

# Read gdb's lines into the transcript until one starts with $1.
read_until() {
	local line
	while IFS= read -r -t 30 line <&"${GDB[0]}"; do
		printf '%s\n' "$line" >>"$fixtures/$session.mi"
		if [[ $line == "$1"* ]]; then return 0; fi
	done
	echo "record-mi-fixture: no line starting with '$1' from gdb within 30 s" >&2
	exit 1
}

# Send one MI command (without token) and wait for its result record.
mi() {
	token=$((token + 1))
	printf '%s%s\n' "$token" "$1" >>"$fixtures/$session.in"
	printf '%s%s\n' "$token" "$1" >&"${GDB[1]}"
	read_until "$token^"
}

end_session() {
	mi '-gdb-exit'
	local line
	while IFS= read -r -t 30 line <&"${GDB[0]}"; do
		printf '%s\n' "$line" >>"$fixtures/$session.mi"
	done
	wait "$GDB_PID" || true
	GDB_PID=
	echo "recorded $session: $(wc -l <"$fixtures/$session.in") commands, $(wc -l <"$fixtures/$session.mi") lines"
}

# 1. Run under gdb: breakpoints (one conditional), stops, frames, arguments, struct printing,
#    console commands, stepping, errors, symbol search, exit with a status.
start_session run
mi '-gdb-set confirm off'
mi '-file-exec-and-symbols prog'
mi '-symbol-info-functions --name wal'
mi '-break-insert walk'
mi "-break-insert -c \"i == 2\" prog.c:$loop_line"
mi '-break-insert -f no_such_function'
mi '-break-insert nosuchfunc'
mi '-exec-run'
read_until '*stopped'
mi '-stack-list-frames'
mi '-stack-list-arguments --simple-values'
mi '-exec-continue'
read_until '*stopped'
mi '-stack-list-frames'
mi '-stack-list-arguments 0'
mi '-stack-list-arguments --simple-values'
mi '-data-evaluate-expression *p'
mi '-data-evaluate-expression p->name'
mi '-interpreter-exec console "print *p"'
mi '-interpreter-exec console "bt"'
mi '-break-list'
mi '-exec-step'
read_until '*stopped'
mi '-exec-finish'
read_until '*stopped'
mi '-exec-next'
read_until '*stopped'
mi '-data-evaluate-expression nosuchvar'
mi '-interpreter-exec console "list scale"'
mi '-no-such-command'
mi '-break-delete 1'
mi '-break-delete 2'
mi '-exec-continue'
read_until '*stopped'
end_session

# 2. Attach to a running process, look around, detach: what the daemon does to a UML kernel.
./prog loop &
looper=$!
sleep 0.5
if [[ $(readlink "/proc/$looper/exe") != "$tmp/prog" ]]; then
	echo "record-mi-fixture: pid $looper is not the test program" >&2
	exit 1
fi
start_session attach
mi '-gdb-set mi-async on'
mi '-gdb-set confirm off'
mi '-file-exec-and-symbols prog'
mi "-target-attach $looper"
read_until '*stopped'
mi '-interpreter-exec console "handle SIGUSR1 nostop noprint pass"'
mi '-stack-list-frames'
mi '-interpreter-exec console "frame function main"'
mi '-data-evaluate-expression pt'
mi '-break-insert sleep'
mi '-exec-continue'
read_until '*stopped'
mi '-break-delete 1'
mi '-exec-continue'
read_until '*running'
sleep 0.3
mi '-exec-interrupt'
read_until '*stopped'
mi '-target-detach'
end_session
kill "$looper"
wait "$looper" 2>/dev/null || true
looper=
