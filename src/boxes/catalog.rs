//! Vagrant-Cloud-style catalog JSON (`{"name", "versions": [{"version",
//! "providers": [{"name", "url", "checksum_type", "checksum",
//! "architecture", "default_architecture"}]}]}`) and the choice Vagrant
//! makes from it: the newest version that satisfies every requirement and
//! has a `libvirt` provider for the wanted architecture.
//!
//! Architecture choice follows Vagrant 2.4: an exact match of the
//! architecture; when the architecture was not asked for explicitly (it is the
//! host's), then a provider with architecture `unknown` flagged
//! `default_architecture`, then the only provider of a catalog that predates
//! architectures (no `default_architecture` field at all).

use serde::{Deserialize, Deserializer, Serialize};

use super::version::{Constraint, Version};

/// The provider kvmdrive installs boxes for.
pub const PROVIDER: &str = "libvirt";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Catalog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub versions: Vec<CatalogVersion>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CatalogVersion {
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
    #[serde(default)]
    pub providers: Vec<CatalogProvider>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CatalogProvider {
    pub name: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_architecture: Option<bool>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::S(s) => s,
        Raw::N(n) => n.to_string(),
    })
}

/// Which architecture a box must be for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchRequest {
    /// The host's (Vagrant's `:auto`, the default).
    Auto,
    /// Exactly this one (normalized: `amd64`, `arm64`, ...).
    Explicit(String),
}

impl ArchRequest {
    /// `None` and `auto` mean the host's architecture.
    pub fn from_option(arch: Option<&str>) -> ArchRequest {
        match arch.map(str::trim) {
            None | Some("") | Some("auto") => ArchRequest::Auto,
            Some(a) => ArchRequest::Explicit(normalize_arch(a)),
        }
    }

    /// The architecture name wanted (the host's for `Auto`).
    pub fn wanted(&self) -> String {
        match self {
            ArchRequest::Auto => host_arch().to_owned(),
            ArchRequest::Explicit(a) => a.clone(),
        }
    }
}

/// The host's architecture in Vagrant's words (`amd64`, `arm64`, `i386`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    }
}

/// Vagrant's spelling of common architecture aliases: `x86_64` -> `amd64`,
/// `aarch64` -> `arm64`, `i686`/`x86` -> `i386`.
pub fn normalize_arch(arch: &str) -> String {
    match arch.trim().to_ascii_lowercase().as_str() {
        "x86_64" | "x64" | "amd64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        "i386" | "i686" | "x86" => "i386".into(),
        other => other.to_owned(),
    }
}

/// libvirt's spelling of a Vagrant architecture name (`amd64` -> `x86_64`).
pub fn libvirt_arch(arch: &str) -> &str {
    match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "i386" => "i686",
        other => other,
    }
}

/// The catalog entry chosen for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub version: Version,
    pub provider: &'a CatalogProvider,
    /// Architecture directory of the cache the box goes to.
    pub architecture: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// A version string in the catalog is not a version.
    BadVersion(String),
    /// No version satisfies the constraint; the catalog's versions, newest first.
    NoVersion { available: Vec<String> },
    /// Versions satisfy the constraint but none has a libvirt provider for
    /// the architecture; what the newest of them offers (`provider/arch`).
    NoProvider {
        version: String,
        offered: Vec<String>,
    },
}

impl Catalog {
    /// Parses catalog JSON; anything else (HTML, a JSON object without
    /// `versions`) is an error message.
    pub fn parse(bytes: &[u8]) -> Result<Catalog, String> {
        let catalog: Catalog = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for v in &catalog.versions {
            Version::parse(&v.version)?;
        }
        Ok(catalog)
    }

    /// Versions newest first.
    fn sorted_versions(&self) -> Result<Vec<(Version, &CatalogVersion)>, ResolveError> {
        let mut out = self
            .versions
            .iter()
            .map(|v| Version::parse(&v.version).map(|p| (p, v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ResolveError::BadVersion)?;
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out)
    }

    /// The newest version satisfying `constraint` with a libvirt provider for `arch`.
    pub fn resolve(
        &self,
        constraint: &Constraint,
        arch: &ArchRequest,
    ) -> Result<Resolved<'_>, ResolveError> {
        let versions = self.sorted_versions()?;
        let mut first_satisfying: Option<&CatalogVersion> = None;
        for (version, entry) in &versions {
            if !constraint.is_satisfied_by(version) {
                continue;
            }
            first_satisfying.get_or_insert(entry);
            if let Some(provider) = select_provider(&entry.providers, arch) {
                let architecture = match provider.architecture.as_deref().map(normalize_arch) {
                    Some(a) if a != "unknown" => a,
                    _ => arch.wanted(),
                };
                return Ok(Resolved {
                    version: version.clone(),
                    provider,
                    architecture,
                });
            }
        }
        match first_satisfying {
            None => Err(ResolveError::NoVersion {
                available: versions.iter().map(|(v, _)| v.to_string()).collect(),
            }),
            Some(entry) => Err(ResolveError::NoProvider {
                version: entry.version.clone(),
                offered: entry
                    .providers
                    .iter()
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p.name,
                            p.architecture.as_deref().unwrap_or("unknown")
                        )
                    })
                    .collect(),
            }),
        }
    }
}

/// Vagrant 2.4's `BoxMetadata::Version#provider` for the libvirt provider.
pub fn select_provider<'a>(
    providers: &'a [CatalogProvider],
    arch: &ArchRequest,
) -> Option<&'a CatalogProvider> {
    let libvirt: Vec<&CatalogProvider> = providers.iter().filter(|p| p.name == PROVIDER).collect();
    let wanted = arch.wanted();
    if let Some(p) = libvirt
        .iter()
        .find(|p| p.architecture.as_deref().map(normalize_arch).as_deref() == Some(wanted.as_str()))
    {
        return Some(p);
    }
    if let ArchRequest::Explicit(_) = arch {
        return None;
    }
    if let Some(p) = libvirt.iter().find(|p| {
        p.architecture.as_deref() == Some("unknown") && p.default_architecture == Some(true)
    }) {
        return Some(p);
    }
    match libvirt.as_slice() {
        [only] if only.default_architecture.is_none() => Some(only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, arch: Option<&str>, default: Option<bool>) -> serde_json::Value {
        let mut p = serde_json::json!({"name": name, "url": format!("https://example.test/{name}-{}.box", arch.unwrap_or("none"))});
        if let Some(a) = arch {
            p["architecture"] = a.into();
        }
        if let Some(d) = default {
            p["default_architecture"] = d.into();
        }
        p
    }

    fn catalog(versions: &[(&str, Vec<serde_json::Value>)]) -> Catalog {
        let json = serde_json::json!({
            "name": "acme/box",
            "versions": versions.iter().map(|(v, p)| serde_json::json!({"version": v, "providers": p})).collect::<Vec<_>>(),
        });
        Catalog::parse(json.to_string().as_bytes()).unwrap()
    }

    fn amd64(version: &str) -> (&str, Vec<serde_json::Value>) {
        (
            version,
            vec![provider("libvirt", Some("amd64"), Some(true))],
        )
    }

    fn pick(c: &Catalog, constraint: &str, arch: &ArchRequest) -> Result<String, ResolveError> {
        c.resolve(&Constraint::parse(constraint).unwrap(), arch)
            .map(|r| format!("{} {}", r.version, r.provider.url))
    }

    fn explicit(a: &str) -> ArchRequest {
        ArchRequest::Explicit(a.into())
    }

    #[test]
    fn newest_satisfying_version_wins() {
        let c = catalog(&[
            amd64("1.0.0"),
            amd64("1.10.0"),
            amd64("1.9.0"),
            amd64("2.0.0.rc1"),
            amd64("0.9"),
        ]);
        let a = explicit("amd64");
        assert!(
            pick(&c, "", &a).unwrap().starts_with("2.0.0.rc1 "),
            "pre-releases count, as in Vagrant"
        );
        assert!(
            pick(&c, "< 2", &a).unwrap().starts_with("2.0.0.rc1 "),
            "RubyGems: a pre-release of 2 is below 2"
        );
        assert!(pick(&c, "< 2.0.0.a", &a).unwrap().starts_with("1.10.0 "));
        assert!(pick(&c, "~> 1.0", &a).unwrap().starts_with("1.10.0 "));
        assert!(pick(&c, "~> 1.9.0", &a).unwrap().starts_with("1.9.0 "));
        assert!(pick(&c, "~> 1.0, != 1.10.0", &a)
            .unwrap()
            .starts_with("1.9.0 "));
        assert!(pick(&c, "= 1.0", &a).unwrap().starts_with("1.0.0 "));
        assert!(pick(&c, "<= 0.9.0", &a).unwrap().starts_with("0.9 "));
        assert_eq!(
            pick(&c, "> 3", &a).unwrap_err(),
            ResolveError::NoVersion {
                available: vec!["2.0.0.rc1", "1.10.0", "1.9.0", "1.0.0", "0.9"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            }
        );
    }

    #[test]
    fn versions_without_a_libvirt_provider_are_skipped() {
        let c = catalog(&[
            ("1.0", vec![provider("libvirt", Some("amd64"), Some(true))]),
            (
                "1.1",
                vec![provider("virtualbox", Some("amd64"), Some(true))],
            ),
        ]);
        assert!(pick(&c, "", &ArchRequest::Auto)
            .unwrap()
            .starts_with("1.0 "));
        assert_eq!(
            pick(&c, "1.1", &ArchRequest::Auto).unwrap_err(),
            ResolveError::NoProvider {
                version: "1.1".into(),
                offered: vec!["virtualbox/amd64".into()]
            }
        );
    }

    #[test]
    fn exact_architecture_beats_default_architecture() {
        let c = catalog(&[(
            "1.0",
            vec![
                provider("libvirt", Some("arm64"), Some(true)),
                provider("libvirt", Some("amd64"), Some(false)),
                provider("virtualbox", Some("amd64"), Some(true)),
            ],
        )]);
        let r = c.resolve(&Constraint::any(), &explicit("amd64")).unwrap();
        assert_eq!(r.provider.url, "https://example.test/libvirt-amd64.box");
        assert_eq!(r.architecture, "amd64");
        let r = c.resolve(&Constraint::any(), &explicit("arm64")).unwrap();
        assert_eq!(r.provider.url, "https://example.test/libvirt-arm64.box");
        assert_eq!(r.architecture, "arm64");
        // aliases are normalized on both sides
        let r = c
            .resolve(
                &Constraint::any(),
                &ArchRequest::from_option(Some("aarch64")),
            )
            .unwrap();
        assert_eq!(r.architecture, "arm64");
    }

    #[test]
    fn explicit_architecture_never_falls_back() {
        let c = catalog(&[(
            "1.0",
            vec![provider("libvirt", Some("unknown"), Some(true))],
        )]);
        assert!(c.resolve(&Constraint::any(), &explicit("s390x")).is_err());
        let legacy = catalog(&[("1.0", vec![provider("libvirt", None, None)])]);
        assert!(legacy
            .resolve(&Constraint::any(), &explicit("s390x"))
            .is_err());
    }

    #[test]
    fn auto_falls_back_to_unknown_default_then_single_legacy_provider() {
        let host = host_arch();
        // unknown + default_architecture
        let c = catalog(&[(
            "1.0",
            vec![
                provider("libvirt", Some("some-other-arch"), Some(false)),
                provider("libvirt", Some("unknown"), Some(true)),
            ],
        )]);
        let r = c.resolve(&Constraint::any(), &ArchRequest::Auto).unwrap();
        assert_eq!(r.provider.url, "https://example.test/libvirt-unknown.box");
        assert_eq!(
            r.architecture, host,
            "an unknown-arch box is stored under the host's arch"
        );
        // default_architecture on a known, different arch is not taken in auto mode
        let c = catalog(&[(
            "1.0",
            vec![provider("libvirt", Some("some-other-arch"), Some(true))],
        )]);
        assert!(matches!(
            c.resolve(&Constraint::any(), &ArchRequest::Auto),
            Err(ResolveError::NoProvider { .. })
        ));
        // a catalog from before architectures: the single provider
        let c = catalog(&[("1.0", vec![provider("libvirt", None, None)])]);
        assert_eq!(
            c.resolve(&Constraint::any(), &ArchRequest::Auto)
                .unwrap()
                .provider
                .url,
            "https://example.test/libvirt-none.box"
        );
        // ... but not when there are two of them
        let c = catalog(&[(
            "1.0",
            vec![
                provider("libvirt", None, None),
                provider("libvirt", Some("x"), None),
            ],
        )]);
        assert!(c.resolve(&Constraint::any(), &ArchRequest::Auto).is_err());
        // ... nor when it declares architecture support without matching
        let c = catalog(&[("1.0", vec![provider("libvirt", None, Some(false))])]);
        assert!(c.resolve(&Constraint::any(), &ArchRequest::Auto).is_err());
    }

    #[test]
    fn newer_version_for_another_arch_is_skipped_in_favour_of_older_matching_one() {
        let c = catalog(&[
            ("2.0", vec![provider("libvirt", Some("arm64"), Some(true))]),
            ("1.5", vec![provider("libvirt", Some("amd64"), Some(true))]),
        ]);
        assert!(pick(&c, "", &explicit("amd64"))
            .unwrap()
            .starts_with("1.5 "));
        assert!(pick(&c, "", &explicit("arm64"))
            .unwrap()
            .starts_with("2.0 "));
    }

    #[test]
    fn parse_accepts_vagrant_cloud_shapes_and_refuses_others() {
        let text = r#"{"name":"acme/box","description":"d","versions":[
            {"version":"1.0","status":"active","providers":[
              {"name":"libvirt","url":"https://x/1.box","checksum_type":"sha256","checksum":"ab",
               "architecture":"amd64","default_architecture":true,"extra":1}]},
            {"version":2,"providers":[]}]}"#;
        let c = Catalog::parse(text.as_bytes()).unwrap();
        assert_eq!(c.name.as_deref(), Some("acme/box"));
        assert_eq!(c.versions[1].version, "2");
        assert_eq!(
            c.versions[0].providers[0].checksum_type.as_deref(),
            Some("sha256")
        );
        assert!(Catalog::parse(b"<!DOCTYPE html><html></html>").is_err());
        assert!(
            Catalog::parse(br#"{"name":"x"}"#).is_err(),
            "no versions: not a catalog"
        );
        assert!(
            Catalog::parse(br#"{"versions":[{"version":"not a version","providers":[]}]}"#)
                .is_err()
        );
    }

    #[test]
    fn arch_names() {
        assert_eq!(normalize_arch("x86_64"), "amd64");
        assert_eq!(normalize_arch("AARCH64"), "arm64");
        assert_eq!(normalize_arch("ppc64le"), "ppc64le");
        assert_eq!(libvirt_arch("amd64"), "x86_64");
        assert_eq!(ArchRequest::from_option(Some("auto")), ArchRequest::Auto);
        assert_eq!(ArchRequest::from_option(None), ArchRequest::Auto);
        assert_eq!(
            ArchRequest::from_option(Some("x86_64")),
            ArchRequest::Explicit("amd64".into())
        );
    }
}
