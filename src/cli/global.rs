//! The options every command takes (`--cache`, `--umid`, `--uml-dir`, `--json`): parsed once,
//! handed to each command as one [`Global`], and refused by a command they mean nothing to
//! instead of being dropped without a word.

use std::path::PathBuf;

use clap::ArgMatches;
use clap::parser::ValueSource;

/// The global options, resolved: defaults filled in, `--uml-dir` made absolute.
#[derive(Debug, Clone)]
pub struct Global {
    /// Kernels, images, layouts (`--cache`, `$UMLDBG_CACHE`, `~/.cache/umldbg`).
    pub cache: PathBuf,
    /// The machine a debug command talks to (`--umid`; default: the only attached one).
    pub umid: Option<String>,
    /// UML's directory of pid files and sockets (`--uml-dir`, default `~/.uml`).
    pub uml_dir: PathBuf,
    /// Print JSON instead of text.
    pub json: bool,
    given: Given,
}

/// Which global options the user typed on the command line (an environment variable's value
/// is a default for every command, never refused).
#[derive(Debug, Clone, Copy, Default)]
struct Given {
    cache: bool,
    umid: bool,
    uml_dir: bool,
    json: bool,
}

/// One global option, as a command declares what it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    Cache,
    Umid,
    UmlDir,
    Json,
}

impl Opt {
    fn flag(self) -> &'static str {
        match self {
            Opt::Cache => "--cache",
            Opt::Umid => "--umid",
            Opt::UmlDir => "--uml-dir",
            Opt::Json => "--json",
        }
    }
}

impl Global {
    /// From what clap parsed; `matches` tells typed options from defaults (the `--umid`
    /// option's id is `global_umid`: commands name their machine `umid` too).
    pub fn new(
        matches: &ArgMatches,
        cache: Option<PathBuf>,
        umid: Option<String>,
        uml_dir: Option<PathBuf>,
        json: bool,
    ) -> Global {
        let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let given = Given {
            cache: typed("cache"),
            umid: typed("global_umid"),
            uml_dir: typed("uml_dir"),
            json: json && typed("json"),
        };
        Global {
            cache: cache.unwrap_or_else(umldbg::util::cache_dir),
            umid,
            uml_dir: uml_dir
                .map(|d| std::path::absolute(&d).unwrap_or(d))
                .unwrap_or_else(umldbg::uml::instance::default_uml_dir),
            json,
            given,
        }
    }

    /// With `--uml-dir` given, a command that finds its machine through the machine's lab
    /// (exec, console) checks that the machine is one of that directory's.
    pub fn machine_is_there(&self, umid: &str) -> anyhow::Result<()> {
        if self.given.uml_dir && !self.uml_dir.join(umid).join("pid").is_file() {
            anyhow::bail!(
                "no machine {umid} under --uml-dir {}: check the umid, or leave --uml-dir out",
                self.uml_dir.display()
            );
        }
        Ok(())
    }

    /// Refuse a global option the user typed that `command` does not take.
    pub fn takes(&self, command: &str, takes: &[Opt]) -> anyhow::Result<&Global> {
        let typed = [
            (Opt::Cache, self.given.cache),
            (Opt::Umid, self.given.umid),
            (Opt::UmlDir, self.given.uml_dir),
            (Opt::Json, self.given.json),
        ];
        for (opt, given) in typed {
            if given && !takes.contains(&opt) {
                anyhow::bail!(
                    "{} means nothing to `umldbg {command}`: leave it out{}",
                    opt.flag(),
                    match opt {
                        Opt::Umid => " and name the machine as the command's argument",
                        _ => "",
                    }
                );
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn parse(args: &[&str]) -> Global {
        let m = Command::new("umldbg")
            .arg(
                Arg::new("cache")
                    .long("cache")
                    .env("UMLDBG_TEST_GLOBAL_CACHE"),
            )
            .arg(Arg::new("global_umid").long("umid"))
            .arg(Arg::new("uml_dir").long("uml-dir"))
            .arg(Arg::new("json").long("json").action(ArgAction::SetTrue))
            .get_matches_from(std::iter::once("umldbg").chain(args.iter().copied()));
        Global::new(
            &m,
            m.get_one::<String>("cache").map(PathBuf::from),
            m.get_one::<String>("global_umid").cloned(),
            m.get_one::<String>("uml_dir").map(PathBuf::from),
            m.get_flag("json"),
        )
    }

    #[test]
    fn an_option_a_command_does_not_take_is_refused_by_name() {
        let g = parse(&["--json"]);
        let e = g.takes("console", &[Opt::UmlDir]).unwrap_err().to_string();
        assert_eq!(e, "--json means nothing to `umldbg console`: leave it out");
        assert!(g.takes("lab status", &[Opt::Json]).is_ok());
        let g = parse(&["--umid", "R"]);
        let e = g
            .takes("kernel", &[Opt::Cache, Opt::Json])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--umid means nothing to `umldbg kernel`"),
            "{e}"
        );
    }

    #[test]
    fn options_left_out_are_never_refused() {
        let g = parse(&[]);
        assert!(g.takes("symfile", &[]).is_ok());
        assert!(!g.json && g.umid.is_none());
    }

    #[test]
    fn uml_dir_is_made_absolute() {
        let g = parse(&["--uml-dir", "rel/dir"]);
        assert!(g.uml_dir.is_absolute() && g.uml_dir.ends_with("rel/dir"));
    }
}
