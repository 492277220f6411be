//! Launches the AWS simulator (`tests/sim/run.py`, moto plus the project's extensions) for a
//! test and talks to its `/_sim/*` control API.
//!
//! The simulator is started with a piped stdin and `--exit-on-stdin-eof`, so it stops (and
//! stops every local "container" it runs) when the test process goes away, even on a panic.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::paths::workspace_root;

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Host paths the simulated containers must not see (`--hide`), e.g. the builds root.
    pub hide: Vec<PathBuf>,
    /// `--stop-grace`: seconds a simulated container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How long to wait for `SIM_READY`.
    pub startup_timeout: Duration,
    /// Extra arguments for run.py.
    pub extra_args: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            hide: Vec::new(),
            stop_grace: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(60),
            extra_args: Vec::new(),
        }
    }
}

/// The default VPC's network, for Fargate settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    /// Subnet ids.
    pub subnets: Vec<String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
}

/// A running simulator; stopped on drop.
#[derive(Debug)]
pub struct Simulator {
    child: Child,
    stdin: Option<ChildStdin>,
    endpoint: String,
    host: String,
    port: u16,
    stop_grace: Duration,
    stderr: Arc<Mutex<String>>,
}

/// The last bytes of simulator stderr kept for error messages.
const STDERR_KEEP: usize = 64 * 1024;

impl Simulator {
    /// Starts the simulator with default options, hiding `hide` from its containers.
    pub fn start<P: AsRef<Path>>(hide: &[P]) -> Result<Simulator> {
        Self::start_with(SimOptions {
            hide: hide.iter().map(|p| p.as_ref().to_path_buf()).collect(),
            ..SimOptions::default()
        })
    }

    /// Starts the simulator and waits for its `SIM_READY` line.
    pub fn start_with(options: SimOptions) -> Result<Simulator> {
        let root = workspace_root();
        let python = root.join(".venv/bin/python");
        if !python.is_file() {
            return Err(Error::Missing {
                what: "simulator virtualenv".to_owned(),
                path: python,
                hint: "run tests/sim/setup.sh first".to_owned(),
            });
        }
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("tests/sim/run.py"))
            .args(["--port", "0", "--exit-on-stdin-eof", "--stop-grace"])
            .arg(options.stop_grace.as_secs_f64().to_string());
        for path in &options.hide {
            cmd.arg("--hide").arg(path);
        }
        cmd.args(&options.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", python.display()), e))?;
        let stdin = child.stdin.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut buf = sink.lock().unwrap_or_else(|p| p.into_inner());
                    buf.push_str(&line);
                    buf.push('\n');
                    if buf.len() > STDERR_KEEP {
                        let cut = buf.len() - STDERR_KEEP;
                        let cut = (cut..buf.len())
                            .find(|i| buf.is_char_boundary(*i))
                            .unwrap_or(buf.len());
                        buf.drain(..cut);
                    }
                }
            });
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut sent = false;
                // Keep draining after SIM_READY so the simulator never blocks on a full pipe.
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if !sent && let Some(url) = line.strip_prefix("SIM_READY ") {
                        let _ = ready_tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            });
        }
        let mut sim = Simulator {
            child,
            stdin,
            endpoint: String::new(),
            host: String::new(),
            port: 0,
            stop_grace: options.stop_grace,
            stderr,
        };
        match ready_rx.recv_timeout(options.startup_timeout) {
            Ok(url) => {
                let (host, port) = parse_endpoint(&url).ok_or_else(|| {
                    Error::Sim(format!("SIM_READY gave an unusable endpoint {url:?}"))
                })?;
                sim.endpoint = url;
                sim.host = host;
                sim.port = port;
                Ok(sim)
            }
            Err(_) => {
                let status = sim.child.try_wait().ok().flatten();
                Err(Error::Sim(format!(
                    "no SIM_READY within {:?} (exit status {status:?}); stderr:\n{}",
                    options.startup_timeout,
                    sim.stderr()
                )))
            }
        }
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The host and port the simulator listens on.
    pub fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The simulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the simulator printed on stderr (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Environment for a process that should talk to the simulator through the standard
    /// AWS settings, with dummy credentials.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `GET <path>` on the control API, decoded as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        self.request_json("GET", path, None)
    }

    /// `POST <path>` with a JSON body, decoded as JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        self.request_json("POST", path, Some(body))
    }

    /// `POST /_sim/outcomes`: scripted outcomes for the next training jobs, tasks, ...
    pub fn post_outcomes(&self, body: &Value) -> Result<Value> {
        self.post_json("/_sim/outcomes", body)
    }

    /// `POST /_sim/faults`: fault rules (throttling, errors) for AWS calls.
    pub fn post_faults(&self, body: &Value) -> Result<Value> {
        self.post_json("/_sim/faults", body)
    }

    /// `POST /_sim/reset`: clear outcomes, faults and the call log.
    pub fn reset(&self) -> Result<Value> {
        self.post_json("/_sim/reset", &Value::Object(serde_json::Map::new()))
    }

    /// The full call log (`{"op": "SageMaker.StopTrainingJob", "t": ...}` entries).
    pub fn calls_json(&self) -> Result<Vec<Value>> {
        let v = self.get_json("/_sim/calls")?;
        v.get("calls")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| Error::Sim(format!("/_sim/calls: no \"calls\" array in {v}")))
    }

    /// The operation names of every AWS call so far, in order.
    pub fn calls(&self) -> Result<Vec<String>> {
        Ok(self
            .calls_json()?
            .iter()
            .filter_map(|c| c.get("op").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// `GET /_sim/processes`: the local processes the simulator runs for containers.
    pub fn processes(&self) -> Result<Value> {
        self.get_json("/_sim/processes")
    }

    /// `GET /_sim/default-network`.
    pub fn default_network(&self) -> Result<DefaultNetwork> {
        let v = self.get_json("/_sim/default-network")?;
        let list = |key: &str| -> Result<Vec<String>> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .ok_or_else(|| Error::Sim(format!("/_sim/default-network: no {key:?} in {v}")))
        };
        Ok(DefaultNetwork {
            subnets: list("subnets")?,
            security_groups: list("security_groups")?,
        })
    }

    /// Polls the call log until an operation named `op` appears, or `timeout` passes.
    pub fn wait_for_call(&self, op: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls()?;
            if calls.iter().any(|c| c == op) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "no {op} call within {timeout:?}; calls: {calls:?}"
                )));
            }
            // The simulator has no push channel; a short poll interval against a deadline
            // is the wait here.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn request_json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = match body {
            Some(v) => serde_json::to_vec(v).map_err(|source| Error::Json {
                context: format!("encoding the body of {method} {path}"),
                source,
            })?,
            None => Vec::new(),
        };
        let (status, response) = http_request(&self.host, self.port, method, path, &body)?;
        if !(200..300).contains(&status) {
            return Err(Error::Sim(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&response)
            )));
        }
        if response.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response).map_err(|source| Error::Json {
            context: format!("decoding the answer to {method} {path}"),
            source,
        })
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // EOF on stdin asks the simulator to stop its containers and exit; give it the
        // containers' stop grace plus a margin, then make sure.
        drop(self.stdin.take());
        let deadline = Instant::now() + self.stop_grace + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_endpoint(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// A minimal HTTP/1.1 exchange: one request with Content-Length, `Connection: close`, the
/// whole response read until EOF. Enough for a local control API.
pub fn http_request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    http_request_with_headers(host, port, method, path, &[], body)
}

/// [`http_request`] with extra headers; a `Content-Type` given here replaces the default
/// `application/json`.
pub fn http_request_with_headers(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let what = format!("{method} http://{host}:{port}{path}");
    let mut stream =
        TcpStream::connect((host, port)).map_err(|e| Error::io(format!("{what}: connect"), e))?;
    let timeout = Some(Duration::from_secs(60));
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|e| Error::io(format!("{what}: socket options"), e))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| Error::io(format!("{what}: send"), e))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(format!("{what}: receive"), e))?;
    parse_response(&raw).ok_or_else(|| {
        Error::Sim(format!(
            "{what}: malformed HTTP response: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    })
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        return Some((status, dechunk(body)?));
    }
    let body = match length {
        Some(n) if n <= body.len() => body[..n].to_vec(),
        _ => body.to_vec(),
    };
    Some((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((201, b"abcde".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn endpoint_is_split_into_host_and_port() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4567"),
            Some(("127.0.0.1".to_owned(), 4567))
        );
        assert_eq!(parse_endpoint("127.0.0.1:1"), None);
    }

    #[test]
    fn http_request_round_trip_against_a_local_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // Read until the 2-byte body after the blank line has arrived.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") || !buf.ends_with(b"{}") {
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let req = String::from_utf8(buf).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .unwrap();
            req
        });
        let (status, body) = http_request("127.0.0.1", port, "POST", "/_sim/reset", b"{}").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"{\"ok\":true}");
        let req = server.join().unwrap();
        assert!(req.starts_with("POST /_sim/reset HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Length: 2\r\n"), "{req}");
    }
}
