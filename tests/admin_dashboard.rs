//! The dashboard in a real browser: headless Chromium loads `/` from a
//! running daemon, its script polls `/stats`, and the figures it shows are
//! checked against what `/stats` says.
//!
//! Run: `cargo test --test admin_dashboard`. It needs Debian's chromium
//! (`.ci/install-tools` installs it; `SOCKETLAB_CHROMIUM` names another
//! binary). Without it the test fails, unless `SOCKETLAB_SKIP_BROWSER=1`,
//! when it says it skipped.
//!
//! Chromium is driven in its simplest mode: `--dump-dom` prints the page's
//! DOM once the page has run for `--virtual-time-budget` milliseconds of
//! *virtual* time, which Chromium fast-forwards while nothing is loading,
//! so the script's one-second polls take only as long as the requests. The
//! page keeps every figure's raw number in a `data-value` attribute, which
//! is what is read here. If the figures are not live yet, the page is
//! loaded again, until a deadline.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, PATIENCE, read_to_end, wait_until};

/// Where Debian puts chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one Chromium run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long the page may take to show live figures, over all runs.
const LIVE_DEADLINE: Duration = Duration::from_secs(150);
/// Virtual time the page runs before its DOM is dumped: three polls.
const VIRTUAL_TIME_MS: u32 = 2_500;

#[test]
fn the_dashboard_shows_the_figures_of_stats() {
    let Some(chromium) = chromium() else {
        return;
    };
    let d = Daemon::start(&[]);

    // Echo traffic to show: one connection finished, one still open, and
    // a datagram, then nothing more while the page runs, so echo's
    // figures hold still and its rates must read zero.
    echo_tcp_and_close(&d, 1_000);
    let mut kept_open = d.connect("echo");
    kept_open.write_all(&[b'k'; 300]).unwrap();
    assert_eq!(common::read_exact_n(&mut kept_open, 300), vec![b'k'; 300]);
    echo_udp(&d, 50);
    assert!(
        wait_until(|| stats(&d)["services"]["echo"]["connections_open"] == 1),
        "the finished echo connection is closed"
    );

    let url = format!("http://{}/", d.tcp("admin"));
    let page = load_until_live(&chromium, &url);
    let stats = stats(&d);

    // One row per service reported, no more, no less.
    let mut rows = page.services();
    rows.sort();
    let mut services: Vec<String> = stats["services"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    services.sort();
    assert_eq!(rows, services);

    // Services other than admin were quiet: the page shows exactly what
    // /stats says now.
    for service in services.iter().filter(|s| *s != "admin") {
        for field in COUNTERS {
            assert_eq!(
                page.cell(service, field),
                stats["services"][service.as_str()][field].as_f64().unwrap(),
                "{service} {field}"
            );
        }
    }
    assert_eq!(page.cell("echo", "connections_open"), 1.0);
    assert_eq!(page.cell("echo", "connections_total"), 2.0);
    assert_eq!(page.cell("echo", "bytes_received"), 1_350.0);
    assert_eq!(page.cell_text("echo", "bytes_sent"), "1.3 KiB");
    // Rates are differences between polls, not totals.
    assert_eq!(page.cell("echo", "bytes_received_per_second"), 0.0);
    assert_eq!(page.cell("echo", "bytes_sent_per_second"), 0.0);

    // Admin moved on since (the page's own polls, this test's requests):
    // the page shows earlier, smaller counts, and live traffic.
    for field in COUNTERS {
        let shown = page.cell("admin", field);
        let now = stats["services"]["admin"][field].as_f64().unwrap();
        if field != "connections_open" {
            assert!(shown <= now, "admin {field}: page {shown} > stats {now}");
        }
    }
    assert!(page.cell("admin", "connections_open") >= 1.0);
    assert!(page.cell("admin", "bytes_received_per_second") > 0.0);
    assert!(page.cell("admin", "bytes_sent_per_second") > 0.0);

    // The loop, likewise, was seen a little earlier.
    let lp = &stats["loop"];
    let iterations = page.figure("loop-iterations");
    assert!(iterations > 0.0 && iterations <= lp["iterations"].as_f64().unwrap());
    let events = page.figure("loop-events");
    assert!(events > 0.0 && events <= lp["events"].as_f64().unwrap());
    assert!(page.figure("loop-uptime") < lp["uptime_seconds"].as_f64().unwrap());
    assert!(page.figure("loop-turn-max") <= lp["max_turn_seconds"].as_f64().unwrap());
    assert!(page.figure("loop-turn-max") >= page.figure("loop-turn-last"));
    // Every poll's request took events and turns of work.
    assert!(page.figure("loop-events-per-turn") > 0.0);
    assert!(page.figure("loop-turn-average") > 0.0);
    assert!(page.figure("loop-turns-per-second") > 0.0);
    let busy = page.figure("loop-busy");
    assert!((0.0..=1.0).contains(&busy), "busy fraction {busy}");

    // The charts are drawn, one line per service, and echo's byte rates
    // stay flat at zero: no traffic came while the page ran.
    for chart in ["connections", "received", "sent"] {
        let mut series = page.chart_series(chart);
        series.sort();
        assert_eq!(series, services, "chart {chart}");
    }
    assert!(
        page.chart_values("received", "echo")
            .iter()
            .all(|v| *v == 0.0)
    );
    assert_eq!(page.chart_last("connections", "echo"), 1.0);
    assert_histogram_drawn(&page, &stats);

    drop(kept_open);
}

#[test]
fn the_charts_draw_and_move_as_load_arrives() {
    let Some(chromium) = chromium() else {
        return;
    };
    // One loop, whose turns and busy share are one line each; with several
    // the charts draw a line per reactor (the test after this one).
    let d = Daemon::start(&["--reactors", "1"]);
    // Echo traffic for as long as the page runs: one connection sending
    // and reading back 64 KiB at a time, stopped by the flag (and bounded
    // in time, should the flag never come).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let mut s = d.connect("echo");
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            let until = Instant::now() + LIVE_DEADLINE;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                s.write_all(&chunk).unwrap();
                common::read_exact_n(&mut s, chunk.len());
            }
        })
    };

    let url = format!("http://{}/", d.tcp("admin"));
    let page = load_until_live(&chromium, &url);
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");

    // At least two samples, so every line has a slope to show.
    assert!(page.chart_samples("received") >= 2);
    // Echo's lines rose with the load: MiB/s in both directions, one
    // connection open, and the loop turning and busy.
    assert!(page.chart_last("received", "echo") > 0.0);
    assert!(page.chart_last("sent", "echo") > 0.0);
    assert!(
        page.chart_values("received", "echo")
            .iter()
            .any(|v| *v > 0.0)
    );
    assert_eq!(page.chart_last("connections", "echo"), 1.0);
    // Quiet services stay flat.
    assert!(
        page.chart_values("received", "chargen")
            .iter()
            .all(|v| *v == 0.0)
    );
    assert!(page.chart_last("turns", "loop") > 0.0);
    let busy = page.chart_last("busy", "loop");
    assert!(busy > 0.0 && busy <= 100.0, "busy {busy} %");
    // Messages per second per service, from `messages_received`: echo's
    // rose with the load, quiet services stay flat.
    assert_eq!(page.chart_state("messages"), "drawn");
    assert!(
        page.chart_values("messages", "echo")
            .iter()
            .any(|v| *v > 0.0)
    );
    assert!(
        page.chart_values("messages", "chargen")
            .iter()
            .all(|v| *v == 0.0)
    );
}

#[test]
fn the_dashboard_shows_each_reactor_side_by_side() {
    let Some(chromium) = chromium() else {
        return;
    };
    let d = Daemon::start(&["--reactors", "2"]);
    // Echo connections held open; the kernel spreads them over both.
    let held: Vec<TcpStream> = (0..32).map(|_| d.connect("echo")).collect();
    assert!(wait_until(|| {
        let s = stats(&d);
        s["services"]["echo"]["connections_open"] == 32
            && s["reactors"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["connections_open"].as_u64() > Some(0)))
    }));

    let url = format!("http://{}/", d.tcp("admin"));
    let page = load_until_live(&chromium, &url);
    let stats = stats(&d);

    assert_eq!(page.reactors(), ["0", "1"]);
    let mut shown_open = 0.0;
    for i in 0..2 {
        let now = &stats["reactors"][i];
        let open = page.reactor_cell(i, "connections_open");
        // The page's own requests come and go on the admin port.
        let now_open = now["connections_open"].as_f64().unwrap();
        assert!(
            (open - now_open).abs() <= 2.0,
            "reactor {i}: {open} vs {now_open}"
        );
        shown_open += open;
        let turns = page.reactor_cell(i, "iterations");
        assert!(turns > 0.0 && turns <= now["loop"]["iterations"].as_f64().unwrap());
        let busy = page.reactor_cell(i, "busy");
        assert!((0.0..=1.0).contains(&busy), "reactor {i} busy {busy}");
        assert!(page.reactor_cell(i, "max_turn_seconds") > 0.0);
    }
    assert!(shown_open >= 32.0, "{shown_open}");
    // The loop charts draw one line per reactor.
    for chart in ["turns", "busy"] {
        assert_eq!(
            page.chart_series(chart),
            ["reactor 0", "reactor 1"],
            "{chart}"
        );
    }
    drop(held);
}

/// The turn histogram draws `loop.turn_histogram`: one bar per bucket
/// of `/stats` plus one for the turns past the last bound, labelled from
/// 50 µs (the first bound) to `over 1.0 s`, with bars that hold every turn the
/// page had seen (no more than `stats`, read after the page, counts).
fn assert_histogram_drawn(page: &Page, stats: &serde_json::Value) {
    assert_eq!(page.chart_state("histogram"), "drawn");
    let histogram = &stats["loop"]["turn_histogram"];
    let buckets = histogram["buckets"]
        .as_array()
        .expect("turn_histogram.buckets");
    let chart = page.chart("histogram");
    let mut bars = Vec::new();
    let mut rest = chart;
    while let Some(i) = rest.find("<rect ") {
        let tag = tag_at(rest, i);
        bars.push((
            attr(tag, "data-label").unwrap_or_default(),
            value_of(tag, "histogram bar"),
        ));
        rest = &rest[i + tag.len()..];
    }
    assert_eq!(bars.len(), buckets.len() + 1, "{chart}");
    assert_eq!(bars[0].0, "50.0 µs");
    assert_eq!(bars[bars.len() - 1].0, "over 1.0 s");
    assert!(bars.iter().all(|(_, n)| *n >= 0.0), "{bars:?}");
    let drawn: f64 = bars.iter().map(|(_, n)| n).sum();
    let total = histogram["count"].as_f64().expect("turn_histogram.count");
    assert!(
        drawn >= 1.0 && drawn <= total,
        "{drawn} turns drawn, {total} counted"
    );
}

const COUNTERS: [&str; 5] = [
    "connections_open",
    "connections_total",
    "connections_rejected",
    "bytes_received",
    "bytes_sent",
];

/// The browser to use, or `None` when it is missing and skipping is allowed.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("SOCKETLAB_CHROMIUM").unwrap_or(CHROMIUM.into()));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("SOCKETLAB_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!(
            "skipped: no browser at {} and SOCKETLAB_SKIP_BROWSER=1",
            path.display()
        );
        return None;
    }
    panic!(
        "the dashboard test needs Chromium at {}: install it with .ci/install-tools \
         (Debian's chromium package), name another binary in SOCKETLAB_CHROMIUM, \
         or set SOCKETLAB_SKIP_BROWSER=1 to skip this test",
        path.display()
    );
}

/// Loads the page until its figures are live (two polls at least, so the
/// rates are differences between polls), within [`LIVE_DEADLINE`].
fn load_until_live(chromium: &PathBuf, url: &str) -> Page {
    let deadline = Instant::now() + LIVE_DEADLINE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = dump_dom(chromium, url);
        let why = match &outcome {
            Ok(dom) => {
                let page = Page { dom: dom.clone() };
                let (state, polls) = (page.body_attr("data-state"), page.body_attr("data-polls"));
                if state.as_deref() == Some("live")
                    && polls
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_some_and(|p| p >= 2)
                {
                    return page;
                }
                format!("page not live yet (state {state:?})")
            }
            Err(e) => e.clone(),
        };
        assert!(
            Instant::now() < deadline && attempts < 10,
            "no live figures after {attempts} attempt(s): {why}"
        );
    }
}

/// Runs Chromium headless on `url` and returns the DOM it dumps, killing
/// it (and everything it started) if it takes longer than [`RUN_LIMIT`].
fn dump_dom(chromium: &PathBuf, url: &str) -> Result<String, String> {
    use std::os::unix::process::CommandExt;

    let profile = tempfile::tempdir().expect("profile dir");
    let stderr_path = profile.path().join("stderr");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        // Its own process group, so its helper processes can be ended too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", chromium.display()))?;
    let group = child.id() as i32;

    // Read the output on the side: a full pipe must never stall Chromium.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });

    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) on the process group of a child we started; helpers
    // still alive after the browser are ended so the output pipe closes.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.wait();
    let dom = reader.join().expect("reader thread");
    let log = || {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    match status {
        None => Err(format!(
            "chromium ran over {RUN_LIMIT:?} and was killed:\n{}",
            log()
        )),
        Some(s) if !s.success() || dom.is_empty() => {
            Err(format!("chromium failed ({s}) with no DOM:\n{}", log()))
        }
        Some(_) => Ok(dom),
    }
}

/// The dumped DOM, read by ids and data attributes.
struct Page {
    dom: String,
}

impl Page {
    fn body_attr(&self, name: &str) -> Option<String> {
        let start = self.dom.find("<body")?;
        attr(tag_at(&self.dom, start), name)
    }

    /// The services with a row, in page order.
    fn services(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.dom.as_str();
        while let Some(i) = rest.find("<tr data-service=\"") {
            let tag = tag_at(rest, i);
            names.push(attr(tag, "data-service").expect("service name"));
            rest = &rest[i + tag.len()..];
        }
        names
    }

    /// The raw value of one cell of a service's row.
    fn cell(&self, service: &str, field: &str) -> f64 {
        let tag = self.cell_tag(service, field);
        value_of(tag, &format!("{service} {field}"))
    }

    /// The text a cell shows.
    fn cell_text(&self, service: &str, field: &str) -> String {
        let tag = self.cell_tag(service, field);
        let row = self.row(service);
        let after = &row[row.find(tag).unwrap() + tag.len()..];
        after[..after.find('<').expect("cell end")].to_string()
    }

    /// The raw value of a figure with an id.
    fn figure(&self, id: &str) -> f64 {
        let needle = format!("id=\"{id}\"");
        let i = self
            .dom
            .find(&needle)
            .unwrap_or_else(|| panic!("no element #{id}"));
        value_of(tag_at(&self.dom, i), id)
    }

    /// The reactors with a row, in page order.
    fn reactors(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.dom.as_str();
        while let Some(i) = rest.find("<tr data-reactor=\"") {
            let tag = tag_at(rest, i);
            names.push(attr(tag, "data-reactor").expect("reactor index"));
            rest = &rest[i + tag.len()..];
        }
        names
    }

    /// The raw value of one cell of a reactor's row.
    fn reactor_cell(&self, reactor: usize, field: &str) -> f64 {
        let start = self
            .dom
            .find(&format!("<tr data-reactor=\"{reactor}\""))
            .unwrap_or_else(|| panic!("no row for reactor {reactor}"));
        let row = &self.dom[start..];
        let row = &row[..row.find("</tr>").expect("row end")];
        let i = row
            .find(&format!("data-field=\"{field}\""))
            .unwrap_or_else(|| panic!("no {field} cell for reactor {reactor}"));
        value_of(tag_at(row, i), &format!("reactor {reactor} {field}"))
    }

    fn row(&self, service: &str) -> &str {
        let start = self
            .dom
            .find(&format!("<tr data-service=\"{service}\""))
            .unwrap_or_else(|| panic!("no row for {service}"));
        let row = &self.dom[start..];
        &row[..row.find("</tr>").expect("row end")]
    }

    fn cell_tag(&self, service: &str, field: &str) -> &str {
        let row = self.row(service);
        let i = row
            .find(&format!("data-field=\"{field}\""))
            .unwrap_or_else(|| panic!("no {field} cell for {service}"));
        tag_at(row, i)
    }
}

impl Page {
    /// The SVG of one chart, `<svg id="chart-NAME" ...>...</svg>`.
    fn chart(&self, name: &str) -> &str {
        let start = self
            .dom
            .find(&format!("id=\"chart-{name}\""))
            .unwrap_or_else(|| panic!("no chart {name}"));
        let start = self.dom[..start].rfind('<').expect("svg start");
        let svg = &self.dom[start..];
        &svg[..svg.find("</svg>").expect("svg end")]
    }

    fn chart_state(&self, name: &str) -> String {
        attr(tag_at(self.chart(name), 0), "data-state").unwrap_or_default()
    }

    fn chart_samples(&self, name: &str) -> usize {
        let tag = tag_at(self.chart(name), 0);
        attr(tag, "data-samples")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("chart {name} has no samples: {tag}"))
    }

    /// The series (lines) a chart draws, in page order.
    fn chart_series(&self, name: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = self.chart(name);
        while let Some(i) = rest.find("<polyline ") {
            let tag = tag_at(rest, i);
            names.push(attr(tag, "data-series").expect("series name"));
            rest = &rest[i + tag.len()..];
        }
        names
    }

    fn polyline(&self, name: &str, series: &str) -> &str {
        let chart = self.chart(name);
        let i = chart
            .find(&format!("data-series=\"{series}\""))
            .unwrap_or_else(|| panic!("chart {name} has no line for {series}"));
        tag_at(chart, i)
    }

    /// Every value a chart's line holds, oldest first.
    fn chart_values(&self, name: &str, series: &str) -> Vec<f64> {
        let raw = attr(self.polyline(name, series), "data-values").unwrap_or_default();
        raw.split(',')
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().expect("a number"))
            .collect()
    }

    /// The newest value of a chart's line.
    fn chart_last(&self, name: &str, series: &str) -> f64 {
        let raw = attr(self.polyline(name, series), "data-last").unwrap_or_default();
        raw.parse()
            .unwrap_or_else(|_| panic!("chart {name} {series}: no last value"))
    }
}

/// The whole tag (`<...>`) around byte `i` of `html`.
fn tag_at(html: &str, i: usize) -> &str {
    let start = html[..=i].rfind('<').expect("tag start");
    let end = i + html[i..].find('>').expect("tag end");
    &html[start..=end]
}

/// An attribute's value in a tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_string())
}

fn value_of(tag: &str, what: &str) -> f64 {
    let raw = attr(tag, "data-value").unwrap_or_else(|| panic!("{what} has no value: {tag}"));
    raw.parse()
        .unwrap_or_else(|_| panic!("{what}: not a number: {raw}"))
}

// ----- Talking to the daemon -------------------------------------------------

/// `GET /stats` on a fresh connection.
fn stats(d: &Daemon) -> serde_json::Value {
    let mut s = d.connect("admin");
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let response = read_to_end(&mut s).expect("response");
    let text = String::from_utf8(response).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    serde_json::from_str(body).expect("JSON")
}

fn echo_tcp_and_close(d: &Daemon, n: usize) {
    let mut s: TcpStream = d.connect("echo");
    s.write_all(&vec![b'e'; n]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap().len(), n);
}

fn echo_udp(d: &Daemon, n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.send_to(&vec![b'u'; n], d.udp("echo")).unwrap();
    let mut buf = [0u8; 1024];
    assert_eq!(s.recv_from(&mut buf).expect("echo datagram").0, n);
}
