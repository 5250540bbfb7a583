//! Environment variables in molecule.yml, as Molecule expands them before
//! parsing: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset) and `$$` for a literal `$`. Used when kvmdrive
//! reads a Molecule scenario itself (`kvmdrive test` without Molecule).

/// Expands `text` with `lookup` (usually `std::env::var`).
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{}`", line_of(rest)))?;
            let inner = &r[..end];
            let (name, value) = if let Some((n, d)) = inner.split_once(":-") {
                (
                    n,
                    lookup(n)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| d.to_owned()),
                )
            } else if let Some((n, d)) = inner.split_once('-') {
                (n, lookup(n).unwrap_or_else(|| d.to_owned()))
            } else {
                (inner, lookup(inner).unwrap_or_default())
            };
            if !is_name(name) {
                return Err(format!("invalid variable name `{name}` in `${{{inner}}}`"));
            }
            out.push_str(&value);
            rest = &r[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                out.push('$');
                rest = after;
            } else {
                out.push_str(&lookup(&after[..len]).unwrap_or_default());
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn line_of(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BOX" => Some("/b/debian.box".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_molecule() {
        let t = |s: &str| interpolate(s, env).unwrap();
        assert_eq!(t("box: $BOX"), "box: /b/debian.box");
        assert_eq!(t("box: ${BOX}!"), "box: /b/debian.box!");
        assert_eq!(t("${NOPE:-kvmdrive/debian-12}"), "kvmdrive/debian-12");
        assert_eq!(t("${EMPTY:-d}|${EMPTY-d}|${NOPE-d}"), "d||d");
        assert_eq!(t("cost: $$5 and $ alone, $1"), "cost: $5 and $ alone, $1");
        assert_eq!(t("${NOPE}"), "");
    }

    #[test]
    fn bad_syntax_is_an_error() {
        assert!(interpolate("${BOX", env).is_err());
        assert!(interpolate("${B X}", env).is_err());
    }
}
