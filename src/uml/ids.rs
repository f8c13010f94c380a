//! Newtypes for identifiers that must never be mixed up: a UML machine's umid, a host process id
//! and an address in the guest kernel's memory.
//!
//! Each one validates on construction, so code that holds a `Umid` never has to ask again whether
//! it is safe to use as a directory name or on a kernel command line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest umid UML accepts: its buffer is 64 bytes with the terminating NUL. A longer `umid=`
/// is not refused by UML: it silently boots under a random umid, so we must refuse it first.
pub const UMID_MAX_LEN: usize = 63;

/// Why a string is not a usable umid, host pid or guest address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("umid is empty: give the machine a name")]
    EmptyUmid,
    #[error(
        "umid `{umid}` is {len} characters long; UML allows at most {UMID_MAX_LEN}: shorten it"
    )]
    UmidTooLong { umid: String, len: usize },
    #[error(
        "umid `{umid}` contains {ch:?}: use only letters, digits, `-`, `_` and `.` \
         (the umid names a directory and sits on the kernel command line)"
    )]
    UmidBadChar { umid: String, ch: char },
    #[error("umid `{umid}` starts with {ch:?}: start it with a letter, digit or `_`")]
    UmidBadStart { umid: String, ch: char },
    #[error("umid `{umid}` contains `..`: it names a directory, so it may not")]
    UmidDotDot { umid: String },
    #[error("`{name}` is not a lab name: it {problem}")]
    BadLabName { name: String, problem: String },
    #[error("`{text}` is not a host pid: expected a positive decimal number")]
    BadPid { text: String },
    #[error("`{text}` is not a guest address: expected hexadecimal digits, with or without 0x")]
    BadAddr { text: String },
}

/// Longest lab name: it names the lab's run directory and (behind `umldbg-`) its network
/// namespace, and prefixes its umids.
pub const LAB_NAME_MAX_LEN: usize = 63;

/// Why `s` cannot name a lab (the one check for lab names, wherever a name comes from: a lab file,
/// `--name`, `--prefix`, `lab down`, `--lab`), or None when it can. Lab names become one path
/// component under the run directory and the cache's stage directory, so `/`, `..`, a leading
/// `.` and the empty name are refused, as is a leading `-` (it would read as an option).
pub fn lab_name_problem(s: &str) -> Option<String> {
    let Some(first) = s.chars().next() else {
        return Some("is empty: give it a name".to_owned());
    };
    if s.len() > LAB_NAME_MAX_LEN {
        return Some(format!(
            "is {} characters long: use at most {LAB_NAME_MAX_LEN}",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Some(format!(
            "contains {c:?}: use only letters, digits, `-`, `_` and `.`"
        ));
    }
    if first == '.' || first == '-' {
        return Some(format!(
            "starts with {first:?}: start it with a letter, digit or `_`"
        ));
    }
    if s.contains("..") {
        return Some("contains `..`".to_owned());
    }
    None
}

/// Checks a lab name given on the command line or in a request (see [`lab_name_problem`]).
pub fn check_lab_name(s: &str) -> Result<(), IdError> {
    match lab_name_problem(s) {
        Some(problem) => Err(IdError::BadLabName {
            // Escaped: the error stays one line whatever the name holds.
            name: s.escape_debug().to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

/// For clap: a lab name argument, checked before any command runs.
pub fn parse_lab_name(s: &str) -> Result<String, IdError> {
    check_lab_name(s).map(|()| s.to_owned())
}

/// For clap: a umid argument (`--umid`, `exec UMID`, `attach UMID`, ...), checked before any
/// command runs.
pub fn parse_umid(s: &str) -> Result<String, IdError> {
    check_umid(s).map(|()| s.to_owned())
}

/// Checks that `s` is a umid that UML will really use and that is safe as a path component and a
/// kernel command-line word.
pub fn check_umid(s: &str) -> Result<(), IdError> {
    let Some(first) = s.chars().next() else {
        return Err(IdError::EmptyUmid);
    };
    if s.len() > UMID_MAX_LEN {
        return Err(IdError::UmidTooLong {
            umid: s.escape_debug().to_string(),
            len: s.len(),
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Err(IdError::UmidBadChar {
            umid: s.escape_debug().to_string(),
            ch,
        });
    }
    // A leading '.' allows "." and ".." (path traversal inside uml_dir) and hidden directories; a
    // leading '-' reads as an option on our own command line.
    if first == '.' || first == '-' {
        return Err(IdError::UmidBadStart {
            umid: s.escape_debug().to_string(),
            ch: first,
        });
    }
    if s.contains("..") {
        return Err(IdError::UmidDotDot {
            umid: s.escape_debug().to_string(),
        });
    }
    Ok(())
}

/// A UML machine's unique id (`umid=` on its command line, the directory under `uml_dir`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Umid(String);

impl Umid {
    pub fn new(s: impl Into<String>) -> Result<Umid, IdError> {
        let s = s.into();
        check_umid(&s)?;
        Ok(Umid(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Umid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Umid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Umid, IdError> {
        Umid::new(s)
    }
}

impl TryFrom<String> for Umid {
    type Error = IdError;
    fn try_from(s: String) -> Result<Umid, IdError> {
        Umid::new(s)
    }
}

impl From<Umid> for String {
    fn from(u: Umid) -> String {
        u.0
    }
}

impl AsRef<str> for Umid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A process id on the host (for a UML machine: the kernel's main thread, from its pid file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct HostPid(i32);

impl HostPid {
    /// Pids 0 and below mean "process group" or "every process" to kill(2): never a machine.
    pub fn new(pid: i32) -> Result<HostPid, IdError> {
        if pid <= 0 {
            return Err(IdError::BadPid {
                text: pid.to_string(),
            });
        }
        Ok(HostPid(pid))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for HostPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for HostPid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<HostPid, IdError> {
        let bad = || IdError::BadPid { text: s.to_owned() };
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        HostPid::new(t.parse().map_err(|_| bad())?).map_err(|_| bad())
    }
}

impl TryFrom<i32> for HostPid {
    type Error = IdError;
    fn try_from(pid: i32) -> Result<HostPid, IdError> {
        HostPid::new(pid)
    }
}

impl From<HostPid> for i32 {
    fn from(p: HostPid) -> i32 {
        p.0
    }
}

/// An address in the guest kernel's virtual memory (a symbol, a module section, an `sk_buff`).
///
/// Printed and parsed as hexadecimal because every kernel source of addresses is: sysfs section
/// files (`0x...`), `/proc/kallsyms` (bare hex), gdb (`0x...`). Serialized as a `"0x..."` string
/// so JSON readers in other languages do not lose bits above 2^53.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestAddr(pub u64);

impl GuestAddr {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GuestAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for GuestAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl FromStr for GuestAddr {
    type Err = IdError;
    fn from_str(s: &str) -> Result<GuestAddr, IdError> {
        let t = s.trim();
        let digits = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(IdError::BadAddr { text: s.to_owned() });
        }
        u64::from_str_radix(digits, 16)
            .map(GuestAddr)
            .map_err(|_| IdError::BadAddr { text: s.to_owned() })
    }
}

impl Serialize for GuestAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GuestAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GuestAddr, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = GuestAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hexadecimal address string or an unsigned integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GuestAddr, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GuestAddr, E> {
                Ok(GuestAddr(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umid_accepts_article_names() {
        for s in [
            "client-uml-A",
            "router-uml-R",
            "x",
            "a.b_c-9",
            &"a".repeat(63),
        ] {
            assert_eq!(Umid::new(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn umid_rejects_what_uml_or_paths_cannot_take() {
        assert_eq!(Umid::new(""), Err(IdError::EmptyUmid));
        assert!(matches!(
            Umid::new("a".repeat(64)),
            Err(IdError::UmidTooLong { len: 64, .. })
        ));
        for s in ["a/b", "a b", "a=b", "ä"] {
            assert!(
                matches!(Umid::new(s), Err(IdError::UmidBadChar { .. })),
                "{s}"
            );
        }
        for s in [".", "..", ".hidden", "-x"] {
            assert!(
                matches!(Umid::new(s), Err(IdError::UmidBadStart { .. })),
                "{s}"
            );
        }
    }

    #[test]
    fn umid_with_dotdot_is_refused() {
        assert!(matches!(Umid::new("a..b"), Err(IdError::UmidDotDot { .. })));
        assert!(Umid::new("a.b").is_ok());
    }

    #[test]
    fn lab_names_that_are_paths_or_empty_are_refused() {
        for s in ["tla-article", "x", "a.b_c-9", "_x", &"a".repeat(63)] {
            assert_eq!(check_lab_name(s), Ok(()), "{s}");
        }
        for s in [
            "",
            ".",
            "..",
            "../x",
            "../../../var/tmp/victim",
            "/tmp",
            "a/b",
            "a..b",
            ".hidden",
            "-x",
            "a b",
            "a\nb",
            &"a".repeat(64),
        ] {
            let e = check_lab_name(s).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("is not a lab name") && !text.contains('\n'),
                "{s:?}: {text}"
            );
        }
    }

    #[test]
    fn umid_serde_validates() {
        let u: Umid = serde_json::from_str("\"router-uml-R\"").unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"router-uml-R\"");
        assert!(serde_json::from_str::<Umid>("\"../etc\"").is_err());
    }

    #[test]
    fn pid_parses_pid_file_content() {
        assert_eq!("1234\n".parse::<HostPid>().unwrap().get(), 1234);
        for s in ["", "0", "-5", "12x", "99999999999", "+3"] {
            assert!(s.parse::<HostPid>().is_err(), "{s:?}");
        }
        assert!(serde_json::from_str::<HostPid>("0").is_err());
        assert_eq!(
            serde_json::to_string(&HostPid::new(7).unwrap()).unwrap(),
            "7"
        );
    }

    #[test]
    fn guest_addr_round_trips_as_hex() {
        let a: GuestAddr = "0x0000000060a1b000".parse().unwrap();
        assert_eq!(a, GuestAddr(0x60a1_b000));
        assert_eq!(a.to_string(), "0x60a1b000");
        assert_eq!(
            "ffffffffa0000000".parse::<GuestAddr>().unwrap().0,
            0xffff_ffff_a000_0000
        );
        for s in ["", "0x", "xyz", "0x11112222333344445"] {
            assert!(s.parse::<GuestAddr>().is_err(), "{s:?}");
        }
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0x60a1b000\"");
        assert_eq!(
            serde_json::from_str::<GuestAddr>("\"0x10\"").unwrap(),
            GuestAddr(16)
        );
        assert_eq!(
            serde_json::from_str::<GuestAddr>("16").unwrap(),
            GuestAddr(16)
        );
    }
}
