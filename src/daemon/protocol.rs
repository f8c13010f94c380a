//! The JSON protocol between the CLI (or a script, or an IDE) and a session daemon.
//!
//! One request per line, one response per line. A connection that sends `{"op":"events"}`
//! afterwards receives every stop as an `Event` line until it closes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Break {
        location: String,
        #[serde(default)]
        cond: Option<String>,
    },
    Delete {
        id: u32,
    },
    Breaks,
    Continue,
    Interrupt,
    Wait {
        #[serde(default)]
        timeout: Option<f64>,
    },
    Bt,
    Print {
        expr: String,
    },
    Step,
    Next,
    Finish,
    List {
        #[serde(default)]
        location: Option<String>,
    },
    Gdb {
        command: String,
    },
    Load {
        file: String,
        #[serde(default)]
        module_path: Vec<PathBuf>,
    },
    Skb {
        #[serde(default)]
        expr: Option<String>,
        #[serde(default)]
        raw: bool,
        #[serde(default)]
        hex: bool,
    },
    /// Kernel symbols and commands starting with a prefix (shell completion).
    Complete {
        prefix: String,
    },
    Detach,
    Events,
}

/// The reply to one request: `text` is for people, `data` for programs.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    pub fn ok_text(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            ..Default::default()
        }
    }
    pub fn ok_data(text: impl Into<String>, data: serde_json::Value) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            data: Some(data),
            ..Default::default()
        }
    }
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// One frame of a backtrace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FrameInfo {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// A stop as `wait` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StopInfo {
    pub reason: String,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub args: BTreeMap<String, String>,
    pub backtrace: Vec<FrameInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakpoint: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The decoded packet when a `struct sk_buff *` argument is in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skb: Option<serde_json::Value>,
    /// The skb view as text (the CLI prints it under the stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skb_text: Option<String>,
}

impl StopInfo {
    /// A one-line summary plus the decoded packet, for people.
    pub fn render(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut s = format!(
            "stopped ({}) in {} ({}) at {}:{}",
            self.reason,
            self.function.as_deref().unwrap_or("??"),
            args.join(", "),
            self.file.as_deref().unwrap_or("??"),
            self.line
                .map(|l| l.to_string())
                .unwrap_or_else(|| "?".into())
        );
        for (i, f) in self.backtrace.iter().enumerate().take(12) {
            s.push_str(&format!(
                "\n  #{i:<2} {} at {}:{}",
                f.function.as_deref().unwrap_or("??"),
                f.file.as_deref().unwrap_or("??"),
                f.line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
        if let Some(t) = &self.skb_text {
            s.push('\n');
            s.push_str(t.trim_end());
        }
        s
    }
}

/// A line on an events connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Stopped(StopInfo),
    Running,
    ModuleLoaded {
        name: String,
        text: String,
        source: String,
    },
    ModuleUnloaded {
        name: String,
    },
    Exited {
        reason: String,
    },
}
