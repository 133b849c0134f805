//! Who may call weir's HTTP APIs (a job's control API, the deployment server): the
//! holder of a token that only the owner can read, through the address the API serves,
//! and never a web page.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};

/// The checks one API makes on every request.
#[derive(Debug, Clone)]
pub struct Access {
    /// `Bearer <token>`, as a request's `Authorization` header must be.
    authorization: Arc<str>,
    /// The `Host` headers the API answers to.
    hosts: Arc<[String]>,
}

impl Access {
    /// Accepts `token`, for requests addressed to `address` (and `localhost:<port>` when
    /// it is a loopback address).
    pub fn new(token: &str, address: SocketAddr) -> Access {
        let mut hosts = vec![address.to_string()];
        if address.ip().is_loopback() {
            hosts.push(format!("localhost:{}", address.port()));
        }
        Access { authorization: format!("Bearer {token}").into(), hosts: hosts.into() }
    }

    /// Why a request for a page (which needs no token) is refused, if it is: another
    /// `Host`, or an `Origin` other than the API's own (a cross-site page).
    pub fn check_page(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if !value(header::HOST).is_some_and(|host| self.hosts.iter().any(|h| h == host)) {
            return Err((StatusCode::FORBIDDEN, "the Host header does not name this API's address".into()));
        }
        if let Some(origin) = value(header::ORIGIN) {
            if !self.hosts.iter().any(|h| origin == format!("http://{h}")) {
                return Err((StatusCode::FORBIDDEN, "requests from other sites' pages are refused".into()));
            }
        }
        Ok(())
    }

    /// Why a request with `headers` is refused, if it is; `token_hint` says where the
    /// token is.
    pub fn check(&self, headers: &HeaderMap, token_hint: &str) -> Result<(), (StatusCode, String)> {
        let value = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if !value(header::HOST).is_some_and(|host| self.hosts.iter().any(|h| h == host)) {
            return Err((StatusCode::FORBIDDEN, "the Host header does not name this API's address".into()));
        }
        self.check_page(headers)?;
        let given = value(header::AUTHORIZATION).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), self.authorization.as_bytes()) {
            return Err((StatusCode::UNAUTHORIZED, format!("a request needs the token (Authorization: Bearer, from {token_hint})")));
        }
        Ok(())
    }
}

/// Compares without stopping at the first difference, so timing does not tell how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `bytes` random bytes from the system's random source, in hex.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a new `token` to `path`, readable and writable by the owner only.
pub fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_through_the_address_without_an_origin_passes() {
        let access = Access::new("abc", "127.0.0.1:8081".parse().unwrap());
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(name.clone(), value.parse().unwrap());
            }
            map
        };
        let ok = [(header::HOST, "localhost:8081"), (header::AUTHORIZATION, "Bearer abc")];
        assert!(access.check(&headers(&ok), "").is_ok());
        let wrong_token = [(header::HOST, "127.0.0.1:8081"), (header::AUTHORIZATION, "Bearer abd")];
        assert_eq!(access.check(&headers(&wrong_token), "").unwrap_err().0, StatusCode::UNAUTHORIZED);
        let rebound = [(header::HOST, "evil.example:8081"), (header::AUTHORIZATION, "Bearer abc")];
        assert_eq!(access.check(&headers(&rebound), "").unwrap_err().0, StatusCode::FORBIDDEN);
        let page = [ok[0].clone(), ok[1].clone(), (header::ORIGIN, "http://evil.example")];
        assert_eq!(access.check(&headers(&page), "").unwrap_err().0, StatusCode::FORBIDDEN);
        // The API's own page (the server's dashboard) may call it, with the token.
        let own = [ok[0].clone(), ok[1].clone(), (header::ORIGIN, "http://127.0.0.1:8081")];
        assert!(access.check(&headers(&own), "").is_ok());
    }
}
