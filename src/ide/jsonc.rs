//! VS Code's JSON with comments: what `launch.json` and `tasks.json` may hold. Comments and
//! trailing commas are taken out so that serde_json can read the file; strings are left alone.

/// `text` as strict JSON: `//` and `/* */` comments removed (outside strings), commas before a
/// closing `]` or `}` dropped. Returns whether anything was removed (then a rewrite loses it).
pub fn to_strict(text: &str) -> (String, bool) {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut removed = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            // Copy a whole string, escapes included.
            out.push(c);
            i += 1;
            while i < b.len() {
                out.push(b[i]);
                if b[i] == b'\\' && i + 1 < b.len() {
                    out.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if b[i - 1] == b'"' {
                    break;
                }
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            removed = true;
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            removed = true;
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else if c == b']' || c == b'}' {
            // Drop a comma that only whitespace separates from this bracket.
            let mut j = out.len();
            while j > 0 && out[j - 1].is_ascii_whitespace() {
                j -= 1;
            }
            if j > 0 && out[j - 1] == b',' {
                out.remove(j - 1);
                removed = true;
            }
            out.push(c);
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_go_strings_stay() {
        let t = r#"{
  // a comment
  "a": "http://x/*not a comment*/", /* block
  comment */ "b": [1, 2,],
  "c": "quote \" // still a string",
}"#;
        let (s, removed) = to_strict(t);
        assert!(removed);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"], "http://x/*not a comment*/");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
        assert_eq!(v["c"], "quote \" // still a string");
    }

    #[test]
    fn strict_json_is_unchanged() {
        let t = "{\"a\": [1, {\"b\": \"c,]\"}]}";
        assert_eq!(to_strict(t), (t.to_owned(), false));
    }
}
