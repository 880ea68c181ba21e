//! Test harness: the `[metrics]` endpoint of a `sluice` process, read over
//! plain HTTP/1.0 as Prometheus or a Kubernetes probe would (no client
//! library), and the samples in its exposition.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address nobody listens on right now.
pub(crate) fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
}

/// `GET path` as HTTP/1.0: the status code and the body, or `None` while
/// nothing listens.
pub(crate) fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The exposition at `/metrics`, failing the test unless it answers 200.
pub(crate) fn scrape(address: SocketAddr) -> String {
    let (code, body) = get(address, "/metrics").expect("scrape /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample `series` (name and labels, exactly as exposed).
pub(crate) fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}
