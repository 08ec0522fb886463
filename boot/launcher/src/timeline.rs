//! A timeline of HMM events for a standard trace viewer (`--trace FILE`).
//!
//! At `log=debug` and `log=trace` the kernel stamps each log line with the
//! guest TSC, and HMM's events are printed in one machine-readable shape:
//!
//! ```text
//! [DEBUG @<tsc>] <event> key=value key=value ...
//! [DEBUG @1523377150] fault.begin accel=0 va=0x20000000 access=read
//! [DEBUG @1523391233] inval kind=Unmap event=Munmap range=0x20000000..0x20010000
//! [DEBUG @1523391876] iotlb did=1 addr=0x20000000 am=4
//! [DEBUG @1523401002] fault.end accel=0 va=0x20000000 pages=16
//! [DEBUG @1523401100] replay accel=0 va=0x20000000
//! ```
//!
//! The launcher turns these into Chrome trace-event JSON (open it in
//! Perfetto, <https://ui.perfetto.dev>, or `chrome://tracing`):
//!
//! * an event ending in `.begin` opens a span and one ending in `.end`
//!   closes it (`ph` `B`/`E`): a device fault is the span from its fault
//!   record to its resolution;
//! * any other event is an instant (`ph` `i`);
//! * the `key=value` words become the event's `args`;
//! * `accel=N` puts the event on the track "accel N", everything else on
//!   the track "kernel";
//! * `ts` is the TSC divided by 1000. Under TCG with icount the guest TSC
//!   counts virtual nanoseconds, so `ts` is in virtual microseconds (an
//!   `edu` DMA takes a fixed 100 ms of virtual time, which dominates).
//!
//! Lines in any other shape are ignored; so are non-debug lines.

use serde_json::{json, Map, Value};
use std::path::Path;

/// Collects events from serial lines.
#[derive(Default)]
pub struct Timeline {
    events: Vec<Value>,
    tracks: std::collections::BTreeSet<u64>,
}

/// A stamped log line: `[LEVEL @tsc] message` → (level, tsc, message).
pub fn parse_stamped(line: &str) -> Option<(&str, u64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (head, msg) = rest.split_once("] ")?;
    let (level, tsc) = head.split_once(" @")?;
    let level = level.trim_end();
    Some((level, tsc.trim().parse().ok()?, msg))
}

impl Timeline {
    /// Feed one line of serial output.
    pub fn feed(&mut self, line: &str) {
        let Some((level, tsc, msg)) = parse_stamped(line.trim_end_matches(['\r', '\n'])) else { return };
        if level != "DEBUG" && level != "TRACE" {
            return;
        }
        let mut words = msg.split_ascii_whitespace();
        let Some(name) = words.next() else { return };
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-') {
            return;
        }
        let mut args = Map::new();
        let mut tid = 0;
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                if k == "accel" {
                    tid = v.parse::<u64>().map_or(0, |n| n + 1);
                }
                args.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
        if args.is_empty() {
            return;
        }
        self.tracks.insert(tid);
        let (name, ph) = if let Some(n) = name.strip_suffix(".begin") {
            (n, "B")
        } else if let Some(n) = name.strip_suffix(".end") {
            (n, "E")
        } else {
            (name, "i")
        };
        let mut e = json!({ "name": name, "cat": "hmm", "ph": ph, "ts": tsc as f64 / 1000.0, "pid": 1, "tid": tid, "args": args });
        if ph == "i" {
            e["s"] = json!("t");
        }
        self.events.push(e);
    }

    /// How many events were collected.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The Chrome trace-event JSON document.
    pub fn to_json(&self) -> Value {
        let mut all = vec![json!({ "name": "process_name", "ph": "M", "pid": 1, "args": { "name": "hmmos guest" } })];
        for &tid in &self.tracks {
            let name = if tid == 0 { "kernel".to_string() } else { format!("accel {}", tid - 1) };
            all.push(json!({ "name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": { "name": name } }));
        }
        all.extend(self.events.iter().cloned());
        json!({ "traceEvents": all, "displayTimeUnit": "ms", "otherData": { "source": "hmmos launcher --trace", "ts": "guest TSC / 1000" } })
    }

    /// Write the JSON to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(&self.to_json()).expect("JSON serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_lines_parse() {
        assert_eq!(parse_stamped("[DEBUG @42] fault.begin accel=0"), Some(("DEBUG", 42, "fault.begin accel=0")));
        assert_eq!(parse_stamped("[INFO ] booting"), None);
        assert_eq!(parse_stamped("[TRACE @7] pte va=0x1000"), Some(("TRACE", 7, "pte va=0x1000")));
    }

    #[test]
    fn spans_instants_and_tracks() {
        let mut t = Timeline::default();
        for l in [
            "[INFO ] hmmos booting",
            "[DEBUG @1000] fault.begin accel=0 va=0x20000000 access=read",
            "[DEBUG @2000] inval kind=Unmap event=Munmap range=0x20000000..0x20001000",
            "[DEBUG @3000] fault.end accel=0 va=0x20000000 pages=16",
            "[DEBUG @3500] replay accel=1 va=0x20000000",
            "[DEBUG @3600] Some prose without fields",
            "hmm> dread 0 0x20000000 16",
        ] {
            t.feed(l);
        }
        assert_eq!(t.len(), 4);
        let j = t.to_json();
        let ev = j["traceEvents"].as_array().unwrap();
        let real: Vec<_> = ev.iter().filter(|e| e["ph"] != "M").collect();
        assert_eq!(real[0]["name"], "fault");
        assert_eq!(real[0]["ph"], "B");
        assert_eq!(real[0]["ts"], 1.0);
        assert_eq!(real[0]["tid"], 1);
        assert_eq!(real[0]["args"]["va"], "0x20000000");
        assert_eq!(real[1]["ph"], "i");
        assert_eq!(real[1]["tid"], 0);
        assert_eq!(real[2]["ph"], "E");
        assert_eq!(real[3]["tid"], 2);
        let names: Vec<_> = ev.iter().filter(|e| e["name"] == "thread_name").map(|e| e["args"]["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["kernel", "accel 0", "accel 1"]);
    }
}
