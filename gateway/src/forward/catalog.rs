//! What the forwarder knows about a source: where each record goes (device, group, topic) and
//! what its tag is called, prepared once per configuration so the hot path only indexes.

use edgegw_ringbuf::TelemetryRecord;

use super::encode::json_string;

/// Routing of one `(device, group)` of a source: its topic and the names in its payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRoute {
    /// MQTT topic (or Kafka key) of the group's batches.
    pub topic: String,
    /// Device name, as a JSON string literal.
    pub device_json: Box<str>,
    /// Group name, as a JSON string literal.
    pub group_json: Box<str>,
}

/// One tag as the forwarder sees it.
#[derive(Debug, Clone, PartialEq)]
struct TagRoute {
    group: u32,
    name_json: Box<str>,
}

/// Everything the forwarder needs to route and name the records of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCatalog {
    /// Source name.
    pub name: String,
    /// Source name, as a JSON string literal.
    pub name_json: Box<str>,
    /// Groups; the last one collects records whose tag the configuration does not know.
    pub groups: Vec<GroupRoute>,
    /// Per record `source_id` (a device of this source): tags indexed by `tag_id`.
    devices: Vec<(u32, Vec<Option<TagRoute>>)>,
}

/// Builds a [`SourceCatalog`].
#[derive(Debug)]
pub struct CatalogBuilder {
    catalog: SourceCatalog,
    unknown_topic: String,
}

impl CatalogBuilder {
    /// Starts the catalog of source `name`; records of unknown tags go to `unknown_topic`.
    pub fn new(name: &str, unknown_topic: String) -> Self {
        Self {
            catalog: SourceCatalog {
                name: name.to_owned(),
                name_json: json_string(name),
                groups: Vec::new(),
                devices: Vec::new(),
            },
            unknown_topic,
        }
    }

    /// Adds a group and returns its index.
    pub fn group(&mut self, device: &str, group: &str, topic: String) -> u32 {
        self.catalog.groups.push(GroupRoute {
            topic,
            device_json: json_string(device),
            group_json: json_string(group),
        });
        (self.catalog.groups.len() - 1) as u32
    }

    /// Adds a tag: records with `source_id` (the record field) and `tag_id` belong to `group`.
    pub fn tag(&mut self, source_id: u32, tag_id: u32, group: u32, name: &str) {
        let devices = &mut self.catalog.devices;
        let i = match devices.iter().position(|(s, _)| *s == source_id) {
            Some(i) => i,
            None => {
                devices.push((source_id, Vec::new()));
                devices.len() - 1
            }
        };
        let tags = &mut devices[i].1;
        let t = tag_id as usize;
        if tags.len() <= t {
            tags.resize(t + 1, None);
        }
        tags[t] = Some(TagRoute {
            group,
            name_json: json_string(name),
        });
    }

    /// The finished catalog.
    pub fn build(mut self) -> SourceCatalog {
        let source = self.catalog.name.clone();
        self.group(&source, "_unknown", self.unknown_topic.clone());
        self.catalog
    }
}

impl SourceCatalog {
    fn route(&self, r: &TelemetryRecord) -> Option<&TagRoute> {
        let (_, tags) = self.devices.iter().find(|(s, _)| *s == r.source_id)?;
        tags.get(r.tag_id as usize)?.as_ref()
    }

    /// Group index of a record (the unknown-tag group if the configuration does not know it).
    #[inline]
    pub fn group_of(&self, r: &TelemetryRecord) -> u32 {
        self.route(r).map_or(self.unknown_group(), |t| t.group)
    }

    /// Tag name of a record as a JSON string literal.
    #[inline]
    pub fn tag_name(&self, r: &TelemetryRecord) -> Option<&str> {
        self.route(r).map(|t| &*t.name_json)
    }

    /// Index of the group that collects records of unknown tags.
    pub fn unknown_group(&self) -> u32 {
        (self.groups.len() - 1) as u32
    }
}
