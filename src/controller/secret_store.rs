//! The operator's secrets (`reconcile secret set`): kept in the
//! controller's store, so they move with it, sealed with ChaCha20-Poly1305
//! under a key derived from the installation's key file (never in the
//! store). Each value is sealed with a fresh random nonce and its name as
//! associated data, so a row copied under another name does not open.
//!
//! Values leave this module only as [`SecretValue`]s, for assignments;
//! errors and listings name secrets, never their values.

use std::sync::{Arc, Mutex};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::store::Db;
use crate::secrets::{InstallKey, Lookup, SecretValue};
use crate::wire::SecretInfo;

/// A sealed value as stored: times in Unix seconds, nonce and ciphertext
/// (with its tag) in hex.
#[derive(Serialize, Deserialize)]
struct Row {
    created: i64,
    updated: i64,
    nonce: String,
    sealed: String,
}

pub struct SecretStore {
    db: Arc<Db>,
    key: LessSafeKey,
    rng: SystemRandom,
    /// Serialises writes: a set reads the row's creation time first.
    writing: Mutex<()>,
}

fn aad(name: &str) -> Vec<u8> {
    let mut v = b"reconcile secret v1\0".to_vec();
    v.extend_from_slice(name.as_bytes());
    v
}

/// Check that `key` is the installation's: the store keeps a value
/// derived from the key it was first opened with. Controllers sharing a
/// store (etcd) each need a copy of that key; one with a key of its own
/// would seal secrets the others cannot open, so it is refused.
pub fn check_key(db: &Db, key: &InstallKey, data_dir: &std::path::Path) -> Result<(), String> {
    let check = hex(&key.derive("store-key-check"));
    match db.key_check().map_err(|e| e.to_string())? {
        Some(stored) if stored == check => Ok(()),
        Some(_) => Err(format!(
            "`{}` is not the key this store was made with: copy {} from the data directory of a \
             controller of this store (every controller of one store needs the same key)",
            data_dir.join(crate::secrets::KEY_FILE).display(),
            crate::secrets::KEY_FILE
        )),
        None => db.save_key_check(&check).map_err(|e| e.to_string()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SecretStore {
    pub fn new(db: Arc<Db>, key: &InstallKey) -> SecretStore {
        let k = key.derive("reconcile secret store v1");
        SecretStore {
            db,
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte ChaCha20 key"),
            ),
            rng: SystemRandom::new(),
            writing: Mutex::new(()),
        }
    }

    /// Store `value` as `name` (a valid name); returns whether it is new.
    pub fn set(&self, name: &str, value: &SecretValue) -> Result<bool, String> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let now = crate::clock::unix_now();
        let old = self.row(name)?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_string())?;
        let mut sealed = value.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut sealed,
            )
            .map_err(|_| format!("secret `{name}`: sealing failed"))?;
        let row = Row {
            created: old.as_ref().map_or(now, |r| r.created),
            updated: now,
            nonce: hex(&nonce),
            sealed: hex(&sealed),
        };
        let bytes = serde_json::to_vec(&row).map_err(|e| e.to_string())?;
        self.db
            .put_secret_row(name, &bytes)
            .map_err(|e| e.to_string())?;
        Ok(old.is_none())
    }

    /// Forget `name`; whether it was set.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        let _w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.db.delete_secret_row(name).map_err(|e| e.to_string())
    }

    /// Names and times, never values.
    pub fn list(&self) -> Result<Vec<SecretInfo>, String> {
        let rows = self.db.secret_rows().map_err(|e| e.to_string())?;
        rows.into_iter()
            .map(|(name, bytes)| {
                let r: Row = serde_json::from_slice(&bytes)
                    .map_err(|_| format!("secret `{name}`: unreadable row"))?;
                Ok(SecretInfo {
                    name,
                    created: r.created,
                    updated: r.updated,
                })
            })
            .collect()
    }

    fn row(&self, name: &str) -> Result<Option<Row>, String> {
        match self.db.secret_row(name).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| format!("secret `{name}`: unreadable row")),
        }
    }

    fn open(&self, name: &str, row: &Row) -> Result<SecretValue, String> {
        let broken = || {
            format!(
                "secret `{name}` does not open with this controller's key file \
                 (another installation's store, or a changed key); set it again"
            )
        };
        let nonce: [u8; NONCE_LEN] = unhex(&row.nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(broken)?;
        let mut sealed = unhex(&row.sealed).ok_or_else(broken)?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(name)),
                &mut sealed,
            )
            .map_err(|_| broken())?;
        String::from_utf8(plain.to_vec())
            .map(SecretValue::new)
            .map_err(|_| broken())
    }
}

impl Lookup for SecretStore {
    fn lookup(&self, name: &str) -> Result<Option<SecretValue>, String> {
        match self.row(name)? {
            None => Ok(None),
            Some(r) => self.open(name, &r).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "correct horse battery staple";

    fn bytes_of(dir: &std::path::Path) -> Vec<u8> {
        std::fs::read(dir.join("controller.redb")).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn values_are_sealed_at_rest_and_open_only_with_their_key_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstallKey::random().unwrap();
        {
            let db = Arc::new(Db::open(dir.path()).unwrap());
            let s = SecretStore::new(db.clone(), &key);
            assert!(s.set("db", &SecretValue::new(VALUE.into())).unwrap());
            assert!(!s.set("db", &SecretValue::new(VALUE.into())).unwrap());
            assert_eq!(s.lookup("db").unwrap().unwrap().expose(), VALUE);
            assert_eq!(s.lookup("other").unwrap(), None);
            let listed = serde_json::to_string(&s.list().unwrap()).unwrap();
            assert!(
                listed.contains("\"db\"") && !listed.contains(VALUE),
                "{listed}"
            );
            // A row moved under another name does not open.
            let row = db.secret_row("db").unwrap().unwrap();
            db.put_secret_row("copy", &row).unwrap();
            assert!(s.lookup("copy").is_err());
        }
        assert!(!contains(&bytes_of(dir.path()), VALUE.as_bytes()));

        // Another key (a lost or replaced key file) cannot open it, and
        // says so without the value.
        let db = Arc::new(Db::open(dir.path()).unwrap());
        let other = SecretStore::new(db.clone(), &InstallKey::random().unwrap());
        let e = other.lookup("db").unwrap_err();
        assert!(e.contains("does not open") && !e.contains(VALUE), "{e}");
        let same = SecretStore::new(db, &key);
        assert_eq!(same.lookup("db").unwrap().unwrap().expose(), VALUE);
        assert!(same.remove("db").unwrap());
        assert!(!same.remove("db").unwrap());
        assert_eq!(same.lookup("db").unwrap(), None);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }
}
