//! Mosquitto password files: one `username:hash` per line.
//!
//! Blank lines and lines starting with `#` are skipped; surrounding blanks
//! of the username and the hash are trimmed, as Mosquitto does. A line
//! that is not `username:hash`, or whose hash is not in a known format
//! (see [`crate::hash`]), is an error naming the file and the line. When a
//! username appears twice the later line wins (what Mosquitto's hash table
//! lookup returns).
//!
//! [`PasswordFile::verify`] costs one hash computation whether or not the
//! user exists, so the reply time does not reveal which users exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::hash::{self, PasswordHash};
use crate::scram::ScramKeys;
use crate::Error;

/// A parsed password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

/// A decoy `$7$` entry checked when the user is unknown (same cost as a
/// default entry; never matches anything that matters).
const DECOY_SALT: &[u8] = b"ferrymq-decoy";

impl PasswordFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        PasswordFile::parse(&text, path)
    }

    /// Parses a password file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<PasswordFile, Error> {
        let mut users = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let syntax = |message: String| Error::Syntax {
                path: PathBuf::from(origin.as_ref()),
                line,
                message,
            };
            let Some(entry) = split_line(raw) else {
                continue;
            };
            let (username, hash) = entry.map_err(|m| syntax(m.to_owned()))?;
            let hash =
                PasswordHash::parse(hash).map_err(|e| syntax(format!("user {username:?}: {e}")))?;
            users.insert(username.to_owned(), hash);
        }
        Ok(PasswordFile { users })
    }

    /// Whether `password` is `username`'s password. Slow by design
    /// (PBKDF2 or Argon2): call it off the async runtime's worker threads.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                let _ = hash::pbkdf2_sha512(password, DECOY_SALT, hash::DEFAULT_ITERATIONS);
                false
            }
        }
    }

    /// The stored hash of `username`.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// Whether `username` has an entry.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Usernames, in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// What a SCRAM-SHA-512 server needs for `username`, when its entry is
    /// `$7$` (PBKDF2-HMAC-SHA512 is SCRAM's `Hi`, so the stored hash is the
    /// `SaltedPassword`). `None` for unknown users and other formats.
    /// The password is used as stored by `mosquitto_passwd`, without
    /// SASLprep: clients must send the same bytes.
    pub fn scram_sha512_keys(&self, username: &str) -> Option<ScramKeys> {
        match self.users.get(username)? {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => Some(ScramKeys::from_salted_password(
                salt.clone(),
                *iterations,
                hash,
            )),
            _ => None,
        }
    }
}

/// Splits one line of a password file: `None` for blank and comment
/// lines, else `username` and `hash` (trimmed) or a message saying what is
/// wrong. Shared with `ferrymq passwd`, which rewrites files line by line.
pub fn split_line(raw: &str) -> Option<Result<(&str, &str), &'static str>> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let Some((username, hash)) = line.split_once(':') else {
        return Some(Err("expected username:hash"));
    };
    let (username, hash) = (username.trim(), hash.trim());
    if username.is_empty() {
        return Some(Err("empty username"));
    }
    if hash.is_empty() {
        return Some(Err("empty password hash"));
    }
    Some(Ok((username, hash)))
}

/// Whether `username` can be written to a password file: not empty, at
/// most 65535 bytes, no `:` and no control characters (the rules of
/// `mosquitto_passwd`).
pub fn check_username(username: &str) -> Result<(), &'static str> {
    if username.is_empty() {
        return Err("username must not be empty");
    }
    if username.len() > 65535 {
        return Err("username must be less than 65536 bytes long");
    }
    if username.contains(':') {
        return Err("username must not contain ':'");
    }
    if username.chars().any(char::is_control) {
        return Err("username must not contain control characters");
    }
    if username.trim() != username {
        return Err("username must not start or end with blanks");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Algorithm;
    use proptest::prelude::*;

    const PENCIL_7: &str = "$7$101$AAECAwQFBgcICQoL$itntC8QS4iuE06UG7o0PxU0qM5UBFdNFBtAux6ya3Syz6oR19T2jx8EIwdBkk+3zME8xITagvpZst1brmEBXRQ==";
    const PENCIL_6: &str = "$6$AAECAwQFBgcICQoL$rRzn37trE3g/BjzdN2mmtKsUjbdiQp6JD9blv4UHWyEGk5h7UCh8xJCi6Kfnkhoq2n9xbnqkIfqD5tBAb7eLdQ==";

    #[test]
    fn parses_comments_blanks_and_every_format() {
        let argon = PasswordHash::create(b"pencil", Algorithm::Argon2id).unwrap();
        let text =
            format!("# users\n\nalice:{PENCIL_7}\r\n  bob : {PENCIL_6}  \n   \ncarol:{argon}\n");
        let f = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(f.len(), 3);
        for user in ["alice", "bob", "carol"] {
            assert!(f.verify(user, b"pencil"), "{user}");
            assert!(!f.verify(user, b"pencil2"), "{user}");
        }
        assert!(!f.verify("dave", b"pencil"));
        assert!(f.contains("bob") && !f.contains("dave"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let text = format!("alice:{PENCIL_7}\n# fine\nbob\n");
        let err = PasswordFile::parse(&text, "/etc/pw")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/etc/pw:3: "), "{err}");

        let err = PasswordFile::parse("alice:hunter2\n", "pw")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("pw:1: user \"alice\""), "{err}");
        assert!(err.contains("-U"), "{err}");

        for bad in [":$6$x$y\n", "alice:\n", "alice:$7$101$AAAA\n"] {
            let err = PasswordFile::parse(bad, "pw").unwrap_err().to_string();
            assert!(err.starts_with("pw:1: "), "{bad:?}: {err}");
        }
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = PasswordFile::load("/nonexistent/ferrymq.pw").unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/ferrymq.pw: "),
            "{err}"
        );
    }

    #[test]
    fn later_duplicate_wins() {
        let text = format!("alice:{PENCIL_6}\nalice:{}\n", {
            PasswordHash::create(b"other", Algorithm::Sha512).unwrap()
        });
        let f = PasswordFile::parse(&text, "pw").unwrap();
        assert!(f.verify("alice", b"other"));
        assert!(!f.verify("alice", b"pencil"));
    }

    #[test]
    fn scram_keys_only_for_pbkdf2_entries() {
        let text = format!("alice:{PENCIL_7}\nbob:{PENCIL_6}\n");
        let f = PasswordFile::parse(&text, "pw").unwrap();
        let keys = f.scram_sha512_keys("alice").unwrap();
        assert_eq!(keys.iterations, 101);
        assert_eq!(keys.salt, (0u8..12).collect::<Vec<_>>());
        assert_eq!(
            keys,
            ScramKeys::from_password(b"pencil", keys.salt.clone(), 101)
        );
        assert!(f.scram_sha512_keys("bob").is_none());
        assert!(f.scram_sha512_keys("nobody").is_none());
    }

    #[test]
    fn username_rules() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("dev/01 é").is_ok());
        for bad in ["", "a:b", "a\nb", "a\tb", " a", "a "] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// create → write a file → parse → verify, for any password.
        #[test]
        fn round_trip_through_a_file(
            user in "[A-Za-z0-9_./é-]{1,16}",
            password in proptest::collection::vec(any::<u8>(), 0..40),
            other in proptest::collection::vec(any::<u8>(), 0..40),
            alg in prop_oneof![
                Just(Algorithm::Sha512),
                (1u32..200).prop_map(|iterations| Algorithm::Sha512Pbkdf2 { iterations }),
            ],
        ) {
            let hash = PasswordHash::create(&password, alg).unwrap();
            let text = format!("# generated\n{user}:{hash}\n");
            let f = PasswordFile::parse(&text, "pw").unwrap();
            prop_assert!(f.verify(&user, &password));
            prop_assert_eq!(f.verify(&user, &other), other == password);
        }
    }
}
