//! A real `redis-server` for tests: started as a child process on a free port with
//! nothing persisted (`--save '' --appendonly no`), stopped (killed) when dropped.
//! Tests can stop it, freeze it and start it again on the same port to see what the
//! gateway's stores do meanwhile.
//!
//! The Redis halves of the contract suites need the server: when it is not installed
//! they fail, saying how to install it, rather than pass without testing anything.
//! `PORTICO_REDIS_SERVER` names another binary (a Valkey server, say).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Settings;

/// A `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

fn binary() -> String {
    std::env::var("PORTICO_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Whether a Redis on `port` answers `PING`.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not start: the tests that need it
    /// must fail, not pass silently.
    pub fn start() -> RedisServer {
        for _ in 0..3 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port three times in a row");
    }

    /// Starts the process on `self.port`; whether it answers within 5 s.
    fn spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{}` is not installed: run scripts/install-deps.sh (on Debian: apt-get \
                 install redis-server). The Redis half of the shared-state contract tests \
                 needs a real redis-server.",
                binary()
            ),
            Err(e) => panic!("`{}` cannot be started: {e}", binary()),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if answers(self.port) {
                return true;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                // Exited: most likely the port was taken meanwhile.
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("redis://127.0.0.1:{}/0", self.port)).expect("a valid URL")
    }

    /// Settings for a client of this server: a fresh random encryption key, short
    /// timeouts, and `key_prefix` (tests sharing a server use distinct prefixes).
    pub fn settings(&self, key_prefix: &str) -> Settings {
        use rand::RngCore as _;
        let mut encryption_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut encryption_key);
        Settings {
            url: self.url(),
            username: None,
            password: None,
            key_prefix: key_prefix.to_owned(),
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(500),
            encryption_key,
        }
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing was persisted).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}
