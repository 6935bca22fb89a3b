//! The `key=value` settings the core passes to `create`.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A plugin's settings. Besides the user's own `plugin_settings`, the core always sends
/// `num_threads` (0: the plugin decides) and, when AUTO is choosing, `auto=1` (a plugin that
/// is only worth it on a real accelerator then says BACKEND_UNAVAILABLE without one).
///
/// Take what the plugin knows with [`Settings::take`], then call [`Settings::finish`]: a key
/// nobody took is an error naming it, so a misspelt setting is never silently ignored.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
    known: Vec<&'static str>,
}

/// Keys the core sends every plugin; [`Settings::finish`] never complains about them.
const CORE_KEYS: [&str; 2] = ["num_threads", "auto"];

impl Settings {
    /// Settings from `key=value` strings; a later value of a key replaces an earlier one.
    pub fn new<'s>(pairs: impl IntoIterator<Item = &'s str>) -> Result<Settings> {
        let mut values = BTreeMap::new();
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::backend_unavailable(format!(
                    "setting {pair:?} is not key=value"
                )));
            };
            values.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(Settings {
            values,
            known: Vec::new(),
        })
    }

    /// Reads the NULL-terminated array the core passes.
    ///
    /// # Safety
    /// `settings` must be NULL or a NULL-terminated array of NUL-terminated strings.
    pub unsafe fn from_raw(settings: *const *const c_char) -> Result<Settings> {
        let mut pairs = Vec::new();
        if !settings.is_null() {
            for index in 0.. {
                // SAFETY: the array is NULL-terminated, and we stop at the terminator.
                let item = unsafe { *settings.add(index) };
                if item.is_null() {
                    break;
                }
                // SAFETY: each entry is a NUL-terminated string.
                let text = unsafe { CStr::from_ptr(item) };
                pairs.push(text.to_str().map_err(|_| {
                    Error::backend_unavailable(format!("setting {text:?} is not UTF-8"))
                })?);
            }
        }
        Settings::new(pairs)
    }

    /// The value of `key`, if set (an empty value counts as unset), marking the key as known.
    pub fn take(&mut self, key: &'static str) -> Option<String> {
        self.known.push(key);
        self.values.remove(key).filter(|value| !value.is_empty())
    }

    /// The value of `key` parsed as `T`; a value that does not parse is an error naming it.
    pub fn take_parsed<T: FromStr>(&mut self, key: &'static str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.take(key)
            .map(|value| {
                value.parse::<T>().map_err(|e| {
                    Error::backend_unavailable(format!("setting {key}={value:?}: {e}"))
                })
            })
            .transpose()
    }

    /// `num_threads` as the core sent it: 0 lets the plugin decide.
    pub fn num_threads(&mut self) -> Result<usize> {
        Ok(self.take_parsed("num_threads")?.unwrap_or(0))
    }

    /// Whether AUTO is choosing (`auto=1`).
    pub fn auto(&mut self) -> Result<bool> {
        Ok(self.take_parsed::<u8>("auto")?.unwrap_or(0) != 0)
    }

    /// Fails on any key not taken, naming the keys this plugin knows.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<&String> = self
            .values
            .keys()
            .filter(|key| !CORE_KEYS.contains(&key.as_str()))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<&str> = self
            .known
            .iter()
            .copied()
            .filter(|key| !CORE_KEYS.contains(key))
            .collect();
        known.sort_unstable();
        known.dedup();
        Err(Error::backend_unavailable(format!(
            "unknown setting{} {} (this backend knows: {})",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|key| key.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn settings_take_parse_and_refuse_unknown_keys() {
        let mut settings = Settings::new(["adapter=NVIDIA", "num_threads=3", "auto=1"]).unwrap();
        assert_eq!(settings.take("adapter").as_deref(), Some("NVIDIA"));
        assert_eq!(settings.num_threads().unwrap(), 3);
        assert!(settings.auto().unwrap());
        settings.finish().unwrap();

        let mut settings = Settings::new(["adaptor=x", "num_threads=1"]).unwrap();
        assert_eq!(settings.take("adapter"), None);
        let error = settings.finish().unwrap_err();
        assert!(error.message().contains("adaptor"), "{error}");
        assert!(error.message().contains("knows: adapter"), "{error}");

        assert!(Settings::new(["no equals sign"]).is_err());
        let mut settings = Settings::new(["num_threads=many"]).unwrap();
        assert!(settings.num_threads().is_err());
    }
}
