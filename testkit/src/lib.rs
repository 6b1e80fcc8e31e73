//! Test-only helpers, used as a `[dev-dependencies]` entry by the crates whose tests need them
//! (never by a release build): a loopback HTTP/1.1 server that plays the Hugging Face hub and
//! PyPI, so downloads are tested without network, and a temporary directory removed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The commit every hub file served by [`Server::hub_file`] claims (`x-repo-commit`): the cache
/// keeps it under `snapshots/{COMMIT}/`.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// At most this many connections per server, so a runaway client cannot hang a test.
const MAX_CONNECTIONS: usize = 500;

/// The lowercase hex sha256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// What the server answers for one path.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the full Content-Length, then only this many body bytes, then drop the connection.
    pub cut_at: Option<usize>,
}

impl Route {
    /// `200 OK` with `body`.
    pub fn ok(body: Vec<u8>) -> Self {
        Route {
            status: 200,
            headers: Vec::new(),
            body,
            cut_at: None,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn cut(mut self, at: usize) -> Self {
        self.cut_at = Some(at);
        self
    }
}

/// A tiny HTTP/1.1 server on `127.0.0.1`: GET and HEAD, `Range: bytes=a-b` / `bytes=a-`,
/// `Connection: close`; unknown paths get 404. Stopped on drop.
pub struct Server {
    /// `http://127.0.0.1:{port}`, the endpoint or index root to hand to the code under test.
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (routes, log, stop) = (routes.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming().take(MAX_CONNECTIONS) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        let _ = serve(stream, &routes, &log);
                    }
                }
            })
        };
        Server {
            base: format!("http://{addr}"),
            routes,
            log,
            stop,
            addr,
            handle: Some(handle),
        }
    }

    /// Serve `route` at the URL path `path` (`/x/y`, query strings are ignored), replacing any
    /// route there.
    pub fn route(&self, path: &str, route: Route) {
        self.routes
            .lock()
            .expect("routes lock")
            .insert(path.to_string(), route);
    }

    /// Serve `file` of `repo` at `revision` in the hub's URL layout,
    /// `/{repo}/resolve/{revision}/{file}`, with the headers hf-hub 0.4.3 reads:
    /// `x-repo-commit` ([`COMMIT`]), `etag` (for LFS files the sha256, plus `x-linked-etag`;
    /// otherwise a 40-hex git-style hash) and, on range requests, `content-range`.
    ///
    /// `repo` is `org/name` for a model and `datasets/org/name` for a dataset; `revision` is as
    /// it appears in the URL (`refs%2Fconvert%2Fparquet`). Returns the route, to alter and serve
    /// again with [`Server::route`].
    pub fn hub_file(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
        body: &[u8],
        lfs: bool,
    ) -> Route {
        let sha = sha256_hex(body);
        let mut r = Route::ok(body.to_vec()).header("x-repo-commit", COMMIT);
        if lfs {
            r = r
                .header("x-linked-etag", &format!("\"{sha}\""))
                .header("etag", &format!("\"{sha}\""));
        } else {
            r = r.header("etag", &format!("\"{}\"", &sha[..40]));
        }
        self.route(&format!("/{repo}/resolve/{revision}/{file}"), r.clone());
        r
    }

    /// Every request so far, in order: `"{METHOD} {path}"`, plus `" [{range}]"` for a range
    /// request (`"GET /org/m/resolve/main/m.gguf [bytes=0-0]"`).
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Stop serving: later requests find nothing listening.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A base URL where nothing listens (a port bound, then released).
pub fn dead_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = l.local_addr().expect("the bound address");
    drop(l);
    format!("http://{addr}")
}

fn respond_head(
    s: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    len: usize,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Whatever",
    };
    let mut head =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
}

fn serve(
    mut stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Ok(()),
    };
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    log.lock().expect("log lock").push(format!(
        "{method} {path}{}",
        range
            .as_deref()
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default()
    ));
    let route = routes.lock().expect("routes lock").get(&path).cloned();
    let Some(route) = route else {
        return respond_head(&mut stream, 404, &[], 0);
    };
    let len = route.body.len();
    let (status, mut headers, body): (u16, Vec<(String, String)>, &[u8]) =
        match (route.status, range) {
            (200, Some(r)) => {
                let spec = r.strip_prefix("bytes=").unwrap_or("");
                let (a, b) = spec.split_once('-').unwrap_or(("", ""));
                let start: usize = a.parse().unwrap_or(0);
                let end: usize = b
                    .parse()
                    .map(|e: usize| e.min(len.saturating_sub(1)))
                    .unwrap_or(len.saturating_sub(1));
                if start >= len || start > end {
                    return respond_head(&mut stream, 416, &[], 0);
                }
                let cr = format!("bytes {start}-{end}/{len}");
                (
                    206,
                    vec![("Content-Range".into(), cr)],
                    &route.body[start..=end],
                )
            }
            (status, _) => (status, Vec::new(), &route.body[..]),
        };
    headers.extend(route.headers.iter().cloned());
    respond_head(&mut stream, status, &headers, body.len())?;
    if method == "HEAD" {
        return Ok(());
    }
    match route.cut_at {
        Some(cut) if cut < body.len() => {
            stream.write_all(&body[..cut])?;
            stream.flush()?;
            stream.shutdown(Shutdown::Both)
        }
        _ => stream.write_all(body),
    }
}

/// A fresh directory `{tmp}/kvbench-{prefix}-{pid}-{name}`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str, name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("kvbench-{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creating a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_range_requests_are_served() {
        // HEAD gives headers only, ranges give 206 with content-range.
        let s = Server::start();
        s.route(
            "/f",
            Route::ok(b"0123456789".to_vec()).header("etag", "\"e\""),
        );
        let agent = ureq::agent();
        let r = agent.head(&format!("{}/f", s.base)).call().unwrap();
        assert_eq!(r.header("content-length"), Some("10"));
        assert_eq!(r.into_string().unwrap(), "");
        let r = agent
            .get(&format!("{}/f", s.base))
            .set("Range", "bytes=2-4")
            .call()
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
        assert_eq!(r.into_string().unwrap(), "234");
        let r = agent
            .get(&format!("{}/f", s.base))
            .set("Range", "bytes=7-")
            .call()
            .unwrap();
        assert_eq!(r.into_string().unwrap(), "789");
        // beyond the end: 416; unknown path: 404; the log has method, path and range
        let e = agent
            .get(&format!("{}/f", s.base))
            .set("Range", "bytes=10-")
            .call()
            .unwrap_err();
        assert!(matches!(e, ureq::Error::Status(416, _)), "{e:?}");
        let e = agent.get(&format!("{}/g?x=1", s.base)).call().unwrap_err();
        assert!(matches!(e, ureq::Error::Status(404, _)), "{e:?}");
        assert_eq!(
            s.requests(),
            [
                "HEAD /f",
                "GET /f [bytes=2-4]",
                "GET /f [bytes=7-]",
                "GET /f [bytes=10-]",
                "GET /g"
            ]
        );
    }

    #[test]
    fn a_cut_route_drops_the_connection_mid_body() {
        let s = Server::start();
        s.route("/c", Route::ok(vec![7u8; 1000]).cut(100));
        let r = ureq::get(&format!("{}/c", s.base)).call().unwrap();
        let mut body = Vec::new();
        let read = std::io::Read::read_to_end(&mut r.into_reader(), &mut body);
        assert!(
            read.is_err() || body.len() < 1000,
            "{read:?} {}",
            body.len()
        );
    }

    #[test]
    fn hub_files_carry_the_headers_hf_hub_reads() {
        let s = Server::start();
        let lfs = s.hub_file("org/m", "main", "w.bin", b"abc", true);
        let git = s.hub_file("datasets/org/d", "main", "a.json", b"{}", false);
        let sha = sha256_hex(b"abc");
        assert!(lfs
            .headers
            .contains(&("x-linked-etag".into(), format!("\"{sha}\""))));
        assert!(git
            .headers
            .contains(&("etag".into(), format!("\"{}\"", &sha256_hex(b"{}")[..40]))));
        let r = ureq::get(&format!("{}/datasets/org/d/resolve/main/a.json", s.base))
            .call()
            .unwrap();
        assert_eq!(r.header("x-repo-commit"), Some(COMMIT));
        assert_eq!(r.into_string().unwrap(), "{}");
    }
}
