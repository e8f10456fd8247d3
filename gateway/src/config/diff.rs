//! What a reload changes: the running configuration against the new one, per source and for
//! the sink, and which changes only a restart can apply.
//!
//! Pure: no I/O. The daemon applies the result (`crate::daemon`): it restarts only the
//! adapters whose job changed, gives a drain task a new catalog when only names or topics
//! changed, and reconfigures the sink only if `[mqtt]` changed. Everything else keeps running
//! untouched: same ring, same adapter process, same broker connection.

use std::fmt;

use super::resolved::ResolvedConfig;

/// The difference between the running configuration and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Sources only in the new configuration.
    pub added: Vec<String>,
    /// Sources in both whose plan differs (devices, tags, intervals, topics, record ids).
    pub changed: Vec<String>,
    /// Sources only in the running configuration.
    pub removed: Vec<String>,
    /// Sources in both, identical.
    pub unchanged: Vec<String>,
    /// `[mqtt]` differs, or a file it names changed (see `sink_files_changed`): the sink is
    /// rebuilt.
    pub sink_changed: bool,
    /// Keys of `[mqtt]` whose file (same path) has new content: `mqtt.password_file`,
    /// `mqtt.tls.*`. Not found by [`ConfigDiff::between`], which does no I/O: the reload
    /// loader reads the files and fills this in ([`ConfigDiff::note_changed_files`]).
    pub sink_files_changed: Vec<&'static str>,
    /// `[metrics]` differs (address, port, on/off): the endpoint is rebound.
    pub metrics_changed: bool,
    /// `[payload]` batching (`max_batch`, `linger_ms`) differs: every drain task gets the new
    /// bounds (adapters are not restarted for it).
    pub batching_changed: bool,
    /// Keys whose change only a restart can apply; a reload that changes any of them is
    /// refused as a whole (the running configuration stays).
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// Compares the running configuration `old` with `new`.
    pub fn between(old: &ResolvedConfig, new: &ResolvedConfig) -> Self {
        let mut d = Self::default();
        for s in &new.sources {
            match old.source(&s.name) {
                None => d.added.push(s.name.clone()),
                Some(o) if o == s => d.unchanged.push(s.name.clone()),
                Some(_) => d.changed.push(s.name.clone()),
            }
        }
        for s in &old.sources {
            if new.source(&s.name).is_none() {
                d.removed.push(s.name.clone());
            }
        }
        d.sink_changed = old.mqtt != new.mqtt;
        d.metrics_changed = old.metrics != new.metrics;
        let (og, ng) = (&old.gateway, &new.gateway);
        let (op, np) = (&old.payload, &new.payload);
        d.batching_changed = op.max_batch != np.max_batch || op.linger != np.linger;
        let checks: [(&'static str, bool); 6] = [
            // The gateway's name is in every payload, its epoch store in the state directory.
            ("gateway.name", og.name != ng.name),
            ("gateway.state_dir", og.state_dir != ng.state_dir),
            (
                "gateway.ring_capacity",
                og.ring_capacity != ng.ring_capacity,
            ),
            // Held from the start, before the runtime (`cli::run`).
            (
                "gateway.cpu_wake_latency_us",
                og.cpu_wake_latency != ng.cpu_wake_latency,
            ),
            ("spool", old.spool != new.spool),
            ("payload.format", op.format != np.format),
        ];
        d.needs_restart = checks
            .into_iter()
            .filter_map(|(k, differs)| differs.then_some(k))
            .collect();
        d
    }

    /// Records that the files of `keys` have new content: the sink is rebuilt for them.
    pub fn note_changed_files(&mut self, keys: Vec<&'static str>) {
        self.sink_changed |= !keys.is_empty();
        self.sink_files_changed = keys;
    }

    /// Whether the new configuration differs at all.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && !self.sink_changed
            && !self.batching_changed
            && !self.metrics_changed
            && self.needs_restart.is_empty()
    }
}

impl fmt::Display for ConfigDiff {
    /// `added [a], changed [b], removed [c], sink reconfigured` (only what applies), or
    /// `no change`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [
            ("added", &self.added),
            ("changed", &self.changed),
            ("removed", &self.removed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{what} [{}]", list.join(", ")));
            }
        }
        if self.sink_changed && self.sink_files_changed.is_empty() {
            parts.push("sink reconfigured".into());
        } else if self.sink_changed {
            // Names the keys only: a file's content (a password) is never shown.
            parts.push(format!(
                "sink reconfigured ({} changed)",
                self.sink_files_changed.join(", ")
            ));
        }
        if self.metrics_changed {
            parts.push("metrics endpoint changed".into());
        }
        if self.batching_changed {
            parts.push("batching changed".into());
        }
        if !self.needs_restart.is_empty() {
            parts.push(format!(
                "needs a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
name = "gw"
state_dir = "/var/lib/edge-gateway"

[mqtt]
host = "127.0.0.1"

[[devices]]
name = "plc-a"
protocol = "modbus-tcp"
address = "127.0.0.1:5020"

[[devices.groups]]
name = "fast"
interval_ms = 100
tags = [{ name = "t1", table = "holding-register", address = 0, type = "u16" }]

[[devices]]
name = "plc-b"
protocol = "modbus-tcp"
address = "127.0.0.1:5021"

[[devices.groups]]
name = "slow"
interval_ms = 1000
tags = [{ name = "t1", table = "holding-register", address = 0, type = "u16" }]

[[synthetic]]
name = "sim"
group = "signals"
tags = [{ name = "a", signal = "counter", rate_hz = 10.0 }]
"#;

    fn cfg(text: &str) -> ResolvedConfig {
        crate::config::parse(text, "/etc/edge-gateway/gateway.toml").unwrap()
    }

    #[test]
    fn the_same_file_is_no_change() {
        let d = ConfigDiff::between(&cfg(BASE), &cfg(BASE));
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.unchanged, ["plc-a", "plc-b", "sim"]);
        assert_eq!(d.to_string(), "no change");
    }

    #[test]
    fn an_added_tag_and_a_changed_interval_change_only_their_source() {
        let new = BASE
            .replace(
                r#"tags = [{ name = "t1", table = "holding-register", address = 0, type = "u16" }]

[[devices]]
name = "plc-b""#,
                r#"tags = [{ name = "t1", table = "holding-register", address = 0, type = "u16" },
        { name = "t2", table = "holding-register", address = 1, type = "u16" }]

[[devices]]
name = "plc-b""#,
            )
            .replace("interval_ms = 1000", "interval_ms = 500");
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&new));
        assert_eq!(d.changed, ["plc-a", "plc-b"]);
        assert_eq!(d.unchanged, ["sim"]);
        assert!(d.added.is_empty() && d.removed.is_empty());
        assert!(!d.sink_changed && d.needs_restart.is_empty());
    }

    #[test]
    fn a_removed_last_device_and_a_new_synthetic_source_are_remove_and_add() {
        let cut = BASE.find("[[devices]]\nname = \"plc-b\"").unwrap();
        let sim = BASE.find("[[synthetic]]").unwrap();
        let new = format!(
            "{}{}\n[[synthetic]]\nname = \"sim2\"\ngroup = \"g\"\ntags = [{{ name = \"x\", signal = \"ramp\", rate_hz = 1.0 }}]\n",
            &BASE[..cut],
            &BASE[sim..]
        );
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&new));
        assert_eq!(d.removed, ["plc-b"]);
        assert_eq!(d.added, ["sim2"]);
        // plc-b was the device before the synthetic sources' numbering? No: synthetic ids have
        // their own base, so sim keeps its id and stays unchanged.
        assert_eq!(d.unchanged, ["plc-a", "sim"]);
        assert_eq!(
            d.to_string(),
            "added [sim2], removed [plc-b]",
            "what the log line says"
        );
    }

    #[test]
    fn broker_settings_reconfigure_the_sink_and_state_keys_need_a_restart() {
        let new = BASE
            .replace(
                "host = \"127.0.0.1\"",
                "host = \"127.0.0.1\"\nkeepalive_s = 5",
            )
            .replace("name = \"gw\"", "name = \"gw2\"\ncpu_wake_latency_us = 0")
            .replace(
                "[[devices]]\nname = \"plc-a\"",
                "[spool]\nmax_bytes = 1048576\n\n[[devices]]\nname = \"plc-a\"",
            );
        let d = ConfigDiff::between(&cfg(BASE), &cfg(&new));
        assert!(d.sink_changed);
        assert_eq!(
            d.needs_restart,
            ["gateway.name", "gateway.cpu_wake_latency_us", "spool"]
        );
    }

    #[test]
    fn a_changed_metrics_section_and_a_changed_password_file_are_reloadable_changes() {
        let with = |metrics: &str| {
            format!(
                "{BASE}
{metrics}"
            )
        };
        let d = ConfigDiff::between(
            &cfg(&with(
                "[metrics]
port = 0
",
            )),
            &cfg(&with(
                "[metrics]
port = 9500
",
            )),
        );
        assert!(d.metrics_changed && d.needs_restart.is_empty() && !d.sink_changed);
        assert_eq!(d.to_string(), "metrics endpoint changed");
        let d = ConfigDiff::between(
            &cfg(BASE),
            &cfg(&with(
                "[metrics]
enabled = false
",
            )),
        );
        assert!(
            !d.metrics_changed,
            "no table and a disabled table both mean no endpoint"
        );

        let mut d = ConfigDiff::between(&cfg(BASE), &cfg(BASE));
        d.note_changed_files(vec!["mqtt.password_file"]);
        assert!(d.sink_changed && !d.is_empty());
        assert_eq!(
            d.to_string(),
            "sink reconfigured (mqtt.password_file changed)"
        );
        let mut d = ConfigDiff::between(&cfg(BASE), &cfg(BASE));
        d.note_changed_files(Vec::new());
        assert!(d.is_empty(), "{d}");
    }
}
