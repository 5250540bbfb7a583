//! Box checksums: the kinds Vagrant accepts (md5, sha1, sha256, sha384,
//! sha512), validated up front, computed while the bytes stream past. A
//! SHA-256 is always computed too: the cache records it to recognise a file
//! it already holds.

use std::fmt;
use std::str::FromStr;

use sha2::digest::DynDigest;
use sha2::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumType {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl ChecksumType {
    /// Hex digits of a digest of this kind.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumType::Md5 => 32,
            ChecksumType::Sha1 => 40,
            ChecksumType::Sha256 => 64,
            ChecksumType::Sha384 => 96,
            ChecksumType::Sha512 => 128,
        }
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            ChecksumType::Md5 => Box::new(md5::Md5::new()),
            ChecksumType::Sha1 => Box::new(sha1::Sha1::new()),
            ChecksumType::Sha256 => Box::new(sha2::Sha256::new()),
            ChecksumType::Sha384 => Box::new(sha2::Sha384::new()),
            ChecksumType::Sha512 => Box::new(sha2::Sha512::new()),
        }
    }

    fn from_hex_len(len: usize) -> Option<ChecksumType> {
        [
            ChecksumType::Md5,
            ChecksumType::Sha1,
            ChecksumType::Sha256,
            ChecksumType::Sha384,
            ChecksumType::Sha512,
        ]
        .into_iter()
        .find(|t| t.hex_len() == len)
    }
}

impl FromStr for ChecksumType {
    type Err = String;

    fn from_str(s: &str) -> Result<ChecksumType, String> {
        match s.trim().to_ascii_lowercase().replace('-', "").as_str() {
            "md5" => Ok(ChecksumType::Md5),
            "sha1" => Ok(ChecksumType::Sha1),
            "sha256" => Ok(ChecksumType::Sha256),
            "sha384" => Ok(ChecksumType::Sha384),
            "sha512" => Ok(ChecksumType::Sha512),
            other => Err(format!(
                "unknown checksum type `{other}` (use md5, sha1, sha256, sha384 or sha512)"
            )),
        }
    }
}

impl fmt::Display for ChecksumType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumType::Md5 => "md5",
            ChecksumType::Sha1 => "sha1",
            ChecksumType::Sha256 => "sha256",
            ChecksumType::Sha384 => "sha384",
            ChecksumType::Sha512 => "sha512",
        })
    }
}

/// An expected checksum: a kind and lowercase hex digits of the right length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub kind: ChecksumType,
    pub hex: String,
}

impl Checksum {
    /// Builds a checksum from user or catalog input. Without a type the kind
    /// follows from the length (64 hex digits: sha256, and so on). A
    /// `type:` or `type=` prefix in `value` is accepted too.
    pub fn new(value: &str, kind: Option<&str>) -> Result<Checksum, String> {
        let mut value = value.trim();
        let mut kind = kind
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        if let Some((prefix, rest)) = value.split_once([':', '=']) {
            if prefix.parse::<ChecksumType>().is_ok() {
                kind.get_or_insert_with(|| prefix.to_owned());
                value = rest.trim();
            }
        }
        let hex = value.to_ascii_lowercase();
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("checksum `{value}` is not hexadecimal"));
        }
        let kind = match kind {
            Some(k) => k.parse::<ChecksumType>()?,
            None => ChecksumType::from_hex_len(hex.len()).ok_or_else(|| {
                format!(
                    "cannot tell the type of a {}-digit checksum; give --checksum-type",
                    hex.len()
                )
            })?,
        };
        if hex.len() != kind.hex_len() {
            return Err(format!(
                "a {kind} checksum has {} hex digits, `{value}` has {}",
                kind.hex_len(),
                hex.len()
            ));
        }
        Ok(Checksum { kind, hex })
    }

    /// From optional checksum and type, as in kvmdrive.yml and catalogs: a
    /// type without a checksum (or an empty checksum) means no check.
    pub fn from_parts(value: Option<&str>, kind: Option<&str>) -> Result<Option<Checksum>, String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => {
                let kind = kind.filter(|k| !k.trim().is_empty() && !k.eq_ignore_ascii_case("none"));
                Checksum::new(v, kind).map(Some)
            }
        }
    }
}

/// `box_download_checksum_type` as written in kvmdrive.yml or a platform: a
/// kind, or `none` / empty (the type then follows from the checksum's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumTypeSetting(pub Option<ChecksumType>);

impl<'de> serde::Deserialize<'de> for ChecksumTypeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("none") {
            return Ok(ChecksumTypeSetting(None));
        }
        s.parse()
            .map(|k| ChecksumTypeSetting(Some(k)))
            .map_err(serde::de::Error::custom)
    }
}

impl Checksum {
    /// From a machine's `box_download_checksum` and `_type`, checked at
    /// load: as [`Checksum::from_parts`], with messages in those keys' terms.
    pub fn from_settings(
        value: Option<&str>,
        kind: Option<ChecksumType>,
    ) -> Result<Option<Checksum>, String> {
        let kind = kind.map(|k| k.to_string());
        Checksum::from_parts(value, kind.as_deref()).map_err(|e| {
            if e.starts_with("cannot tell the type") {
                format!(
                    "{}: box_download_checksum and box_download_checksum_type go together \
                     unless the length names the type (md5 32, sha1 40, sha256 64, sha384 96, \
                     sha512 128 hex digits)",
                    e.trim_end_matches("; give --checksum-type")
                )
            } else {
                e
            }
        })
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.hex)
    }
}

/// Hashes bytes as they pass: always SHA-256, plus the expected checksum's
/// kind when that is another.
pub struct StreamHasher {
    sha256: sha2::Sha256,
    extra: Option<(ChecksumType, Box<dyn DynDigest + Send>)>,
    bytes: u64,
}

/// What a [`StreamHasher`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    /// The digest of the kind asked for (the SHA-256 again if that was it).
    pub requested: Option<(ChecksumType, String)>,
    pub bytes: u64,
}

impl StreamHasher {
    pub fn new(also: Option<ChecksumType>) -> StreamHasher {
        StreamHasher {
            sha256: sha2::Sha256::new(),
            extra: also
                .filter(|k| *k != ChecksumType::Sha256)
                .map(|k| (k, k.hasher())),
            bytes: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        Digest::update(&mut self.sha256, data);
        if let Some((_, h)) = &mut self.extra {
            h.update(data);
        }
        self.bytes += data.len() as u64;
    }

    pub fn finish(self, requested: Option<ChecksumType>) -> Digests {
        let sha256 = hex(&Digest::finalize(self.sha256));
        let requested = requested.map(|kind| match self.extra {
            Some((k, h)) if k == kind => (k, hex(&h.finalize())),
            _ => (ChecksumType::Sha256, sha256.clone()),
        });
        Digests {
            sha256,
            requested,
            bytes: self.bytes,
        }
    }
}

impl Digests {
    /// `Ok` when `expected` is `None` or matches; otherwise the actual digest.
    pub fn verify(&self, expected: Option<&Checksum>) -> Result<(), String> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let actual = match &self.requested {
            Some((k, hex)) if *k == expected.kind => hex,
            _ if expected.kind == ChecksumType::Sha256 => &self.sha256,
            _ => return Err("no digest of that kind was computed".into()),
        };
        if *actual == expected.hex {
            Ok(())
        } else {
            Err(actual.clone())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 (and optionally another digest) of a file.
pub fn hash_file(path: &std::path::Path, also: Option<ChecksumType>) -> std::io::Result<Digests> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = StreamHasher::new(also);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish(also))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Digests of "abc" from the respective standards.
    const ABC_MD5: &str = "900150983cd24fb0d6963f7d28e17f72";
    const ABC_SHA1: &str = "a9993e364706816aba3e25717850c26c9cd0d89d";
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_SHA384: &str =
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7";
    const ABC_SHA512: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    fn digest_abc(kind: ChecksumType) -> Digests {
        let mut h = StreamHasher::new(Some(kind));
        h.update(b"a");
        h.update(b"bc");
        h.finish(Some(kind))
    }

    #[test]
    fn every_kind_matches_its_test_vector() {
        for (kind, want) in [
            (ChecksumType::Md5, ABC_MD5),
            (ChecksumType::Sha1, ABC_SHA1),
            (ChecksumType::Sha256, ABC_SHA256),
            (ChecksumType::Sha384, ABC_SHA384),
            (ChecksumType::Sha512, ABC_SHA512),
        ] {
            let d = digest_abc(kind);
            assert_eq!(d.sha256, ABC_SHA256);
            assert_eq!(d.bytes, 3);
            let expected = Checksum::new(want, Some(&kind.to_string())).unwrap();
            assert_eq!(d.verify(Some(&expected)), Ok(()), "{kind}");
            let mut wrong = want.to_string();
            wrong.replace_range(0..1, if want.starts_with('0') { "1" } else { "0" });
            let wrong = Checksum::new(&wrong, Some(&kind.to_string())).unwrap();
            assert_eq!(d.verify(Some(&wrong)), Err(want.to_string()), "{kind}");
        }
    }

    #[test]
    fn checksum_input_is_validated() {
        assert_eq!(
            Checksum::new(ABC_SHA1, None).unwrap().kind,
            ChecksumType::Sha1
        );
        assert_eq!(
            Checksum::new(&ABC_SHA256.to_uppercase(), Some("SHA256"))
                .unwrap()
                .hex,
            ABC_SHA256
        );
        assert_eq!(
            Checksum::new(&format!("sha256:{ABC_SHA256}"), None)
                .unwrap()
                .kind,
            ChecksumType::Sha256
        );
        assert!(
            Checksum::new(ABC_SHA1, Some("sha256")).is_err(),
            "wrong length for the type"
        );
        assert!(Checksum::new("xyz", None).is_err());
        assert!(Checksum::new("abcd", None).is_err(), "length tells no type");
        assert!(Checksum::new(ABC_MD5, Some("crc32")).is_err());
        assert_eq!(Checksum::from_parts(None, Some("sha256")), Ok(None));
        assert_eq!(Checksum::from_parts(Some(""), None), Ok(None));
        assert!(Checksum::from_parts(Some(ABC_MD5), Some("none"))
            .unwrap()
            .is_some());
        let e = Checksum::from_settings(Some("abc"), None).unwrap_err();
        assert!(e.contains("3-digit") && e.contains("go together"), "{e}");
        assert_eq!(
            Checksum::from_settings(Some(ABC_SHA1), None)
                .unwrap()
                .unwrap()
                .kind,
            ChecksumType::Sha1,
            "the type follows from the length"
        );
    }
}
