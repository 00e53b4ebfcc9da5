//! SCRAM-SHA-512 (RFC 5802 with SHA-512, as RFC 7677 does for SHA-256):
//! the server side of MQTT 5 enhanced authentication, method
//! `SCRAM-SHA-512`.
//!
//! The exchange, with the MQTT packets that carry it:
//!
//! ```text
//! CONNECT  auth data = client-first   → ClientFirst::parse, look up keys,
//!                                        ServerExchange::start
//! AUTH 0x18 auth data = server-first  ←
//! AUTH 0x18 auth data = client-final  → ServerExchange::finish
//! CONNACK  auth data = server-final   ← (or CONNACK 0x86 on Err)
//! ```
//!
//! No channel binding (`p=` is refused; `y` and `n` are accepted), no
//! SASLprep (passwords are the bytes `mosquitto_passwd` hashed). For an
//! unknown user, run the exchange with [`ScramKeys::decoy`] so that it
//! fails at the proof like a wrong password does.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::hash::{pbkdf2_sha512, B64, DEFAULT_ITERATIONS};
use crate::Error;

/// The stored credentials of one user (RFC 5802 section 3).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 64],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 64],
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac512(key: &[u8], data: &[u8]) -> [u8; 64] {
    // HMAC accepts keys of any length; the error case cannot happen.
    match Hmac::<Sha512>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 64],
    }
}

impl ScramKeys {
    /// Keys from `SaltedPassword = Hi(password, salt, iterations)`, which
    /// is exactly the hash of a `$7$` password-file entry.
    pub fn from_salted_password(salt: Vec<u8>, iterations: u32, salted: &[u8; 64]) -> ScramKeys {
        let client_key = hmac512(salted, b"Client Key");
        ScramKeys {
            salt,
            iterations,
            stored_key: Sha512::digest(client_key).into(),
            server_key: hmac512(salted, b"Server Key"),
        }
    }

    /// Keys from a clear password (tests, provisioning).
    pub fn from_password(password: &[u8], salt: Vec<u8>, iterations: u32) -> ScramKeys {
        let salted = pbkdf2_sha512(password, &salt, iterations);
        ScramKeys::from_salted_password(salt, iterations, &salted)
    }

    /// Plausible keys for a user that does not exist: the salt is derived
    /// from `secret` (a per-broker random value) and the username, so it is
    /// stable across attempts; no password matches them.
    pub fn decoy(username: &str, secret: &[u8]) -> ScramKeys {
        let salt = hmac512(secret, username.as_bytes());
        let mut unguessable = hmac512(secret, b"decoy stored key");
        unguessable
            .iter_mut()
            .zip(salt.iter())
            .for_each(|(a, b)| *a ^= b);
        ScramKeys {
            salt: salt.get(..12).unwrap_or_default().to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: unguessable,
            server_key: hmac512(secret, b"decoy server key"),
        }
    }
}

/// A parsed client-first message.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    /// `n,,` or `y,,` (with `a=` when an authzid was given).
    gs2_header: String,
    /// client-first-message-bare: `n=user,r=nonce[,ext]`.
    bare: String,
    username: String,
    authzid: Option<String>,
    client_nonce: String,
}

impl ClientFirst {
    /// Parses `gs2-header client-first-message-bare`.
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, Error> {
        let msg = std::str::from_utf8(msg).map_err(|_| Error::ScramProtocol("not UTF-8"))?;
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or(Error::ScramProtocol("missing GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            _ if cbind.starts_with("p=") => {
                return Err(Error::ScramProtocol("channel binding is not supported"))
            }
            _ => return Err(Error::ScramProtocol("bad GS2 channel-binding flag")),
        }
        let (authz, bare) = rest
            .split_once(',')
            .ok_or(Error::ScramProtocol("missing GS2 header"))?;
        let authzid = match authz {
            "" => None,
            a => Some(decode_saslname(
                a.strip_prefix("a=")
                    .ok_or(Error::ScramProtocol("bad authzid"))?,
            )?),
        };
        let gs2_len = cbind.len() + authz.len() + 2;
        let gs2_header = msg.get(..gs2_len).unwrap_or_default().to_owned();

        let mut attrs = bare.split(',');
        let first = attrs.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(Error::ScramProtocol("mandatory extension not supported"));
        }
        let username = decode_saslname(
            first
                .strip_prefix("n=")
                .ok_or(Error::ScramProtocol("missing username"))?,
        )?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| valid_nonce(n))
            .ok_or(Error::ScramProtocol("missing or bad client nonce"))?
            .to_owned();
        Ok(ClientFirst {
            gs2_header,
            bare: bare.to_owned(),
            username,
            authzid,
            client_nonce,
        })
    }

    /// The username to look the keys up with.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The authorization identity, if the client asked for one.
    pub fn authzid(&self) -> Option<&str> {
        self.authzid.as_deref()
    }
}

/// The server's half of one exchange, between server-first and
/// client-final.
#[derive(Debug)]
pub struct ServerExchange {
    keys: ScramKeys,
    /// `client-first-bare "," server-first`: the start of AuthMessage.
    auth_prefix: String,
    /// `c=` value the client must echo: base64 of the GS2 header.
    channel_binding: String,
    nonce: String,
}

impl ServerExchange {
    /// Answers a client-first message with a fresh random server nonce:
    /// returns the exchange to finish and the server-first message.
    pub fn start(first: &ClientFirst, keys: ScramKeys) -> Result<(ServerExchange, Vec<u8>), Error> {
        let random = crate::hash::random_salt(18)?;
        Ok(Self::start_with_nonce(first, keys, &B64.encode(random)))
    }

    /// [`start`](Self::start) with a chosen server nonce (for tests; the
    /// nonce must be printable ASCII without `,`).
    pub fn start_with_nonce(
        first: &ClientFirst,
        keys: ScramKeys,
        server_nonce: &str,
    ) -> (ServerExchange, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let exchange = ServerExchange {
            keys,
            auth_prefix: format!("{},{server_first}", first.bare),
            channel_binding: B64.encode(&first.gs2_header),
            nonce,
        };
        (exchange, server_first.into_bytes())
    }

    /// Checks the client-final message. On a valid proof returns the
    /// server-final message (`v=<server signature>`); a wrong proof is
    /// [`Error::ScramAuthFailed`], a malformed message
    /// [`Error::ScramProtocol`].
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, Error> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| Error::ScramProtocol("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(Error::ScramProtocol("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cb = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(Error::ScramProtocol("missing channel binding"))?;
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Error::ScramProtocol("missing nonce"))?;
        if cb != self.channel_binding {
            return Err(Error::ScramProtocol("channel binding mismatch"));
        }
        if nonce != self.nonce {
            return Err(Error::ScramProtocol("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| Error::ScramProtocol("proof is not base64"))?;
        let proof: [u8; 64] = proof
            .as_slice()
            .try_into()
            .map_err(|_| Error::ScramProtocol("proof is not 64 bytes"))?;

        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let mut client_key = hmac512(&self.keys.stored_key, auth_message.as_bytes());
        client_key
            .iter_mut()
            .zip(proof.iter())
            .for_each(|(k, p)| *k ^= p);
        let stored_key: [u8; 64] = Sha512::digest(client_key).into();
        if !bool::from(stored_key.ct_eq(&self.keys.stored_key)) {
            return Err(Error::ScramAuthFailed);
        }
        let signature = hmac512(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(signature)).into_bytes())
    }
}

/// `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, Error> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let tail = rest.get(i..).unwrap_or_default();
        if let Some(t) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = t;
        } else {
            return Err(Error::ScramProtocol("bad escape in username"));
        }
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(Error::ScramProtocol("empty username"));
    }
    Ok(out)
}

/// `printable = %x21-2B / %x2D-7E` (no `,`).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677's SCRAM-SHA-256 example, with SHA-512 in place of SHA-256.
    // Expected values computed independently with Python's hashlib/hmac:
    //
    //   sp = hashlib.pbkdf2_hmac("sha512", b"pencil", b64decode(SALT), 4096)
    //   ck = hmac.new(sp, b"Client Key", "sha512").digest()
    //   sk = hashlib.sha512(ck).digest()
    //   am = (CLIENT_FIRST_BARE + "," + SERVER_FIRST + "," + FINAL_NO_PROOF).encode()
    //   proof = xor(ck, hmac.new(sk, am, "sha512").digest())
    //   v = hmac.new(hmac.new(sp, b"Server Key", "sha512").digest(), am, "sha512").digest()
    //
    // The same script with "sha256" reproduces RFC 7677's p= and v=
    // exactly, which checks the script.
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const FINAL_NO_PROOF: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const PROOF: &str =
        "gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
    const SERVER_FINAL: &str = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==";
    const STORED_KEY_HEX: &str = "e8002e6f7d3ae446119b216933644dc2a2be7869eb918b8459b5e7d7d2ec12606aceef106825cd735170a675fd3611f684affad1dce3f43a0ee43bd590e1dbbe";
    const SERVER_KEY_HEX: &str = "8d91db6230b5687874fe129bc7206e1858c3ae08e02934f57ac03b6b05a229c459d28ff46f5c9611e6c179256490215ec1ff759cb0df285db89af0f99e613aac";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn keys() -> ScramKeys {
        ScramKeys::from_password(b"pencil", B64.decode(SALT).unwrap(), 4096)
    }

    fn start() -> (ServerExchange, Vec<u8>) {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.username(), "user");
        ServerExchange::start_with_nonce(&first, keys(), SERVER_NONCE)
    }

    #[test]
    fn keys_match_independent_vectors() {
        let k = keys();
        assert_eq!(hex(&k.stored_key), STORED_KEY_HEX);
        assert_eq!(hex(&k.server_key), SERVER_KEY_HEX);
    }

    #[test]
    fn rfc7677_style_exchange_sha512() {
        let (exchange, server_first) = start();
        assert_eq!(server_first, SERVER_FIRST.as_bytes());
        let client_final = format!("{FINAL_NO_PROOF},p={PROOF}");
        let server_final = exchange.finish(client_final.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), SERVER_FINAL);
    }

    #[test]
    fn wrong_password_fails_at_the_proof() {
        let (exchange, _) = start();
        let mut proof = B64.decode(PROOF).unwrap();
        proof[0] ^= 1;
        let client_final = format!("{FINAL_NO_PROOF},p={}", B64.encode(proof));
        assert!(matches!(
            exchange.finish(client_final.as_bytes()),
            Err(Error::ScramAuthFailed)
        ));
    }

    #[test]
    fn tampered_nonce_or_binding_is_a_protocol_error() {
        for bad in [
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={PROOF}"),
            format!("c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p={PROOF}"),
            FINAL_NO_PROOF.to_string(),
            format!("{FINAL_NO_PROOF},p=AAAA"),
            format!("{FINAL_NO_PROOF},p=!!"),
        ] {
            let (exchange, _) = start();
            assert!(
                matches!(
                    exchange.finish(bad.as_bytes()),
                    Err(Error::ScramProtocol(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_first_parsing() {
        let f = ClientFirst::parse(b"y,a=adm=2Cin,n=us=3Der=2C,r=abc,x=ext").unwrap();
        assert_eq!(f.username(), "us=er,");
        assert_eq!(f.authzid(), Some("adm,in"));
        assert_eq!(f.gs2_header, "y,a=adm=2Cin,");
        assert_eq!(f.bare, "n=us=3Der=2C,r=abc,x=ext");
        for bad in [
            &b"p=tls-unique,,n=u,r=abc"[..],
            b"x,,n=u,r=abc",
            b"n,,m=ext,n=u,r=abc",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=,r=abc",
            b"n,,n=a=b,r=abc",
            b"n,,u=u,r=abc",
            b"n,n=u,r=abc",
            b"\xff",
        ] {
            assert!(
                ClientFirst::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// A full exchange against a client written here from RFC 5802, with
    /// keys taken from a `$7$` password-file entry.
    #[test]
    fn exchange_with_password_file_keys() {
        let hash = crate::PasswordHash::create(b"s3cret", crate::Algorithm::default()).unwrap();
        let file = crate::PasswordFile::parse(&format!("alice:{hash}\n"), "pw").unwrap();
        for (password, ok) in [(&b"s3cret"[..], true), (b"s3cret2", false)] {
            let client_first_bare = "n=alice,r=clientnonce123";
            let first = ClientFirst::parse(format!("n,,{client_first_bare}").as_bytes()).unwrap();
            let keys = file.scram_sha512_keys(first.username()).unwrap();
            let (exchange, server_first) = ServerExchange::start(&first, keys).unwrap();
            let server_first = String::from_utf8(server_first).unwrap();
            // Client side.
            let mut it = server_first.split(',');
            let nonce = it.next().unwrap().strip_prefix("r=").unwrap();
            assert!(nonce.starts_with("clientnonce123") && nonce.len() > 20);
            let salt = B64
                .decode(it.next().unwrap().strip_prefix("s=").unwrap())
                .unwrap();
            let iterations: u32 = it
                .next()
                .unwrap()
                .strip_prefix("i=")
                .unwrap()
                .parse()
                .unwrap();
            let salted = pbkdf2_sha512(password, &salt, iterations);
            let client_key = hmac512(&salted, b"Client Key");
            let stored_key: [u8; 64] = Sha512::digest(client_key).into();
            let without_proof = format!("c=biws,r={nonce}");
            let auth = format!("{client_first_bare},{server_first},{without_proof}");
            let sig = hmac512(&stored_key, auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
            let client_final = format!("{without_proof},p={}", B64.encode(proof));
            let result = exchange.finish(client_final.as_bytes());
            if ok {
                let expected = hmac512(&hmac512(&salted, b"Server Key"), auth.as_bytes());
                assert_eq!(
                    result.unwrap(),
                    format!("v={}", B64.encode(expected)).into_bytes()
                );
            } else {
                assert!(matches!(result, Err(Error::ScramAuthFailed)));
            }
        }
    }

    #[test]
    fn decoy_keys_are_stable_and_never_match() {
        let a = ScramKeys::decoy("ghost", b"broker secret");
        assert_eq!(a, ScramKeys::decoy("ghost", b"broker secret"));
        assert_ne!(a.salt, ScramKeys::decoy("ghost2", b"broker secret").salt);
        assert_eq!(a.salt.len(), 12);
        assert_ne!(
            a,
            ScramKeys::from_password(b"", a.salt.clone(), a.iterations)
        );
    }
}
