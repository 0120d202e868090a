//! Benchmark of the syslog sink into a real rsyslog: events per second through TCP with
//! octet counting, through TLS and through RELP, and the CPU time of op-events-forwarder per
//! 1,000 events.
//!
//! Run: `cargo run --release --example bench_syslog -- [EVENTS]` (default 200,000 per
//! transport; needs rsyslog, rsyslog-openssl, rsyslog-relp and openssl, which `scripts/test`
//! installs).
//!
//! What is measured is the daemon's delivery path, in this process: realistic events (from
//! the simulator's generator) are put into a fresh SQLite outbox in pages of 1,000, then one
//! sink worker reads them from the outbox, formats RFC 5424 messages, writes and flushes them
//! to rsyslog and acknowledges them in the store. The clock runs from the worker's start until
//! every event is acknowledged; the CPU time is this process's (user + system) over the same
//! span, so it leaves out the generator and the receiver. rsyslog (its own process, writing
//! one short line per message) must then have recorded every message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use op_events_forwarder::bench::{audit_pages, own_cpu_time, prepared_sink};
use op_events_forwarder::stream::Stream;
use tokio_util::sync::CancellationToken;

const RECEIVER_CONF: &str = r#"
global(
  workDirectory=`echo $RSL_DIR/work`
  maxMessageSize="64k"
  defaultNetstreamDriverCAFile=`echo $RSL_TLS/ca.crt`
  defaultNetstreamDriverCertFile=`echo $RSL_TLS/server.crt`
  defaultNetstreamDriverKeyFile=`echo $RSL_TLS/server.key`
)
module(load="imptcp")
module(load="imtcp")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port=`echo $RSL_RELP_PORT` name="relp")
input(type="imptcp" address="127.0.0.1" port="0" listenPortFileName=`echo $RSL_DIR/tcp.port` name="tcp")
input(type="imtcp"  address="127.0.0.1" port="0" listenPortFileName=`echo $RSL_DIR/tls.port` name="tls"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="short" type="string" string="%msgid%\n")
template(name="perinput" type="string" string="%$.dir%/out/%inputname%.lines")
set $.dir = getenv("RSL_DIR");
action(type="omfile" dynaFile="perinput" template="short")
"#;

fn main() {
    let n_events: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("EVENTS is a number"))
        .unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(n_events));
}

async fn bench(n_events: usize) {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let relp_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    std::fs::write(dir.path().join("relp.port"), relp_port.to_string()).unwrap();
    let mut rsyslog = start_rsyslog(dir.path(), relp_port);
    let pages = audit_pages(n_events).await.expect("the simulator's events");
    let event_bytes: usize = pages.iter().map(String::len).sum();
    println!(
        "{n_events} audit events in pages of 1,000, {:.0} bytes each on average; RFC 5424, one connection",
        event_bytes as f64 / n_events as f64
    );
    println!(
        "{:<22} {:>10} {:>12} {:>16} {:>14}",
        "transport", "events", "events/s", "CPU ms/1k ev", "CPU use"
    );
    for (label, transport, port_file, extra) in [
        ("tcp octet-counting", "tcp", "tcp.port", String::new()),
        (
            "tls octet-counting",
            "tls",
            "tls.port",
            format!("ca_file = \"{}\"\n", dir.path().join("ca.crt").display()),
        ),
        ("relp", "relp", "relp.port", String::new()),
    ] {
        let port = std::fs::read_to_string(dir.path().join(port_file)).unwrap();
        let sink_toml = format!(
            "[[sinks]]\nname = \"bench\"\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n\
             transport = \"{transport}\"\n{extra}",
            port.trim()
        );
        let run = run_once(dir.path(), transport, &sink_toml, &pages, n_events).await;
        let lines = dir.path().join(format!("out/{transport}.lines"));
        wait_for_lines(&lines, n_events);
        println!(
            "{label:<22} {n_events:>10} {:>12.0} {:>16.1} {:>13.0}%",
            n_events as f64 / run.wall.as_secs_f64(),
            run.cpu.as_secs_f64() * 1000.0 / (n_events as f64 / 1000.0),
            run.cpu.as_secs_f64() / run.wall.as_secs_f64() * 100.0,
        );
    }
    stop(&mut rsyslog);
}

struct Run {
    wall: Duration,
    cpu: Duration,
}

async fn run_once(
    dir: &Path,
    label: &str,
    sink_toml: &str,
    pages: &[String],
    n_events: usize,
) -> Run {
    let prepared = prepared_sink(&dir.join(format!("{label}.db")), sink_toml, pages)
        .expect("the benchmark's sink and state");
    let stats = Arc::clone(&prepared.stats);
    let shutdown = CancellationToken::new();
    let mut changes = stats.subscribe();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let task = tokio::spawn(prepared.worker.run(shutdown.clone()));
    while stats.delivered("bench", "bench", Stream::AuditEvents) < n_events as u64 {
        changes.changed().await.unwrap();
    }
    let wall = started.elapsed();
    let cpu = process_cpu() - cpu_before;
    shutdown.cancel();
    task.await.unwrap();
    drop(prepared.appended);
    Run { wall, cpu }
}

/// User plus system CPU time of this process.
fn process_cpu() -> Duration {
    own_cpu_time().expect("getrusage").total()
}

fn make_certs(dir: &Path) {
    let script = r#"
set -e
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > ext.cnf
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.crt -days 30 -subj /CN=bench-ca 2>/dev/null
openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 30 -extfile ext.cnf 2>/dev/null
"#;
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .expect("openssl runs");
    assert!(status.success(), "cannot make certificates");
}

fn start_rsyslog(dir: &Path, relp_port: u16) -> Child {
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let conf = dir.join("receiver.conf");
    std::fs::write(&conf, RECEIVER_CONF).unwrap();
    let binary: PathBuf = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("rsyslogd"));
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .env("RSL_DIR", dir)
        .env("RSL_TLS", dir)
        .env("RSL_RELP_PORT", relp_port.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("rsyslogd runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The TCP inputs write their port files when they listen; RELP gets a moment more below.
    while !(dir.join("tcp.port").exists() && dir.join("tls.port").exists()) {
        assert!(Instant::now() < deadline, "rsyslogd did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    while std::net::TcpStream::connect(("127.0.0.1", relp_port)).is_err() {
        assert!(Instant::now() < deadline, "imrelp did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn wait_for_lines(path: &Path, n: usize) {
    // Every line is "auditevents\n".
    let want = (n * "auditevents\n".len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len >= want {
            assert_eq!(len, want, "rsyslog recorded more messages than were sent");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog recorded {} of {n} messages",
            len / 12
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
