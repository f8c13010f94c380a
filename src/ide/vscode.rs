//! `.vscode/launch.json` (a cppdbg configuration for the server) and `.vscode/tasks.json` (a
//! background task that starts it), merged into whatever the files already hold: entries with
//! our name are replaced, everything else is kept.

use serde_json::{Value, json};

use super::{READY_PATTERN, Setup, serve_args, setup_commands};

pub fn config_name(s: &Setup) -> String {
    format!("umldbg: {}", s.umid)
}

pub fn task_label(s: &Setup) -> String {
    format!("umldbg serve {}", s.umid)
}

/// The launch configuration.
pub fn launch_config(s: &Setup) -> Value {
    let setup: Vec<Value> = setup_commands()
        .into_iter()
        .map(|(text, why)| json!({"description": why, "text": text, "ignoreFailures": false}))
        .collect();
    json!({
        "name": config_name(s),
        "type": "cppdbg",
        "request": "launch",
        "program": s.image.display().to_string(),
        "cwd": "${workspaceFolder}",
        "MIMode": "gdb",
        "miDebuggerPath": s.gdb,
        "miDebuggerServerAddress": s.address,
        "stopAtConnect": false,
        "setupCommands": setup,
        "preLaunchTask": task_label(s),
    })
}

/// The task that runs `umldbg serve` in the background until gdb leaves.
pub fn serve_task(s: &Setup) -> Value {
    json!({
        "label": task_label(s),
        "type": "process",
        "command": s.umldbg.display().to_string(),
        "args": serve_args(s),
        "isBackground": true,
        "problemMatcher": {
            "owner": "umldbg",
            "pattern": {"regexp": "^(umldbg): (.*)$", "file": 1, "message": 2},
            "background": {
                "activeOnStart": true,
                "beginsPattern": "^umldbg serve: ",
                "endsPattern": READY_PATTERN,
            },
        },
    })
}

/// Why a VS Code file cannot take our configuration; the user's file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{file}: not JSON even without comments: {error}")]
    NotJson {
        file: &'static str,
        error: serde_json::Error,
    },
    #[error("{file}: \"{key}\" is not an array")]
    NotAnArray {
        file: &'static str,
        key: &'static str,
    },
}

/// Put `item` into the array `key` of `doc`, replacing the element whose `id_key` equals
/// `item`'s. A document that is not an object becomes one.
fn upsert(
    doc: &mut Value,
    key: &'static str,
    id_key: &str,
    item: Value,
    version: &str,
    file: &'static str,
) -> Result<(), MergeError> {
    if !doc.is_object() {
        *doc = json!({});
    }
    let obj = doc.as_object_mut().expect("object");
    obj.entry("version").or_insert_with(|| json!(version));
    let arr = obj.entry(key).or_insert_with(|| json!([]));
    let Some(arr) = arr.as_array_mut() else {
        return Err(MergeError::NotAnArray { file, key });
    };
    let id = item[id_key].clone();
    match arr.iter_mut().find(|e| e[id_key] == id) {
        Some(e) => *e = item,
        None => arr.push(item),
    }
    Ok(())
}

/// The outcome of merging into one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    /// The old text had comments or trailing commas, which the rewrite drops.
    pub lost_comments: bool,
}

fn merge(
    old: Option<&str>,
    key: &'static str,
    id_key: &str,
    item: Value,
    version: &str,
    file: &'static str,
) -> Result<Merged, MergeError> {
    let (mut doc, lost_comments) = match old {
        None => (json!({}), false),
        Some(t) if t.trim().is_empty() => (json!({}), false),
        Some(t) => {
            let (strict, removed) = super::jsonc::to_strict(t);
            let v: Value = serde_json::from_str(&strict)
                .map_err(|error| MergeError::NotJson { file, error })?;
            (v, removed)
        }
    };
    upsert(&mut doc, key, id_key, item, version, file)?;
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON value serialises");
    text.push('\n');
    Ok(Merged {
        text,
        lost_comments,
    })
}

/// `launch.json` with our configuration merged in.
pub fn merge_launch(old: Option<&str>, s: &Setup) -> Result<Merged, MergeError> {
    merge(
        old,
        "configurations",
        "name",
        launch_config(s),
        "0.2.0",
        "launch.json",
    )
}

/// `tasks.json` with our task merged in.
pub fn merge_tasks(old: Option<&str>, s: &Setup) -> Result<Merged, MergeError> {
    merge(old, "tasks", "label", serve_task(s), "2.0.0", "tasks.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn setup() -> Setup {
        Setup {
            umid: "router-uml-R".into(),
            image: PathBuf::from("/k/linux"),
            address: "127.0.0.1:1234".into(),
            port: 1234,
            gdb: "gdb".into(),
            umldbg: PathBuf::from("/usr/bin/umldbg"),
            module_paths: vec![],
        }
    }

    #[test]
    fn a_new_launch_json_has_one_configuration_without_continue() {
        let m = merge_launch(None, &setup()).unwrap();
        let v: Value = serde_json::from_str(&m.text).unwrap();
        let c = &v["configurations"][0];
        assert_eq!(c["name"], "umldbg: router-uml-R");
        assert_eq!(c["type"], "cppdbg");
        assert_eq!(c["program"], "/k/linux");
        assert_eq!(c["miDebuggerServerAddress"], "127.0.0.1:1234");
        assert_eq!(c["preLaunchTask"], "umldbg serve router-uml-R");
        let texts: Vec<&str> = c["setupCommands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["text"].as_str().unwrap())
            .collect();
        assert!(texts.contains(&"set osabi none"));
        assert!(!texts.iter().any(|t| t.starts_with("c") && "continue".starts_with(t.split(' ').next().unwrap())));
    }

    #[test]
    fn merging_keeps_other_configurations_and_replaces_ours() {
        let old = r#"{
  // mine
  "version": "0.2.0",
  "configurations": [
    {"name": "my program", "type": "cppdbg", "request": "launch", "program": "a.out"},
    {"name": "umldbg: router-uml-R", "program": "old"},
  ]
}"#;
        let m = merge_launch(Some(old), &setup()).unwrap();
        assert!(m.lost_comments);
        let v: Value = serde_json::from_str(&m.text).unwrap();
        let cs = v["configurations"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "my program");
        assert_eq!(cs[1]["program"], "/k/linux");
        // Merging again changes nothing.
        assert_eq!(merge_launch(Some(&m.text), &setup()).unwrap().text, m.text);
    }

    #[test]
    fn the_task_waits_for_the_ready_line() {
        let m = merge_tasks(
            Some("{\"version\": \"2.0.0\", \"tasks\": [{\"label\": \"build\"}]}"),
            &setup(),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&m.text).unwrap();
        let t = &v["tasks"][1];
        assert_eq!(t["label"], "umldbg serve router-uml-R");
        assert_eq!(t["isBackground"], true);
        assert_eq!(
            t["args"],
            json!([
                "serve",
                "router-uml-R",
                "--listen",
                "127.0.0.1:1234",
                "--once"
            ])
        );
        let re = t["problemMatcher"]["background"]["endsPattern"]
            .as_str()
            .unwrap();
        assert_eq!(re, READY_PATTERN);
    }

    #[test]
    fn garbage_is_refused_with_the_file_name() {
        let e = merge_tasks(Some("{tasks: nope"), &setup())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tasks.json: not JSON"), "{e}");
        let e = merge_launch(Some("{\"configurations\": 3}"), &setup())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "launch.json: \"configurations\" is not an array");
    }
}
