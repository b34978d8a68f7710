//! The configuration at run time: where it is read from ([`Source`]), which keys a new
//! reading changes, which of them apply without a restart, and the configuration to run
//! with afterwards ([`Config::reload`]).
//!
//! Changes are found by key: every value the layered sources set is fingerprinted when
//! it is read, so a reload names exactly the `acme.toml` keys that differ (a key removed
//! from the file differs too: it is back to its default). Only fingerprints are kept,
//! never the values, so no secret stays around in a second form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Config, ConfigError, Overrides, Settings};

/// Where the configuration comes from: the file, whether it must exist, and the
/// command-line flags laid over it. Read again on every reload, with the environment of
/// that moment.
#[derive(Debug, Clone)]
pub struct Source {
    path: PathBuf,
    required: bool,
    overrides: Overrides,
}

impl Source {
    /// `path` must exist when `required` (it was named explicitly).
    pub fn new(path: impl Into<PathBuf>, required: bool, overrides: Overrides) -> Source {
        Source { path: path.into(), required, overrides }
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read and validate the file, the process environment and the flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_with(std::env::vars())
    }

    /// Read and validate with the environment `env` instead of the process's.
    pub fn load_with(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut settings = Settings::load(&self.path, self.required, env)?;
        settings.apply(&self.overrides);
        settings.validate()
    }

    /// When the default file is missing: that the built-in defaults are used (a file that
    /// was named must exist; its absence is an error).
    pub fn missing_file(&self) -> Option<String> {
        (!self.required && !self.path.exists()).then(|| {
            format!(
                "no configuration file {}: using built-in defaults (and ACME_ variables, command-line flags)",
                self.path.display()
            )
        })
    }

    /// The variables of `env` that look like configuration but are not read, each with
    /// why: lower case, or a single `_` between levels (`ACME_HTTP_LISTEN` for
    /// `ACME_HTTP__LISTEN`). Variables of other tools (`ACME_WORK`) are left alone: only
    /// names whose first word is a section of `acme.toml` are looked at.
    pub fn unread_variables(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        env.into_iter().filter_map(|(name, _)| unread_variable(&name)).collect()
    }
}

/// The sections of `acme.toml`, as the first word of a variable's name.
const SECTIONS: [&str; 5] = ["CSE", "HTTP", "DATABASE", "LOGGING", "RESOURCE"];

/// Why `name` is a configuration variable that is not read, if it is one.
fn unread_variable(name: &str) -> Option<String> {
    let upper = name.to_ascii_uppercase();
    let rest = upper.strip_prefix("ACME_")?;
    if !SECTIONS.contains(&rest.split('_').next()?) {
        return None;
    }
    if name != upper {
        return Some(format!("{name} is not read: configuration variables are upper case ({upper})"));
    }
    if !rest.contains("__") {
        let meant = format!("ACME_{}", rest.replacen('_', "__", 1));
        return Some(format!(
            "{name} is not read: levels are separated by a double underscore ({meant}, say, sets {})",
            meant["ACME_".len()..].to_ascii_lowercase().replace("__", ".")
        ));
    }
    None
}

/// A fingerprint of every value the sources set, by dotted key (`cse.registrar.address`).
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Fingerprints(BTreeMap<String, u64>);

impl fmt::Debug for Fingerprints {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Fingerprints({} keys)", self.0.len())
    }
}

impl Fingerprints {
    /// The keys of a layered configuration, read as a JSON tree. Lists are one value.
    pub(crate) fn of(tree: &Value) -> Fingerprints {
        let mut keys = BTreeMap::new();
        flatten(tree, &mut String::new(), &mut keys);
        Fingerprints(keys)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys set in one and not the other, or set differently.
    fn changed(&self, other: &Fingerprints) -> Vec<String> {
        let keys: BTreeSet<&String> = self.0.keys().chain(other.0.keys()).collect();
        keys.into_iter().filter(|key| self.0.get(*key) != other.0.get(*key)).cloned().collect()
    }

    /// `self` with the keys for which `take` holds as they are in `other`.
    fn merged(&self, other: &Fingerprints, take: impl Fn(&str) -> bool) -> Fingerprints {
        let mut keys: BTreeMap<String, u64> =
            self.0.iter().filter(|(key, _)| !take(key)).map(|(key, print)| (key.clone(), *print)).collect();
        keys.extend(other.0.iter().filter(|(key, _)| take(key)).map(|(key, print)| (key.clone(), *print)));
        Fingerprints(keys)
    }
}

fn flatten(value: &Value, prefix: &mut String, keys: &mut BTreeMap<String, u64>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (name, inner) in map {
                let length = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(name);
                flatten(inner, prefix, keys);
                prefix.truncate(length);
            }
        }
        leaf => {
            let mut hasher = DefaultHasher::new();
            leaf.to_string().hash(&mut hasher);
            keys.insert(prefix.clone(), hasher.finish());
        }
    }
}

/// Can a change of `key` be applied while running? The registration settings, the
/// registrars and the log level can; the credentials a registrar presents when it calls
/// this CSE (`security.self_*`) cannot: they are part of what the HTTP server accepts.
pub fn applies_at_run_time(key: &str) -> bool {
    if key.contains(".security.self_") {
        return false;
    }
    key == "logging.level"
        || ["cse.registration", "cse.registrar", "cse.sp"]
            .iter()
            .any(|section| key == *section || key.strip_prefix(section).is_some_and(|rest| rest.starts_with('.')))
}

/// What a new reading of the configuration changes.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration to run with: the running one, with every key that can change at
    /// run time taken from the new reading.
    pub config: Config,
    /// Changed keys that are applied now.
    pub applied: Vec<String>,
    /// Changed keys that take effect only after a restart (not applied).
    pub restart_needed: Vec<String>,
}

impl Reload {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.restart_needed.is_empty()
    }
}

impl Config {
    /// Compare `new` (a valid reading) with this running configuration. A new identity
    /// (CSE-ID, SP-ID, CSE type, CSEBase names) is refused as a whole: everything else in
    /// the file was checked against it, so nothing is applied and the key is named.
    pub fn reload(&self, new: Config) -> Result<Reload, ConfigError> {
        let identity: [(&str, bool); 5] = [
            ("cse.cse_id", self.cse.cse_id != new.cse.cse_id),
            ("cse.sp_id", self.cse.sp_id != new.cse.sp_id),
            ("cse.type", self.cse.kind != new.cse.kind),
            ("cse.resource_name", self.cse.resource_name != new.cse.resource_name),
            ("cse.resource_id", self.cse.resource_id != new.cse.resource_id),
        ];
        if let Some((key, _)) = identity.iter().find(|(_, changed)| *changed) {
            return Err(ConfigError::invalid(
                key,
                "the CSE's identity changes only with a restart; nothing was applied",
            ));
        }
        let (applied, restart_needed): (Vec<String>, Vec<String>) = if new.fingerprints.is_empty() {
            // Built in code, not read from sources: compared section by section.
            (self.changed_sections(&new), Vec::new())
        } else {
            self.fingerprints.changed(&new.fingerprints).into_iter().partition(|key| applies_at_run_time(key))
        };
        let mut config = self.clone();
        config.fingerprints = self.fingerprints.merged(&new.fingerprints, applies_at_run_time);
        config.registration = new.registration;
        config.registrar = new.registrar;
        config.sp_registrars = new.sp_registrars;
        config.log_level = new.log_level;
        Ok(Reload { config, applied, restart_needed })
    }

    /// The sections that can change at run time and differ between `self` and `new`.
    fn changed_sections(&self, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        if self.registration != new.registration {
            changed.push("cse.registration".to_string());
        }
        if self.registrar != new.registrar {
            changed.push("cse.registrar".to_string());
        }
        let sections = self.sp_registrars.iter().chain(&new.sp_registrars).map(|registrar| &registrar.section);
        let sections: BTreeSet<&String> = sections.collect();
        for section in sections {
            let of =
                |config: &Config| config.sp_registrars.iter().find(|registrar| registrar.section == *section).cloned();
            if of(self) != of(new) {
                changed.push(section.clone());
            }
        }
        if self.log_level != new.log_level {
            changed.push("logging.level".to_string());
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_that_look_like_configuration_but_are_not_read_are_named_with_why() {
        let env = [
            ("ACME_HTTP_LISTEN", "127.0.0.1:1"),
            ("acme_http__listen", "127.0.0.1:1"),
            ("ACME_HTTP__LISTEN", "127.0.0.1:1"),
            ("ACME_WORK", "/tmp"),
            ("ACME_TEST_BACKEND", "postgres"),
            ("PATH", "/bin"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()));
        let unread = Source::unread_variables(env);
        assert_eq!(unread.len(), 2, "{unread:?}");
        assert!(unread[0].contains("ACME_HTTP_LISTEN") && unread[0].contains("ACME_HTTP__LISTEN"), "{unread:?}");
        assert!(unread[0].contains("http.listen"), "{unread:?}");
        assert!(unread[1].contains("acme_http__listen") && unread[1].contains("upper case"), "{unread:?}");
    }

    #[test]
    fn a_missing_default_file_is_told_and_a_named_one_is_not_passed_over() {
        let missing = std::path::Path::new("/nonexistent/acme.toml");
        let default = Source::new(missing, false, Overrides::default());
        assert!(default.missing_file().is_some_and(|text| text.contains("using built-in defaults")));
        let named = Source::new(missing, true, Overrides::default());
        assert!(named.missing_file().is_none(), "a named file's absence is an error, not a notice");
        assert!(named.load_with(Vec::new()).is_err());
    }

    const MN: &str = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\naddress = [\"http://127.0.0.1:8080\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n";

    fn config(text: &str) -> Config {
        Settings::from_toml(text).and_then(Settings::validate).expect("valid")
    }

    #[test]
    fn a_reload_names_the_changed_keys_and_applies_only_the_run_time_ones() {
        let running = config(&format!("{MN}[http]\nlisten = \"127.0.0.1:9000\"\n"));
        let text = MN.replace("8080", "8081").replace("/id-in\"", "/id-in2\"")
            + "[cse.registration]\ncheck_interval = \"5s\"\n[http]\nlisten = \"127.0.0.1:9001\"\n[logging]\nlevel = \"debug\"\n";
        let reload = running.reload(config(&text)).expect("a valid reload");
        assert_eq!(
            reload.applied,
            ["cse.registrar.address", "cse.registrar.cse_id", "cse.registration.check_interval", "logging.level"]
        );
        assert_eq!(reload.restart_needed, ["http.listen"]);
        let applied = &reload.config;
        assert_eq!(applied.registrar.as_ref().map(|registrar| registrar.cse_id.to_string()), Some("/id-in2".into()));
        assert_eq!(applied.registration.check_interval.as_secs(), 5);
        assert_eq!(applied.log_level, "debug");
        assert_eq!(applied.http.listen.port(), 9000, "a restart-only key keeps its running value");

        // Applied keys are not reported again; the pending restart-only key is.
        let again = applied.reload(config(&text)).expect("the same file again");
        assert!(again.applied.is_empty(), "{:?}", again.applied);
        assert_eq!(again.restart_needed, ["http.listen"]);
    }

    #[test]
    fn a_removed_key_is_a_change_and_an_unchanged_file_changes_nothing() {
        let running = config(&format!("{MN}[cse.registration]\ncheck_interval = \"5s\"\n"));
        let reload = running.reload(config(MN)).expect("valid");
        assert_eq!(reload.applied, ["cse.registration.check_interval"]);
        assert_eq!(reload.config.registration.check_interval.as_secs(), 60, "back to the default");
        assert!(running.reload(running.clone()).expect("valid").is_empty());
    }

    #[test]
    fn a_new_identity_is_refused_as_a_whole() {
        let running = config(MN);
        let error = running.reload(config(&MN.replace("/id-mn", "/id-mn2"))).expect_err("a new CSE-ID");
        assert_eq!(error.key(), Some("cse.cse_id"));
    }

    #[test]
    fn a_configuration_built_in_code_is_compared_by_section() {
        let running = config(MN);
        let mut settings = Settings::from_toml(MN).expect("valid");
        settings.fingerprints = Fingerprints::default();
        settings.cse.registration.check_interval = std::time::Duration::from_secs(5);
        if let Some(registrar) = settings.cse.registrar.as_mut() {
            registrar.address = vec!["http://127.0.0.1:8081".into()];
        }
        let reload = running.reload(settings.validate().expect("valid")).expect("valid");
        assert_eq!(reload.applied, ["cse.registration", "cse.registrar"]);
        assert_eq!(reload.config.registration.check_interval.as_secs(), 5);
    }

    #[test]
    fn self_credentials_need_a_restart() {
        assert!(!applies_at_run_time("cse.registrar.security.self_token"));
        assert!(!applies_at_run_time("cse.sp.registrar.peer.security.self_password"));
        assert!(applies_at_run_time("cse.registrar.security.token"));
        assert!(applies_at_run_time("cse.sp.registrar.peer.address"));
        assert!(!applies_at_run_time("cse.registrarx"));
        assert!(!applies_at_run_time("http.listen"));
    }
}
