//! The node's data directory: identity key, WebRTC certificate, the
//! addresses file, and a lock so two processes never share one directory.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use infermesh_core::Identity;
use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "identity.key";
const WEBRTC_FILE: &str = "webrtc.pem";
const ADDRS_FILE: &str = "addrs.json";
const LOCK_FILE: &str = "lock";
/// The HTTP API's bearer token (for `network …`, `embed …`, `/v1/embeddings`).
pub const API_TOKEN_FILE: &str = "api-token";

/// The default data directory: `~/.infermesh`, or `~/.infermesh/<sub>`.
pub fn default_dir(sub: Option<&str>) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let base = home.join(".infermesh");
    match sub {
        Some(sub) => base.join(sub),
        None => base,
    }
}

/// What `addrs.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddrsFile {
    /// Node ID.
    pub peer_id: String,
    /// Listen addresses, each ending in `/p2p/<id>`.
    pub addrs: Vec<String>,
    /// The loopback HTTP API, if running.
    pub api: Option<String>,
}

/// An open, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with
/// the given permissions.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

impl DataDir {
    /// Creates (mode 0700) and locks the directory.
    pub fn open(path: &Path) -> Result<Self> {
        fs::create_dir_all(path)
            .with_context(|| format!("cannot create data directory {}", path.display()))?;
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join(LOCK_FILE))
            .with_context(|| format!("cannot open {}", path.join(LOCK_FILE).display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another infermesh process is using the data directory {}; give this one its own with --data-dir",
                path.display()
            );
        }
        Ok(Self { path: path.to_owned(), _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored identity, if there is one.
    pub fn load_identity(&self) -> Result<Option<Identity>> {
        let file = self.path.join(IDENTITY_FILE);
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        let mode = fs::metadata(&file)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!("{} is readable by others (mode {mode:o}); it should be 0600", file.display());
        }
        let identity = Identity::from_hex(&text)
            .with_context(|| format!("{} does not hold a valid private key", file.display()))?;
        Ok(Some(identity))
    }

    /// Stores a new identity (mode 0600); fails if one exists.
    pub fn store_identity(&self, identity: &Identity) -> Result<()> {
        let file = self.path.join(IDENTITY_FILE);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        out.write_all(format!("{}\n", identity.to_hex()).as_bytes())?;
        out.sync_all()?;
        Ok(())
    }

    /// The stored identity, or a new one stored now. `true` when created.
    pub fn load_or_create_identity(&self) -> Result<(Identity, bool)> {
        match self.load_identity()? {
            Some(identity) => Ok((identity, false)),
            None => {
                let identity = Identity::generate()?;
                self.store_identity(&identity)?;
                Ok((identity, true))
            }
        }
    }

    /// The WebRTC certificate (PEM), made and stored on first use so the
    /// certhash in our WebRTC-direct address stays the same across restarts.
    pub fn webrtc_certificate(&self) -> Result<String> {
        let file = self.path.join(WEBRTC_FILE);
        match fs::read_to_string(&file) {
            Ok(pem) => Ok(pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pem = infermesh_core::platform::generate_webrtc_certificate()?;
                write_atomic(&file, pem.as_bytes(), 0o600)?;
                Ok(pem)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    /// The HTTP API's token, made (32 random bytes, hex, mode 0600) on
    /// first use.
    pub fn api_token(&self) -> Result<String> {
        let file = self.path.join(API_TOKEN_FILE);
        match fs::read_to_string(&file) {
            Ok(token) if token.trim().len() >= 32 => Ok(token.trim().to_owned()),
            Ok(_) => bail!("{} is damaged: delete it and restart for a new token", file.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no secure random source: {e}"))?;
                let token = hex::encode(bytes);
                write_atomic(&file, format!("{token}\n").as_bytes(), 0o600)?;
                Ok(token)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
        }
    }

    /// Rewrites `addrs.json`.
    pub fn write_addrs(&self, addrs: &AddrsFile) -> Result<()> {
        let json = serde_json::to_vec_pretty(addrs)?;
        write_atomic(&self.path.join(ADDRS_FILE), &json, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_token_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let token = data.api_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(data.api_token().unwrap(), token);
        let mode = fs::metadata(dir.path().join(API_TOKEN_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn identity_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let (first, created) = data.load_or_create_identity().unwrap();
        assert!(created);
        let (again, created) = data.load_or_create_identity().unwrap();
        assert!(!created);
        assert_eq!(first.peer_id(), again.peer_id());
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(data.store_identity(&first).is_err(), "never overwrites a key");
    }

    #[test]
    fn a_second_process_cannot_use_a_locked_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("another infermesh process"), "{err}");
    }

    #[test]
    fn a_corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IDENTITY_FILE), "not a key").unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let err = format!("{:#}", data.load_identity().unwrap_err());
        assert!(err.contains("does not hold a valid private key") && err.contains("64 hex"), "{err}");
    }

    #[test]
    fn webrtc_certificate_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let first = data.webrtc_certificate().unwrap();
        assert!(first.contains("BEGIN"));
        assert_eq!(first, data.webrtc_certificate().unwrap());
    }
}
