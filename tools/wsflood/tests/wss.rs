//! wsflood over wss:// against the wsloop daemon serving TLS: every mode's
//! messages verified, the certificate taken with --insecure or trusted
//! with --ca-cert, and refused when it is not the one named.

mod common;
use common::{wsflood, Daemon};
use std::path::PathBuf;

/// A self-signed certificate for localhost in a folder of its own.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("wsflood-wss-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).unwrap();
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&["--tls-cert", &self.path("cert.pem"), "--tls-key", &self.path("key.pem")])
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wss(d: &Daemon, path: &str) -> String {
    format!("wss://{}{path}", d.addr)
}

#[test]
fn echo_over_wss_is_verified_with_insecure_and_with_the_ca_cert() {
    let certs = Certs::new("echo");
    let d = certs.daemon();
    let url = wss(&d, "/echo");
    let sizes = "0,1,125,126,16384,16385,70000";
    let args = [
        "echo",
        "--url",
        &url,
        "-c",
        "50",
        "-k",
        "4",
        "-d",
        "2",
        "--payload-sizes",
        sizes,
    ];
    for trust in [vec!["--insecure"], vec!["--ca-cert", &certs.path("cert.pem")]] {
        let mut all = args.to_vec();
        all.extend(trust.iter().copied());
        let r = wsflood(&all);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.num("connects.established"), 50, "{r:?}");
        assert!(r.num("messages.received") > 500, "{r:?}");
        assert_eq!(r.num("messages.sent"), r.num("messages.received"), "{r:?}");
        assert_eq!(r.value("verification.ok"), true);
        assert_eq!(r.num("errors.total"), 0, "{r:?}");
    }
}

#[test]
fn broadcast_and_churn_over_wss() {
    let certs = Certs::new("modes");
    let d = certs.daemon();
    let url = wss(&d, "/broadcast/wss");
    let r = wsflood(&[
        "broadcast",
        "--url",
        &url,
        "-c",
        "30",
        "-p",
        "2",
        "--rate",
        "100",
        "-d",
        "2",
        "--insecure",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.num("broadcast.members"), 30, "{r:?}");
    assert_eq!(r.num("errors.total"), 0, "{r:?}");
    let url = wss(&d, "/echo");
    let r = wsflood(&["churn", "--url", &url, "-c", "10", "-d", "1", "--insecure"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.num("churn.cycles") > 10, "{r:?}");
    assert_eq!(r.num("errors.total"), 0, "{r:?}");
}

#[test]
fn a_certificate_other_than_the_one_named_is_refused() {
    let served = Certs::new("served");
    let other = Certs::new("other");
    let d = served.daemon();
    let url = wss(&d, "/echo");
    let r = wsflood(&[
        "echo",
        "--url",
        &url,
        "-c",
        "3",
        "-d",
        "1",
        "--ca-cert",
        &other.path("cert.pem"),
    ]);
    assert_eq!(r.num("connects.established"), 0, "{r:?}");
    assert_ne!(r.code, 0, "{r:?}");
}
