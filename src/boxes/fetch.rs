//! HTTP for boxes (reqwest with rustls): catalog fetches, probing a URL
//! that may be a catalog or a box, and box downloads that hash while they
//! stream, resume with `Range` when the server allows it, restart cleanly
//! when it does not, and retry transient failures with backoff.
//!
//! Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (reqwest reads
//! them). A bearer token ([`Auth`]) is only ever attached to requests for
//! the catalog's own origin; reqwest drops it on redirects to another host.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::archive::{looks_like_box, SNIFF_LEN};
use super::catalog::Catalog;
use super::checksum::{ChecksumType, Digests, StreamHasher};
use super::progress::DownloadProgress;
use super::BoxError;

/// Largest catalog kvmdrive reads.
const CATALOG_LIMIT: usize = 32 << 20;

/// Default for `$VAGRANT_SERVER_URL`.
pub const DEFAULT_SERVER_URL: &str = "https://vagrantcloud.com";

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row that make no progress before giving up.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        (self.base_delay * factor).min(self.max_delay)
    }
}

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
    fn header_for(&self, url: &Url) -> Option<String> {
        same_origin(&self.origin, url).then(|| format!("Bearer {}", self.token))
    }
}

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

/// Kept beside a partial download so a later run can resume it safely.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PartialState {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

impl PartialState {
    fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

enum Failure {
    /// Worth another attempt; `progressed` when bytes arrived first.
    Transient {
        message: String,
        progressed: bool,
    },
    Fatal(BoxError),
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

/// Counts failures in a row and says how long to wait before the next attempt.
struct Retrier<'p> {
    policy: &'p RetryPolicy,
    failures: u32,
    attempts: u32,
}

impl<'p> Retrier<'p> {
    fn new(policy: &'p RetryPolicy) -> Retrier<'p> {
        Retrier {
            policy,
            failures: 0,
            attempts: 0,
        }
    }

    /// The delay before the next attempt, or `None` to give up. An attempt
    /// that made progress is retried at once and resets the count.
    fn after_failure(&mut self, progressed: bool) -> Option<Duration> {
        self.attempts += 1;
        self.failures = if progressed { 0 } else { self.failures + 1 };
        if self.failures >= self.policy.attempts.max(1) || self.attempts >= 1000 {
            return None;
        }
        Some(if progressed {
            Duration::ZERO
        } else {
            self.policy.delay(self.failures)
        })
    }
}

/// Hashes on a thread of its own, so hashing overlaps receiving and
/// writing. Chunks are handed over in batches of a few MiB: one wake-up per
/// batch, not per chunk. (Measured on an otherwise idle 2-core host against
/// a 127.0.0.1 server: as fast as `curl -o`; hashing inline on the receiving
/// thread was about 1.5x slower, per-chunk hand-over slower still.)
struct HashWorker {
    also: Option<ChecksumType>,
    batch: Vec<Bytes>,
    batched: usize,
    tx: Option<std::sync::mpsc::SyncSender<Vec<Bytes>>>,
    handle: Option<thread::JoinHandle<StreamHasher>>,
}

const HASH_BATCH: usize = 1 << 20;

impl HashWorker {
    fn start(also: Option<ChecksumType>) -> HashWorker {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(8);
        let handle = thread::Builder::new()
            .name("kvmdrive-hash".into())
            .spawn(move || {
                let mut h = StreamHasher::new(also);
                for batch in rx {
                    for b in batch {
                        h.update(&b);
                    }
                }
                h
            })
            .expect("cannot start the hashing thread");
        HashWorker {
            also,
            batch: Vec::new(),
            batched: 0,
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    fn update(&mut self, data: Bytes) {
        self.batched += data.len();
        self.batch.push(data);
        if self.batched >= HASH_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        if let Some(tx) = &self.tx {
            let _ = tx.send(batch);
        }
    }

    /// Starts over (a restarted download).
    fn reset(&mut self) {
        let also = self.also;
        let old = std::mem::replace(self, HashWorker::start(also));
        drop(old.finish_hasher());
    }

    fn finish_hasher(mut self) -> StreamHasher {
        self.flush();
        drop(self.tx.take());
        self.handle
            .take()
            .expect("finished once")
            .join()
            .expect("the hashing thread does not panic")
    }

    fn finish(self) -> Digests {
        let also = self.also;
        self.finish_hasher().finish(also)
    }
}

/// Throws away a partial download to start from the first byte.
fn restart(file: &mut fs::File, hasher: &mut HashWorker, offset: &mut u64) -> std::io::Result<()> {
    file.set_len(0)?;
    hasher.reset();
    *offset = 0;
    Ok(())
}

/// Whether `part` is a partial download of `url` that can be resumed.
pub fn has_partial(part: &Path, url: &Url) -> bool {
    let state: Option<PartialState> = fs::read(state_path(part))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    state.is_some_and(|s| s.url == url.as_str() && s.validator().is_some())
        && fs::metadata(part).is_ok_and(|m| m.len() > 0)
}

/// The sidecar file of a partial download.
pub fn state_path(part: &Path) -> PathBuf {
    let mut s = part.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

fn hash_prefix(part: &Path, hasher: &mut HashWorker) -> std::io::Result<u64> {
    let mut f = fs::File::open(part)?;
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        buf.truncate(n);
        total += n as u64;
        hasher.update(Bytes::from(buf));
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

/// Start offset of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(h: &HeaderMap) -> Option<u64> {
    let v = header_str(h, header::CONTENT_RANGE)?;
    let rest = v.trim().strip_prefix("bytes")?.trim();
    rest.split('-').next()?.trim().parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
        };
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(3), Duration::from_secs(2));
        assert_eq!(p.delay(4), Duration::from_secs(3));
        assert_eq!(p.delay(40), Duration::from_secs(3));
    }

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

    #[test]
    fn content_range_parsing() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(header::CONTENT_RANGE, "bytes */200".parse().unwrap());
        assert_eq!(content_range_start(&h), None);
    }

    #[test]
    fn weak_etags_are_not_validators() {
        let s = PartialState {
            url: "u".into(),
            etag: Some("W/\"x\"".into()),
            last_modified: None,
        };
        assert_eq!(s.validator(), None);
        let s = PartialState {
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
            ..s
        };
        assert_eq!(s.validator(), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
    }
}
