//! `log_dest` and `log_type`: Mosquitto's log settings, turned into what a
//! `tracing` subscriber needs (writers and a filter). The broker only
//! records them; the binary builds the subscriber.

use std::path::PathBuf;

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Stdout,
    /// Appended to; Mosquitto allows one such file.
    File(PathBuf),
}

/// One `log_type` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    Error,
    Warning,
    Notice,
    Information,
    Debug,
    Subscribe,
    Unsubscribe,
    Websockets,
    All,
    None,
}

impl LogType {
    pub fn parse(word: &str) -> Option<LogType> {
        Some(match word {
            "error" => LogType::Error,
            "warning" => LogType::Warning,
            "notice" => LogType::Notice,
            "information" => LogType::Information,
            "debug" => LogType::Debug,
            "subscribe" => LogType::Subscribe,
            "unsubscribe" => LogType::Unsubscribe,
            "websockets" => LogType::Websockets,
            "all" => LogType::All,
            "none" => LogType::None,
            _ => return None,
        })
    }
}

/// The log settings of a configuration file. `None` means the option never
/// appeared: Mosquitto's defaults (stderr; error, warning, notice and
/// information) apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logging {
    pub dests: Option<Vec<LogDest>>,
    pub types: Option<Vec<LogType>>,
}

/// `tracing` targets that carry Mosquitto's message types beyond levels.
const SUBSCRIBE_TARGET: &str = "ferrymq_broker::subscribe";
const WEBSOCKET_TARGET: &str = "ferrymq_broker::net::transport";

impl Logging {
    /// Adds a `log_dest` line: `none` drops what came before (as in
    /// Mosquitto, a later line adds again).
    pub fn add_dest(&mut self, dest: Option<LogDest>) {
        let dests = self.dests.get_or_insert_with(Vec::new);
        match dest {
            None => dests.clear(),
            Some(d) if !dests.contains(&d) => dests.push(d),
            Some(_) => {}
        }
    }

    /// Adds a `log_type` line: `none` drops what came before.
    pub fn add_type(&mut self, t: LogType) {
        let types = self.types.get_or_insert_with(Vec::new);
        if t == LogType::None {
            types.clear();
        } else if !types.contains(&t) {
            types.push(t);
        }
    }

    /// Where lines go; empty means nowhere.
    pub fn destinations(&self) -> Vec<LogDest> {
        self.dests.clone().unwrap_or_else(|| vec![LogDest::Stderr])
    }

    /// The `tracing_subscriber::EnvFilter` directives for these types.
    /// `verbose` (`-v`) is Mosquitto's "log_type all".
    pub fn filter(&self, verbose: bool) -> String {
        let Some(types) = &self.types else {
            return if verbose { "debug" } else { "info" }.into();
        };
        if verbose || types.contains(&LogType::All) {
            return "debug".into();
        }
        // Mosquitto's types are flags; `tracing` has levels. The level is
        // the most verbose type given (notice and information are both
        // `info`); subscribe and websockets messages have their own targets.
        let level = types
            .iter()
            .filter_map(|t| match t {
                LogType::Error => Some((1, "error")),
                LogType::Warning => Some((2, "warn")),
                LogType::Notice | LogType::Information => Some((3, "info")),
                LogType::Debug => Some((4, "debug")),
                _ => None,
            })
            .max()
            .map_or("off", |(_, name)| name);
        let mut filter = level.to_string();
        if types.contains(&LogType::Subscribe) || types.contains(&LogType::Unsubscribe) {
            filter.push_str(&format!(",{SUBSCRIBE_TARGET}=debug"));
        }
        if types.contains(&LogType::Websockets) {
            filter.push_str(&format!(",{WEBSOCKET_TARGET}=debug"));
        }
        filter
    }

    /// One line for the start-up log: what the file asked and what it became.
    pub fn describe(&self, verbose: bool) -> String {
        let dests: Vec<String> = self
            .destinations()
            .iter()
            .map(|d| match d {
                LogDest::Stderr => "stderr".to_string(),
                LogDest::Stdout => "stdout".to_string(),
                LogDest::File(p) => format!("file {}", p.display()),
            })
            .collect();
        let dests = if dests.is_empty() {
            "none".to_string()
        } else {
            dests.join(", ")
        };
        let types = match (&self.types, verbose) {
            (_, true) => "all (-v)".to_string(),
            (None, false) => "error, warning, notice, information (default)".to_string(),
            (Some(t), false) if t.is_empty() => "none".to_string(),
            (Some(t), false) => t
                .iter()
                .map(|t| format!("{t:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!(
            "log_dest {dests}; log_type {types} -> tracing filter \"{}\"",
            self.filter(verbose)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(types: &[&str]) -> Logging {
        let mut l = Logging::default();
        for t in types {
            l.add_type(LogType::parse(t).unwrap());
        }
        l
    }

    #[test]
    fn log_types_map_onto_levels() {
        assert_eq!(Logging::default().filter(false), "info");
        assert_eq!(Logging::default().filter(true), "debug");
        assert_eq!(with(&["error"]).filter(false), "error");
        assert_eq!(with(&["error", "warning"]).filter(false), "warn");
        assert_eq!(with(&["notice"]).filter(false), "info");
        assert_eq!(with(&["information", "error"]).filter(false), "info");
        assert_eq!(with(&["debug"]).filter(false), "debug");
        assert_eq!(with(&["all"]).filter(false), "debug");
        assert_eq!(with(&["none"]).filter(false), "off");
        assert_eq!(with(&["debug", "none"]).filter(false), "off");
        assert_eq!(with(&["none", "error"]).filter(false), "error");
        // -v forces everything, whatever the file says.
        assert_eq!(with(&["none"]).filter(true), "debug");
        assert_eq!(
            with(&["warning", "subscribe"]).filter(false),
            "warn,ferrymq_broker::subscribe=debug"
        );
        assert_eq!(
            with(&["websockets"]).filter(false),
            "off,ferrymq_broker::net::transport=debug"
        );
        for types in [&["error"][..], &["warning", "subscribe", "websockets"], &[]] {
            let filter = with(types).filter(false);
            assert!(
                filter.split(',').all(|d| !d.is_empty()),
                "{types:?}: {filter}"
            );
        }
    }

    #[test]
    fn log_dest_none_clears_and_later_lines_add() {
        let mut l = Logging::default();
        assert_eq!(l.destinations(), vec![LogDest::Stderr]);
        l.add_dest(Some(LogDest::Stdout));
        l.add_dest(None);
        assert!(l.destinations().is_empty());
        l.add_dest(Some(LogDest::File("/tmp/x.log".into())));
        l.add_dest(Some(LogDest::File("/tmp/x.log".into())));
        assert_eq!(l.destinations(), vec![LogDest::File("/tmp/x.log".into())]);
        assert!(l.describe(false).contains("file /tmp/x.log"));
    }
}
