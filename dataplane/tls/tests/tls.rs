//! Handshakes between real sockets: who is let in, who is refused, and
//! what a reload changes.

use std::sync::Arc;
use std::time::Duration;

use dyno_tls::dev::DevCa;
use dyno_tls::{ClientAuth, Tls, TlsConnector, TlsFiles, TlsListener};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

/// An echo server on a fresh port: answers each connection's first four
/// bytes with the same four bytes.
async fn echo_server(tls: Arc<Tls>, auth: ClientAuth) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut incoming = TlsListener::new(listener, tls, auth).expect("listener");
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            });
        }
    });
    port
}

/// Connects with `tls`, sends `ping` and returns the reply (an error when
/// the handshake or the exchange fails), with the server's certificate.
async fn ping(tls: Arc<Tls>, port: u16) -> std::io::Result<(Vec<u8>, CertificateDer<'static>)> {
    let mut s = TlsConnector::new(tls).connect("127.0.0.1", port).await?;
    let cert = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("a server certificate");
    s.write_all(b"ping").await?;
    s.flush().await?;
    let mut buf = [0u8; 4];
    // A server that refuses the client's certificate (TLS 1.3 checks it
    // after the client finished) answers the first read with an alert.
    s.read_exact(&mut buf).await?;
    Ok((buf.to_vec(), cert))
}

fn cert_on_disk(files: &TlsFiles) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(&files.cert).expect("cert")
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_node_port_admits_only_certificates_of_the_cluster_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = DevCa::create(&dir.path().join("ca")).expect("ca");
    let server = Tls::load(ca.issue("node-0", &[]).expect("issue")).expect("load");
    let peer = Tls::load(ca.issue("node-1", &[]).expect("issue")).expect("load");
    let port = echo_server(Arc::clone(&server), ClientAuth::Required).await;

    let (reply, cert) = ping(Arc::clone(&peer), port)
        .await
        .expect("a peer of the cluster is admitted");
    assert_eq!(reply, b"ping");
    assert_eq!(cert, cert_on_disk(server.files()));

    // A rogue peer: it trusts the cluster's CA (so it would accept the
    // server), but its own certificate comes from another CA.
    let foreign =
        DevCa::create_named(&dir.path().join("foreign"), "Someone else's CA").expect("ca");
    let issued = foreign.issue("rogue", &[]).expect("issue");
    let rogue = Tls::load(TlsFiles {
        ca: ca.ca_file(),
        ..issued
    })
    .expect("load");
    let refused = ping(rogue, port).await;
    assert!(refused.is_err(), "a certificate of another CA was admitted");
    until("the refusal to be counted", || {
        server.status().handshake_failures == 1
    })
    .await;

    // A client with no certificate at all.
    let anonymous = Arc::new(dyno_tls::client_trusting(&ca.ca_file()).expect("client"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = dyno_tls::server_name("127.0.0.1").expect("name");
    let outcome = async {
        let mut s = tokio_rustls::TlsConnector::from(anonymous)
            .connect(name, tcp)
            .await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await
    }
    .await;
    assert!(
        outcome.is_err(),
        "a client without a certificate was admitted"
    );
    until("the refusal to be counted", || {
        server.status().handshake_failures == 2
    })
    .await;

    // The cluster's peer is still served.
    assert_eq!(ping(peer, port).await.expect("ping").0, b"ping");
}

#[tokio::test]
async fn clients_verify_the_server_and_the_client_port_takes_anonymous_clients() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = DevCa::create(&dir.path().join("ca")).expect("ca");
    let server = Tls::load(ca.issue("node-0", &[]).expect("issue")).expect("load");
    let port = echo_server(Arc::clone(&server), ClientAuth::Optional).await;

    // An application that trusts the CA and has no certificate.
    let anonymous = Arc::new(dyno_tls::client_trusting(&ca.ca_file()).expect("client"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = dyno_tls::server_name("localhost").expect("name");
    let mut s = tokio_rustls::TlsConnector::from(anonymous)
        .connect(name, tcp)
        .await
        .expect("handshake");
    s.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");

    // A client that trusts only another CA refuses this server.
    let foreign =
        DevCa::create_named(&dir.path().join("foreign"), "Someone else's CA").expect("ca");
    let stranger = Tls::load(foreign.issue("stranger", &[]).expect("issue")).expect("load");
    let err = ping(stranger, port)
        .await
        .expect_err("the server was not verified");
    assert!(
        err.to_string().contains("UnknownIssuer") || err.to_string().contains("issuer"),
        "unexpected error: {err}"
    );

    // A server whose certificate does not name the host the client asked
    // for is refused too.
    let trusting = Arc::new(dyno_tls::client_trusting(&ca.ca_file()).expect("client"));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = dyno_tls::server_name("db.example.com").expect("name");
    let err = tokio_rustls::TlsConnector::from(trusting)
        .connect(name, tcp)
        .await
        .expect_err("a certificate for other names was accepted");
    assert!(
        err.to_string().contains("not valid for name"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_used_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = DevCa::create(&dir.path().join("ca")).expect("ca");
    let files = ca.issue("node-0", &[]).expect("issue");
    let server = Tls::load(files.clone()).expect("load");
    let client = Tls::load(ca.issue("node-1", &[]).expect("issue")).expect("load");
    let port = echo_server(Arc::clone(&server), ClientAuth::Required).await;
    let first = cert_on_disk(&files);
    assert_eq!(
        ping(Arc::clone(&client), port).await.expect("ping").1,
        first
    );

    // Renewed in place, as a certificate manager would.
    ca.issue("node-0", &[]).expect("renew");
    let renewed = cert_on_disk(&files);
    assert_ne!(renewed, first);
    assert!(server.reload().expect("reload"), "the change was not seen");
    assert_eq!(server.generation(), 1);
    assert_eq!(
        ping(Arc::clone(&client), port).await.expect("ping").1,
        renewed
    );
    assert!(!server.reload().expect("reload"), "no change, yet a reload");

    // A broken file is reported and the renewed certificate stays.
    std::fs::write(&files.cert, "not a certificate").expect("write");
    let err = server.reload().expect_err("a broken certificate was taken");
    assert!(err.to_string().contains("node-0.pem"), "{err}");
    let status = server.status();
    assert_eq!((status.reloads, status.reload_failures), (1, 1));
    assert_eq!(
        ping(Arc::clone(&client), port).await.expect("ping").1,
        renewed
    );
    // Reported once per change, not on every check.
    assert!(!server.reload().expect("no change since the failure"));
    assert_eq!(server.status().reload_failures, 1);

    // Without an explicit reload, a change is picked up by a handshake
    // once the (one-second) check interval has passed.
    ca.issue("node-0", &[]).expect("renew");
    let again = cert_on_disk(&files);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if ping(Arc::clone(&client), port).await.expect("ping").1 == again {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewal was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.status().reloads, 2);
}

#[test]
fn missing_flags_are_named() {
    use std::path::Path;
    assert_eq!(TlsFiles::from_options(None, None, None), Ok(None));
    let err = TlsFiles::from_options(Some(Path::new("c")), None, None).expect_err("partial");
    assert!(err.ends_with("missing --tls-key, --tls-ca"), "{err}");
    let all = TlsFiles::from_options(
        Some(Path::new("c")),
        Some(Path::new("k")),
        Some(Path::new("a")),
    )
    .expect("all")
    .expect("some");
    assert_eq!(all.ca, Path::new("a"));
}

#[test]
fn unusable_files_get_clear_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = DevCa::create(&dir.path().join("ca")).expect("ca");
    let files = ca.issue("node-0", &[]).expect("issue");
    let other = ca.issue("node-1", &[]).expect("issue");
    let missing = TlsFiles {
        cert: dir.path().join("nope.pem"),
        ..files.clone()
    };
    let err = Tls::load(missing).expect_err("missing file");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let mismatched = TlsFiles {
        key: other.key.clone(),
        ..files.clone()
    };
    let err = Tls::load(mismatched).expect_err("a key of another certificate");
    assert!(
        err.to_string().contains("do not make a usable certificate"),
        "{err}"
    );
    let no_ca = TlsFiles {
        ca: files.key.clone(),
        ..files.clone()
    };
    let err = Tls::load(no_ca).expect_err("a key given as the CA");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    // The reopened CA issues certificates its clients trust.
    let reopened = DevCa::open(&dir.path().join("ca")).expect("open");
    let later = reopened.issue("node-2", &[]).expect("issue");
    assert!(Tls::load(later).is_ok());
}

#[test]
fn only_addresses_beyond_loopback_need_the_plaintext_warning() {
    use dyno_tls::plaintext_exposure;
    let a = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
    assert_eq!(
        plaintext_exposure(&[a("127.0.0.1:7000"), a("[::1]:7100")]),
        None
    );
    assert_eq!(
        plaintext_exposure(&[a("127.0.0.1:7000"), a("0.0.0.0:7100")]).as_deref(),
        Some("0.0.0.0:7100")
    );
    assert_eq!(
        plaintext_exposure(&[a("10.0.0.5:7000"), a("[::]:7100")]).as_deref(),
        Some("10.0.0.5:7000, [::]:7100")
    );
}
