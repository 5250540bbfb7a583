//! Box versions and version constraints with RubyGems semantics, because that
//! is what Vagrant uses for `box_version` and for picking a catalog version:
//! `Gem::Version` ordering (pre-releases such as `1.0.a` or `1.0-rc1` sort
//! before `1.0`; `1.0 == 1.0.0`) and `Gem::Requirement` operators (`=`, `!=`,
//! `>`, `<`, `>=`, `<=`, `~>`), several of them comma-separated.

use std::cmp::Ordering;
use std::fmt;

/// One part of a version: a number or a run of letters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Decimal digits without leading zeros ("" is zero): arbitrary size,
    /// compared by length, then text.
    Num(String),
    Str(String),
}

impl Segment {
    fn zero() -> Segment {
        Segment::Num(String::new())
    }

    fn is_zero(&self) -> bool {
        matches!(self, Segment::Num(n) if n.is_empty())
    }

    fn cmp(&self, other: &Segment) -> Ordering {
        match (self, other) {
            (Segment::Num(a), Segment::Num(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
            (Segment::Str(a), Segment::Str(b)) => a.cmp(b),
            // A letter segment (pre-release) sorts before any number.
            (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
            (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
        }
    }
}

/// A version as RubyGems understands it.
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    segments: Vec<Segment>,
}

impl Version {
    /// Parses `text` like `Gem::Version.new`: surrounding blanks are ignored,
    /// an empty string is `0`, and `-` starts a pre-release (`1.0-rc1` is
    /// `1.0.pre.rc1`).
    pub fn parse(text: &str) -> Result<Version, String> {
        let trimmed = text.trim();
        let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
        if !is_valid(trimmed) {
            return Err(format!("`{text}` is not a valid version"));
        }
        let normalized = trimmed.replace('-', ".pre.");
        Ok(Version {
            text: trimmed.to_owned(),
            segments: scan_segments(&normalized),
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A version with a letter in it (`1.0.a`, `2.0-rc1`) is a pre-release.
    pub fn is_prerelease(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Str(_)))
    }

    /// The version without its pre-release part (`1.2.b3` -> `1.2`).
    fn release(&self) -> Vec<Segment> {
        let first_str = self
            .segments
            .iter()
            .position(|s| matches!(s, Segment::Str(_)))
            .unwrap_or(self.segments.len());
        self.segments[..first_str].to_vec()
    }

    /// The upper bound of `~>`: drop the pre-release part and the last
    /// number (unless it is the only one) and increment the new last number
    /// (`1.2.3` -> `1.3`, `1.2` -> `2`, `1` -> `2`).
    fn bump(&self) -> Vec<Segment> {
        let mut segments = self.release();
        if segments.len() > 1 {
            segments.pop();
        }
        if let Some(Segment::Num(last)) = segments.last_mut() {
            *last = increment(last);
        }
        segments
    }

    /// RubyGems' canonical form: trailing zeros dropped from the release part
    /// and from the pre-release part, so `1.0 == 1` and `1.0.a == 1.a`.
    fn canonical(segments: &[Segment]) -> Vec<Segment> {
        let split = segments
            .iter()
            .position(|s| matches!(s, Segment::Str(_)))
            .unwrap_or(segments.len());
        let mut out = Vec::with_capacity(segments.len());
        for part in [&segments[..split], &segments[split..]] {
            let end = part.iter().rposition(|s| !s.is_zero()).map_or(0, |i| i + 1);
            out.extend_from_slice(&part[..end]);
        }
        out
    }
}

fn compare_segments(a: &[Segment], b: &[Segment]) -> Ordering {
    let (a, b) = (Version::canonical(a), Version::canonical(b));
    let zero = Segment::zero();
    for i in 0..a.len().max(b.len()) {
        let l = a.get(i).unwrap_or(&zero);
        let r = b.get(i).unwrap_or(&zero);
        match l.cmp(r) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        compare_segments(&self.segments, &other.segments)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `Gem::Version::VERSION_PATTERN`, anchored:
/// `[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?`
fn is_valid(s: &str) -> bool {
    let (main, pre) = match s.find('-') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = main.split('.');
    let first_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !first_ok || !parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return false;
    }
    match pre {
        None => true,
        Some(pre) => pre
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
    }
}

/// `scan(/[0-9]+|[a-z]+/i)`, numbers without leading zeros.
fn scan_segments(s: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if bytes[i].is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Segment::Num(s[start..i].trim_start_matches('0').to_owned()));
        } else if bytes[i].is_ascii_alphabetic() {
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Segment::Str(s[start..i].to_owned()));
        } else {
            i += 1;
        }
    }
    out
}

/// Adds one to a decimal number held as digits without leading zeros.
fn increment(digits: &str) -> String {
    let mut bytes: Vec<u8> = if digits.is_empty() {
        vec![b'0']
    } else {
        digits.as_bytes().to_vec()
    };
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).expect("ascii digits");
        }
    }
    bytes.insert(0, b'1');
    String::from_utf8(bytes).expect("ascii digits")
}

/// A comparison operator of a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    /// `~>`: at least this version, below the next "significant" release.
    Pessimistic,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Pessimistic => "~>",
        }
    }
}

/// One requirement such as `>= 1.2` (a bare version means `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub op: Op,
    pub version: Version,
}

impl Requirement {
    pub fn parse(text: &str) -> Result<Requirement, String> {
        let t = text.trim();
        // Two-character operators first, so `>=` is not read as `>` `=1`.
        let ops = [
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("~>", Op::Pessimistic),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let (op, rest) = ops
            .iter()
            .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest)))
            .unwrap_or((Op::Eq, t));
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(format!("`{text}` has no version"));
        }
        let version =
            Version::parse(rest).map_err(|_| format!("`{text}` is not a valid requirement"))?;
        Ok(Requirement { op, version })
    }

    pub fn is_satisfied_by(&self, v: &Version) -> bool {
        let r = &self.version;
        match self.op {
            Op::Eq => v == r,
            Op::Ne => v != r,
            Op::Gt => v > r,
            Op::Lt => v < r,
            Op::Ge => v >= r,
            Op::Le => v <= r,
            Op::Pessimistic => {
                v >= r && compare_segments(&v.release(), &r.bump()) == Ordering::Less
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.version)
    }
}

/// Comma-separated requirements that must all hold, as Vagrant reads
/// `box_version` and `--box-version`. Empty means `>= 0` (any version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    text: String,
    requirements: Vec<Requirement>,
}

impl Constraint {
    pub fn parse(text: &str) -> Result<Constraint, String> {
        if text.trim().is_empty() {
            return Ok(Constraint::any());
        }
        let requirements = text
            .split(',')
            .map(Requirement::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Constraint {
            text: text.trim().to_owned(),
            requirements,
        })
    }

    /// `>= 0`.
    pub fn any() -> Constraint {
        Constraint {
            text: ">= 0".into(),
            requirements: vec![Requirement {
                op: Op::Ge,
                version: Version::parse("0").expect("valid"),
            }],
        }
    }

    pub fn is_satisfied_by(&self, v: &Version) -> bool {
        self.requirements.iter().all(|r| r.is_satisfied_by(v))
    }

    /// The version when the constraint pins exactly one (`1.2` or `= 1.2`).
    pub fn exact(&self) -> Option<&Version> {
        match self.requirements.as_slice() {
            [Requirement {
                op: Op::Eq,
                version,
            }] => Some(version),
            _ => None,
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

/// `box_version` as written: a string, or a number YAML read from
/// `box_version: 12.1` (kept as written).
impl<'de> serde::Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Constraint;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a version constraint such as `>= 1.0, < 2`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Constraint, E> {
                Constraint::parse(s)
                    .map_err(|e| E::custom(format!("version constraint `{s}`: {e}")))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Constraint, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Constraint, E> {
                self.visit_str(&f.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn sat(constraint: &str, version: &str) -> bool {
        Constraint::parse(constraint)
            .unwrap()
            .is_satisfied_by(&v(version))
    }

    #[test]
    fn ordering_follows_rubygems() {
        let ordered = [
            "0.1",
            "0.9",
            "1.0.a",
            "1.0.a9",
            "1.0.a10",
            "1.0.b1",
            "1.0-rc1",
            "1.0.rc1",
            "1",
            "1.0.1",
            "1.2",
            "1.10",
            "2.0.0",
            "12.20240503.1",
            "100000000000000000000000",
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (v(pair[0]), v(pair[1]));
            assert!(a <= b, "{a} should sort at or before {b}");
        }
        assert!(v("1.0.a") < v("1.0"));
        assert!(v("1.0-rc1") < v("1.0"));
        assert!(v("1.10") > v("1.9"));
        assert!(v("99999999999999999999") < v("100000000000000000000"));
    }

    #[test]
    fn trailing_zeros_do_not_matter() {
        assert_eq!(v("1"), v("1.0"));
        assert_eq!(v("1.0.0"), v("1"));
        assert_eq!(v("1.0.a"), v("1.a"));
        assert_eq!(v("01.002"), v("1.2"));
        assert_ne!(v("1.0.1"), v("1"));
        assert_eq!(v("").as_str(), "0");
        assert_eq!(v("  2.1 ").as_str(), "2.1");
    }

    #[test]
    fn prerelease_detection() {
        assert!(v("1.0.a").is_prerelease());
        assert!(v("1.0-rc.1").is_prerelease());
        assert!(v("2.0.0.pre3").is_prerelease());
        assert!(!v("1.0.0").is_prerelease());
        assert!(!v("20240101").is_prerelease());
    }

    #[test]
    fn invalid_versions_are_refused() {
        for bad in [
            "a1", "1..2", "1.", ".1", "1.2_3", "1 2", "v1.0", "1.0-", "1.0-a..b", "=1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad} should be invalid");
        }
        for good in [
            "0",
            "1.0.0",
            "1.0.0-rc.1",
            "1.2.3-beta-2",
            "2024.01.15",
            "1.0.A",
        ] {
            assert!(Version::parse(good).is_ok(), "{good} should be valid");
        }
    }

    #[test]
    fn simple_operators() {
        assert!(sat("= 1.0", "1.0.0"));
        assert!(sat("1.0", "1"));
        assert!(!sat("1.0", "1.0.1"));
        assert!(sat("!= 1.0", "1.1"));
        assert!(!sat("!= 1.0", "1.0.0"));
        assert!(sat("> 1.0", "1.0.1"));
        assert!(!sat("> 1.0", "1.0"));
        assert!(sat("> 1.0", "1.0.1.a"));
        assert!(sat("< 2", "1.99"));
        assert!(!sat("< 2", "2.0"));
        assert!(sat("< 2", "2.0.a"), "a pre-release of 2 is below 2");
        assert!(sat(">= 1.2", "1.2"));
        assert!(!sat(">= 1.2", "1.2.pre"));
        assert!(sat("<= 1.2", "1.2.0"));
        assert!(!sat("<= 1.2", "1.2.0.1"));
    }

    #[test]
    fn pessimistic_operator() {
        // ~> 1.2 means >= 1.2, < 2.0
        assert!(sat("~> 1.2", "1.2"));
        assert!(sat("~> 1.2", "1.9.9"));
        assert!(!sat("~> 1.2", "2.0"));
        assert!(!sat("~> 1.2", "1.1.9"));
        assert!(
            !sat("~> 1.2", "2.0.a"),
            "release part of 2.0.a is 2.0, not below 2"
        );
        assert!(!sat("~> 1.2", "1.2.rc1"), "1.2.rc1 < 1.2");
        // three parts: ~> 1.2.3 means >= 1.2.3, < 1.3
        assert!(sat("~> 1.2.3", "1.2.3"));
        assert!(sat("~> 1.2.3", "1.2.99"));
        assert!(!sat("~> 1.2.3", "1.3"));
        assert!(!sat("~> 1.2.3", "1.3.0.a"));
        assert!(!sat("~> 1.2.3", "1.2.2"));
        // one part: ~> 1 means >= 1, < 2
        assert!(sat("~> 1", "1.5"));
        assert!(!sat("~> 1", "2"));
        // carries: ~> 1.9.9 means < 1.10; ~> 9.9 means < 10
        assert!(sat("~> 1.9.9", "1.9.10"));
        assert!(!sat("~> 1.9.9", "1.10"));
        assert!(sat("~> 9.9", "9.99"));
        assert!(!sat("~> 9.9", "10.0"));
        // the requirement's own pre-release part is dropped for the bound
        assert!(sat("~> 1.2.a", "1.2"));
        assert!(sat("~> 1.2.a", "1.9"));
        assert!(!sat("~> 1.2.a", "2.0"));
    }

    #[test]
    fn comma_separated_requirements_must_all_hold() {
        assert!(sat(">= 1.0, < 1.5", "1.4.9"));
        assert!(!sat(">= 1.0, < 1.5", "1.5"));
        assert!(!sat(">= 1.0, < 1.5", "0.9"));
        assert!(sat("~> 2.1, != 2.3.0", "2.4"));
        assert!(!sat("~> 2.1, != 2.3.0", "2.3"));
        assert!(sat(">=1.0,<=1.0", "1.0.0"));
    }

    #[test]
    fn empty_constraint_is_any_version_including_prereleases() {
        let any = Constraint::parse("").unwrap();
        assert_eq!(any.to_string(), ">= 0");
        assert!(any.is_satisfied_by(&v("0")));
        assert!(any.is_satisfied_by(&v("0.0.1.pre")));
        assert!(any.is_satisfied_by(&v("20240101.0.0")));
    }

    #[test]
    fn bad_constraints_are_refused() {
        for bad in [
            ">= ",
            "=> 1.0",
            "~ 1.0",
            "1.0,",
            ">= 1.0,, < 2",
            "abc",
            ">> 1",
        ] {
            assert!(Constraint::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn exact_versions_are_recognised() {
        assert_eq!(
            Constraint::parse("1.2").unwrap().exact().unwrap().as_str(),
            "1.2"
        );
        assert_eq!(
            Constraint::parse(" = 1.2 ")
                .unwrap()
                .exact()
                .unwrap()
                .as_str(),
            "1.2"
        );
        assert!(Constraint::parse(">= 1.2").unwrap().exact().is_none());
        assert!(Constraint::parse("1.2, 1.2").unwrap().exact().is_none());
    }

    #[test]
    fn increment_carries() {
        assert_eq!(increment("9"), "10");
        assert_eq!(increment("199"), "200");
        assert_eq!(increment(""), "1");
        assert_eq!(increment("41"), "42");
    }
}
