//! Network settings for boxes ([`NetConfig`], from the environment by
//! default) and the bearer tokens they yield ([`Auth`]): a token is bound
//! to one origin and only ever attached to requests for it.

use std::time::Duration;

use reqwest::Url;

use super::retry::RetryPolicy;

/// Default for `$VAGRANT_SERVER_URL`.
pub const DEFAULT_SERVER_URL: &str = "https://vagrantcloud.com";

/// Network settings, from the environment by default.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// `$VAGRANT_SERVER_URL`: where `owner/name` boxes are looked up.
    pub server_url: String,
    /// `$VAGRANT_CLOUD_TOKEN`: sent to the `server_url` origin only.
    pub vagrant_cloud_token: Option<String>,
    /// `$KVMDRIVE_CATALOG_TOKEN`: sent to the origin of whichever catalog is used.
    pub catalog_token: Option<String>,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            server_url: DEFAULT_SERVER_URL.into(),
            vagrant_cloud_token: None,
            catalog_token: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

impl NetConfig {
    pub fn from_env() -> NetConfig {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        NetConfig {
            server_url: var("VAGRANT_SERVER_URL").unwrap_or_else(|| DEFAULT_SERVER_URL.into()),
            vagrant_cloud_token: var("VAGRANT_CLOUD_TOKEN"),
            catalog_token: var("KVMDRIVE_CATALOG_TOKEN"),
            ..NetConfig::default()
        }
    }

    /// The token to send to the catalog at `catalog_url`, if any.
    pub fn auth_for_catalog(&self, catalog_url: &Url) -> Option<Auth> {
        if !matches!(catalog_url.scheme(), "http" | "https") {
            return None;
        }
        let token = self.catalog_token.clone().or_else(|| {
            let server = Url::parse(&self.server_url).ok()?;
            same_origin(&server, catalog_url)
                .then(|| self.vagrant_cloud_token.clone())
                .flatten()
        })?;
        Some(Auth {
            origin: catalog_url.clone(),
            token,
        })
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A bearer token bound to one origin.
#[derive(Clone)]
pub struct Auth {
    origin: Url,
    token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Auth({} ***)",
            self.origin.origin().ascii_serialization()
        )
    }
}

impl Auth {
    pub(super) fn header_for(&self, url: &Url) -> Option<String> {
        same_origin(&self.origin, url).then(|| format!("Bearer {}", self.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_to_the_catalog_origin_only() {
        let cfg = NetConfig {
            server_url: "https://boxes.example.test".into(),
            vagrant_cloud_token: Some("cloud".into()),
            ..NetConfig::default()
        };
        let server = Url::parse("https://boxes.example.test/api/v2/vagrant/a/b").unwrap();
        let auth = cfg.auth_for_catalog(&server).expect("token for the server");
        assert_eq!(auth.header_for(&server).as_deref(), Some("Bearer cloud"));
        assert_eq!(
            auth.header_for(&Url::parse("https://boxes.example.test/a/b/1.box").unwrap())
                .as_deref(),
            Some("Bearer cloud")
        );
        assert!(auth
            .header_for(&Url::parse("https://cdn.example.test/a.box").unwrap())
            .is_none());
        assert!(auth
            .header_for(&Url::parse("http://boxes.example.test/a.box").unwrap())
            .is_none());
        assert!(auth
            .header_for(&Url::parse("https://boxes.example.test:8443/a.box").unwrap())
            .is_none());
        // the Vagrant Cloud token never goes to another catalog host
        assert!(cfg
            .auth_for_catalog(&Url::parse("https://other.test/c.json").unwrap())
            .is_none());
        // a kvmdrive catalog token goes to whatever catalog is used
        let cfg = NetConfig {
            catalog_token: Some("mine".into()),
            ..cfg
        };
        let other = Url::parse("https://other.test/c.json").unwrap();
        assert_eq!(
            cfg.auth_for_catalog(&other)
                .unwrap()
                .header_for(&other)
                .as_deref(),
            Some("Bearer mine")
        );
        assert!(format!("{:?}", cfg.auth_for_catalog(&other).unwrap()).contains("***"));
        assert!(!format!("{:?}", cfg.auth_for_catalog(&other).unwrap()).contains("mine"));
    }
}
