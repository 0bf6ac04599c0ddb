//! Reads a TOML document field by field, collecting every problem instead of stopping at
//! the first one (serde's derive stops at the first), and flags fields nobody asked for.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// One table of the document (the root or a section) being read.
pub struct Section<'a> {
    path: String,
    table: Option<&'a toml::Table>,
    read: BTreeSet<String>,
}

impl<'a> Section<'a> {
    /// The root table.
    pub fn root(table: &'a toml::Table) -> Self {
        Section { path: String::new(), table: Some(table), read: BTreeSet::new() }
    }

    /// A table found elsewhere (an entry of an array of tables), read under `path`.
    fn nested(path: String, table: &'a toml::Table) -> Self {
        Section { path, table: Some(table), read: BTreeSet::new() }
    }

    /// A table nested under `name`; a missing table reads as empty (all defaults).
    pub fn section(&mut self, name: &str, errors: &mut Vec<ConfigError>) -> Section<'a> {
        self.read.insert(name.to_string());
        let path = self.field_path(name);
        let table = match self.table.and_then(|t| t.get(name)) {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(other) => {
                errors.push(ConfigError::new(&path, format!("expected a table, found {}", other.type_str())));
                None
            }
        };
        Section { path, table, read: BTreeSet::new() }
    }

    /// Every table of the array of tables `[[name]]`, each as a section named `name[i]`;
    /// a value of another shape is reported once.
    pub fn tables(&mut self, name: &str, errors: &mut Vec<ConfigError>) -> Vec<Section<'a>> {
        let Some(value) = self.raw(name) else { return Vec::new() };
        let Some(items) = value.as_array() else {
            errors.push(ConfigError::new(name, format!("expected an array of tables ([[{name}]])")));
            return Vec::new();
        };
        let mut sections = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{name}[{i}]");
            match item.as_table() {
                Some(table) => sections.push(Section::nested(path, table)),
                None => errors.push(ConfigError::new(&path, "expected a table".into())),
            }
        }
        sections
    }

    /// The raw value of `name`, if present; marks it as known.
    pub fn raw(&mut self, name: &str) -> Option<&'a toml::Value> {
        self.read.insert(name.to_string());
        self.table.and_then(|t| t.get(name))
    }

    /// Reads `name` as `T`, or `default` when absent; a value of the wrong type is an error.
    pub fn get<T: DeserializeOwned>(&mut self, name: &str, default: T, errors: &mut Vec<ConfigError>) -> T {
        match self.raw(name) {
            None => default,
            Some(value) => match value.clone().try_into::<T>() {
                Ok(v) => v,
                Err(e) => {
                    errors.push(ConfigError::new(&self.field_path(name), first_line(&e.to_string())));
                    default
                }
            },
        }
    }

    /// Reads an optional field.
    pub fn opt<T: DeserializeOwned>(&mut self, name: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
        self.get(name, None::<T>, errors)
    }

    /// The dotted path of a field in this section, for error messages.
    pub fn field_path(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    /// Reports every field in this table that was never read.
    pub fn finish(self, errors: &mut Vec<ConfigError>) {
        let Some(table) = self.table else { return };
        for key in table.keys().filter(|k| !self.read.contains(*k)) {
            errors.push(ConfigError::new(&self.field_path(key), "unknown field".to_string()));
        }
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}
