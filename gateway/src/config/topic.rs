//! Topic templates (`{prefix}/{device}/{group}`) and the names that go into topics.
//!
//! A template is parsed once, validated (known placeholders, no MQTT wildcards) and rendered
//! once per `(device, group)` when the configuration is resolved: the forwarder only looks the
//! finished topic up.

use std::fmt;

/// A placeholder of a topic template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{prefix}`: `payload.prefix`, rendered.
    Prefix,
    /// `{gateway}`: `gateway.name`.
    Gateway,
    /// `{device}`: the device (or synthetic source) name.
    Device,
    /// `{group}`: the poll group (or synthetic group) name.
    Group,
}

impl Placeholder {
    fn name(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Gateway => "gateway",
            Self::Device => "device",
            Self::Group => "group",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [Self::Prefix, Self::Gateway, Self::Device, Self::Group]
            .into_iter()
            .find(|p| p.name() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Placeholder),
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    source: String,
    parts: Vec<Part>,
}

/// Values for the placeholders of a template.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicVars<'a> {
    /// `{prefix}`.
    pub prefix: &'a str,
    /// `{gateway}`.
    pub gateway: &'a str,
    /// `{device}`.
    pub device: &'a str,
    /// `{group}`.
    pub group: &'a str,
}

impl TopicTemplate {
    /// Parses `text`, allowing only the placeholders in `allowed`. The error says what is wrong.
    pub fn parse(text: &str, allowed: &[Placeholder]) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(c) = text.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return Err(format!(
                "must not contain {c:?}: MQTT reserves + and # for subscriptions (and NUL is not allowed)"
            ));
        }
        let names = || {
            allowed
                .iter()
                .map(|p| format!("{{{}}}", p.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!(
                        "unmatched '}}' at byte {}",
                        text.len() - rest.len() + i
                    ));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Text(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let Some(end) = after.find('}') else {
                        return Err("unclosed '{'".into());
                    };
                    let name = &after[..end];
                    match Placeholder::from_name(name).filter(|p| allowed.contains(p)) {
                        Some(p) => parts.push(Part::Var(p)),
                        None => {
                            return Err(format!(
                                "unknown placeholder {{{name}}}; allowed here: {}",
                                names()
                            ));
                        }
                    }
                    rest = &after[end + 1..];
                }
            }
        }
        Ok(Self {
            source: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template uses `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.parts.contains(&Part::Var(p))
    }

    /// The topic for `vars`.
    pub fn render(&self, vars: &TopicVars<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            out.push_str(match part {
                Part::Text(t) => t,
                Part::Var(Placeholder::Prefix) => vars.prefix,
                Part::Var(Placeholder::Gateway) => vars.gateway,
                Part::Var(Placeholder::Device) => vars.device,
                Part::Var(Placeholder::Group) => vars.group,
            });
        }
        out
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Why `name` cannot be one level of an MQTT topic, if it cannot: it must be non-empty and
/// free of `+`, `#`, `/` and NUL.
pub fn topic_level_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    name.chars()
        .find(|c| matches!(c, '+' | '#' | '/' | '\0'))
        .map(|c| {
            format!(
                "{name:?} cannot be used in an MQTT topic: it contains {c:?} (names must not contain + # / or NUL)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Placeholder] = &[
        Placeholder::Prefix,
        Placeholder::Gateway,
        Placeholder::Device,
        Placeholder::Group,
    ];

    #[test]
    fn renders_every_placeholder() {
        let t = TopicTemplate::parse("{prefix}/x/{gateway}/{device}/{group}", ALL).unwrap();
        let vars = TopicVars {
            prefix: "p/q",
            gateway: "gw",
            device: "d",
            group: "g",
        };
        assert_eq!(t.render(&vars), "p/q/x/gw/d/g");
        assert!(t.uses(Placeholder::Device));
    }

    #[test]
    fn rejects_unknown_placeholders_wildcards_and_stray_braces() {
        let e = TopicTemplate::parse("{prefix}/{devcie}", ALL).unwrap_err();
        assert!(e.contains("unknown placeholder {devcie}"), "{e}");
        let e = TopicTemplate::parse("{device}", &[Placeholder::Gateway]).unwrap_err();
        assert!(e.contains("allowed here: {gateway}"), "{e}");
        assert!(TopicTemplate::parse("a/+/b", ALL).is_err());
        assert!(TopicTemplate::parse("a/#", ALL).is_err());
        assert!(TopicTemplate::parse("a/{device", ALL).is_err());
        assert!(TopicTemplate::parse("a/}", ALL).is_err());
        assert!(TopicTemplate::parse("", ALL).is_err());
    }

    #[test]
    fn topic_levels_refuse_separators_and_wildcards() {
        assert!(topic_level_problem("press-1").is_none());
        for bad in ["", "a/b", "a+", "#", "a\0"] {
            assert!(topic_level_problem(bad).is_some(), "{bad:?}");
        }
    }
}
