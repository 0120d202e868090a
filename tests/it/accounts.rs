//! Several accounts, and what the token tells the daemon: two accounts against two simulators
//! with their own tokens, resumable independently; removed accounts; features the token lacks.

use std::collections::HashMap;

use op_events_forwarder::api::{Client, ClientOptions};
use op_events_forwarder::config::{self, Config};
use op_events_forwarder::sim::RequestKind;
use op_events_forwarder::store::Store;
use op_events_forwarder::stream::Stream;
use op_events_forwarder::{Daemon, StartOptions};

use crate::support::rsyslog::certs;
use crate::support::{ACCOUNT, Env, SINK, assert_exactly_once, mint, wait_for};

/// One config with an account per environment (named `a`, `b`, …), all writing under the first
/// environment's directory, files per account and stream.
fn two_account_config(envs: &[(&str, &Env)]) -> Config {
    let dir = envs[0].1.dir.path().display();
    let mut toml = format!("[state]\npath = \"{dir}/state.db\"\n");
    for (name, env) in envs {
        toml.push_str(&format!(
            "\n[[accounts]]\nname = \"{name}\"\ntoken_file = \"{}\"\nbase_url = \"{}\"\nstart_time = \"-2d\"\npage_size = 200\npoll_interval_secs = 1\n",
            env.path("token").display(),
            env.sim.base_url(),
        ));
    }
    toml.push_str(&format!(
        "\n[[sinks]]\nname = \"{SINK}\"\ntype = \"file\"\npath = \"{dir}/out/{{account}}-{{stream}}.ndjson\"\n"
    ));
    config::from_toml_str("accounts.toml", &toml, &[]).unwrap()
}

fn lines(env: &Env, account: &str, stream: Stream) -> Vec<String> {
    let path = env.path(&format!("out/{account}-{stream}.ndjson"));
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

fn delivered(stats: &op_events_forwarder::stats::Stats, account: &str, env: &Env) -> bool {
    Stream::ALL
        .iter()
        .all(|s| stats.delivered(SINK, account, *s) >= env.sim.generated(*s) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_with_their_own_tokens_resume_independently() {
    let a = Env::new(600, 41).await;
    let b = Env::new(900, 42).await;
    // Each token is signed by its own simulator: neither would work against the other.
    assert_ne!(a.token, b.token);
    let config = two_account_config(&[("a", &a), ("b", &b)]);

    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "both accounts delivered", |s| {
        delivered(s, "a", &a) && delivered(s, "b", &b)
    })
    .await;
    daemon.stop().await;

    // Only b gets new events; a second run picks both up from their own cursors.
    b.sim.insert(Stream::ItemUsages, 40);
    b.sim.insert(Stream::AuditEvents, 10);
    let (a_before, b_before) = (a.sim.requests().len(), b.sim.requests().len());
    // The counters start again at zero in a new run: wait for the difference.
    let missing: HashMap<Stream, u64> = Stream::ALL
        .into_iter()
        .map(|s| (s, (b.sim.generated(s) - lines(&a, "b", s).len()) as u64))
        .collect();
    assert_eq!(missing[&Stream::ItemUsages], 40);
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "b's new events delivered", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.delivered(SINK, "b", *stream) >= missing[stream])
            && Stream::ALL
                .iter()
                .all(|stream| s.stream("a", *stream).requests > 0)
    })
    .await;
    daemon.stop().await;

    for (name, env) in [("a", &a), ("b", &b)] {
        for stream in Stream::ALL {
            assert_exactly_once(&env.sim, stream, &lines(&a, name, stream));
        }
    }
    for (env, before) in [(&a, a_before), (&b, b_before)] {
        let resumed = env.sim.requests()[before..].to_vec();
        assert!(!resumed.is_empty());
        assert!(
            resumed
                .iter()
                .all(|r| matches!(r.body, RequestKind::Cursor(_)) && r.status == 200),
            "the second run continued from saved cursors: {resumed:?}"
        );
    }
    let store = Store::open(&a.path("state.db")).unwrap();
    assert_eq!(store.accounts().unwrap(), ["a", "b"]);
    assert_ne!(
        store.cursor("a", Stream::AuditEvents).unwrap(),
        store.cursor("b", Stream::AuditEvents).unwrap()
    );
    drop(store);

    // b removed from the config (or renamed): its state is never dropped silently.
    let only_a = two_account_config(&[("a", &a)]);
    let err = Daemon::start(&only_a).await.err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "state database {}: holds cursors of accounts no longer configured: b; configure them again under \
             the same name to resume them, or start with --forget-removed-accounts to delete their state",
            a.path("state.db").display()
        )
    );
    let store = Store::open(&a.path("state.db")).unwrap();
    assert_eq!(store.accounts().unwrap(), ["a", "b"], "nothing was dropped");
    drop(store);
    let options = StartOptions {
        forget_removed_accounts: true,
    };
    let daemon = Daemon::start_with(&only_a, &options).await.unwrap();
    assert_eq!(daemon.store().accounts().unwrap(), ["a"]);
    assert_eq!(
        daemon.store().cursor("b", Stream::AuditEvents).unwrap(),
        None
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_come_from_the_token_and_a_missing_feature_stops_the_start() {
    let env = Env::new(300, 43).await;
    // A token for two streams, no streams in the config: exactly those two are read.
    let token = mint(
        &env.sim,
        &[Stream::SignInAttempts, Stream::AuditEvents],
        None,
    );
    std::fs::write(env.path("token"), &token).unwrap();
    let daemon = Daemon::start(&env.config("")).await.unwrap();
    wait_for(daemon.stats(), "the token's streams delivered", |s| {
        [Stream::AuditEvents, Stream::SignInAttempts]
            .iter()
            .all(|stream| s.delivered(SINK, ACCOUNT, *stream) >= 300)
    })
    .await;
    daemon.stop().await;
    env.assert_exactly_once(Stream::AuditEvents);
    env.assert_exactly_once(Stream::SignInAttempts);
    assert!(env.lines(Stream::ItemUsages).is_empty());
    let asked: HashMap<Stream, usize> =
        env.sim
            .requests()
            .into_iter()
            .fold(HashMap::new(), |mut n, r| {
                *n.entry(r.stream).or_default() += 1;
                n
            });
    assert_eq!(asked.get(&Stream::ItemUsages), None, "{asked:?}");

    // Naming a stream the token lacks is an error at start, before any request.
    let requests = env.sim.requests().len();
    let err = Daemon::start(&env.config("streams = [\"itemusages\", \"auditevents\"]"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        format!(
            "account \"it\": stream \"itemusages\" needs the token feature \"itemusages\", but the token \
             (token_file {}) has only: signinattempts, auditevents; issue a token with that feature or remove \
             the stream from streams",
            env.path("token").display()
        )
    );
    assert!(!err.contains(&token));
    assert_eq!(env.sim.requests().len(), requests);

    // A token that is not a JWT, with no streams configured: a clear error without the token.
    std::fs::write(env.path("token"), "opaque-s3cret-value").unwrap();
    let err = Daemon::start(&env.config(""))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot read the token's claims: the token is not a JWT"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

/// A config that names only the token (and the simulator's CA, since it is self-signed).
fn token_only_config(env: &Env) -> Config {
    let dir = env.dir.path().display();
    let toml = format!(
        r#"
[state]
path = "{dir}/state.db"

[[accounts]]
name = "{ACCOUNT}"
token_file = "{dir}/token"
ca_file = "{dir}/ca.pem"
start_time = "-2d"

[[sinks]]
name = "{SINK}"
type = "file"
path = "{dir}/out/{{stream}}.ndjson"
"#
    );
    config::from_toml_str("token-only.toml", &toml, &[]).unwrap()
}

/// Runs the daemon with [`token_only_config`] against an HTTPS simulator until every event
/// arrived; returns the simulator's environment.
async fn token_only_over_https(http2: bool, gzip: bool) -> Env {
    let env = Env::with_sim(800, 44, |sim| {
        sim.tls = true;
        sim.http2 = http2;
        sim.gzip = gzip;
    })
    .await;
    std::fs::write(env.path("ca.pem"), env.sim.ca_pem().unwrap()).unwrap();
    let config = token_only_config(&env);
    assert_eq!(config.accounts[0].base_url, None);
    assert_eq!(config.accounts[0].streams, None);
    let daemon = Daemon::start(&config).await.unwrap();
    wait_for(daemon.stats(), "every event over https", |s| {
        Stream::ALL
            .iter()
            .all(|stream| s.delivered(SINK, ACCOUNT, *stream) >= 800)
    })
    .await;
    daemon.stop().await;
    for stream in Stream::ALL {
        env.assert_exactly_once(stream);
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_alone_finds_the_host_and_streams_over_http2_and_gzip() {
    // The token's aud is the simulator's 127.0.0.1:PORT, so the daemon derives https://….
    let env = token_only_over_https(true, true).await;
    let stats = env.sim.stats();
    assert!(stats.requests >= 3, "{stats:?}");
    assert!(
        stats.http2_requests >= stats.requests,
        "every request over h2: {stats:?}"
    );
    assert!(stats.gzipped_responses >= stats.requests, "gzip: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_server_without_gzip_works_too() {
    let env = token_only_over_https(false, false).await;
    let stats = env.sim.stats();
    assert!(stats.requests >= 3, "{stats:?}");
    assert_eq!((stats.http2_requests, stats.gzipped_responses), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_client_trusts_exactly_its_ca_file() {
    let env = Env::with_sim(10, 45, |sim| sim.tls = true).await;
    let sim_ca = env.path("ca.pem");
    std::fs::write(&sim_ca, env.sim.ca_pem().unwrap()).unwrap();
    let token = std::fs::read_to_string(env.path("token")).unwrap();
    let token = secrecy::SecretString::from(token.trim());
    let introspect = |ca_file: Option<&std::path::Path>| {
        let options = ClientOptions {
            base_url: env.sim.base_url(),
            ca_file: ca_file.map(ToOwned::to_owned),
            timeout: std::time::Duration::from_secs(10),
            max_response_bytes: None,
        };
        let client = Client::new(&options, token.clone()).unwrap();
        async move {
            client
                .introspect()
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        }
    };
    let refused = |why: &str| {
        Err(format!(
            "{}/api/v2/auth/introspect: connection failed: client error (Connect): TLS handshake \
             failed (verifying the server as \"127.0.0.1\"): {why}",
            env.sim.base_url()
        ))
    };

    // The simulator's self-signed certificate in ca_file: trusted.
    assert_eq!(introspect(Some(&sim_ca)).await, Ok(()));
    // Without ca_file, the public roots do not know it.
    assert_eq!(
        introspect(None).await,
        refused(
            "the server's certificate is not issued by a CA of the public roots (no ca_file is \
             set): it comes from a private CA or is self-signed; set ca_file to the certificate of \
             the CA that issued it (for a self-signed certificate, the certificate itself)"
        )
    );
    // Another CA in ca_file: the only one trusted.
    let other_ca = &certs().other_ca;
    assert_eq!(
        introspect(Some(other_ca)).await,
        refused(&format!(
            "the server's certificate is not issued by a CA in ca_file {}, nor is it one of that \
             file's certificates; set ca_file to the certificate of the CA that issued it (for a \
             self-signed certificate, the certificate itself)",
            other_ca.display()
        ))
    );
}
