//! A plain HTTP/1.1 client for one request per connection, from inside a lab namespace, that
//! also measures how long the answer took: for tests about who waits on whom.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::netns::in_netns;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One answer and the time from connecting to the last byte.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub took: Duration,
}

impl Reply {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` with `headers` (`Connection: close` added), waiting at most `wait` for the answer.
pub fn get_on(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    wait: Duration,
) -> io::Result<Reply> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    s.set_read_timeout(Some(wait))?;
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let took = started.elapsed();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
        took,
    })
}

/// [`get_on`] from the namespace `netns`, on a thread of its own; join it for the reply.
pub fn get_from(
    netns: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    wait: Duration,
) -> std::thread::JoinHandle<io::Result<Reply>> {
    let path = path.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    in_netns(netns, move || {
        let borrowed: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        get_on(addr, &path, &borrowed, wait)
    })
}
