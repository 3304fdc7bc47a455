//! WebGroup catalogs read from their text, for the analyses that need to know what a
//! destination is (exfiltration-capable, an AI provider) rather than only what a policy calls
//! it. The catalog files under `configs/webgroups/` are the source; the commands embed them.

use std::collections::BTreeMap;

use crate::name::NamePattern;

/// One catalog: its groups and their patterns, in file order of the group names (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// The catalog's `version`, as text.
    pub version: String,
    /// Group name to patterns.
    pub groups: BTreeMap<String, Vec<NamePattern>>,
}

/// A pattern of a catalog group that overlaps a pattern under question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogHit {
    /// The catalog group.
    pub group: String,
    /// Its pattern.
    pub pattern: String,
}

impl Catalog {
    /// Reads a catalog file's text (`version`, `description`, `[webgroups.NAME] domains`).
    /// Address groups and other keys are ignored; a pattern that does not parse is an error,
    /// as in a policy.
    pub fn parse(text: &str) -> Result<Catalog, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("invalid TOML: {e}"))?;
        let version = match table.get("version") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(toml::Value::Integer(i)) => i.to_string(),
            _ => String::new(),
        };
        let mut groups = BTreeMap::new();
        if let Some(webgroups) = table.get("webgroups").and_then(|w| w.as_table()) {
            for (name, group) in webgroups {
                let domains = group
                    .get("domains")
                    .and_then(|d| d.as_array())
                    .ok_or_else(|| format!("webgroup `{name}` has no domains array"))?;
                let mut patterns = Vec::with_capacity(domains.len());
                for d in domains {
                    let text = d
                        .as_str()
                        .ok_or_else(|| format!("webgroup `{name}`: domains must be strings"))?;
                    patterns.push(
                        NamePattern::parse(text)
                            .map_err(|e| format!("webgroup `{name}`: `{text}`: {e}"))?,
                    );
                }
                groups.insert(name.clone(), patterns);
            }
        }
        Ok(Catalog { version, groups })
    }

    /// Catalog patterns that share at least one name with `pattern`, each named once, with
    /// the smallest group that holds it (a union group such as `exfil-all` only when no other
    /// group does).
    pub fn overlapping(&self, pattern: &NamePattern) -> Vec<CatalogHit> {
        let mut hits: Vec<(usize, CatalogHit)> = Vec::new();
        for (group, patterns) in &self.groups {
            for p in patterns {
                if overlap(pattern, p) {
                    hits.push((
                        patterns.len(),
                        CatalogHit {
                            group: group.clone(),
                            pattern: p.as_str().to_owned(),
                        },
                    ));
                }
            }
        }
        hits.sort_by(|a, b| a.1.pattern.cmp(&b.1.pattern).then(a.0.cmp(&b.0)));
        hits.dedup_by(|a, b| a.1.pattern == b.1.pattern);
        hits.into_iter().map(|(_, h)| h).collect()
    }

    /// The catalog groups matching a normalised name, smallest group first (the most specific
    /// description of the name), then by group name.
    pub fn groups_matching(&self, name: &str) -> Vec<&str> {
        let mut found: Vec<(&str, usize)> = self
            .groups
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| p.matches(name)))
            .map(|(g, ps)| (g.as_str(), ps.len()))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        found.into_iter().map(|(g, _)| g).collect()
    }
}

/// A name that `pattern` matches: each `*` replaced by one label. For a leading `*.` that is
/// one name of the infinitely many below; enough to test overlap with another pattern whose
/// fixed labels decide.
fn example_name(pattern: &NamePattern) -> String {
    pattern
        .as_str()
        .split('.')
        .map(|l| if l == "*" { "x0" } else { l })
        .collect::<Vec<_>>()
        .join(".")
}

/// Whether two patterns match a common name. Exact for exact names and for patterns whose
/// wildcards sit in the same places; for the rare shapes where both have wildcards in
/// different places it answers from one example name each, which may miss an overlap.
pub fn overlap(a: &NamePattern, b: &NamePattern) -> bool {
    a.matches(&example_name(b)) || b.matches(&example_name(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_overlaps() {
        let c = Catalog::parse(
            r#"version = "1"
[webgroups.gcs]
domains = ["storage.googleapis.com", "*.storage.googleapis.com"]
[webgroups.paste]
domains = ["pastebin.com"]
"#,
        )
        .unwrap();
        assert_eq!(c.version, "1");
        let p = |s: &str| NamePattern::parse(s).unwrap();
        assert_eq!(c.overlapping(&p("pastebin.com")).len(), 1);
        assert_eq!(c.overlapping(&p("b1.storage.googleapis.com")).len(), 1);
        assert_eq!(c.overlapping(&p("*.pastebin.com")).len(), 0);
        assert!(c.overlapping(&p("api.openai.com")).is_empty());
        assert_eq!(c.groups_matching("x.storage.googleapis.com"), vec!["gcs"]);
        assert!(Catalog::parse("[webgroups.a]\ndomains = [\"*.com\"]").is_err());
        assert!(Catalog::parse("not toml = ").is_err());
    }
}
