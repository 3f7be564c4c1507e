//! A fleet PKI in a temporary directory, made by the coordinator's own `pki` code.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use troop_coordinator::pki;

/// `DIR/pki/` holds the CA, the coordinator's certificate, the signing key and one
/// certificate per agent; `DIR` is where configs and state go.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// A fresh PKI with certificates for `agents` (each also naming 127.0.0.1).
    pub fn new(agents: &[&str]) -> Self {
        Self::new_in(tempfile::tempdir().expect("temporary directory"), agents)
    }

    /// A fresh PKI in `dir` (which the PKI then owns and removes).
    pub fn new_in(dir: tempfile::TempDir, agents: &[&str]) -> Self {
        pki::init(&dir.path().join("pki")).expect("pki init");
        let pki = Self { dir };
        for agent in agents {
            pki.issue_agent(agent, &["127.0.0.1".into()]);
        }
        pki
    }

    pub fn issue_agent(&self, id: &str, sans: &[String]) {
        pki::issue_agent(&self.dir.path().join("pki"), id, sans).expect("pki issue-agent");
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join("pki").join(file)
    }

    pub fn signing_key(&self) -> SigningKey {
        pki::load_signing_key(&self.path("signing.key")).expect("signing key")
    }
}
