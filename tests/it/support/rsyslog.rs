//! A real rsyslog for the syslog sink's tests: one rsyslogd per test, on ports the kernel
//! chooses, recording every message it parses (and the raw bytes) as JSON lines, stopped
//! with SIGTERM when dropped. Also the test certificates, made once per run with openssl.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The receiver config (see the file for how it differs from the reference one).
const RECEIVER_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/rsyslog/receiver.conf"
);

/// The inputs of the receiver config, each recording to `out/<input>.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Udp,
    Tcp,
    Tls,
    MutualTls,
    /// UDP on ::1.
    Udp6,
    /// TCP on ::1.
    Tcp6,
    Relp,
}

impl Input {
    pub fn name(self) -> &'static str {
        match self {
            Input::Udp => "udp",
            Input::Tcp => "tcp",
            Input::Tls => "tls",
            Input::MutualTls => "mtls",
            Input::Udp6 => "udp6",
            Input::Tcp6 => "tcp6",
            Input::Relp => "relp",
        }
    }
}

/// One message as rsyslog parsed it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Record {
    pub pri: String,
    pub facility: String,
    pub severity: String,
    pub version: String,
    pub ts: String,
    pub host: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub sd: String,
    pub msg: String,
    /// The bytes received (without the octet count).
    pub raw: String,
}

/// A running rsyslogd.
pub struct Rsyslog {
    child: Option<Child>,
    pub dir: PathBuf,
    pub udp_port: u16,
    pub tcp_port: u16,
    pub tls_port: u16,
    pub mtls_port: u16,
    pub tcp6_port: u16,
    pub relp_port: u16,
}

impl Rsyslog {
    /// Starts rsyslogd with its work and output folders in `dir`; `tcp_port` 0 lets the kernel
    /// choose; `ports` are the UDP and RELP ports of an earlier run to reuse. Returns once every
    /// TCP input listens.
    pub fn start(dir: &Path, tcp_port: u16, ports: Option<(u16, u16)>) -> Rsyslog {
        Rsyslog::start_with(dir, tcp_port, ports, &certs().receiver)
    }

    /// [`Rsyslog::start`] with the TLS inputs presenting another certificate: `receiver` holds
    /// the server.crt, server.key and ca.crt that rsyslog reads.
    pub fn start_serving(dir: &Path, receiver: &Path) -> Rsyslog {
        Rsyslog::start_with(dir, 0, None, receiver)
    }

    fn start_with(
        dir: &Path,
        tcp_port: u16,
        ports: Option<(u16, u16)>,
        receiver: &Path,
    ) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        for input in ["tcp", "tls", "mtls", "tcp6"] {
            let _ = std::fs::remove_file(dir.join(format!("{input}.port")));
        }
        let (udp_port, relp_port) = ports.unwrap_or_else(|| (free_udp_port(), free_tcp_port()));
        let binary = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("rsyslogd");
        let child = Command::new(binary)
            .args(["-n", "-f", RECEIVER_CONF, "-i"])
            .arg(dir.join("rsyslogd.pid"))
            .env("RSL_DIR", dir)
            .env("RSL_TLS", receiver)
            .env("RSL_UDP_PORT", udp_port.to_string())
            .env("RSL_TCP_PORT", tcp_port.to_string())
            .env("RSL_RELP_PORT", relp_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("rsyslogd runs (scripts/test installs rsyslog and rsyslog-openssl)");
        let mut rsyslog = Rsyslog {
            child: Some(child),
            dir: dir.to_owned(),
            udp_port,
            tcp_port: 0,
            tls_port: 0,
            mtls_port: 0,
            tcp6_port: 0,
            relp_port,
        };
        // rsyslogd writes each port file once the input listens; it is another process, so
        // the file is the readiness signal.
        let deadline = Instant::now() + PATIENCE;
        let read_port = |name: &str| -> Option<u16> {
            std::fs::read_to_string(dir.join(format!("{name}.port")))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        // With a fixed port rsyslogd writes no port file: the kernel's table of sockets is the
        // sign (a probing connection would make it log an error), and only a socket of this
        // rsyslogd counts: a port that was free a moment ago may have been taken meanwhile.
        let pid = rsyslog.child.as_ref().unwrap().id();
        let tcp_listening = || -> Option<u16> {
            if tcp_port == 0 {
                return read_port("tcp");
            }
            owns(pid, Proto::Tcp, tcp_port).then_some(tcp_port)
        };
        loop {
            if let (Some(tls), Some(mtls), Some(tcp6), Some(tcp), true, true) = (
                read_port("tls"),
                read_port("mtls"),
                read_port("tcp6"),
                tcp_listening(),
                owns(pid, Proto::Tcp, relp_port),
                owns(pid, Proto::Udp, udp_port),
            ) {
                (rsyslog.tcp_port, rsyslog.tls_port, rsyslog.mtls_port) = (tcp, tls, mtls);
                rsyslog.tcp6_port = tcp6;
                return rsyslog;
            }
            if let Some(status) = rsyslog.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "rsyslogd exited ({status}): {}",
                    std::fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not start listening"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The address of an input.
    pub fn address(&self, input: Input) -> String {
        match input {
            Input::Udp => format!("127.0.0.1:{}", self.udp_port),
            Input::Tcp => format!("127.0.0.1:{}", self.tcp_port),
            Input::Tls => format!("127.0.0.1:{}", self.tls_port),
            Input::MutualTls => format!("127.0.0.1:{}", self.mtls_port),
            Input::Udp6 => format!("[::1]:{}", self.udp_port),
            Input::Tcp6 => format!("[::1]:{}", self.tcp6_port),
            Input::Relp => format!("127.0.0.1:{}", self.relp_port),
        }
    }

    /// Stops rsyslogd with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Everything an input has recorded so far.
    pub fn records(&self, input: Input) -> Vec<Record> {
        let path = self.dir.join(format!("out/{}.jsonl", input.name()));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => panic!("cannot read {}: {err}", path.display()),
        };
        // A line still being written is left for the next read.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|err| {
                    panic!("rsyslog wrote a line that is not JSON ({err}): {line}")
                })
            })
            .collect()
    }

    /// Waits until `done` holds for what `input` recorded, and returns the records. rsyslogd
    /// is another process with no signal to wait on, so its output file is polled.
    pub async fn wait_for(
        &self,
        input: Input,
        what: &str,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> Vec<Record> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let records = self.records(input);
            if done(&records) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for rsyslog to record {what}; it has {} records on {}",
                records.len(),
                input.name()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The receiver's complaints (its stderr).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// Its stderr without the lines it writes on a healthy run of some machines: the notice
    /// about an unset `TZ` (containers, CI), and its own start and stop markers.
    pub fn complaints(&self) -> Vec<String> {
        const HARMLESS: [&str; 3] = [
            "environment variable TZ is not set",
            "[origin software=\"rsyslogd\"",
            "rsyslogd's groupid changed",
        ];
        self.stderr()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .filter(|line| !HARMLESS.iter().any(|harmless| line.contains(harmless)))
            .map(str::to_owned)
            .collect()
    }

    /// What `input` has recorded for `app` once its output file stops growing for half a
    /// second: for UDP, where nothing says how many datagrams will arrive (some may never).
    pub async fn settled(&self, input: Input, app: &str) -> Vec<Record> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = usize::MAX;
        loop {
            let records: Vec<Record> = self
                .records(input)
                .into_iter()
                .filter(|r| r.app == app)
                .collect();
            if records.len() == last || Instant::now() >= deadline {
                return records;
            }
            last = records.len();
            // The output file is the only signal rsyslogd gives.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port that was free a moment ago (imrelp cannot report the one it picks).
fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[derive(Clone, Copy)]
enum Proto {
    Tcp,
    Udp,
}

/// Whether process `pid` holds the socket listening on (TCP) or bound to (UDP) this port of
/// 127.0.0.1: the socket's inode from /proc/net/{tcp,udp}, found among the process's fds.
fn owns(pid: u32, proto: Proto, port: u16) -> bool {
    let (table, state) = match proto {
        // The fields are: sl, local_address, rem_address, st (0A is LISTEN, 07 an unconnected
        // UDP socket), tx:rx, tr:when, retrnsmt, uid, timeout, inode.
        Proto::Tcp => ("/proc/net/tcp", "0A"),
        Proto::Udp => ("/proc/net/udp", "07"),
    };
    let table = std::fs::read_to_string(table).unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&state))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            inodes
                .iter()
                .any(|inode| target.as_os_str() == inode.as_str())
        })
    })
}

/// A UDP port that was free a moment ago (rsyslog 8.2302 cannot report the one it picks).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// The test PKI: a CA, a server certificate for localhost and 127.0.0.1, a client certificate,
/// and a second CA that signed nothing of these; a self-signed server certificate and an
/// expired one.
pub struct Certs {
    /// What rsyslog reads: server.crt, server.key and ca.crt.
    pub receiver: PathBuf,
    /// The same, with a self-signed server certificate for localhost and 127.0.0.1 as
    /// `openssl req -x509` makes it by default: its own CA (basicConstraints CA:TRUE).
    pub self_signed_receiver: PathBuf,
    /// That self-signed certificate, to pin.
    pub self_signed: PathBuf,
    /// The same, with a server certificate of the CA that expired on 2021-01-01.
    pub expired_receiver: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The certificates, made on first use and kept for the whole test run.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        // Under target/, made afresh by each run of the test binary.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = r#"
set -e
cat > ext.cnf <<'EOF'
[server]
subjectAltName=DNS:localhost,IP:127.0.0.1
basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=serverAuth
[client]
basicConstraints=CA:FALSE
keyUsage=digitalSignature
extendedKeyUsage=clientAuth
EOF
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 3650 -subj /CN=op-events-test-ca
openssl req -x509 $ec -keyout other-ca.key -out other-ca.crt -days 3650 -subj /CN=op-events-other-ca
openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile ext.cnf -extensions server
openssl req $ec -keyout client.key -out client.csr -subj /CN=client
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 3650 -extfile ext.cnf -extensions client
mkdir receiver
cp server.crt server.key ca.crt receiver/
mkdir self-signed
openssl req -x509 $ec -keyout self-signed/server.key -out self-signed/server.crt -days 3650 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1
cp ca.crt self-signed/
# openssl x509 cannot date a certificate in the past; openssl ca can.
cat > ca.cnf <<'EOF'
[ca]
default_ca = test
[test]
database = index.txt
new_certs_dir = .
serial = ca-serial
default_md = sha256
policy = anything
[anything]
commonName = supplied
EOF
: > index.txt
echo 1000 > ca-serial
mkdir expired
openssl req $ec -keyout expired/server.key -out expired.csr -subj /CN=localhost
openssl ca -batch -notext -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr \
  -out expired/server.crt -startdate 20200101000000Z -enddate 20210101000000Z \
  -extfile ext.cnf -extensions server
cp ca.crt expired/
"#;
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "cannot make test certificates: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs {
            receiver: dir.join("receiver"),
            self_signed_receiver: dir.join("self-signed"),
            self_signed: dir.join("self-signed/server.crt"),
            expired_receiver: dir.join("expired"),
            ca: dir.join("ca.crt"),
            other_ca: dir.join("other-ca.crt"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    })
}
