//! Cutting gdb's output, read in arbitrary chunks, into lines. Sans-IO like the parser: the
//! process shell pushes whatever a pipe read returned and takes complete lines out.

/// Why the framer dropped input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("GDB/MI line longer than {limit} bytes; skipped up to the next newline")]
    LineTooLong { limit: usize },
}

/// Default cap on one line. `-symbol-info-functions` on a kernel with debug info and a long
/// backtrace stay far below it; its only job is to keep garbage without newlines from eating
/// memory.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024 * 1024;

/// Reassembles lines from arbitrary chunks of bytes (a pipe read may end mid-line or hold many
/// lines). Every byte is looked at once: the search for `\n` resumes where the last one stopped,
/// and consumed lines are dropped in bulk, not one `drain` per line.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Start of the first line not yet returned.
    start: usize,
    /// Bytes before this offset (and after `start`) are known to hold no newline.
    scanned: usize,
    max_line: usize,
    /// Set after an over-long line was reported: drop bytes until the next newline.
    discarding: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    pub fn new() -> Self {
        Self::with_max_line(DEFAULT_MAX_LINE)
    }

    pub fn with_max_line(max_line: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line: max_line.max(1),
            discarding: false,
        }
    }

    /// Add bytes read from gdb.
    pub fn push(&mut self, mut chunk: &[u8]) {
        if self.discarding {
            match chunk.iter().position(|&b| b == b'\n') {
                None => return,
                Some(i) => {
                    self.discarding = false;
                    chunk = &chunk[i + 1..];
                }
            }
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Moving the tail costs no more than the bytes already consumed, so the total stays
            // linear.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, without its `\n` (a `\r` before it is left for the parser, which
    /// strips it). `None` means "push more bytes".
    pub fn next_line(&mut self) -> Option<Result<&[u8], FrameError>> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                let line_start = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                Some(Ok(&self.buf[line_start..end]))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.max_line {
                    self.buf.truncate(self.start);
                    self.scanned = self.start;
                    self.discarding = true;
                    Some(Err(FrameError::LineTooLong {
                        limit: self.max_line,
                    }))
                } else {
                    None
                }
            }
        }
    }

    /// At end of input: whatever followed the last newline (gdb died mid-line), if anything.
    pub fn take_partial(&mut self) -> Option<Vec<u8>> {
        let partial = (self.start < self.buf.len() && !self.discarding)
            .then(|| self.buf[self.start..].to_vec());
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.discarding = false;
        partial
    }

    /// Bytes held that do not yet form a complete line.
    pub fn pending_len(&self) -> usize {
        self.buf.len() - self.start
    }
}
