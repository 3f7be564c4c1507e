//! The files an enrolment writes, all or none: beside the config, `ca.pem` and one
//! `signing-N.pub` per trusted key; in the state dir, the agent's key (0600) and
//! certificate, which renewals replace there (systemd keeps /etc read-only for the agent);
//! and last the config. Nothing that exists is overwritten; on any failure what was
//! written is removed again.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub const CA_FILE: &str = "ca.pem";

pub fn signing_key_file(n: usize) -> String {
    format!("signing-{n}.pub")
}

/// What serve sent and the key made here.
pub struct Enrolled {
    pub agent_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub signing_keys_pem: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{} already exists; refusing to overwrite it (enrol into a new --config path)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Refuses early if the config is there already (the others are named after the id,
/// which only serve's answer settles; [`write`] refuses those).
pub fn refuse_existing(dir: &Path, config: &Path) -> Result<(), FilesError> {
    for path in [config.to_path_buf(), dir.join(CA_FILE)] {
        if fs::symlink_metadata(&path).is_ok() {
            return Err(FilesError::Exists(path));
        }
    }
    Ok(())
}

/// The certificate chains to `ca` and names the agent, as serve will check it.
pub fn check_certificate(files: &Enrolled, ca: &CertificateDer<'_>) -> Result<(), String> {
    let cert = CertificateDer::from_pem_slice(files.cert_pem.as_bytes())
        .map_err(|e| format!("certificate_pem: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(|e| format!("the CA: {e}"))?;
    crate::tls::check_certificate(roots, std::slice::from_ref(&cert), &files.agent_id)
        .map_err(|problem| format!("its certificate for {:?}: {problem}", files.agent_id))
}

/// Where the agent's own key and certificate go.
pub fn identity_paths(state_dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (
        state_dir.join(format!("{id}.key")),
        state_dir.join(format!("{id}.pem")),
    )
}

/// Writes the shared files into `dir`, the agent's key and certificate into `state_dir`
/// (made 0700 if missing), and the config at `config`; returns their paths.
pub fn write(
    dir: &Path,
    state_dir: &Path,
    config: &Path,
    files: &Enrolled,
    config_text: &str,
) -> Result<Vec<PathBuf>, FilesError> {
    let made_state_dir = !state_dir.exists();
    if made_state_dir {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| FilesError::Io {
                path: state_dir.to_path_buf(),
                source,
            })?;
    }
    let (key, cert) = identity_paths(state_dir, &files.agent_id);
    let mut planned: Vec<(PathBuf, &str, u32)> = vec![
        (key, &files.key_pem, 0o600),
        (cert, &files.cert_pem, 0o644),
        (dir.join(CA_FILE), &files.ca_pem, 0o644),
    ];
    for (n, key) in files.signing_keys_pem.iter().enumerate() {
        planned.push((dir.join(signing_key_file(n + 1)), key, 0o644));
    }
    // Last: a config on disk means the files it names are there.
    planned.push((config.to_path_buf(), config_text, 0o640));
    let mut written = Vec::with_capacity(planned.len());
    for (path, text, mode) in planned {
        if let Err(error) = write_new(&path, text.as_bytes(), mode) {
            for done in written.iter().rev() {
                let _ = fs::remove_file(done);
            }
            if made_state_dir {
                let _ = fs::remove_dir(state_dir);
            }
            return Err(error);
        }
        written.push(path);
    }
    Ok(written)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), FilesError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => FilesError::Exists(path.to_path_buf()),
            _ => FilesError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| {
            let _ = fs::remove_file(path);
            FilesError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
}
