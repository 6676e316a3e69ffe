//! The figures the admin endpoint reports, in one table per kind of
//! figure: each names its Prometheus metric and its `/stats` field, so
//! `/metrics` and `/stats` cannot drift apart.

use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use crate::reactor::metrics::{Metrics, ServiceCounters};
use crate::services::ServiceId;

/// The Prometheus text exposition format's media type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// The figures one answer reports: the loop's counters as they stand when
/// the request is answered.
pub struct Figures<'a> {
    pub metrics: &'a Metrics,
    /// The services reported, in the order of PROTOCOL.md §1.
    pub hosted: &'a [ServiceId],
    /// This loop turn's time, for the uptime.
    pub now: Instant,
    /// Each reactor's own figures, by index (PROTOCOL.md §8); `metrics`
    /// holds their sum.
    pub reactors: &'a [Metrics],
    /// The chat cluster's link, when `chat.cluster` is set.
    pub cluster: Option<ClusterFigures>,
}

/// The chat cluster link's counters (src/services/chat/cluster), copied
/// when a request is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFigures {
    pub connected: u64,
    pub reconnects: u64,
    pub published: u64,
    pub received: u64,
    pub dropped: u64,
    pub subscriptions_lost: u64,
}

/// The chat cluster's figures, under `"chat_cluster"` in `/stats`; both
/// formats leave them out when the daemon has no cluster.
const CLUSTER_FIGURES: [Figure<ClusterFigures>; 6] = [
    Figure {
        metric: "socketlab_chat_cluster_connected",
        field: "connected",
        kind: Kind::Gauge,
        help: "1 while the chat is shared over Redis, 0 while it is local only.",
        read: |c| Value::Count(c.connected),
    },
    Figure {
        metric: "socketlab_chat_cluster_reconnects_total",
        field: "reconnects",
        kind: Kind::Counter,
        help: "Connections to Redis made again after one was lost.",
        read: |c| Value::Count(c.reconnects),
    },
    Figure {
        metric: "socketlab_chat_cluster_published_total",
        field: "published",
        kind: Kind::Counter,
        help: "Chat messages published to Redis.",
        read: |c| Value::Count(c.published),
    },
    Figure {
        metric: "socketlab_chat_cluster_received_total",
        field: "received",
        kind: Kind::Counter,
        help: "Chat messages received from the Redis subscription, this daemon's own included.",
        read: |c| Value::Count(c.received),
    },
    Figure {
        metric: "socketlab_chat_cluster_dropped_total",
        field: "dropped",
        kind: Kind::Counter,
        help: "Chat messages known lost: gaps in a sender's sequence, and lines that could not be published.",
        read: |c| Value::Count(c.dropped),
    },
    Figure {
        metric: "socketlab_chat_cluster_subscriptions_lost_total",
        field: "subscriptions_lost",
        kind: Kind::Counter,
        help: "Subscriptions that ended under a live link: Redis went away, or dropped the subscriber over its pubsub output-buffer limit.",
        read: |c| Value::Count(c.subscriptions_lost),
    },
];

/// How Prometheus should treat a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Only ever grows (until the daemon restarts): rates make sense.
    Counter,
    /// Goes up and down: the current value is what matters.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One figure, named for both formats, so `/metrics` and `/stats` cannot
/// drift apart.
struct Figure<T> {
    /// The Prometheus metric name.
    metric: &'static str,
    /// The field name in `/stats`.
    field: &'static str,
    kind: Kind,
    help: &'static str,
    read: fn(&T) -> Value,
}

/// A figure's value: a count, or a time span reported in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Count(u64),
    Seconds(Duration),
}

impl fmt::Display for Value {
    /// One spelling both formats accept: an integer, or a decimal number
    /// of seconds (Rust prints `f64` without an exponent).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Count(n) => write!(f, "{n}"),
            Value::Seconds(d) => write!(f, "{}", d.as_secs_f64()),
        }
    }
}

/// The figures each service has, labelled `service="<name>"` in
/// `/metrics` and keyed by name in `/stats`.
const SERVICE_FIGURES: [Figure<ServiceCounters>; 6] = [
    Figure {
        metric: "socketlab_connections_open",
        field: "connections_open",
        kind: Kind::Gauge,
        help: "Connections open now.",
        read: |c| Value::Count(c.connections_open),
    },
    Figure {
        metric: "socketlab_connections_total",
        field: "connections_total",
        kind: Kind::Counter,
        help: "Connections accepted, rejected ones included.",
        read: |c| Value::Count(c.connections_total),
    },
    Figure {
        metric: "socketlab_connections_rejected_total",
        field: "connections_rejected",
        kind: Kind::Counter,
        help: "Connections turned away by a connection limit or descriptor exhaustion.",
        read: |c| Value::Count(c.connections_rejected),
    },
    Figure {
        metric: "socketlab_bytes_received_total",
        field: "bytes_received",
        kind: Kind::Counter,
        help: "Bytes received from clients, datagrams included.",
        read: |c| Value::Count(c.bytes_received),
    },
    Figure {
        metric: "socketlab_bytes_sent_total",
        field: "bytes_sent",
        kind: Kind::Counter,
        help: "Bytes sent to clients, datagrams included.",
        read: |c| Value::Count(c.bytes_sent),
    },
    Figure {
        metric: "socketlab_messages_received_total",
        field: "messages_received",
        kind: Kind::Counter,
        help: "Units of input handed to the service: reads that brought bytes, and datagrams.",
        read: |c| Value::Count(c.messages_received),
    },
];

/// Connections open per reactor, given only when there are several.
const REACTOR_OPEN: &str = "socketlab_reactor_connections_open";

/// The loop's figures as one answer reports them: copied from the
/// counters, with the uptime worked out for this turn.
#[derive(Debug, Clone, Copy)]
struct LoopFigures {
    iterations: u64,
    events: u64,
    last_turn_events: u64,
    last_turn: Duration,
    max_turn: Duration,
    busy: Duration,
    uptime: Duration,
    timers: u64,
}

/// The loop's figures, under `"loop"` in `/stats`.
const LOOP_FIGURES: [Figure<LoopFigures>; 8] = [
    Figure {
        metric: "socketlab_loop_iterations_total",
        field: "iterations",
        kind: Kind::Counter,
        help: "Event loop turns, one poll() each.",
        read: |l| Value::Count(l.iterations),
    },
    Figure {
        metric: "socketlab_events_total",
        field: "events",
        kind: Kind::Counter,
        help: "Readiness events returned by poll().",
        read: |l| Value::Count(l.events),
    },
    Figure {
        metric: "socketlab_loop_last_turn_events",
        field: "last_turn_events",
        kind: Kind::Gauge,
        help: "Readiness events returned by the latest poll().",
        read: |l| Value::Count(l.last_turn_events),
    },
    Figure {
        metric: "socketlab_loop_last_turn_seconds",
        field: "last_turn_seconds",
        kind: Kind::Gauge,
        help: "Time the last finished loop turn spent working, from poll() returning to the next poll().",
        read: |l| Value::Seconds(l.last_turn),
    },
    Figure {
        metric: "socketlab_loop_max_turn_seconds",
        field: "max_turn_seconds",
        kind: Kind::Gauge,
        help: "The longest loop turn since start: the longest a ready client may have waited.",
        read: |l| Value::Seconds(l.max_turn),
    },
    Figure {
        metric: "socketlab_loop_busy_seconds_total",
        field: "busy_seconds",
        kind: Kind::Counter,
        help: "Time the loop spent working rather than waiting in poll().",
        read: |l| Value::Seconds(l.busy),
    },
    Figure {
        metric: "socketlab_uptime_seconds",
        field: "uptime_seconds",
        kind: Kind::Gauge,
        help: "Time since the daemon started serving.",
        read: |l| Value::Seconds(l.uptime),
    },
    Figure {
        metric: "socketlab_loop_timers",
        field: "timers",
        kind: Kind::Gauge,
        help: "Wake-ups in the timer queue, stale ones not yet swept included.",
        read: |l| Value::Count(l.timers),
    },
];

/// The turn histogram's Prometheus name (`_bucket`, `_sum` and `_count`
/// are added); in `/stats` it is `loop.turn_histogram`.
const TURN_HISTOGRAM_METRIC: &str = "socketlab_loop_turn_seconds";
const TURN_HISTOGRAM_HELP: &str =
    "Loop turns by the time they spent working, from poll() returning to the next poll().";

impl Figures<'_> {
    /// The Prometheus text exposition format, version 0.0.4: per metric a
    /// `# HELP` and a `# TYPE` line, then one sample line per label set.
    pub fn prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        for figure in &SERVICE_FIGURES {
            figure.write_family_head(&mut out);
            for &id in self.hosted {
                let value = (figure.read)(self.metrics.service(id));
                let _ = writeln!(out, "{}{{service=\"{id}\"}} {value}", figure.metric);
            }
        }
        let loop_figures = self.loop_figures();
        // With several reactors, each loop figure is given for the daemon
        // (no label) and then per reactor (`reactor="<i>"`).
        let per_reactor: Vec<LoopFigures> = if self.reactors.len() > 1 {
            self.reactors
                .iter()
                .map(|m| self.loop_figures_of(m))
                .collect()
        } else {
            Vec::new()
        };
        for figure in &LOOP_FIGURES {
            figure.write_family_head(&mut out);
            let _ = writeln!(out, "{} {}", figure.metric, (figure.read)(&loop_figures));
            for (i, l) in per_reactor.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{}{{reactor=\"{i}\"}} {}",
                    figure.metric,
                    (figure.read)(l)
                );
            }
        }
        if !per_reactor.is_empty() {
            let _ = writeln!(
                out,
                "# HELP {REACTOR_OPEN} Connections open on one reactor, over all services.\n\
                 # TYPE {REACTOR_OPEN} gauge"
            );
            for (i, m) in self.reactors.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{REACTOR_OPEN}{{reactor=\"{i}\"}} {}",
                    m.connections_open()
                );
            }
        }
        self.write_turn_histogram(&mut out);
        if let Some(cluster) = &self.cluster {
            for figure in &CLUSTER_FIGURES {
                figure.write_family_head(&mut out);
                let _ = writeln!(out, "{} {}", figure.metric, (figure.read)(cluster));
            }
        }
        out
    }

    /// The turn histogram, a Prometheus `histogram`: one cumulative
    /// `_bucket` line per bound of `TURN_BUCKETS`, then `+Inf`, `_sum` and
    /// `_count`. It is not a `Figure` because it is many numbers, but its
    /// names stand next to the table's, here and in `json`.
    fn write_turn_histogram(&self, out: &mut String) {
        let h = &self.metrics.turn_histogram;
        let name = TURN_HISTOGRAM_METRIC;
        let _ = writeln!(out, "# HELP {name} {TURN_HISTOGRAM_HELP}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, n) in h.cumulative() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", Value::Seconds(bound));
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
        let _ = writeln!(out, "{name}_sum {}", Value::Seconds(h.sum()));
        let _ = writeln!(out, "{name}_count {}", h.count());
    }

    /// The `/stats` object. Every name is a constant of this file and
    /// every value a number, so nothing needs escaping.
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("{\"services\":{");
        for (i, &id) in self.hosted.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(out, "{comma}\"{id}\":");
            write_object(&mut out, &SERVICE_FIGURES, self.metrics.service(id));
        }
        out.push_str("},\"loop\":");
        write_object(&mut out, &LOOP_FIGURES, &self.loop_figures());
        // The histogram goes inside the loop's object, as its last field:
        // cumulative buckets like Prometheus', the overflow bucket left out
        // (JSON has no infinity; `count` is its value).
        out.pop();
        let h = &self.metrics.turn_histogram;
        out.push_str(",\"turn_histogram\":{\"buckets\":[");
        for (i, (bound, n)) in h.cumulative().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{comma}{{\"le\":{},\"count\":{n}}}",
                Value::Seconds(bound)
            );
        }
        let _ = write!(
            out,
            "],\"sum\":{},\"count\":{}}}}}",
            Value::Seconds(h.sum()),
            h.count()
        );
        out.push_str(",\"reactors\":[");
        for (i, m) in self.reactors.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(
                out,
                "{comma}{{\"connections_open\":{},\"services\":{{",
                m.connections_open()
            );
            // Each service's figures on this reactor alone, so a reader
            // sees how the kernel spread a service's connections.
            for (k, &id) in self.hosted.iter().enumerate() {
                let comma = if k == 0 { "" } else { "," };
                let _ = write!(out, "{comma}\"{id}\":");
                write_object(&mut out, &SERVICE_FIGURES, m.service(id));
            }
            out.push_str("},\"loop\":");
            write_object(&mut out, &LOOP_FIGURES, &self.loop_figures_of(m));
            out.push('}');
        }
        out.push(']');
        if let Some(cluster) = &self.cluster {
            out.push_str(",\"chat_cluster\":");
            write_object(&mut out, &CLUSTER_FIGURES, cluster);
        }
        out.push('}');
        out
    }

    fn loop_figures(&self) -> LoopFigures {
        self.loop_figures_of(self.metrics)
    }

    fn loop_figures_of(&self, m: &Metrics) -> LoopFigures {
        LoopFigures {
            iterations: m.iterations,
            events: m.events,
            last_turn_events: m.last_turn_events,
            last_turn: m.last_turn,
            max_turn: m.max_turn,
            busy: m.busy,
            uptime: self.now.saturating_duration_since(m.started),
            timers: m.timers_queued,
        }
    }
}

impl<T> Figure<T> {
    fn write_family_head(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.metric, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.metric, self.kind.name());
    }
}

/// `{"field":value,...}` for one set of figures.
fn write_object<T>(out: &mut String, figures: &[Figure<T>], of: &T) {
    out.push('{');
    for (i, figure) in figures.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(out, "{comma}\"{}\":{}", figure.field, (figure.read)(of));
    }
    out.push('}');
}

/// Counters with a known value in every figure, and the `now` they are
/// read at (2.5 s after the start), for this module's tests and the
/// routing tests.
#[cfg(test)]
pub(super) fn fixture() -> (Metrics, Instant) {
    let started = Instant::now();
    let mut m = Metrics::new(started);
    *m.service_mut(ServiceId::Echo) = ServiceCounters {
        connections_open: 2,
        connections_total: 5,
        connections_rejected: 1,
        bytes_received: 1234,
        bytes_sent: 1200,
        messages_received: 9,
    };
    m.service_mut(ServiceId::Admin).connections_open = 1;
    m.iterations = 40;
    m.events = 77;
    m.last_turn_events = 3;
    m.last_turn = Duration::from_micros(12);
    m.max_turn = Duration::from_millis(3);
    m.busy = Duration::from_micros(1500);
    (m, started + Duration::from_millis(2500))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ----- Figures --------------------------------------------------------

    #[test]
    fn prometheus_text_has_help_type_and_one_sample_per_service() {
        let (metrics, now) = fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let text = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
            reactors: &[],
            cluster: None,
        }
        .prometheus();
        for expected in [
            "# HELP socketlab_connections_open Connections open now.\n",
            "# TYPE socketlab_connections_open gauge\n",
            "socketlab_connections_open{service=\"admin\"} 1\n",
            "socketlab_connections_open{service=\"echo\"} 2\n",
            "# TYPE socketlab_connections_total counter\n",
            "socketlab_connections_total{service=\"echo\"} 5\n",
            "socketlab_connections_rejected_total{service=\"echo\"} 1\n",
            "socketlab_bytes_received_total{service=\"echo\"} 1234\n",
            "socketlab_bytes_sent_total{service=\"echo\"} 1200\n",
            "# TYPE socketlab_loop_iterations_total counter\n",
            "socketlab_loop_iterations_total 40\n",
            "socketlab_events_total 77\n",
            "socketlab_loop_last_turn_events 3\n",
            "socketlab_loop_last_turn_seconds 0.000012\n",
            "socketlab_loop_max_turn_seconds 0.003\n",
            "socketlab_loop_busy_seconds_total 0.0015\n",
            "# TYPE socketlab_uptime_seconds gauge\n",
            "socketlab_uptime_seconds 2.5\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("discard"), "only hosted services are listed");
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

    #[test]
    fn stats_json_has_the_shape_of_the_contract() {
        let (metrics, now) = fixture();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let text = Figures {
            metrics: &metrics,
            hosted: &hosted,
            now,
            reactors: &[],
            cluster: None,
        }
        .json();
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            v["services"]["echo"],
            serde_json::json!({
                "connections_open": 2,
                "connections_total": 5,
                "connections_rejected": 1,
                "bytes_received": 1234,
                "bytes_sent": 1200,
                "messages_received": 9,
            })
        );
        assert_eq!(v["services"].as_object().unwrap().len(), 2);
        assert_eq!(v["loop"]["iterations"], 40);
        assert_eq!(v["loop"]["events"], 77);
        assert_eq!(v["loop"]["uptime_seconds"], 2.5);
        assert_eq!(v["loop"]["max_turn_seconds"], 0.003);
    }

    #[test]
    fn the_turn_histogram_is_cumulative_in_both_formats() {
        use crate::reactor::metrics::TURN_BUCKETS;
        let (mut metrics, now) = fixture();
        for micros in [30, 800, 3_000, 2_000_000] {
            metrics.turn_histogram.record(Duration::from_micros(micros));
        }
        let figures = Figures {
            metrics: &metrics,
            hosted: &[ServiceId::Echo],
            now,
            reactors: &[],
            cluster: None,
        };
        let text = figures.prometheus();
        for expected in [
            "# TYPE socketlab_loop_turn_seconds histogram\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.00005\"} 1\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.001\"} 2\n",
            "socketlab_loop_turn_seconds_bucket{le=\"0.005\"} 3\n",
            "socketlab_loop_turn_seconds_bucket{le=\"1\"} 3\n",
            "socketlab_loop_turn_seconds_bucket{le=\"+Inf\"} 4\n",
            "socketlab_loop_turn_seconds_sum 2.00383\n",
            "socketlab_loop_turn_seconds_count 4\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&figures.json()).expect("valid JSON");
        let h = &v["loop"]["turn_histogram"];
        let buckets = h["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), TURN_BUCKETS.len());
        assert_eq!(buckets[0], serde_json::json!({"le": 0.00005, "count": 1}));
        assert_eq!(buckets[4], serde_json::json!({"le": 0.001, "count": 2}));
        assert_eq!(buckets[13]["le"].as_f64(), Some(1.0));
        assert_eq!(buckets[13]["count"], 3);
        assert_eq!(h["count"], 4);
        assert_eq!(h["sum"], 2.00383);
        assert_eq!(v["loop"]["iterations"], 40, "the loop's other fields stay");
    }

    #[test]
    fn the_cluster_figures_appear_only_with_a_cluster() {
        let (metrics, now) = fixture();
        let mut figures = Figures {
            metrics: &metrics,
            hosted: &[ServiceId::Echo],
            now,
            reactors: &[],
            cluster: None,
        };
        assert!(!figures.prometheus().contains("chat_cluster"));
        assert!(!figures.json().contains("chat_cluster"));
        figures.cluster = Some(ClusterFigures {
            connected: 1,
            reconnects: 2,
            published: 30,
            received: 40,
            dropped: 5,
            subscriptions_lost: 1,
        });
        let text = figures.prometheus();
        for expected in [
            "# TYPE socketlab_chat_cluster_connected gauge\n",
            "socketlab_chat_cluster_connected 1\n",
            "socketlab_chat_cluster_dropped_total 5\n",
            "socketlab_chat_cluster_subscriptions_lost_total 1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&figures.json()).expect("valid JSON");
        assert_eq!(v["chat_cluster"]["published"], 30);
        assert_eq!(v["chat_cluster"]["received"], 40);
    }

    #[test]
    fn several_reactors_are_reported_each_beside_the_daemon_totals() {
        let (metrics, now) = fixture();
        let mut second = metrics.clone();
        second.iterations = 60;
        second.service_mut(ServiceId::Echo).connections_open = 7;
        let reactors = [metrics.clone(), second];
        let total = Metrics::total(&reactors).unwrap();
        let hosted = [ServiceId::Admin, ServiceId::Echo];
        let figures = Figures {
            metrics: &total,
            hosted: &hosted,
            now,
            reactors: &reactors,
            cluster: None,
        };
        let text = figures.prometheus();
        for expected in [
            "socketlab_loop_iterations_total 100\n",
            "socketlab_loop_iterations_total{reactor=\"0\"} 40\n",
            "socketlab_loop_iterations_total{reactor=\"1\"} 60\n",
            "socketlab_connections_open{service=\"echo\"} 9\n",
            "socketlab_reactor_connections_open{reactor=\"1\"} 8\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let v: serde_json::Value = serde_json::from_str(&figures.json()).expect("valid JSON");
        assert_eq!(v["loop"]["iterations"], 100);
        assert_eq!(v["reactors"][0]["loop"]["iterations"], 40);
        assert_eq!(v["reactors"][1]["loop"]["iterations"], 60);
        assert_eq!(v["reactors"][1]["connections_open"], 8);
        assert_eq!(v["reactors"].as_array().unwrap().len(), 2);
        // Each reactor's own figures per service, beside the totals.
        assert_eq!(v["services"]["echo"]["connections_open"], 9);
        assert_eq!(v["reactors"][1]["services"]["echo"]["connections_open"], 7);
        assert_eq!(v["reactors"][0]["services"]["echo"]["connections_open"], 2);
        assert!(v["reactors"][1]["services"]["admin"].is_object());
    }
}
