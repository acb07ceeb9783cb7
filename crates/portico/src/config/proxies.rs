//! `[proxies]`: acting for someone else — where a proxy's access level comes from, the
//! minors rule and which security labels are withheld from proxies. The rules are
//! documented on [`portico_access::delegation`]; the defaults are
//! [`DelegationRules::default`].

use std::collections::BTreeMap;

use portico_access::delegation::{AccessLevel, DelegationRules, Label};
use serde::Deserialize;

/// `[proxies]`. Every key is optional; a missing one keeps its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxiesConfig {
    /// The `RelatedPerson` extension URL whose `valueCode` (`full`, `read-only`,
    /// `billing-only`) is the proxy's level, when the EHR records one.
    pub level_extension: Option<String>,
    /// `RelatedPerson.relationship` code → level, when there is no extension. Replaces
    /// the default table when given.
    pub levels: Option<BTreeMap<String, String>>,
    /// The level of a relationship with neither (default `read-only`).
    pub default_level: Option<String>,
    /// The relationship codes that are a parent's (for the minors rule).
    pub parent_relationships: Option<Vec<String>>,
    /// Parents of a child younger than this see the labels in
    /// `released_to_parents_of_young_children` (default 12).
    pub full_proxy_under: Option<u32>,
    /// A parent's access ends on this birthday unless granted again after it
    /// (default 18).
    pub adult_at: Option<u32>,
    /// `system|code` security labels withheld from every proxy.
    pub sensitive: Option<Vec<String>>,
    /// `system|code` labels released to parents of young children.
    pub released_to_parents_of_young_children: Option<Vec<String>>,
}

impl ProxiesConfig {
    /// The rules, or the problems with the keys.
    pub fn rules(&self) -> Result<DelegationRules, Vec<String>> {
        let mut rules = DelegationRules::default();
        let mut problems = Vec::new();
        let level = |key: &str, value: &str, problems: &mut Vec<String>| {
            AccessLevel::parse(value).or_else(|| {
                problems.push(format!(
                    "config key `proxies.{key}`: `{value}` is not a level \
                     (full, read-only, billing-only)"
                ));
                None
            })
        };
        let labels = |key: &str, values: &[String], problems: &mut Vec<String>| {
            values
                .iter()
                .filter_map(|v| {
                    Label::parse(v).or_else(|| {
                        problems.push(format!(
                            "config key `proxies.{key}`: `{v}` is not a `system|code` label"
                        ));
                        None
                    })
                })
                .collect::<Vec<_>>()
        };
        if let Some(url) = &self.level_extension {
            rules.level_extension = url.clone();
        }
        if let Some(levels) = &self.levels {
            rules.levels = levels
                .iter()
                .filter_map(|(code, v)| Some((code.clone(), level("levels", v, &mut problems)?)))
                .collect();
        }
        if let Some(v) = &self.default_level
            && let Some(l) = level("default_level", v, &mut problems)
        {
            rules.default_level = l;
        }
        if let Some(codes) = &self.parent_relationships {
            rules.parent_relationships = codes.clone();
        }
        if let Some(age) = self.full_proxy_under {
            rules.full_proxy_under = age;
        }
        if let Some(age) = self.adult_at {
            rules.adult_at = age;
        }
        if rules.full_proxy_under > rules.adult_at {
            problems.push(
                "config key `proxies.full_proxy_under`: must not be above `adult_at`".to_owned(),
            );
        }
        if let Some(v) = &self.sensitive {
            rules.sensitive = labels("sensitive", v, &mut problems);
        }
        if let Some(v) = &self.released_to_parents_of_young_children {
            rules.released_to_parents_of_young_children =
                labels("released_to_parents_of_young_children", v, &mut problems);
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems)
        }
    }

    pub(super) fn validate(&self, problems: &mut Vec<String>) {
        if let Err(mut found) = self.rules() {
            problems.append(&mut found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn parse(text: &str) -> ProxiesConfig {
        Figment::new().merge(Toml::string(text)).extract().unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let rules = ProxiesConfig::default().rules().unwrap();
        assert_eq!(rules, DelegationRules::default());
        let config = parse(
            r#"
            default_level = "billing-only"
            adult_at = 19
            sensitive = ["urn:x|A"]
            [levels]
            FRND = "full"
            "#,
        );
        let rules = config.rules().unwrap();
        assert_eq!(rules.default_level, AccessLevel::BillingOnly);
        assert_eq!(rules.adult_at, 19);
        assert_eq!(rules.sensitive, vec![Label::new("urn:x", "A")]);
        assert_eq!(rules.levels.len(), 1);
    }

    #[test]
    fn problems_are_named() {
        let config = parse(
            r#"
            default_level = "everything"
            sensitive = ["nobar"]
            full_proxy_under = 30
            "#,
        );
        let problems = config.rules().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("proxies.default_level")));
        assert!(problems.iter().any(|p| p.contains("proxies.sensitive")));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("proxies.full_proxy_under"))
        );
    }
}
