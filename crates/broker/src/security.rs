//! Who may connect and what they may read and write: the password file,
//! the ACL file and `allow_anonymous`, held so that SIGHUP can swap the
//! files without touching connected clients.

use std::path::PathBuf;
use std::sync::Arc;

use ferrymq_auth::{Access, AclFile, PasswordFile};
use parking_lot::RwLock;

use crate::config::Config;

#[derive(Debug)]
pub struct Security {
    pub allow_anonymous: bool,
    password_path: Option<PathBuf>,
    acl_path: Option<PathBuf>,
    passwords: RwLock<Option<Arc<PasswordFile>>>,
    acl: RwLock<Option<Arc<AclFile>>>,
}

impl Security {
    /// Loads the files the configuration names.
    pub fn load(config: &Config) -> Result<Security, ferrymq_auth::Error> {
        Security::from_files(
            config.allow_anonymous(),
            config.password_file.clone(),
            config.acl_file.clone(),
        )
    }

    /// The settings of one listener under `per_listener_settings true`:
    /// anonymous clients are refused unless the listener allows them.
    pub fn load_listener(
        settings: &crate::config::ListenerSecurity,
    ) -> Result<Security, ferrymq_auth::Error> {
        Security::from_files(
            settings.allow_anonymous.unwrap_or(false),
            settings.password_file.clone(),
            settings.acl_file.clone(),
        )
    }

    fn from_files(
        allow_anonymous: bool,
        password_path: Option<PathBuf>,
        acl_path: Option<PathBuf>,
    ) -> Result<Security, ferrymq_auth::Error> {
        let security = Security {
            allow_anonymous,
            password_path,
            acl_path,
            passwords: RwLock::new(None),
            acl: RwLock::new(None),
        };
        security.reload()?;
        Ok(security)
    }

    /// The configuration's `allow_anonymous` without reading any file: for
    /// brokers built in tests. `Server::start` uses [`Security::load`].
    pub fn without_files(config: &Config) -> Security {
        Security {
            allow_anonymous: config.allow_anonymous(),
            password_path: None,
            acl_path: None,
            passwords: RwLock::new(None),
            acl: RwLock::new(None),
        }
    }

    /// Reads the password and ACL files again; on error the old ones stay.
    pub fn reload(&self) -> Result<(), ferrymq_auth::Error> {
        let passwords = match &self.password_path {
            Some(p) => Some(Arc::new(PasswordFile::load(p)?)),
            None => None,
        };
        let acl = match &self.acl_path {
            Some(p) => Some(Arc::new(AclFile::load(p)?)),
            None => None,
        };
        *self.passwords.write() = passwords;
        *self.acl.write() = acl;
        Ok(())
    }

    pub fn passwords(&self) -> Option<Arc<PasswordFile>> {
        self.passwords.read().clone()
    }

    pub fn acl(&self) -> Option<Arc<AclFile>> {
        self.acl.read().clone()
    }

    /// Whether `username`/`password` may connect, `anonymous` saying
    /// whether clients without a user name may (this domain's
    /// `allow_anonymous`, or the listener's override). Runs the
    /// (deliberately slow) hash on a blocking thread.
    pub async fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        anonymous: bool,
    ) -> bool {
        match (username, self.passwords()) {
            (None, _) => anonymous,
            // A user name without a password file: Mosquitto lets it in as
            // long as anonymous access would be allowed.
            (Some(_), None) => anonymous,
            (Some(user), Some(file)) => {
                let (user, password) = (user.to_string(), password.unwrap_or_default().to_vec());
                tokio::task::spawn_blocking(move || file.verify(&user, &password))
                    .await
                    .unwrap_or(false)
            }
        }
    }

    /// Whether the client may `access` `topic`; always when no ACL file.
    pub fn allowed(
        &self,
        username: Option<&str>,
        client_id: &str,
        topic: &str,
        access: Access,
    ) -> bool {
        match &*self.acl.read() {
            Some(acl) => acl.check(username, client_id, topic, access),
            None => true,
        }
    }

    /// Whether a subscription to `filter` could ever deliver anything.
    pub fn may_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        match &*self.acl.read() {
            Some(acl) => acl.can_ever_read(username, client_id, filter),
            None => true,
        }
    }

    pub fn has_acl(&self) -> bool {
        self.acl.read().is_some()
    }
}
