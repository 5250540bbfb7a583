//! Helpers for the box integration tests: a small HTTP/1.1 server on
//! 127.0.0.1 (Range or not, cut connections, redirects, any content type,
//! throttling, proxy requests), box archives built on the spot (good ones and
//! every refused shape), and snapshots of the cache to prove a failure left
//! nothing behind.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

// ---------------------------------------------------------------- server

/// How the server answers one path.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub body: Arc<Vec<u8>>,
    pub content_type: Option<String>,
    /// Honour `Range: bytes=N-` (with `If-Range` against the ETag).
    pub ranges: bool,
    pub etag: Option<String>,
    /// Cut the connection after this many body bytes...
    pub cut_after: Option<usize>,
    /// ...in this many responses (then answer normally).
    pub cuts: usize,
    /// `Location` of a 302.
    pub redirect: Option<String>,
    /// Pause after every 64 KiB of body.
    pub throttle: Option<Duration>,
    /// Once the cuts are used up, answer with this status instead.
    pub then_status: Option<u16>,
}

impl Route {
    pub fn bytes(body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            body: Arc::new(body.into()),
            content_type: Some("application/octet-stream".into()),
            ranges: false,
            etag: None,
            cut_after: None,
            cuts: 0,
            redirect: None,
            throttle: None,
            then_status: None,
        }
    }

    pub fn json(text: impl Into<String>) -> Route {
        Route::bytes(text.into().into_bytes()).content_type("application/json")
    }

    pub fn html(text: &str) -> Route {
        Route::bytes(text.as_bytes().to_vec()).content_type("text/html; charset=utf-8")
    }

    pub fn status(code: u16) -> Route {
        let mut r = Route::bytes(format!("status {code}").into_bytes()).content_type("text/plain");
        r.status = code;
        r
    }

    pub fn redirect(to: impl Into<String>) -> Route {
        let mut r = Route::bytes(Vec::new());
        r.status = 302;
        r.redirect = Some(to.into());
        r
    }

    pub fn content_type(mut self, t: &str) -> Route {
        self.content_type = Some(t.into());
        self
    }

    pub fn with_ranges(mut self) -> Route {
        self.ranges = true;
        self.etag = Some(format!("\"{:x}\"", self.body.len()));
        self
    }

    pub fn cut(mut self, after: usize, times: usize) -> Route {
        self.cut_after = Some(after);
        self.cuts = times;
        self
    }

    /// After the cuts, fail with `status` (a server that went away).
    pub fn then_fail(mut self, status: u16) -> Route {
        self.then_status = Some(status);
        self
    }

    pub fn throttled(mut self, per_64k: Duration) -> Route {
        self.throttle = Some(per_64k);
        self
    }
}

/// A request the server saw, and how many body bytes it sent back.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path (or absolute URL, for proxy requests) as sent.
    pub target: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
    pub sent: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
}

pub struct TestServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        TestServer { port, state, stop }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    pub fn route(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), route);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    pub fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    // proxy requests carry an absolute URL
    let path = match target.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned()),
        None => target.clone(),
    };
    let mut seen = Seen {
        method: method.clone(),
        target,
        path: path.clone(),
        headers,
        status: 0,
        sent: 0,
    };
    let route = {
        let mut st = state.lock().unwrap();
        let mut r = st.routes.get_mut(&path).cloned();
        if let Some(route) = &mut r {
            if route.cuts == 0 {
                if let Some(code) = route.then_status {
                    *route = Route::status(code);
                }
            }
        }
        if let Some(r) = &r {
            if r.cuts > 0 {
                st.routes.get_mut(&path).unwrap().cuts -= 1;
            }
        }
        r
    };
    // Recorded before the body goes out: a client may finish reading it and
    // the test look at `seen` before this thread gets back here.
    let index = {
        let mut st = state.lock().unwrap();
        st.seen.push(seen.clone());
        st.seen.len() - 1
    };
    let result = respond(&mut out, &method, route, &mut seen);
    if let Some(slot) = state.lock().unwrap().seen.get_mut(index) {
        *slot = seen;
    }
    let _ = out.shutdown(Shutdown::Both);
    result
}

fn respond(
    out: &mut TcpStream,
    method: &str,
    route: Option<Route>,
    seen: &mut Seen,
) -> std::io::Result<()> {
    let Some(route) = route else {
        seen.status = 404;
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
        );
    };
    if let Some(loc) = &route.redirect {
        seen.status = route.status;
        return write!(
            out,
            "HTTP/1.1 {} Found\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            route.status
        );
    }
    let body = &route.body;
    let len = body.len();
    let mut start = 0usize;
    let mut status = route.status;
    let mut extra = String::new();
    if route.status == 200 && route.ranges {
        let range = seen
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .map(str::to_owned);
        let if_range_ok = match seen.header("if-range") {
            None => true,
            Some(v) => Some(v) == route.etag.as_deref(),
        };
        if let (Some(r), true) = (range, if_range_ok) {
            let from: usize = r.split('-').next().unwrap_or("0").parse().unwrap_or(0);
            if from >= len {
                seen.status = 416;
                return write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            start = from;
            status = 206;
            extra.push_str(&format!(
                "Content-Range: bytes {from}-{}/{len}\r\n",
                len - 1
            ));
        }
        extra.push_str("Accept-Ranges: bytes\r\n");
    }
    if let Some(etag) = &route.etag {
        extra.push_str(&format!("ETag: {etag}\r\n"));
    }
    if let Some(ct) = &route.content_type {
        extra.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        _ => "Status",
    };
    seen.status = status;
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        len - start
    )?;
    if method == "HEAD" {
        return Ok(());
    }
    let limit = match (route.cut_after, route.cuts_active()) {
        (Some(n), true) => (start + n).min(len),
        _ => len,
    };
    let mut pos = start;
    while pos < limit {
        let end = (pos + 65536).min(limit);
        out.write_all(&body[pos..end])?;
        seen.sent += end - pos;
        pos = end;
        if let Some(t) = route.throttle {
            thread::sleep(t);
        }
    }
    out.flush()
}

impl Route {
    /// Whether this response (already counted off `cuts`) is to be cut: the
    /// route copy handed to a response keeps the count from before.
    fn cuts_active(&self) -> bool {
        self.cuts > 0
    }
}

// ---------------------------------------------------------------- boxes

/// A fresh qcow2 image of `size` (e.g. "64M"), as bytes.
pub fn qcow2(size: &str) -> Vec<u8> {
    qcow2_with(&["create", "-q", "-f", "qcow2"], size)
}

pub fn qcow2_with(args: &[&str], size: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let out = Command::new("qemu-img")
        .args(args)
        .arg(&path)
        .arg(size)
        .output()
        .expect("qemu-img (qemu-utils) is needed for these tests");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).unwrap()
}

/// A qcow2 image whose backing file is `backing` (a host path).
pub fn qcow2_with_backing(backing: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let out = Command::new("qemu-img")
        .args([
            "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", backing,
        ])
        .arg(&path)
        .arg("16M")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).unwrap()
}

pub const META_V1: &str = r#"{"provider":"libvirt","format":"qcow2","virtual_size":1}"#;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pack {
    Tar,
    Gzip,
    Zstd,
}

/// One tar entry, possibly a hostile one.
pub enum Entry {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    HardLink(String, String),
    CharDevice(String),
    Fifo(String),
}

/// A tar (compressed as `pack`) of `entries`, names written verbatim (so
/// `../x` and `/etc/x` really end up in the archive).
pub fn tar_of(entries: &[Entry], pack: Pack) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data, link): (&str, &[u8], Option<&str>) = match e {
            Entry::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d, None)
            }
            Entry::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                (n, &[], None)
            }
            Entry::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                (n, &[], Some(t))
            }
            Entry::HardLink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                (n, &[], Some(t))
            }
            Entry::CharDevice(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (n, &[], None)
            }
            Entry::Fifo(n) => {
                h.set_entry_type(tar::EntryType::Fifo);
                (n, &[], None)
            }
        };
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            old.linkname = [0; 100];
            old.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_mode(if matches!(e, Entry::Dir(_)) {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    match pack {
        Pack::Tar => tar,
        Pack::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            gz.finish().unwrap()
        }
        Pack::Zstd => {
            ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// A valid libvirt box (metadata v1 + a qcow2 box.img of `size`), with
/// `extra` bytes in a padding file to make it bigger when needed.
pub fn good_box(pack: Pack, size: &str, extra: usize) -> Vec<u8> {
    let mut entries = vec![
        Entry::File("metadata.json".into(), META_V1.as_bytes().to_vec()),
        Entry::File("Vagrantfile".into(), b"# test box\n".to_vec()),
        Entry::File("box.img".into(), qcow2(size)),
    ];
    if extra > 0 {
        // incompressible, deterministic padding
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let pad: Vec<u8> = (0..extra)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        entries.push(Entry::File("padding.bin".into(), pad));
    }
    tar_of(&entries, pack)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------- cache state

/// Every file and directory under `dir` (relative), with sizes: compare two
/// snapshots to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push((
                p.strip_prefix(root).unwrap().to_owned(),
                if m.is_dir() { 0 } else { m.len() },
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Files left in kvmdrive's `tmp/` (unpack dirs, downloads), excluding empty directories.
pub fn tmp_files(home: &Path) -> Vec<PathBuf> {
    snapshot(&home.join("tmp"))
        .into_iter()
        .filter(|(p, _)| home.join("tmp").join(p).is_file())
        .map(|(p, _)| p)
        .collect()
}

/// Asserts the cache under `home` is what `before` recorded and `tmp/` holds no files.
pub fn assert_nothing_new(home: &Path, before: &[(PathBuf, u64)]) {
    assert_eq!(
        snapshot(&home.join("boxes")),
        before,
        "the box cache changed"
    );
    assert_eq!(tmp_files(home), Vec::<PathBuf>::new(), "files left in tmp/");
}

pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}
