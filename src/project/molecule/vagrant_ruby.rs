//! The Vagrantfile lines molecule-vagrant users paste into
//! `instance_raw_config_args` / `provider_raw_config_args`: a small real
//! tokenizer and parser for the call shapes those lines use, not a Ruby.
//!
//! A line is `receiver.method args` or `receiver.method = value`, where args
//! are values and `key: value` / `:key => value` options, optionally in
//! parentheses. Values: strings (double-quoted ones with `#{...}`), symbols,
//! numbers, true/false/nil, arrays and hashes, `ENV['X']` and `Dir.pwd`.
//! Interpolations are evaluated: `#{Dir.pwd}` (the project directory, written
//! `.` so it resolves like any relative path) and `#{ENV['X']}`; anything
//! else is refused naming the line. `raw_config_args` maps the calls.
//!
//! Longer than most modules (about 600 lines without tests) because a
//! tokenizer, a parser and an evaluator of one small grammar read best
//! together; splitting them would scatter one language over three files.

use std::fmt;

/// A value as Ruby wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Sym(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Array(Vec<Value>),
    /// Keys as written, without `:` (`key:` and `:key =>` are the same).
    Hash(Vec<(String, Value)>),
}

impl Value {
    /// A string or a symbol's name.
    pub fn as_name(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Sym(s) => Some(s),
            _ => None,
        }
    }

    /// As JSON (symbols become strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Str(s) | Value::Sym(s) => J::String(s.clone()),
            Value::Int(n) => J::from(*n),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Bool(b) => J::Bool(*b),
            Value::Nil => J::Null,
            Value::Array(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Hash(kv) => {
                J::Object(kv.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `vm.synced_folder` -> `["vm", "synced_folder"]`.
    pub path: Vec<String>,
    /// `x.y = value`.
    pub assign: Option<Value>,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// `key: value` options, in order.
    pub options: Vec<(String, Value)>,
}

impl Call {
    pub fn method(&self) -> String {
        self.path.join(".")
    }

    pub fn option(&self, key: &str) -> Option<&Value> {
        self.options.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{line}`: {message}")]
pub struct RubyError {
    pub line: String,
    pub message: String,
}

/// Where interpolations get their values.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `key:` (a label in a call's options or a hash).
    Label(String),
    Sym(String),
    Str(Vec<Part>),
    Int(i64),
    Float(f64),
    Dot,
    Comma,
    Assign,
    Rocket,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
}

/// Pieces of a double-quoted string.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    /// The source between `#{` and `}`.
    Interp(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Label(s) => write!(f, "`{s}:`"),
            Tok::Sym(s) => write!(f, "`:{s}`"),
            Tok::Str(_) => f.write_str("a string"),
            Tok::Int(n) => write!(f, "`{n}`"),
            Tok::Float(n) => write!(f, "`{n}`"),
            Tok::Dot => f.write_str("`.`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::Rocket => f.write_str("`=>`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::LBrace => f.write_str("`{`"),
            Tok::RBrace => f.write_str("`}`"),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '#' => break, // a comment to the end of the line
            '.' => {
                out.push(Tok::Dot);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            '{' => {
                out.push(Tok::LBrace);
                i += 1
            }
            '}' => {
                out.push(Tok::RBrace);
                i += 1
            }
            '=' if chars.get(i + 1) == Some(&'>') => {
                out.push(Tok::Rocket);
                i += 2
            }
            '=' if chars.get(i + 1) == Some(&'=') => return Err("`==` is not a setting".into()),
            '=' => {
                out.push(Tok::Assign);
                i += 1
            }
            '\'' | '"' => {
                let (tok, next) = string(&chars, i)?;
                out.push(tok);
                i = next
            }
            ':' => {
                // :symbol or :"symbol"
                match chars.get(i + 1) {
                    Some(&q) if q == '"' || q == '\'' => {
                        let (tok, next) = string(&chars, i + 1)?;
                        let Tok::Str(parts) = tok else { unreachable!() };
                        let mut name = String::new();
                        for p in parts {
                            match p {
                                Part::Lit(s) => name.push_str(&s),
                                Part::Interp(_) => {
                                    return Err("interpolation in a symbol is not supported".into())
                                }
                            }
                        }
                        out.push(Tok::Sym(name));
                        i = next
                    }
                    Some(&c2) if is_ident_start(c2) => {
                        let start = i + 1;
                        let mut j = start;
                        while j < chars.len() && is_ident(chars[j]) {
                            j += 1
                        }
                        if matches!(chars.get(j), Some('?') | Some('!')) {
                            j += 1
                        }
                        out.push(Tok::Sym(chars[start..j].iter().collect()));
                        i = j
                    }
                    _ => return Err(format!("unexpected `:` at column {}", i + 1)),
                }
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
                    i += 1
                }
                let mut float = false;
                if chars.get(i) == Some(&'.')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                {
                    float = true;
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1
                    }
                }
                let text: String = chars[start..i].iter().filter(|&&c| c != '_').collect();
                out.push(if float {
                    Tok::Float(text.parse().map_err(|_| format!("bad number `{text}`"))?)
                } else {
                    Tok::Int(text.parse().map_err(|_| format!("bad number `{text}`"))?)
                })
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1
                }
                if matches!(chars.get(i), Some('?') | Some('!')) {
                    i += 1
                }
                let word: String = chars[start..i].iter().collect();
                // `key:` but not `key::` (a constant path)
                if chars.get(i) == Some(&':') && chars.get(i + 1) != Some(&':') {
                    out.push(Tok::Label(word));
                    i += 1
                } else {
                    out.push(Tok::Ident(word))
                }
            }
            other => return Err(format!("unexpected `{other}` at column {}", i + 1)),
        }
    }
    Ok(out)
}

/// A quoted string starting at `chars[start]`; returns it and the index after it.
fn string(chars: &[char], start: usize) -> Result<(Tok, usize), String> {
    let quote = chars[start];
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("unterminated string".into());
        };
        match c {
            c if c == quote => {
                i += 1;
                break;
            }
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("unterminated string".into());
                };
                if quote == '\'' {
                    // only \' and \\ are escapes in single quotes
                    if e != '\'' && e != '\\' {
                        lit.push('\\');
                    }
                    lit.push(e);
                } else {
                    lit.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        's' => ' ',
                        '0' => '\0',
                        other => other,
                    });
                }
                i += 2;
            }
            '#' if quote == '"' && chars.get(i + 1) == Some(&'{') => {
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unterminated `#{`".into());
                }
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Interp(chars[i + 2..j].iter().collect()));
                i = j + 1;
            }
            c => {
                lit.push(c);
                i += 1;
            }
        }
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok((Tok::Str(parts), i))
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    env: &'a dyn Env,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(got) if got == t => Ok(()),
            Some(got) => Err(format!("expected {t}, found {got}")),
            None => Err(format!("expected {t} at the end of the line")),
        }
    }

    fn call(&mut self) -> Result<Call, String> {
        let mut path = Vec::new();
        loop {
            match self.next() {
                Some(Tok::Ident(s)) => path.push(s),
                Some(t) => return Err(format!("expected a setting name, found {t}")),
                None => return Err("expected a setting name".into()),
            }
            if !self.eat(&Tok::Dot) {
                break;
            }
        }
        let mut call = Call {
            path,
            assign: None,
            args: Vec::new(),
            options: Vec::new(),
        };
        if self.eat(&Tok::Assign) {
            call.assign = Some(self.value()?);
        } else if self.peek().is_some() {
            let paren = self.eat(&Tok::LParen);
            let close = if paren { Some(Tok::RParen) } else { None };
            self.arguments(&mut call, close.as_ref())?;
            if paren {
                self.expect(Tok::RParen)?;
            }
        }
        if let Some(t) = self.peek() {
            return Err(format!("unexpected {t} after the setting"));
        }
        Ok(call)
    }

    /// Comma-separated arguments up to `close` (or the end of the line).
    fn arguments(&mut self, call: &mut Call, close: Option<&Tok>) -> Result<(), String> {
        if self.peek() == close {
            return Ok(());
        }
        loop {
            if let Some(Tok::Label(k)) = self.peek().cloned() {
                self.pos += 1;
                let v = self.value()?;
                call.options.push((k, v));
            } else {
                let v = self.value()?;
                if self.eat(&Tok::Rocket) {
                    let key = v
                        .as_name()
                        .ok_or("a hash key must be a symbol or a string")?
                        .to_owned();
                    call.options.push((key, self.value()?));
                } else if let Value::Hash(kv) = v {
                    // a trailing `{...}` hash is options too
                    call.options.extend(kv);
                } else if !call.options.is_empty() {
                    return Err("a positional argument after options".into());
                } else {
                    call.args.push(v);
                }
            }
            if !self.eat(&Tok::Comma) {
                return Ok(());
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Tok::Str(parts)) => Ok(Value::Str(self.interpolate(parts)?)),
            Some(Tok::Sym(s)) => Ok(Value::Sym(s)),
            Some(Tok::Int(n)) => Ok(Value::Int(n)),
            Some(Tok::Float(f)) => Ok(Value::Float(f)),
            Some(Tok::LBracket) => {
                let mut items = Vec::new();
                if !self.eat(&Tok::RBracket) {
                    loop {
                        items.push(self.value()?);
                        if self.eat(&Tok::Comma) {
                            if self.eat(&Tok::RBracket) {
                                break; // trailing comma
                            }
                            continue;
                        }
                        self.expect(Tok::RBracket)?;
                        break;
                    }
                }
                Ok(Value::Array(items))
            }
            Some(Tok::LBrace) => {
                let mut call = Call {
                    path: Vec::new(),
                    assign: None,
                    args: Vec::new(),
                    options: Vec::new(),
                };
                self.arguments(&mut call, Some(&Tok::RBrace))?;
                self.expect(Tok::RBrace)?;
                if !call.args.is_empty() {
                    return Err("a hash holds `key: value` pairs only".into());
                }
                Ok(Value::Hash(call.options))
            }
            Some(Tok::Ident(w)) => match w.as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "nil" => Ok(Value::Nil),
                "ENV" => {
                    let name = self.env_index()?;
                    self.env_var(&name).map(Value::Str)
                }
                "Dir" if self.eat(&Tok::Dot) => match self.next() {
                    Some(Tok::Ident(m)) if m == "pwd" => Ok(Value::Str(".".into())),
                    _ => Err("of `Dir`, only `Dir.pwd` is understood".into()),
                },
                other => Err(format!(
                    "`{other}` is Ruby code kvmdrive does not run (values are strings, symbols, numbers, true/false/nil, arrays, hashes, ENV['X'] and Dir.pwd)"
                )),
            },
            Some(t) => Err(format!("expected a value, found {t}")),
            None => Err("expected a value at the end of the line".into()),
        }
    }

    /// `['X']` after `ENV` (or `.fetch('X')`).
    fn env_index(&mut self) -> Result<String, String> {
        let fetch = self.eat(&Tok::Dot);
        if fetch {
            match self.next() {
                Some(Tok::Ident(m)) if m == "fetch" => self.expect(Tok::LParen)?,
                _ => {
                    return Err(
                        "of `ENV`, only `ENV['X']` and `ENV.fetch('X')` are understood".into(),
                    )
                }
            }
        } else {
            self.expect(Tok::LBracket)?;
        }
        let name = match self.next() {
            Some(Tok::Str(parts)) => match parts.as_slice() {
                [Part::Lit(s)] => s.clone(),
                _ => return Err("ENV[...] takes a plain string".into()),
            },
            _ => return Err("ENV[...] takes a string".into()),
        };
        self.expect(if fetch { Tok::RParen } else { Tok::RBracket })?;
        Ok(name)
    }

    fn env_var(&self, name: &str) -> Result<String, String> {
        self.env
            .var(name)
            .ok_or_else(|| format!("environment variable {name} is not set"))
    }

    fn interpolate(&self, parts: Vec<Part>) -> Result<String, String> {
        let mut out = String::new();
        for p in parts {
            match p {
                Part::Lit(s) => out.push_str(&s),
                Part::Interp(src) => {
                    let refuse = || {
                        format!("`#{{{src}}}`: only #{{Dir.pwd}} and #{{ENV['X']}} are evaluated")
                    };
                    let toks = tokenize(&src).map_err(|_| refuse())?;
                    let mut inner = Parser {
                        toks,
                        pos: 0,
                        env: self.env,
                    };
                    let v = match inner.peek() {
                        Some(Tok::Ident(w)) if w == "ENV" || w == "Dir" => {
                            inner.value().map_err(|e| {
                                if e.ends_with("is not set") {
                                    e
                                } else {
                                    refuse()
                                }
                            })?
                        }
                        _ => return Err(refuse()),
                    };
                    if inner.peek().is_some() {
                        return Err(refuse());
                    }
                    match v {
                        Value::Str(s) => out.push_str(&s),
                        _ => return Err(refuse()),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A YAML value that holds a Ruby string literal (`'"kvm"'`, `"'e1000'"`:
/// molecule-vagrant pastes values into its Vagrantfile as Ruby, so its users
/// quote strings themselves) as the string it means; anything else as is.
/// (A YAML value, not one of this module's Ruby [`Value`]s.)
pub fn unquote_ruby_string(v: &serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::String(text) = v {
        for q in ['"', '\''] {
            if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
                if !inner.contains(q) && !inner.contains("#{") {
                    return serde_json::Value::String(inner.to_owned());
                }
            }
        }
    }
    v.clone()
}

/// Parses one line into a call, evaluating interpolations with `env`.
pub fn parse_line(line: &str, env: &dyn Env) -> Result<Call, RubyError> {
    let err = |message: String| RubyError {
        line: line.trim().to_owned(),
        message,
    };
    let toks = tokenize(line).map_err(err)?;
    if toks.is_empty() {
        return Err(err("an empty line".into()));
    }
    Parser { toks, pos: 0, env }.call().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars;
    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            (name == "HOME").then(|| "/home/me".to_owned())
        }
    }

    fn p(line: &str) -> Call {
        parse_line(line, &Vars).unwrap_or_else(|e| panic!("{e}"))
    }

    fn e(line: &str) -> String {
        parse_line(line, &Vars).unwrap_err().to_string()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn synced_folder_with_options() {
        let c = p(
            r#"vm.synced_folder ".", "/vagrant", type: "rsync", rsync__exclude: [".git/", 'x'], disabled: false"#,
        );
        assert_eq!(c.method(), "vm.synced_folder");
        assert_eq!(c.args, vec![s("."), s("/vagrant")]);
        assert_eq!(c.option("type"), Some(&s("rsync")));
        assert_eq!(
            c.option("rsync__exclude"),
            Some(&Value::Array(vec![s(".git/"), s("x")]))
        );
        assert_eq!(c.option("disabled"), Some(&Value::Bool(false)));
    }

    #[test]
    fn hash_rockets_symbols_and_parentheses() {
        let c = p(r#"vm.synced_folder('src/', '/srv', :type => :nfs, :mount_options => ['ro'])"#);
        assert_eq!(c.args, vec![s("src/"), s("/srv")]);
        assert_eq!(c.option("type"), Some(&Value::Sym("nfs".into())));
        let c = p(r#"vm.network :forwarded_port, guest: 80, host: 8080, auto_correct: true"#);
        assert_eq!(c.args, vec![Value::Sym("forwarded_port".into())]);
        assert_eq!(c.option("host"), Some(&Value::Int(8080)));
        let c = p(r#"vm.provision "shell", inline: "echo hi > /tmp/x", privileged: false"#);
        assert_eq!(c.args, vec![s("shell")]);
        assert_eq!(c.option("privileged"), Some(&Value::Bool(false)));
        let c = p(r#"vm.provision :shell, :inline => 'echo \'q\'', :args => ["a", 1]"#);
        assert_eq!(c.option("inline"), Some(&s("echo 'q'")));
        let c = p(r#"vm.provision :file, { source: "a", destination: "/b" }"#);
        assert_eq!(c.option("destination"), Some(&s("/b")));
    }

    #[test]
    fn assignments_numbers_and_nil() {
        let c = p("vm.hostname = \"web.example.com\"");
        assert_eq!(c.assign, Some(s("web.example.com")));
        assert_eq!(p("memory = 2_048").assign, Some(Value::Int(2048)));
        assert_eq!(p("libvirt.cpus = 2").path, vec!["libvirt", "cpus"]);
        assert_eq!(p("x.y = 1.5").assign, Some(Value::Float(1.5)));
        assert_eq!(p("x.y = nil").assign, Some(Value::Nil));
        assert_eq!(
            p("storage :file, size: '10G', bus: 'scsi'").args,
            vec![Value::Sym("file".into())]
        );
        assert_eq!(
            p("x.y = { a: 1, 'b' => :c }").assign,
            Some(Value::Hash(vec![
                ("a".into(), Value::Int(1)),
                ("b".into(), Value::Sym("c".into()))
            ]))
        );
        assert_eq!(
            p("vm.box_check_update = false # no updates").assign,
            Some(Value::Bool(false))
        );
    }

    #[test]
    fn interpolations_are_evaluated_or_refused() {
        let c = p(r##"vm.synced_folder "#{Dir.pwd}/files", "#{ENV['HOME']}/x""##);
        assert_eq!(c.args, vec![s("./files"), s("/home/me/x")]);
        let c = p(r#"vm.synced_folder ENV["HOME"], "/h""#);
        assert_eq!(c.args[0], s("/home/me"));
        assert_eq!(p(r#"x.y = ENV.fetch('HOME')"#).assign, Some(s("/home/me")));
        assert_eq!(
            p(r##"x.y = 'no #{interpolation}'"##).assign,
            Some(s("no #{interpolation}"))
        );
        let err = e(r##"vm.synced_folder "#{`whoami`}", "/x""##);
        assert!(err.contains("only #{Dir.pwd}"), "{err}");
        assert!(
            err.starts_with("`vm.synced_folder"),
            "names the line: {err}"
        );
        assert!(e(r##"x.y = "#{File.read('/etc/passwd')}""##).contains("only #{Dir.pwd}"));
        assert!(e(r##"x.y = "#{ENV['UNSET_X']}""##).contains("UNSET_X is not set"));
    }

    #[test]
    fn ruby_code_and_broken_lines_are_refused() {
        assert!(e("vm.provider :libvirt do |l|").contains("unexpected `|`"));
        assert!(e("vm.provider :libvirt do").contains("unexpected `do`"));
        assert!(e("x.y = File.read('a')").contains("`File`"));
        assert!(e("vm.synced_folder 'a").contains("unterminated"));
        assert!(e("vm.synced_folder 'a', 'b',").contains("expected a value"));
        assert!(e("= 3").contains("setting name"));
        assert!(e("x.y = 1 2").contains("unexpected"));
        assert!(e("").contains("empty"));
    }
}
