//! Typed GDB/MI commands: building the input line `[token]-operation [args]\n`.
//!
//! gdb reads MI arguments in two different ways, and quoting must follow the one the command uses:
//!
//! * MI-native commands (`-break-insert`, `-data-evaluate-expression`, `-interpreter-exec`, ...)
//!   split their arguments themselves: a parameter is either a run of non-blank bytes or a C
//!   string (`"a \"b\" \\ \n"`), so anything can be passed by quoting it.
//! * Commands gdb implements by running a CLI command (`-file-exec-and-symbols` is `file`,
//!   `-target-attach` is `attach`, `-gdb-set` is `set`) receive the rest of the line verbatim.
//!   `file` splits it like a shell (`"..."`, `\"`, `\\`, no octal), and `set` takes it literally,
//!   so quoting there would hand gdb the quote characters.
//!
//! Each argument therefore records how it must be written ([`Arg`]), and [`Command::to_line`]
//! refuses anything that could end the line early and so smuggle in a second command.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use super::record::Token;

/// Why a command cannot be written to gdb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("invalid GDB/MI operation name {0:?}: expected ASCII letters, digits and '-'")]
    BadOperation(String),
    #[error(
        "argument {arg:?} of -{operation} contains a line break or control character, \
         which gdb would read as the end of the command"
    )]
    ControlCharacter { operation: String, arg: String },
}

/// One argument and the way gdb will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An MI parameter: written bare when that is unambiguous, else as a C string.
    Mi(String),
    /// For CLI-backed commands that split arguments like `file` does: written bare when it has no
    /// blanks, quotes or backslashes, else in double quotes with `\"` and `\\`.
    Argv(String),
    /// Passed verbatim (CLI-backed commands such as `-gdb-set` that take the rest of the line).
    Raw(String),
}

/// A GDB/MI command without its token. Build one with the helpers below or with
/// [`Command::new`] and [`Command::arg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    operation: Cow<'static, str>,
    args: Vec<Arg>,
}

/// `--no-values`, `--all-values` or `--simple-values` for the `-stack-list-*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrintValues {
    No,
    All,
    /// Values of scalars and pointers only; a struct passed by value shows its type instead.
    /// The daemon's default: printing a whole `sk_buff` per frame would drown the backtrace.
    #[default]
    Simple,
}

impl PrintValues {
    fn flag(self) -> &'static str {
        match self {
            PrintValues::No => "--no-values",
            PrintValues::All => "--all-values",
            PrintValues::Simple => "--simple-values",
        }
    }
}

/// Options of `-break-insert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakOptions {
    /// `-c COND`: stop only when the condition holds.
    pub condition: Option<String>,
    /// `-t`: delete after the first hit.
    pub temporary: bool,
    /// `-f`: keep the breakpoint pending if the location is unknown yet (a module whose symbols
    /// are not loaded).
    pub pending: bool,
    /// `-d`: create it disabled.
    pub disabled: bool,
    /// `-p THREAD`: only this gdb thread number.
    pub thread: Option<u32>,
}

impl Command {
    /// A command by operation name, with or without the leading `-` (`"break-list"`). The name
    /// is checked when the line is built.
    pub fn new(operation: impl Into<String>) -> Self {
        let operation: String = operation.into();
        let operation = match operation.strip_prefix('-') {
            Some(rest) => rest.to_owned(),
            None => operation,
        };
        Command {
            operation: Cow::Owned(operation),
            args: Vec::new(),
        }
    }

    fn fixed(operation: &'static str) -> Self {
        Command {
            operation: Cow::Borrowed(operation),
            args: Vec::new(),
        }
    }

    /// Add an MI parameter (quoted when needed).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Mi(arg.into()));
        self
    }

    /// Add an argument written as given.
    pub fn with(mut self, arg: Arg) -> Self {
        self.args.push(arg);
        self
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }

    pub fn args(&self) -> &[Arg] {
        &self.args
    }

    /// The line to write to gdb, `\n` included.
    pub fn to_line(&self, token: Option<Token>) -> Result<String, CommandError> {
        let valid_name = !self.operation.is_empty()
            && self
                .operation
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(CommandError::BadOperation(self.operation.to_string()));
        }
        let mut line = String::new();
        if let Some(token) = token {
            line.push_str(&token.to_string());
        }
        line.push('-');
        line.push_str(&self.operation);
        for arg in &self.args {
            line.push(' ');
            self.write_arg(arg, &mut line)?;
        }
        line.push('\n');
        Ok(line)
    }

    fn write_arg(&self, arg: &Arg, line: &mut String) -> Result<(), CommandError> {
        let control = |text: &str| CommandError::ControlCharacter {
            operation: self.operation.to_string(),
            arg: text.to_owned(),
        };
        match arg {
            Arg::Mi(text) => {
                let bare = !text.is_empty()
                    && !text.starts_with('"')
                    && text
                        .bytes()
                        .all(|b| b > b' ' && b != b'"' && b != b'\\' && b != 0x7f);
                if bare {
                    line.push_str(text);
                } else {
                    quote_mi(text, line);
                }
            }
            Arg::Argv(text) => {
                if text.bytes().any(|b| b < b' ' || b == 0x7f) {
                    return Err(control(text));
                }
                let bare = !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b != b' ' && b != b'"' && b != b'\'' && b != b'\\');
                if bare {
                    line.push_str(text);
                } else {
                    line.push('"');
                    for c in text.chars() {
                        if c == '"' || c == '\\' {
                            line.push('\\');
                        }
                        line.push(c);
                    }
                    line.push('"');
                }
            }
            Arg::Raw(text) => {
                if text.bytes().any(|b| b == b'\n' || b == b'\r' || b == 0) {
                    return Err(control(text));
                }
                line.push_str(text);
            }
        }
        Ok(())
    }

    // ---- the commands the daemon uses ----

    /// `-target-attach PID` (CLI `attach`).
    pub fn target_attach(pid: u32) -> Self {
        Self::fixed("target-attach").with(Arg::Raw(pid.to_string()))
    }

    /// `-target-detach`: the process keeps running without gdb.
    pub fn target_detach() -> Self {
        Self::fixed("target-detach")
    }

    /// `-file-exec-and-symbols PATH` (CLI `file`). A non-UTF-8 path is passed lossily; gdb would
    /// not find it either way, and the error names it.
    pub fn file_exec_and_symbols(path: &Path) -> Self {
        Self::fixed("file-exec-and-symbols").with(Arg::Argv(path.to_string_lossy().into_owned()))
    }

    /// `-exec-run`: start the program loaded with [`Command::file_exec_and_symbols`].
    pub fn exec_run() -> Self {
        Self::fixed("exec-run")
    }

    pub fn exec_continue() -> Self {
        Self::fixed("exec-continue")
    }

    /// `-exec-interrupt`. Only answered while the target runs if gdb was started with
    /// `mi-async on`, which [`super::Gdb::spawn`] does.
    pub fn exec_interrupt() -> Self {
        Self::fixed("exec-interrupt")
    }

    pub fn exec_step() -> Self {
        Self::fixed("exec-step")
    }

    pub fn exec_next() -> Self {
        Self::fixed("exec-next")
    }

    pub fn exec_finish() -> Self {
        Self::fixed("exec-finish")
    }

    /// `-break-insert [-t] [-f] [-d] [-c COND] [-p THREAD] LOCATION`.
    pub fn break_insert(location: &str, options: &BreakOptions) -> Self {
        let mut cmd = Self::fixed("break-insert");
        if options.temporary {
            cmd = cmd.arg("-t");
        }
        if options.pending {
            cmd = cmd.arg("-f");
        }
        if options.disabled {
            cmd = cmd.arg("-d");
        }
        if let Some(cond) = &options.condition {
            cmd = cmd.arg("-c").arg(cond.as_str());
        }
        if let Some(thread) = options.thread {
            cmd = cmd.arg("-p").arg(thread.to_string());
        }
        // "--" keeps a location such as "-1" from being read as an option.
        if location.starts_with('-') {
            cmd = cmd.arg("--");
        }
        cmd.arg(location)
    }

    /// `-break-delete N`.
    pub fn break_delete(number: u32) -> Self {
        Self::fixed("break-delete").arg(number.to_string())
    }

    /// `-break-condition N [COND]`; an empty condition removes it.
    pub fn break_condition(number: u32, condition: &str) -> Self {
        let cmd = Self::fixed("break-condition").arg(number.to_string());
        if condition.is_empty() {
            cmd
        } else {
            cmd.arg(condition)
        }
    }

    pub fn break_enable(number: u32) -> Self {
        Self::fixed("break-enable").arg(number.to_string())
    }

    pub fn break_disable(number: u32) -> Self {
        Self::fixed("break-disable").arg(number.to_string())
    }

    pub fn break_list() -> Self {
        Self::fixed("break-list")
    }

    /// `-stack-list-frames [LOW HIGH]`.
    pub fn stack_list_frames(range: Option<(u32, u32)>) -> Self {
        let cmd = Self::fixed("stack-list-frames");
        match range {
            Some((low, high)) => cmd.arg(low.to_string()).arg(high.to_string()),
            None => cmd,
        }
    }

    /// `-stack-list-arguments --simple-values [LOW HIGH]` (or `--no-values` / `--all-values`).
    pub fn stack_list_arguments(values: PrintValues, range: Option<(u32, u32)>) -> Self {
        let cmd = Self::fixed("stack-list-arguments").arg(values.flag());
        match range {
            Some((low, high)) => cmd.arg(low.to_string()).arg(high.to_string()),
            None => cmd,
        }
    }

    /// `-stack-select-frame LEVEL`: later expressions are evaluated in that frame.
    pub fn stack_select_frame(level: u32) -> Self {
        Self::fixed("stack-select-frame").arg(level.to_string())
    }

    /// `-data-evaluate-expression EXPR`.
    pub fn data_evaluate_expression(expression: &str) -> Self {
        Self::fixed("data-evaluate-expression").arg(expression)
    }

    /// `-interpreter-exec console "CMD"`: any CLI command (`add-symbol-file`, `handle`, `list`,
    /// what a user types). Its output arrives as console stream records before the result, and
    /// [`super::Gdb::cmd`] returns it with the result. A command with a line break is refused
    /// when the line is built: gdb would run only part of it.
    pub fn console(command: &str) -> Self {
        let cmd = Self::fixed("interpreter-exec").arg("console");
        if command.bytes().any(|b| b == b'\n' || b == b'\r') {
            // Kept as Raw so that to_line reports it instead of silently escaping it.
            cmd.with(Arg::Raw(command.to_owned()))
        } else {
            cmd.with(Arg::Mi(command.to_owned()))
        }
    }

    /// `-gdb-set SETTING VALUE` (CLI `set`, which takes the text verbatim: no quoting).
    pub fn gdb_set(setting: &str, value: &str) -> Self {
        Self::fixed("gdb-set")
            .with(Arg::Raw(setting.to_owned()))
            .with(Arg::Raw(value.to_owned()))
    }

    /// `-gdb-show SETTING`.
    pub fn gdb_show(setting: &str) -> Self {
        Self::fixed("gdb-show").with(Arg::Raw(setting.to_owned()))
    }

    /// `-symbol-info-functions [--include-nondebug] [--name REGEX] [--max-results N]`. REGEX is
    /// gdb's (POSIX basic) regular expression: `^tcp_v4` works, `a|b` does not.
    pub fn symbol_info_functions(
        name_regex: Option<&str>,
        include_nondebug: bool,
        max_results: Option<u32>,
    ) -> Self {
        let mut cmd = Self::fixed("symbol-info-functions");
        if include_nondebug {
            cmd = cmd.arg("--include-nondebug");
        }
        if let Some(regex) = name_regex {
            cmd = cmd.arg("--name").arg(regex);
        }
        if let Some(max) = max_results {
            cmd = cmd.arg("--max-results").arg(max.to_string());
        }
        cmd
    }

    /// `-inferior-tty-set PATH`: where a program started with `-exec-run` gets its terminal. Without
    /// it the program shares gdb's stdin and stdout, i.e. our MI pipe.
    pub fn inferior_tty_set(path: &Path) -> Self {
        Self::fixed("inferior-tty-set").arg(path.to_string_lossy().into_owned())
    }

    /// `-gdb-exit`.
    pub fn gdb_exit() -> Self {
        Self::fixed("gdb-exit")
    }
}

/// Quote `text` as an MI C-string parameter. Non-ASCII stays raw UTF-8: gdb's MI argument parser
/// passes those bytes through, and octal would be wrong if the command is CLI-backed after all.
fn quote_mi(text: &str, line: &mut String) {
    line.push('"');
    for c in text.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\t' => line.push_str("\\t"),
            '\r' => line.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                line.push_str(&format!("\\{:03o}", c as u32));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

impl fmt::Display for Command {
    /// The command as gdb will see it, without token; for error messages and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_line(None) {
            Ok(line) => f.write_str(line.trim_end_matches('\n')),
            Err(_) => {
                write!(f, "-{}", self.operation)?;
                for arg in &self.args {
                    let (Arg::Mi(text) | Arg::Argv(text) | Arg::Raw(text)) = arg;
                    write!(f, " {text:?}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(cmd: &Command) -> String {
        cmd.to_line(Some(Token(7))).unwrap()
    }

    #[test]
    fn bare_and_quoted_parameters() {
        let cmd = Command::break_insert(
            "prog.c:23",
            &BreakOptions {
                condition: Some("i == 2 && p->name[0] == '\\\"'".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            line(&cmd),
            "7-break-insert -c \"i == 2 && p->name[0] == '\\\\\\\"'\" prog.c:23\n"
        );
    }

    #[test]
    fn console_command_is_one_c_string() {
        assert_eq!(
            line(&Command::console("print \"a\\tb\"")),
            "7-interpreter-exec console \"print \\\"a\\\\tb\\\"\"\n"
        );
        assert_eq!(
            line(&Command::console("bt")),
            "7-interpreter-exec console bt\n"
        );
    }

    #[test]
    fn line_breaks_cannot_inject_a_second_command() {
        let err = Command::console("print 1\n-gdb-exit")
            .to_line(None)
            .unwrap_err();
        assert!(
            matches!(err, CommandError::ControlCharacter { .. }),
            "{err}"
        );
        let err = Command::gdb_set("args", "x\n-gdb-exit")
            .to_line(None)
            .unwrap_err();
        assert!(
            matches!(err, CommandError::ControlCharacter { .. }),
            "{err}"
        );
        // An MI-native parameter may hold a newline: it is escaped inside the C string.
        assert_eq!(
            Command::data_evaluate_expression("a\nb")
                .to_line(None)
                .unwrap(),
            "-data-evaluate-expression \"a\\nb\"\n"
        );
    }

    #[test]
    fn cli_backed_paths_use_shell_style_quotes() {
        let cmd = Command::file_exec_and_symbols(Path::new("/tmp/d ir/pr\"og é"));
        assert_eq!(
            line(&cmd),
            "7-file-exec-and-symbols \"/tmp/d ir/pr\\\"og é\"\n"
        );
        assert_eq!(
            line(&Command::file_exec_and_symbols(Path::new("/bin/true"))),
            "7-file-exec-and-symbols /bin/true\n"
        );
    }

    #[test]
    fn operation_names_are_checked() {
        assert_eq!(
            Command::new("-break-list").to_line(None).unwrap(),
            "-break-list\n"
        );
        assert!(matches!(
            Command::new("break-list\n-gdb-exit").to_line(None),
            Err(CommandError::BadOperation(_))
        ));
        assert!(Command::new("").to_line(None).is_err());
    }

    #[test]
    fn empty_argument_is_quoted() {
        assert_eq!(
            Command::new("x").arg("").to_line(None).unwrap(),
            "-x \"\"\n"
        );
    }

    #[test]
    fn location_starting_with_dash_is_not_an_option() {
        assert_eq!(
            Command::break_insert("-1", &BreakOptions::default())
                .to_line(None)
                .unwrap(),
            "-break-insert -- -1\n"
        );
    }
}
