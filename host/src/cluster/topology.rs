//! # Sub-topologies and repartition topics
//!
//! How a cluster cuts a job into the parts its tasks run (Kafka Streams'
//! sub-topologies). A keyed edge whose input is not already partitioned by its key is
//! **cut**: the part upstream of it writes each record to an internal repartition
//! topic, `<job>-<operator>-repartition` (`-2-repartition` for a second input), into
//! the partition of the record's key-group range (as many partitions as the keyed
//! operator's parallelism), and the part downstream reads that topic. Every other edge
//! stays an in-process channel. Each part is a **stage**; a stage's tasks follow the
//! partitions of its *lead topic* (the Kafka input for the first stage, its first
//! repartition topic for the others), so that every key group lives in exactly one
//! task.
//!
//! An edge straight from the Kafka source is not cut when the source keys records by
//! their Kafka key (no `key_field`): Kafka's partitioner already put every record of a
//! key in one partition, so one task sees all of a key's records.
//!
//! Records on a repartition topic carry their producer (the writing task) and a
//! sequence number in headers; the reading task keeps the last sequence per producer in
//! its checkpoints and drops what it has seen, so a producer that restores from a
//! checkpoint and writes its records again duplicates nothing (see [`RepartitionRead`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::job::JobSpec;
use crate::job::spec::{EdgeSpec, KafkaDelivery, KafkaSinkSpec, KafkaSourceSpec, SinkSpec, SourceSpec, StartPosition};
use crate::stream::Partitioning;

/// Header naming the task that wrote a repartition record.
pub const PRODUCER_HEADER: &str = "weir-producer";
/// Header with the record's sequence number among its producer's records.
pub const SEQUENCE_HEADER: &str = "weir-seq";

/// How a Kafka sink writes a repartition topic: into the partition of each record's key
/// group range, stamping producer and sequence headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepartitionWrite {
    /// This task's producer number (unique across the job's tasks).
    pub producer: u32,
    /// The topic's partitions: the keyed operator's parallelism.
    pub partitions: u32,
    pub max_parallelism: u32,
}

impl RepartitionWrite {
    /// The partition of `key`: the operator subtask its key group belongs to.
    pub fn partition(&self, key: &[u8]) -> i32 {
        let group = crate::keygroup::assign_key_group(key, self.max_parallelism);
        crate::keygroup::subtask_for_key_group(group, self.max_parallelism, self.partitions) as i32
    }
}

/// How a Kafka source reads a repartition topic: the records of each producer are a
/// split of their own (with its own watermark, so a producer that is behind holds event
/// time back, as an input channel does in Flink), and records at or below the last
/// sequence seen from their producer are duplicates and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepartitionRead {
    /// The producers that write the topic.
    pub producers: Vec<u32>,
    /// What the source has passed on so far, for its member to see (a cluster
    /// savepoint waits until a later stage has read everything the earlier one wrote).
    pub seen: SeenSequences,
}

impl RepartitionRead {
    pub fn new(producers: Vec<u32>) -> RepartitionRead {
        let seen = SeenSequences(Arc::new(producers.iter().map(|&p| (p, AtomicU64::new(0))).collect()));
        RepartitionRead { producers, seen }
    }
}

/// The last sequence number a repartition source has passed on, per producer, shared
/// between the source (which sets it) and its member (which reads it). Not part of a
/// spec's identity: any two compare equal.
#[derive(Clone, Default)]
pub struct SeenSequences(Arc<BTreeMap<u32, AtomicU64>>);

impl SeenSequences {
    /// Records that the source passed on `sequence` of `producer`.
    pub fn set(&self, producer: u32, sequence: u64) {
        if let Some(seen) = self.0.get(&producer) {
            seen.store(sequence, Ordering::Release);
        }
    }

    /// The last sequence passed on of `producer` (0: none).
    pub fn get(&self, producer: u32) -> u64 {
        self.0.get(&producer).map_or(0, |s| s.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for SeenSequences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|(p, s)| (p, s.load(Ordering::Relaxed)))).finish()
    }
}

impl PartialEq for SeenSequences {
    fn eq(&self, _: &SeenSequences) -> bool {
        true
    }
}

impl Eq for SeenSequences {}

/// A topology that cannot run as a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TopologyError(String);

/// An internal topic between two stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepartitionTopic {
    pub name: String,
    /// The keyed operator it feeds, and which of its inputs.
    pub to: String,
    pub input: u8,
    pub partitions: u32,
    /// The stages that write it.
    writers: BTreeSet<usize>,
    /// The stage that reads it.
    reader: usize,
}

/// A part of the job run by one task per partition of its lead topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The uids of its sources, operators and sinks.
    nodes: BTreeSet<String>,
    /// The topic whose partitions are its tasks.
    pub lead_topic: String,
    /// How many tasks (partitions of the lead topic).
    pub tasks: u32,
    /// The producer number of its task 0 (task `n` is `first_producer + n`).
    first_producer: u32,
}

/// The job cut into stages.
#[derive(Debug, Clone)]
pub struct Topology {
    spec: JobSpec,
    pub stages: Vec<Stage>,
    pub topics: Vec<RepartitionTopic>,
    /// Edges (by index in the job's edges) that go through a repartition topic.
    cut: BTreeSet<usize>,
}

impl Topology {
    /// Cuts `spec` (whose single source is `source`, a Kafka source with
    /// `input_partitions` partitions in its first topic).
    pub fn new(spec: &JobSpec, source: &KafkaSourceSpec, input_partitions: u32) -> Result<Topology, TopologyError> {
        let error = |message: String| TopologyError(message);
        let cut: BTreeSet<usize> = spec
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| spec.partitioning(e) == Partitioning::Keyed)
            .filter(|(_, e)| !(e.from == source.uid && source.key_field.is_none()))
            .map(|(i, _)| i)
            .collect();
        // Connected parts over the edges that stay channels.
        let uids: Vec<String> = spec
            .sources
            .iter()
            .map(|s| s.uid().to_string())
            .chain(spec.operators.iter().map(|o| o.uid.clone()))
            .chain(spec.sinks.iter().map(|s| s.uid().to_string()))
            .collect();
        let mut parent: BTreeMap<&str, &str> = uids.iter().map(|u| (u.as_str(), u.as_str())).collect();
        fn root<'a>(parent: &BTreeMap<&'a str, &'a str>, mut at: &'a str) -> &'a str {
            while parent[at] != at {
                at = parent[at];
            }
            at
        }
        for (i, edge) in spec.edges.iter().enumerate() {
            if !cut.contains(&i) {
                let (a, b) = (root(&parent, &edge.from), root(&parent, &edge.to));
                if a != b {
                    parent.insert(b, a);
                }
            }
        }
        let mut parts: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for uid in &uids {
            parts.entry(root(&parent, uid)).or_default().insert(uid.clone());
        }
        // The source's part first, then the others in the order their first node is
        // declared.
        let mut ordered: Vec<BTreeSet<String>> = Vec::new();
        let source_root = root(&parent, &source.uid);
        ordered.push(parts.remove(source_root).expect("the source is a node"));
        for uid in &uids {
            if let Some(part) = parts.remove(root(&parent, uid)) {
                ordered.push(part);
            }
        }
        let stage_of = |uid: &str| ordered.iter().position(|p| p.contains(uid)).expect("every node is in a part");
        // One topic per keyed input that a cut edge feeds.
        let mut topics: Vec<RepartitionTopic> = Vec::new();
        for &i in &cut {
            let edge = &spec.edges[i];
            let input = edge.input.unwrap_or(1);
            let (reader, writer) = (stage_of(&edge.to), stage_of(&edge.from));
            if reader == 0 {
                return Err(error(format!(
                    "operator `{}` would read both the Kafka input and a repartition topic (through the keyed \
                     edge from `{}`); a cluster cannot split that",
                    edge.to, edge.from
                )));
            }
            match topics.iter_mut().find(|t| t.to == edge.to && t.input == input) {
                Some(topic) => {
                    topic.writers.insert(writer);
                }
                None => {
                    let parallelism = spec.node(&edge.to).map_or(1, |n| n.1);
                    let suffix = if input == 2 { "-2" } else { "" };
                    topics.push(RepartitionTopic {
                        name: format!("{}-{}{suffix}-repartition", spec.name, edge.to),
                        to: edge.to.clone(),
                        input,
                        partitions: parallelism,
                        writers: BTreeSet::from([writer]),
                        reader,
                    });
                }
            }
        }
        let mut stages = Vec::new();
        let mut first_producer = 0;
        for (index, nodes) in ordered.into_iter().enumerate() {
            let (lead_topic, tasks) = if index == 0 {
                (source.topics[0].clone(), input_partitions)
            } else {
                let inputs: Vec<&RepartitionTopic> = topics.iter().filter(|t| t.reader == index).collect();
                let Some(lead) = inputs.first() else {
                    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
                    return Err(error(format!("`{}` is not connected to the job's source", names.join("`, `"))));
                };
                if let Some(other) = inputs.iter().find(|t| t.partitions != lead.partitions) {
                    return Err(error(format!(
                        "keyed operators `{}` and `{}` run in the same part of the job but have different \
                         parallelism ({} and {}); their repartition topics must have the same partitions",
                        lead.to, other.to, lead.partitions, other.partitions
                    )));
                }
                (lead.name.clone(), lead.partitions)
            };
            stages.push(Stage { nodes, lead_topic, tasks, first_producer });
            first_producer += tasks;
        }
        for topic in &topics {
            if topic.writers.iter().any(|&w| w >= topic.reader) {
                return Err(error(format!(
                    "the keyed edges into `{}` form a cycle between parts of the job",
                    topic.to
                )));
            }
        }
        Ok(Topology { spec: spec.clone(), stages, topics, cut })
    }

    pub fn job_name(&self) -> &str {
        &self.spec.name
    }

    /// The job as its file has it.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Every task, as (stage, partition), stage by stage.
    pub fn all_tasks(&self) -> impl Iterator<Item = (usize, i32)> + '_ {
        self.stages.iter().enumerate().flat_map(|(stage, s)| (0..s.tasks as i32).map(move |p| (stage, p)))
    }

    /// The stage that runs node `uid`.
    pub fn stage_of_node(&self, uid: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.nodes.contains(uid))
    }

    /// Whether `uid` is a repartition topic's internal sink or source.
    pub fn is_internal(&self, uid: &str) -> bool {
        self.topics.iter().any(|t| repartition_uid(t) == uid)
    }

    /// The repartition topics `stage` reads, each with its writers: (producer number,
    /// writing task's name).
    pub fn writers_read_by(&self, stage: usize) -> Vec<(String, Vec<(u32, String)>)> {
        self.topics
            .iter()
            .filter(|t| t.reader == stage)
            .map(|t| {
                let writers = t
                    .writers
                    .iter()
                    .flat_map(|&w| {
                        let s = &self.stages[w];
                        (0..s.tasks).map(move |n| (s.first_producer + n, self.task_name(w, n as i32)))
                    })
                    .collect();
                (repartition_uid(t), writers)
            })
            .collect()
    }

    /// The stage whose tasks follow `topic`'s partitions.
    pub fn stage_of_topic(&self, topic: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.lead_topic == topic)
    }

    /// The name of task `partition` of `stage`: `<job>-p<n>` for the first stage,
    /// `<job>-<operator>-r<n>` for the one fed by `<operator>`'s repartition topic.
    pub fn task_name(&self, stage: usize, partition: i32) -> String {
        match stage {
            0 => format!("{}-p{partition}", self.spec.name),
            _ => format!("{}-{}-r{partition}", self.spec.name, self.reader_operator(stage)),
        }
    }

    fn reader_operator(&self, stage: usize) -> &str {
        self.topics.iter().find(|t| t.reader == stage).map_or("", |t| t.to.as_str())
    }

    /// The job as task `partition` of `stage` runs it: its own name (so its own local
    /// directory, lock and Kafka transactional ids), its checkpoints under its name's
    /// suffix in the store, the nodes of its stage, the Kafka input (first stage) or the
    /// repartition topics (the others) read at that partition only, and repartition
    /// topics written where its edges were cut.
    pub fn task_spec(&self, stage: usize, partition: i32, brokers: &str) -> JobSpec {
        let spec = &self.spec;
        let nodes = &self.stages[stage].nodes;
        let mut task = spec.clone();
        task.name = self.task_name(stage, partition);
        let properties = spec
            .sources
            .iter()
            .find_map(|s| match s {
                SourceSpec::Kafka(k) => Some(k.properties.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let watermark = spec.sources.first().map(|s| s.watermark().clone()).unwrap_or_default();
        task.sources.retain(|s| nodes.contains(s.uid()));
        for source in &mut task.sources {
            if let SourceSpec::Kafka(kafka) = source {
                kafka.partitions = Some(vec![partition]);
            }
        }
        let reads: Vec<&RepartitionTopic> = self.topics.iter().filter(|t| t.reader == stage).collect();
        for topic in &reads {
            let producers = topic
                .writers
                .iter()
                .flat_map(|&w| {
                    let s = &self.stages[w];
                    s.first_producer..s.first_producer + s.tasks
                })
                .collect();
            task.sources.push(SourceSpec::Kafka(KafkaSourceSpec {
                uid: repartition_uid(topic),
                brokers: brokers.to_string(),
                topics: vec![topic.name.clone()],
                group_id: None,
                start: StartPosition::Earliest,
                bounded: false,
                key_field: None,
                timestamp_field: None,
                dead_letter_topic: None,
                format: Default::default(),
                schema: None,
                rate: None,
                partition_discovery_ms: 0,
                properties: properties.clone(),
                watermark: watermark.clone(),
                partitions: Some(vec![partition]),
                deduplicate: false,
                repartition: Some(RepartitionRead::new(producers)),
            }));
        }
        task.operators.retain(|o| nodes.contains(&o.uid));
        for op in &mut task.operators {
            // A task holds one key-group range of a keyed operator fed by a repartition
            // topic: one subtask serves it.
            if let Some(topic) = reads.iter().find(|t| t.to == op.uid) {
                op.parallelism = 1;
                op.key_groups = Some((partition as u32, topic.partitions));
            }
        }
        task.sinks.retain(|s| nodes.contains(s.uid()));
        let writes: Vec<&RepartitionTopic> = self.topics.iter().filter(|t| t.writers.contains(&stage)).collect();
        for topic in &writes {
            task.sinks.push(SinkSpec::Kafka(KafkaSinkSpec {
                uid: repartition_uid(topic),
                brokers: brokers.to_string(),
                topic: Some(topic.name.clone()),
                topic_field: None,
                delivery: KafkaDelivery::AtLeastOnce,
                transaction_timeout_ms: 60_000,
                properties: properties.clone(),
                sequence: false,
                repartition: Some(RepartitionWrite {
                    producer: self.stages[stage].first_producer + partition as u32,
                    partitions: topic.partitions,
                    max_parallelism: spec.max_parallelism,
                }),
            }));
        }
        task.edges = Vec::new();
        for (i, edge) in spec.edges.iter().enumerate() {
            let (from_here, to_here) = (nodes.contains(&edge.from), nodes.contains(&edge.to));
            if !self.cut.contains(&i) {
                if from_here {
                    task.edges.push(edge.clone());
                }
                continue;
            }
            let topic = self
                .topics
                .iter()
                .find(|t| t.to == edge.to && t.input == edge.input.unwrap_or(1))
                .expect("every cut edge has its topic");
            if from_here {
                task.edges.push(EdgeSpec {
                    from: edge.from.clone(),
                    to: repartition_uid(topic),
                    output: edge.output.clone(),
                    partition: Some(Partitioning::Rebalance),
                    input: None,
                });
            }
            if to_here && !task.edges.iter().any(|e| e.from == repartition_uid(topic)) {
                task.edges.push(EdgeSpec {
                    from: repartition_uid(topic),
                    to: edge.to.clone(),
                    output: None,
                    partition: Some(Partitioning::Keyed),
                    input: edge.input,
                });
            }
        }
        if let Some(checkpoint) = &mut task.checkpoint {
            let dir = checkpoint.dir.as_ref().and_then(|d| d.to_str()).unwrap_or_default().trim_end_matches('/');
            let suffix = task.name.strip_prefix(&format!("{}-", spec.name)).unwrap_or(&task.name);
            checkpoint.dir = Some(format!("{dir}/{suffix}").into());
        }
        task
    }
}

/// The uid of the internal sink (upstream) and source (downstream) of a repartition
/// topic: the topic's name.
fn repartition_uid(topic: &RepartitionTopic) -> String {
    topic.name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(edges: &str, key_field: bool) -> JobSpec {
        let key = if key_field { "key_field = \"user\"" } else { "" };
        let text = format!(
            r#"
            name = "j"
            [[source]]
            type = "kafka"
            uid = "in"
            brokers = "b:9092"
            topics = ["t"]
            {key}
            [[operator]]
            uid = "parse"
            native = "keyed-count"
            [[operator]]
            uid = "count"
            native = "keyed-count"
            parallelism = 3
            [[sink]]
            type = "kafka"
            uid = "out"
            brokers = "b:9092"
            topic = "o"
            {edges}
            [checkpoint]
            interval_ms = 1000
            dir = "s3://bucket/x"
            "#
        );
        JobSpec::parse(&text, std::path::Path::new("/tmp")).unwrap()
    }

    fn source(spec: &JobSpec) -> KafkaSourceSpec {
        match &spec.sources[0] {
            SourceSpec::Kafka(k) => k.clone(),
            _ => unreachable!(),
        }
    }

    const CHAIN: &str = r#"
        [[edge]]
        from = "in"
        to = "parse"
        [[edge]]
        from = "parse"
        to = "count"
        partition = "keyed"
        [[edge]]
        from = "count"
        to = "out"
        partition = "rebalance"
    "#;

    #[test]
    fn a_keyed_edge_after_an_operator_goes_through_a_repartition_topic() {
        let spec = job(CHAIN, false);
        let topology = Topology::new(&spec, &source(&spec), 4).unwrap();
        assert_eq!(topology.stages.len(), 2);
        assert_eq!(topology.topics.len(), 1);
        assert_eq!(topology.topics[0].name, "j-count-repartition");
        assert_eq!(topology.topics[0].partitions, 3);
        assert_eq!((topology.stages[0].lead_topic.as_str(), topology.stages[0].tasks), ("t", 4));
        assert_eq!((topology.stages[1].lead_topic.as_str(), topology.stages[1].tasks), ("j-count-repartition", 3));

        let upstream = topology.task_spec(0, 2, "b:9092");
        assert_eq!(upstream.name, "j-p2");
        assert_eq!(upstream.checkpoint.as_ref().unwrap().dir.as_ref().unwrap().to_str(), Some("s3://bucket/x/p2"));
        assert_eq!(upstream.operators.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(), ["parse"]);
        let SinkSpec::Kafka(sink) = &upstream.sinks[0] else { panic!() };
        assert_eq!(sink.topic.as_deref(), Some("j-count-repartition"));
        assert_eq!(sink.repartition, Some(RepartitionWrite { producer: 2, partitions: 3, max_parallelism: 128 }));
        assert_eq!(upstream.edges.len(), 2);

        let downstream = topology.task_spec(1, 1, "b:9092");
        assert_eq!(downstream.name, "j-count-r1");
        assert_eq!(downstream.checkpoint.as_ref().unwrap().dir.as_ref().unwrap().to_str(), Some("s3://bucket/x/count-r1"));
        let SourceSpec::Kafka(read) = &downstream.sources[0] else { panic!() };
        assert_eq!(read.topics, ["j-count-repartition"]);
        assert_eq!(read.partitions, Some(vec![1]));
        assert_eq!(read.repartition.as_ref().map(|r| r.producers.clone()), Some(vec![0, 1, 2, 3]));
        assert_eq!(downstream.operators[0].parallelism, 1);
        assert_eq!(downstream.operators[0].key_groups, Some((1, 3)), "key-group range 1 of 3");
        assert_eq!(downstream.sinks.iter().map(SinkSpec::uid).collect::<Vec<_>>(), ["out"]);
        assert!(downstream.is_keyed("count"));
    }

    #[test]
    fn a_source_keyed_by_its_kafka_key_feeds_its_keyed_operator_directly() {
        let edges = r#"
            [[edge]]
            from = "in"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "parse"
            partition = "rebalance"
            [[edge]]
            from = "parse"
            to = "out"
        "#;
        let spec = job(edges, false);
        let topology = Topology::new(&spec, &source(&spec), 4).unwrap();
        assert_eq!((topology.stages.len(), topology.topics.len()), (1, 0));
        // With the key taken from a field of the value, Kafka's partitions say nothing
        // about the key: the same edge is cut.
        let spec = job(edges, true);
        let topology = Topology::new(&spec, &source(&spec), 4).unwrap();
        assert_eq!((topology.stages.len(), topology.topics.len()), (2, 1));
        assert_eq!(topology.task_spec(0, 0, "b").operators.len(), 0);
    }

    #[test]
    fn records_go_to_the_partition_of_their_key_group_range() {
        let write = RepartitionWrite { producer: 0, partitions: 3, max_parallelism: 128 };
        for key in ["a", "b", "user-17", "x"] {
            let group = crate::keygroup::assign_key_group(key.as_bytes(), 128);
            let range = crate::keygroup::KeyGroupRange::for_subtask(write.partition(key.as_bytes()) as u32, 128, 3);
            assert!(range.contains(group), "{key}");
        }
    }
}
