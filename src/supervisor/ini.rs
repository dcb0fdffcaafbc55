//! A minimal INI reader that keeps the line of every key, so errors can name it.
//! (The INI crates on crates.io drop line numbers; supervisord's syntax is small.)

/// One `key = value` with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// A line that is not a section, a key, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses `text`. Comments start with `;` or `#` at the start of a line, or ` ;` inside one
/// (as in supervisord); a line starting with white space continues the previous value.
pub fn parse(text: &str) -> Result<Vec<Section>, SyntaxError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            if let Some(e) = sections.last_mut().and_then(|s| s.entries.last_mut()) {
                e.value.push('\n');
                e.value.push_str(strip_comment(trimmed));
                continue;
            }
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(SyntaxError { line, message: format!("section header {trimmed:?} has no closing ']'") });
            };
            sections.push(Section { name: name.trim().to_string(), line, entries: Vec::new() });
            continue;
        }
        let Some((k, v)) = trimmed.split_once(['=', ':']) else {
            return Err(SyntaxError { line, message: format!("{trimmed:?} is not `key = value`") });
        };
        let Some(section) = sections.last_mut() else {
            return Err(SyntaxError { line, message: "key before any [section]".into() });
        };
        section.entries.push(Entry { key: k.trim().to_string(), value: strip_comment(v.trim()).to_string(), line });
    }
    Ok(sections)
}

fn strip_comment(v: &str) -> &str {
    match v.find(" ;") {
        Some(i) => v[..i].trim_end(),
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_lines_and_comments() {
        let s = parse("; top\n[program:a]\ncommand = /bin/a -x ; run a\n\n# c\n[supervisord]\nk:v\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "program:a");
        assert_eq!(s[0].entries[0], Entry { key: "command".into(), value: "/bin/a -x".into(), line: 3 });
        assert_eq!((s[1].name.as_str(), s[1].entries[0].line), ("supervisord", 7));
    }

    #[test]
    fn errors_have_lines() {
        assert_eq!(parse("[a]\nnonsense\n").unwrap_err().line, 2);
        assert_eq!(parse("x=1\n").unwrap_err().line, 1);
        assert_eq!(parse("[a\n").unwrap_err().line, 1);
    }

    #[test]
    fn continuation_lines_extend_the_value() {
        let s = parse("[p]\nenvironment = A=\"1\",\n  B=\"2\"\n").unwrap();
        assert_eq!(s[0].entries[0].value, "A=\"1\",\nB=\"2\"");
    }
}
