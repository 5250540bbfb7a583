//! HTTP for boxes (reqwest with rustls): catalog fetches, probing a URL
//! that may be a catalog or a box, and box downloads that hash while they
//! stream, resume with `Range` when the server allows it, restart cleanly
//! when it does not, and retry transient failures with backoff.
//!
//! Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (reqwest reads
//! them). A bearer token ([`Auth`]) is only ever attached to requests for
//! the catalog's own origin; reqwest drops it on redirects to another host.
//!
//! Split by concern: [`config`] (settings and tokens), [`retry`] (which
//! failures to retry, backoff), [`hash_worker`] (hashing while streaming),
//! [`resume`] (partial downloads and their sidecar state).

mod config;
mod hash_worker;
mod resume;
mod retry;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};

use super::archive::{looks_like_box, SNIFF_LEN};
use super::catalog::Catalog;
use super::checksum::{ChecksumType, Digests};
use super::progress::DownloadProgress;
use super::BoxError;
pub use config::{Auth, NetConfig, DEFAULT_SERVER_URL};
use hash_worker::HashWorker;
use resume::{content_range_start, hash_prefix, restart, PartialState};
pub use resume::{has_partial, state_path};
pub use retry::RetryPolicy;
use retry::{Failure, Retrier};

/// Largest catalog kvmdrive reads.
const CATALOG_LIMIT: usize = 32 << 20;

/// What a URL turned out to be.
pub enum Probe {
    Catalog {
        catalog: Catalog,
        url: Url,
    },
    /// A box: the response is kept open so the download continues it.
    Box(Opened),
}

/// A box response already started: its first bytes were read to recognise it.
pub struct Opened {
    response: Box<reqwest::Response>,
    head: Vec<u8>,
    /// When the request was sent: the download's clock starts there.
    started: Instant,
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub path: PathBuf,
    pub digests: Digests,
    /// Bytes received over the network this time (less than the size when resumed).
    pub transferred: u64,
    pub seconds: f64,
}

/// The HTTP client with its own small runtime: callers stay synchronous
/// (machines come up on plain threads), each with its own fetcher.
pub struct Fetcher {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl Fetcher {
    pub fn new(cfg: &NetConfig) -> Result<Fetcher, BoxError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(super::io_err("cannot start the HTTP runtime"))?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("kvmdrive/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| BoxError::Network {
                url: String::new(),
                message: format!("cannot set up HTTP: {}", chain(&e)),
            })?;
        Ok(Fetcher {
            rt,
            client,
            retry: cfg.retry.clone(),
        })
    }

    fn request(&self, url: &Url, auth: Option<&Auth>) -> reqwest::RequestBuilder {
        let mut req = self.client.get(url.clone());
        if let Some(value) = auth.and_then(|a| a.header_for(url)) {
            req = req.header(header::AUTHORIZATION, value);
        }
        req
    }

    /// Runs `attempt` until it succeeds, fails for good, or has failed
    /// `retry.attempts` times in a row without progress.
    fn with_retries<T>(
        &self,
        url: &Url,
        mut attempt: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, BoxError> {
        let mut retrier = Retrier::new(&self.retry);
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient {
                    message,
                    progressed,
                }) => match retrier.after_failure(progressed) {
                    Some(delay) => thread::sleep(delay),
                    None => {
                        return Err(BoxError::Network {
                            url: url.to_string(),
                            message,
                        })
                    }
                },
            }
        }
    }

    /// Fetches a catalog (for `owner/name` boxes and `box outdated`).
    pub fn catalog(&self, url: &Url, auth: Option<&Auth>) -> Result<(Catalog, Url), BoxError> {
        self.with_retries(url, || {
            self.rt.block_on(async {
                let resp = self
                    .request(url, auth)
                    .header(header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| classify(url, e, false))?;
                let resp = check_status(url, resp)?;
                let final_url = resp.url().clone();
                let html = is_html(resp.headers());
                let body = read_limited(url, resp, Vec::new(), CATALOG_LIMIT).await?;
                if html || looks_like_html(&body) {
                    return Err(Failure::Fatal(BoxError::HtmlCatalog {
                        url: url.to_string(),
                    }));
                }
                let catalog = Catalog::parse(&body).map_err(|message| {
                    Failure::Fatal(BoxError::BadCatalog {
                        url: url.to_string(),
                        message,
                    })
                })?;
                Ok((catalog, final_url))
            })
        })
    }

    /// GETs `url` and tells a catalog from a box by content type and first
    /// bytes. A box response stays open for [`Fetcher::download`].
    pub fn probe(&self, url: &Url, auth: Option<&Auth>) -> Result<Probe, BoxError> {
        self.with_retries(url, || {
            let started = Instant::now();
            self.rt.block_on(async {
                let resp = self
                    .request(url, auth)
                    .header(header::ACCEPT, "application/json, */*;q=0.8")
                    .send()
                    .await
                    .map_err(|e| classify(url, e, false))?;
                let mut resp = check_status(url, resp)?;
                let json = content_type(resp.headers())
                    .is_some_and(|t| t == "application/json" || t.ends_with("+json"));
                let html = is_html(resp.headers());
                let mut head = Vec::new();
                while head.len() < SNIFF_LEN {
                    match resp.chunk().await {
                        Ok(Some(c)) => head.extend_from_slice(&c),
                        Ok(None) => break,
                        Err(e) => return Err(classify(url, e, false)),
                    }
                }
                if looks_like_box(&head) {
                    return Ok(Probe::Box(Opened {
                        response: Box::new(resp),
                        head,
                        started,
                    }));
                }
                let first = head.iter().find(|b| !b.is_ascii_whitespace()).copied();
                if json || first == Some(b'{') {
                    let final_url = resp.url().clone();
                    let body = read_limited(url, resp, head, CATALOG_LIMIT).await?;
                    return match Catalog::parse(&body) {
                        Ok(catalog) => Ok(Probe::Catalog {
                            catalog,
                            url: final_url,
                        }),
                        Err(message) => Err(Failure::Fatal(BoxError::BadCatalog {
                            url: url.to_string(),
                            message,
                        })),
                    };
                }
                if html || first == Some(b'<') {
                    return Err(Failure::Fatal(BoxError::HtmlCatalog {
                        url: url.to_string(),
                    }));
                }
                Err(Failure::Fatal(BoxError::BadCatalog {
                    url: url.to_string(),
                    message: format!(
                        "neither a box nor a catalog (content type {})",
                        content_type(resp.headers()).unwrap_or_else(|| "not given".into())
                    ),
                }))
            })
        })
    }

    /// Downloads `url` to `part`, continuing `opened` when given, resuming a
    /// partial file a previous run left when the server supports it. The
    /// SHA-256 (and `also`) is computed while the bytes stream.
    ///
    /// On a transient failure the partial file stays for the next run; on
    /// any other failure it is deleted.
    pub fn download(
        &self,
        url: &Url,
        opened: Option<Opened>,
        part: &Path,
        also: Option<ChecksumType>,
        auth: Option<&Auth>,
        progress: &mut DownloadProgress<'_>,
    ) -> Result<Downloaded, BoxError> {
        let state_path = state_path(part);
        let started = opened.as_ref().map_or_else(Instant::now, |o| o.started);
        let previous: Option<PartialState> = fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let existing = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let resumable = previous
            .as_ref()
            .filter(|s| s.url == url.as_str() && s.validator().is_some() && existing > 0);
        let mut validator: Option<String> =
            resumable.and_then(|s| s.validator().map(str::to_owned));
        let mut opened = opened;
        if validator.is_some() {
            opened = None; // resume with a Range request instead
        }

        let io = |ctx: &str| super::io_err(format!("{ctx} {}", part.display()));
        if let Some(dir) = part.parent() {
            fs::create_dir_all(dir).map_err(io("cannot create the directory of"))?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(io("cannot open"))?;
        let mut hasher = HashWorker::start(also);
        let mut offset = 0u64;
        if validator.is_some() {
            offset = hash_prefix(part, &mut hasher).map_err(io("cannot read"))?;
            progress.note(format!(
                "resuming at {}",
                super::progress::human_bytes(offset)
            ));
        } else {
            file.set_len(0).map_err(io("cannot truncate"))?;
            let _ = fs::remove_file(&state_path);
        }
        let mut transferred = 0u64;
        let mut retrier = Retrier::new(&self.retry);
        let result = loop {
            let first = opened.take();
            let attempt = self.rt.block_on(async {
                let (mut resp, head) = match first {
                    Some(o) => (*o.response, o.head),
                    None => {
                        let mut req = self.request(url, auth);
                        if offset > 0 {
                            req = req.header(header::RANGE, format!("bytes={offset}-"));
                            if let Some(v) = &validator {
                                req = req.header(header::IF_RANGE, v.as_str());
                            }
                        }
                        let resp = req.send().await.map_err(|e| classify(url, e, false))?;
                        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
                            restart(&mut file, &mut hasher, &mut offset)
                                .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                            validator = None;
                            return Err(Failure::Transient {
                                message: "the server refused the range; restarting".into(),
                                progressed: true,
                            });
                        }
                        (check_status(url, resp)?, Vec::new())
                    }
                };
                if resp.status() == StatusCode::PARTIAL_CONTENT {
                    if content_range_start(resp.headers()) != Some(offset) {
                        restart(&mut file, &mut hasher, &mut offset)
                            .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                        validator = None;
                        return Err(Failure::Transient {
                            message: "the server answered another range; restarting".into(),
                            progressed: true,
                        });
                    }
                } else {
                    if offset > 0 {
                        progress.note("the server cannot resume this download; restarting");
                        restart(&mut file, &mut hasher, &mut offset)
                            .map_err(|e| Failure::Fatal(io("cannot truncate")(e)))?;
                    }
                    let state = PartialState {
                        url: url.to_string(),
                        etag: header_str(resp.headers(), header::ETAG),
                        last_modified: header_str(resp.headers(), header::LAST_MODIFIED),
                    };
                    validator = state.validator().map(str::to_owned);
                    let _ = fs::write(&state_path, serde_json::to_vec(&state).unwrap_or_default());
                }
                // From the header: reqwest's content_length() shrinks as the
                // body is read, and a probed response was read from already.
                let total = header_str(resp.headers(), header::CONTENT_LENGTH)
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .map(|l| l + offset);
                progress.start(offset, total);
                let mut progressed = false;
                let mut pending = (!head.is_empty()).then(|| Bytes::from(head));
                loop {
                    let chunk = match pending.take() {
                        Some(head) => head,
                        None => match resp.chunk().await {
                            Ok(Some(chunk)) => chunk,
                            Ok(None) => break,
                            Err(e) => return Err(classify(url, e, progressed)),
                        },
                    };
                    transferred += chunk.len() as u64;
                    file.write_all(&chunk)
                        .map_err(|e| Failure::Fatal(io("cannot write")(e)))?;
                    offset += chunk.len() as u64;
                    crate::fault::point("box.download");
                    hasher.update(chunk);
                    progressed = true;
                    progress.set_position(offset);
                }
                match total {
                    Some(t) if offset != t => Err(Failure::Transient {
                        message: format!("the connection closed after {offset} of {t} bytes"),
                        progressed,
                    }),
                    _ => Ok(()),
                }
            });
            match attempt {
                Ok(()) => break Ok(()),
                Err(Failure::Fatal(e)) => break Err(e),
                Err(Failure::Transient {
                    message,
                    progressed,
                }) => match retrier.after_failure(progressed) {
                    Some(delay) => {
                        progress.note(format!(
                            "{message}; retrying in {:.1}s",
                            delay.as_secs_f64()
                        ));
                        thread::sleep(delay);
                    }
                    None => {
                        break Err(BoxError::Network {
                            url: url.to_string(),
                            message,
                        })
                    }
                },
            }
        };
        drop(file);
        let digests = hasher.finish();
        match result {
            Ok(()) => {
                progress.finish();
                let _ = fs::remove_file(&state_path);
                Ok(Downloaded {
                    path: part.to_owned(),
                    digests,
                    transferred,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
            Err(e) => {
                if !matches!(e, BoxError::Network { .. }) {
                    let _ = fs::remove_file(part);
                    let _ = fs::remove_file(&state_path);
                }
                Err(e)
            }
        }
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn content_type(h: &HeaderMap) -> Option<String> {
    header_str(h, header::CONTENT_TYPE).map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

fn is_html(h: &HeaderMap) -> bool {
    content_type(h).is_some_and(|t| t == "text/html" || t == "application/xhtml+xml")
}

fn looks_like_html(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

async fn read_limited(
    url: &Url,
    mut resp: reqwest::Response,
    mut body: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, Failure> {
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                body.extend_from_slice(&c);
                if body.len() > limit {
                    return Err(Failure::Fatal(BoxError::BadCatalog {
                        url: url.to_string(),
                        message: format!("larger than {} MiB: not a catalog", limit >> 20),
                    }));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(classify(url, e, false)),
        }
    }
}

fn check_status(url: &Url, resp: reqwest::Response) -> Result<reqwest::Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = status.as_u16();
    if status.is_server_error() || code == 429 || code == 408 {
        return Err(Failure::Transient {
            message: format!("HTTP {code}"),
            progressed: false,
        });
    }
    Err(Failure::Fatal(BoxError::Http {
        url: url.to_string(),
        status: code,
    }))
}

fn classify(url: &Url, e: reqwest::Error, progressed: bool) -> Failure {
    if e.is_builder() || e.is_redirect() {
        return Failure::Fatal(BoxError::Network {
            url: url.to_string(),
            message: chain(&e),
        });
    }
    Failure::Transient {
        message: chain(&e),
        progressed,
    }
}

/// An error with its causes: reqwest's own message alone rarely says what happened.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
