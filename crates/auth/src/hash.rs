//! One password hash in the formats `mosquitto_passwd` writes, and the
//! creation of new ones.
//!
//! - `$6$<salt>$<hash>`: SHA-512 over the password followed by the salt
//!   (`mosquitto_passwd -H sha512`, Mosquitto 1.6 and earlier).
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 with a 64-byte
//!   output (Mosquitto 2's default; its dynamic-security plugin uses
//!   64-byte salts, `mosquitto_passwd` 12-byte ones).
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string.
//!
//! Salts and hashes of `$6$`/`$7$` are standard base64 with padding, as
//! OpenSSL writes them; decoding also accepts them unpadded. Every
//! comparison of hash bytes is constant-time.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use hmac::Hmac;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::Error;

/// Mosquitto's default PBKDF2 iteration count (`PW_DEFAULT_ITERATIONS`).
pub const DEFAULT_ITERATIONS: u32 = 101;
/// The salt length `mosquitto_passwd` writes (`SALT_LEN`); Mosquitto 2.0
/// reads only this length from `$7$` lines of a password file.
pub const DEFAULT_SALT_LEN: usize = 12;
/// Upper bound on a `$7$` iteration count accepted from a file, so that a
/// typo cannot turn every CONNECT into minutes of CPU.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Standard alphabet; writes padding, reads with or without it.
pub(crate) const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How to hash a new password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `$6$`: salted SHA-512. Only for old Mosquitto; weak.
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 with this many iterations.
    Sha512Pbkdf2 { iterations: u32 },
    /// `$argon2id$` with the `argon2` crate's default parameters.
    Argon2id,
}

impl Default for Algorithm {
    /// `$7$` with Mosquitto's defaults, so the file works in Mosquitto too.
    fn default() -> Self {
        Algorithm::Sha512Pbkdf2 {
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: [u8; 64] },
    /// `$7$`: PBKDF2-HMAC-SHA512(password, salt, iterations), 64 bytes.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; 64],
    },
    /// `$argon2id$...`: the PHC string, validated when parsed.
    Argon2id(String),
}

impl fmt::Debug for PasswordHash {
    /// Names the scheme only: hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(
                    f,
                    "PasswordHash::Pbkdf2Sha512 {{ iterations: {iterations} }}"
                )
            }
            PasswordHash::Argon2id(_) => f.write_str("PasswordHash::Argon2id"),
        }
    }
}

impl PasswordHash {
    /// Parses the hash part of a password-file line.
    pub fn parse(s: &str) -> Result<PasswordHash, Error> {
        if s.starts_with("$argon2id$") {
            let parsed = argon2::PasswordHash::new(s)
                .map_err(|_| Error::InvalidHash("malformed $argon2id$ PHC string"))?;
            if parsed.hash.is_none() {
                return Err(Error::InvalidHash("$argon2id$ string without a hash"));
            }
            argon2::Params::try_from(&parsed)
                .map_err(|_| Error::InvalidHash("bad $argon2id$ parameters"))?;
            return Ok(PasswordHash::Argon2id(s.to_owned()));
        }
        let mut fields = s.split('$');
        if fields.next() != Some("") {
            return Err(Error::InvalidHash(
                "not a hash (expected $6$, $7$ or $argon2id$; plain-text files need `ferrymq passwd -U`)",
            ));
        }
        match fields.next() {
            Some("6") => {
                let salt = decode_field(fields.next(), "missing $6$ salt")?;
                let hash = decode_hash(fields.next())?;
                if fields.next().is_some() {
                    return Err(Error::InvalidHash("extra fields after the $6$ hash"));
                }
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            Some("7") => {
                let iterations: u32 = fields
                    .next()
                    .and_then(|f| f.parse().ok())
                    .filter(|i| (1..=MAX_ITERATIONS).contains(i))
                    .ok_or(Error::InvalidHash("bad $7$ iteration count"))?;
                let salt = decode_field(fields.next(), "missing $7$ salt")?;
                let hash = decode_hash(fields.next())?;
                if fields.next().is_some() {
                    return Err(Error::InvalidHash("extra fields after the $7$ hash"));
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            _ => Err(Error::InvalidHash(
                "unknown hash type (expected $6$, $7$ or $argon2id$)",
            )),
        }
    }

    /// Hashes `password` with a fresh random salt.
    pub fn create(password: &[u8], algorithm: Algorithm) -> Result<PasswordHash, Error> {
        match algorithm {
            Algorithm::Sha512 => {
                let salt = random_salt(DEFAULT_SALT_LEN)?;
                let hash = sha512_salted(password, &salt);
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            Algorithm::Sha512Pbkdf2 { iterations } => {
                if !(1..=MAX_ITERATIONS).contains(&iterations) {
                    return Err(Error::Hashing(format!(
                        "iterations must be between 1 and {MAX_ITERATIONS}"
                    )));
                }
                let salt = random_salt(DEFAULT_SALT_LEN)?;
                let hash = pbkdf2_sha512(password, &salt, iterations);
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            Algorithm::Argon2id => {
                let salt = SaltString::encode_b64(&random_salt(16)?)
                    .map_err(|e| Error::Hashing(e.to_string()))?;
                let phc = argon2::Argon2::default()
                    .hash_password(password, &salt)
                    .map_err(|e| Error::Hashing(e.to_string()))?;
                Ok(PasswordHash::Argon2id(phc.to_string()))
            }
        }
    }

    /// Whether `password` is the one this hash was made from.
    /// Constant-time in the hash comparison.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                bool::from(sha512_salted(password, salt).ct_eq(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => bool::from(pbkdf2_sha512(password, salt, *iterations).ct_eq(hash)),
            PasswordHash::Argon2id(phc) => match argon2::PasswordHash::new(phc) {
                // argon2 compares in constant time.
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password, &parsed)
                    .is_ok(),
                Err(_) => false,
            },
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The encoded form, as written after `username:` in a password file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            PasswordHash::Argon2id(phc) => f.write_str(phc),
        }
    }
}

/// SHA-512(password ‖ salt), Mosquitto's `$6$` digest.
pub(crate) fn sha512_salted(password: &[u8], salt: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    h.finalize().into()
}

/// PBKDF2-HMAC-SHA512 with a 64-byte output: Mosquitto's `$7$` hash, and
/// SCRAM-SHA-512's `SaltedPassword` (RFC 5802 `Hi`).
pub(crate) fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2::<Hmac<Sha512>>(password, salt, iterations, &mut out)
        // Only fails for an output longer than the PRF allows; 64 is one block.
        .unwrap_or_default();
    out
}

pub(crate) fn random_salt(len: usize) -> Result<Vec<u8>, Error> {
    let mut salt = vec![0u8; len];
    getrandom::getrandom(&mut salt).map_err(|e| Error::Hashing(e.to_string()))?;
    Ok(salt)
}

fn decode_field(field: Option<&str>, missing: &'static str) -> Result<Vec<u8>, Error> {
    let field = field
        .filter(|f| !f.is_empty())
        .ok_or(Error::InvalidHash(missing))?;
    B64.decode(field)
        .map_err(|_| Error::InvalidHash("salt or hash is not valid base64"))
}

fn decode_hash(field: Option<&str>) -> Result<[u8; 64], Error> {
    let bytes = decode_field(field, "missing hash")?;
    <[u8; 64]>::try_from(bytes.as_slice())
        .map_err(|_| Error::InvalidHash("hash is not 64 bytes (SHA-512)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Independent vectors, computed with Python's hashlib:
    //   salt = bytes(range(12))
    //   hashlib.sha512(b"pencil" + salt).digest()
    //   hashlib.pbkdf2_hmac("sha512", b"pencil", salt, 101)
    const SALT_B64: &str = "AAECAwQFBgcICQoL";

    // base64 of the two digests above (Python 3.11 output).
    const SHA512_PENCIL: &str =
        "rRzn37trE3g/BjzdN2mmtKsUjbdiQp6JD9blv4UHWyEGk5h7UCh8xJCi6Kfnkhoq2n9xbnqkIfqD5tBAb7eLdQ==";
    const PBKDF2_PENCIL: &str =
        "itntC8QS4iuE06UG7o0PxU0qM5UBFdNFBtAux6ya3Syz6oR19T2jx8EIwdBkk+3zME8xITagvpZst1brmEBXRQ==";

    #[test]
    fn sha512_line_verifies() {
        let h = PasswordHash::parse(&format!("$6${SALT_B64}${SHA512_PENCIL}")).unwrap();
        assert!(h.verify(b"pencil"));
        assert!(!h.verify(b"pencil "));
        assert!(!h.verify(b""));
    }

    #[test]
    fn pbkdf2_line_verifies() {
        let line = format!("$7$101${SALT_B64}${PBKDF2_PENCIL}");
        let h = PasswordHash::parse(&line).unwrap();
        assert!(h.verify(b"pencil"));
        assert!(!h.verify(b"Pencil"));
        assert_eq!(h.to_string(), line);
        // Other iteration count, same salt: different hash.
        let other = PasswordHash::parse(&format!("$7$100${SALT_B64}${PBKDF2_PENCIL}")).unwrap();
        assert!(!other.verify(b"pencil"));
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        let line = format!("$7$101${SALT_B64}${}", PBKDF2_PENCIL.trim_end_matches('='));
        assert!(PasswordHash::parse(&line).unwrap().verify(b"pencil"));
    }

    #[test]
    fn sixty_four_byte_salt() {
        let salt = [7u8; 64];
        let hash = pbkdf2_sha512(b"pw", &salt, 3);
        let line = format!("$7$3${}${}", B64.encode(salt), B64.encode(hash));
        assert!(PasswordHash::parse(&line).unwrap().verify(b"pw"));
    }

    #[test]
    fn create_verify_round_trip_every_algorithm() {
        for alg in [
            Algorithm::Sha512,
            Algorithm::default(),
            Algorithm::Sha512Pbkdf2 { iterations: 1000 },
            Algorithm::Argon2id,
        ] {
            let h = PasswordHash::create(b"s3cret", alg).unwrap();
            let reparsed = PasswordHash::parse(&h.to_string()).unwrap();
            assert_eq!(reparsed, h, "{alg:?}");
            assert!(reparsed.verify(b"s3cret"), "{alg:?}");
            assert!(!reparsed.verify(b"s3cret!"), "{alg:?}");
        }
    }

    #[test]
    fn default_is_mosquittos() {
        let h = PasswordHash::create(b"x", Algorithm::default()).unwrap();
        let s = h.to_string();
        assert!(s.starts_with("$7$101$"), "{s}");
        let PasswordHash::Pbkdf2Sha512 { salt, .. } = h else {
            panic!()
        };
        assert_eq!(salt.len(), 12);
    }

    #[test]
    fn argon2id_from_reference_string() {
        // Produced by the reference C implementation (libargon2), through
        // Python ctypes: argon2id_hash_encoded(t=2, m=65536, p=1,
        // b"password", b"somesalt", hashlen=32).
        let phc = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        let h = PasswordHash::parse(phc).unwrap();
        assert!(h.verify(b"password"));
        assert!(!h.verify(b"passwore"));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "plaintext",
            "$5$abc$def",
            "$6$",
            "$6$AAAA",
            "$6$AAAA$AAAA",
            "$6$!!!$AAAA",
            "$7$0$AAAA$AAAA",
            "$7$x$AAAA$AAAA",
            "$7$101$AAAA",
            "$argon2id$garbage",
            "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$AAAA",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad:?}");
        }
        let ok = format!("$6${SALT_B64}${SHA512_PENCIL}");
        assert!(PasswordHash::parse(&format!("{ok}$x")).is_err());
    }

    #[test]
    fn debug_hides_the_hash() {
        let h = PasswordHash::create(b"x", Algorithm::default()).unwrap();
        let dbg = format!("{h:?}");
        assert!(!dbg.contains(&h.to_string()[8..]), "{dbg}");
    }
}
