//! The daemon as a whole: chargen and daytime, limits, descriptor
//! exhaustion, signals, command-line errors, idle timeouts, addresses.
//! Run: `cargo test --test daemon`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, PATIENCE, read_line, read_to_end, wait_until};

fn socketlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socketlab"))
}

// ----- chargen --------------------------------------------------------------

/// RFC 864 line `k`: 72 characters starting `k + 1` places after the
/// space in the 95 printable characters, then CR LF.
fn chargen_line(k: usize) -> Vec<u8> {
    let mut l: Vec<u8> = (0..72).map(|i| b' ' + ((k + 1 + i) % 95) as u8).collect();
    l.extend_from_slice(b"\r\n");
    l
}

#[test]
fn chargen_sends_the_rfc_864_pattern_starting_with_the_rfc_sample_line() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("chargen");
    let mut got = vec![0u8; 74 * 300];
    s.read_exact(&mut got).unwrap();
    assert_eq!(
        &got[..74],
        b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"
    );
    for (k, line) in got.chunks(74).enumerate() {
        assert_eq!(line, &chargen_line(k)[..], "line {k}");
    }
}

#[test]
fn chargen_only_produces_as_fast_as_the_client_reads() {
    let d = Daemon::start(&[]);
    let baseline = d.rss();
    let mut s = d.connect("chargen");
    // Read a little, then stop reading: the daemon must not keep producing
    // into its own memory; kernel buffers fill and writes block.
    let mut buf = [0u8; 1000];
    s.read_exact(&mut buf).unwrap();
    let mut other = d.connect("echo");
    // Give the loop many turns while the chargen client does not read.
    for i in 0..200 {
        let msg = format!("ping {i:05}");
        other.write_all(msg.as_bytes()).unwrap();
        let mut back = [0u8; 10];
        other.read_exact(&mut back).unwrap();
        assert_eq!(&back[..], msg.as_bytes());
    }
    let grown = d.rss().saturating_sub(baseline);
    assert!(grown < 4 << 20, "chargen grew the daemon by {grown} bytes");
    // The stream continues where it stopped, without a gap.
    let mut more = vec![0u8; 74 * 100];
    s.read_exact(&mut more).unwrap();
}

#[test]
fn chargen_keeps_up_with_a_fast_reader_far_past_one_turns_budget() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("chargen");
    // Many write budgets' worth: a stream that stalled after one turn's
    // refills would time out here.
    let mut got = vec![0u8; 74 * 100_000];
    s.read_exact(&mut got).unwrap();
    for (k, line) in got.chunks(74).enumerate().step_by(997) {
        assert_eq!(line, &chargen_line(k)[..], "line {k}");
    }
}

#[test]
fn chargen_goes_on_after_a_half_close_and_reads_the_fin_only_once() {
    let d = Daemon::start(&["--trace"]);
    let mut s = d.connect("chargen");
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = vec![0u8; 74 * 20_000];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..74], &chargen_line(0)[..]);
    assert!(wait_until(|| d.stderr().contains("read EOF")));
    // Many more writable events follow the FIN; none may read again.
    let mut more = vec![0u8; 74 * 20_000];
    s.read_exact(&mut more).unwrap();
    assert_eq!(d.stderr().matches("read EOF").count(), 1);
}

// ----- daytime --------------------------------------------------------------

/// Checks `YYYY-MM-DD HH:MM:SS`.
fn assert_datetime_shape(s: &str) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 19, "{s:?}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "{s:?}"),
            10 => assert_eq!(*c, b' ', "{s:?}"),
            13 | 16 => assert_eq!(*c, b':', "{s:?}"),
            _ => assert!(c.is_ascii_digit(), "{s:?}"),
        }
    }
}

#[test]
fn daytime_over_tcp_sends_one_line_and_closes() {
    let d = Daemon::start(&[]);
    let mut s = d.connect("daytime");
    let text = String::from_utf8(read_to_end(&mut s).unwrap()).unwrap();
    let line = text.strip_suffix('\n').expect("ends in a newline");
    assert_datetime_shape(line);
}

fn ask_udp(d: &Daemon, datagram: &[u8]) -> String {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    u.send_to(datagram, d.udp("daytime")).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = u.recv_from(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn daytime_over_udp_answers_an_empty_datagram_with_the_time_and_no_newline() {
    let d = Daemon::start(&[]);
    assert_datetime_shape(&ask_udp(&d, b""));
}

#[test]
fn daytime_over_udp_formats_with_the_listed_strftime_specifiers() {
    let d = Daemon::start_with(&[], |c| {
        c.env("TZ", "UTC");
    });
    let year = ask_udp(&d, b"%Y");
    assert_eq!(year.len(), 4);
    assert!(year.starts_with("20"));
    assert_eq!(ask_udp(&d, b"100%%"), "100%");
    assert_eq!(ask_udp(&d, b"%Z %z"), "UTC +0000");
    let x = ask_udp(&d, b"%x %X");
    assert_eq!(x.len(), 17, "{x:?}"); // 11/23/26 16:05:01
    assert_eq!(&x[2..3], "/");
    assert_eq!(&x[11..12], ":");
    let p = ask_udp(&d, b"%p");
    assert!(p == "AM" || p == "PM", "{p:?}");
    let all = ask_udp(&d, b"%Y %m %d %H %M %S %X %x %a %A %b %B %j %p %y %Z %z %%");
    assert!(!all.starts_with("error"), "{all:?}");
}

#[test]
fn daytime_over_udp_refuses_bad_formats_with_a_reason() {
    let d = Daemon::start(&[]);
    assert_eq!(ask_udp(&d, b"%Q"), "error: unknown specifier %Q");
    assert_eq!(ask_udp(&d, b"%c"), "error: unknown specifier %c");
    assert_eq!(
        ask_udp(&d, b"the end %"),
        "error: lone % at the end of the format"
    );
    assert!(ask_udp(&d, &[b'%', 0xff]).starts_with("error: "));
    assert!(ask_udp(&d, &[b'a'; 257]).starts_with("error: "));
    assert_eq!(ask_udp(&d, &[b'a'; 256]), "a".repeat(256));
}

// ----- Connection limits ----------------------------------------------------

/// True when the daemon closed the connection without sending anything.
fn closed_at_once(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(0))
}

fn echoes(s: &mut TcpStream) -> bool {
    s.write_all(b"ok?").is_ok() && {
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok?"
    }
}

#[test]
fn connections_over_a_service_limit_are_accepted_and_closed_at_once() {
    let d = Daemon::start(&["--set", "echo.max_connections=2"]);
    let mut a = d.connect("echo");
    let mut b = d.connect("echo");
    assert!(echoes(&mut a) && echoes(&mut b));
    let mut c = d.connect("echo");
    assert!(closed_at_once(&mut c));
    // Other services are not limited by echo's limit.
    let mut x = d.connect("discard");
    x.write_all(b"fine").unwrap();
    // When one leaves, there is room again.
    drop(a);
    assert!(wait_until(|| {
        let mut s = d.connect("echo");
        echoes(&mut s)
    }));
}

#[test]
fn connections_over_the_global_limit_are_accepted_and_closed_at_once() {
    let d = Daemon::start(&["--set", "limits.max_connections=2"]);
    let mut a = d.connect("echo");
    let mut b = d.connect("discard");
    assert!(echoes(&mut a));
    b.write_all(b"x").unwrap();
    let mut c = d.connect("echo");
    assert!(closed_at_once(&mut c));
}

#[test]
fn connections_over_the_per_ip_cap_are_turned_away_like_at_other_limits() {
    let d = Daemon::start(&["--set", "limits.max_connections_per_ip=2"]);
    // The cap counts one client's connections over every service.
    let mut a = d.connect("echo");
    let mut chat = d.connect("chat");
    assert!(echoes(&mut a));
    assert!(read_line(&mut chat).starts_with("* welcome "));

    let mut over = d.connect("echo");
    assert!(closed_at_once(&mut over), "echo: closed without a word");
    let mut over = d.connect("chat");
    assert_eq!(read_line(&mut over), "! error: too many connections\n");
    assert_eq!(read_to_end(&mut over).unwrap(), b"");
    let mut over = d.connect("admin");
    let answer = String::from_utf8(read_to_end(&mut over).unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    let mut over = d.connect("exec");
    let frame = read_to_end(&mut over).unwrap();
    assert!(
        String::from_utf8_lossy(&frame).contains(r#""code":"busy""#),
        "{frame:?}"
    );

    // A connection that ends makes room for one more.
    drop(a);
    assert!(wait_until(|| {
        let mut s = d.connect("echo");
        echoes(&mut s)
    }));
}

#[test]
fn the_per_ip_cap_counts_ipv6_clients_too() {
    let d = Daemon::start(&["--bind", "::1", "--set", "limits.max_connections_per_ip=1"]);
    assert!(d.tcp("echo").is_ipv6());
    let mut a = d.connect("echo");
    assert!(echoes(&mut a));
    let mut over = d.connect("echo");
    assert!(closed_at_once(&mut over));
}

#[test]
fn the_per_ip_cap_is_off_by_default() {
    let d = Daemon::start(&[]);
    let mut held: Vec<TcpStream> = (0..40).map(|_| d.connect("echo")).collect();
    for s in &mut held {
        assert!(echoes(s));
    }
}

// ----- Descriptor exhaustion ------------------------------------------------

#[test]
fn running_out_of_descriptors_neither_spins_nor_stalls_and_the_daemon_recovers() {
    const LIMIT: u64 = 64;
    // One loop and its one spare descriptor under a 64-descriptor limit;
    // tests/reactors.rs has the same check with two.
    let d = Daemon::start_with_descriptor_limit(
        &["--set", "limits.max_connections=10000", "--reactors", "1"],
        LIMIT,
    );
    // A first client, connected while descriptors remain.
    let mut first = d.connect("echo");
    assert!(echoes(&mut first));

    // Far more clients than descriptors: some are served, the rest are
    // closed at once, and none hangs.
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..150 {
        let mut s = d.connect("echo");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if echoes(&mut s) {
            served.push(s);
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "the limit was never reached");
    assert!(
        served.len() as u64 > LIMIT / 2,
        "only {} served",
        served.len()
    );

    // The daemon stays responsive for those it has, and does not spin.
    assert!(echoes(&mut first));
    let cpu_before = cpu_ticks(d.pid());
    std::thread::sleep(Duration::from_millis(300));
    let spent = cpu_ticks(d.pid()) - cpu_before;
    assert!(
        spent <= 5,
        "daemon used {spent} ticks while idle: spinning?"
    );

    // Freeing descriptors lets it accept again.
    served.truncate(10);
    assert!(wait_until(|| {
        let mut s = d.connect("echo");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        echoes(&mut s)
    }));
    assert!(d.stderr().contains("Too many open files"));
}

/// User + system CPU ticks of a process, from /proc/PID/stat.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

// ----- Signals --------------------------------------------------------------

#[test]
fn sigterm_flushes_closes_connections_with_fin_and_exits_zero() {
    let mut d = Daemon::start(&[]);
    let mut s = d.connect("echo");
    assert!(echoes(&mut s));
    d.signal(libc::SIGTERM);
    // The client sees a clean end of stream, not a reset.
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    drop(s);
    assert_eq!(d.wait().code(), Some(0));
    // Listeners are gone.
    assert!(TcpStream::connect(d.tcp("echo")).is_err());
}

#[test]
fn sigint_exits_zero_too() {
    let mut d = Daemon::start(&[]);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait().code(), Some(0));
}

// ----- Command line and configuration errors --------------------------------

fn serve_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = socketlab()
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "args {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_and_values_exit_2_with_a_clear_line() {
    assert!(serve_fails(&["--no-such-flag"]).contains("--no-such-flag"));
    assert!(serve_fails(&["--port-base", "70000"]).contains("70000"));
    assert!(serve_fails(&["--set", "echo.moed=upper"]).contains("echo.moed"));
    assert!(serve_fails(&["--set", "echo.mode=loud"]).contains("echo.mode"));
    assert!(serve_fails(&["--set", "port_base=\"x\""]).contains("port_base"));
    assert!(serve_fails(&["--listen", "nope=127.0.0.1:1"]).contains("nope"));
    assert!(serve_fails(&["--log-level", "chatty"]).contains("chatty"));
}

#[test]
fn a_port_in_use_exits_2_naming_the_service_and_address_and_starts_nothing() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let ready = tempfile::tempdir().unwrap();
    let ready_file = ready.path().join("ready.json");
    let err = serve_fails(&[
        "--port-base",
        "0",
        "--listen",
        &format!("chargen={addr}"),
        "--ready-file",
        ready_file.to_str().unwrap(),
    ]);
    assert!(err.contains("chargen"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("socketlab:")).count(),
        1,
        "{err}"
    );
    assert!(!ready_file.exists(), "a ready file was written");
}

#[test]
fn print_config_prints_the_effective_configuration_as_toml() {
    let out = socketlab()
        .args([
            "serve",
            "--print-config",
            "--set",
            "echo.mode=upper",
            "--port-base",
            "9000",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let value: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(value["echo"]["mode"].as_str(), Some("upper"));
    assert_eq!(value["port_base"].as_integer(), Some(9000));
    // Derived values are comments, so they do not freeze when fed back.
    assert!(value["echo"].get("listen").is_none(), "{text}");
    assert!(text.contains("# listen = \"127.0.0.1:9007\""), "{text}");
    assert!(text.contains("# max_connections = "), "{text}");
}

#[test]
fn a_printed_config_fed_back_with_an_edited_port_base_moves_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let printed = socketlab()
        .args(["serve", "--print-config", "--set", "echo.mode=upper"])
        .output()
        .unwrap();
    assert_eq!(printed.status.code(), Some(0));
    let text = String::from_utf8(printed.stdout).unwrap();
    let file = dir.path().join("socketlab.toml");
    std::fs::write(&file, text.replace("port_base = 7000", "port_base = 8000")).unwrap();
    let again = socketlab()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let text = String::from_utf8(again.stdout).unwrap();
    assert!(text.contains("# listen = \"127.0.0.1:8007\""), "{text}");
    assert!(text.contains("# listen = \"127.0.0.1:8512\""), "{text}");
    assert!(text.contains("mode = \"upper\""), "{text}");
}

#[test]
fn a_config_file_is_read_and_set_wins_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("socketlab.toml");
    std::fs::write(&file, "[echo]\nmode = \"upper\"\n[chat]\nmax_line = 100\n").unwrap();
    let d = Daemon::start(&[
        "--config",
        file.to_str().unwrap(),
        "--set",
        "echo.mode=\"stamp\"",
    ]);
    let mut s = d.connect("echo");
    s.write_all(b"x\n").unwrap();
    let line = read_line(&mut s);
    assert!(line.starts_with('['), "{line:?}");
}

// ----- Idle timeouts --------------------------------------------------------

#[test]
fn an_idle_connection_is_closed_after_its_timeout_and_a_busy_one_is_not() {
    let d = Daemon::start(&["--set", "echo.idle_timeout_s=1"]);
    let mut idle = d.connect("echo");
    let mut busy = d.connect("echo");
    busy.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Keep `busy` active for two idle periods; `idle` must be closed.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        assert!(echoes(&mut busy), "a busy connection was closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
}

// ----- Addresses ------------------------------------------------------------

#[test]
fn a_service_can_listen_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let mut d = Daemon::start(&["--listen", &format!("echo=unix:{}", path.display())]);
    assert_eq!(
        d.addr_str("echo", "tcp"),
        format!("unix:{}", path.display())
    );
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"over unix").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), b"over unix");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait().code(), Some(0));
    assert!(!path.exists(), "the socket file was left behind");
}

#[test]
fn the_daemon_binds_ipv6_loopback() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let d = Daemon::start(&["--bind", "::1"]);
    let addr = d.tcp("echo");
    assert!(addr.is_ipv6());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(echoes(&mut s));
    let u = UdpSocket::bind("[::1]:0").unwrap();
    u.set_read_timeout(Some(PATIENCE)).unwrap();
    u.send_to(b"v6", d.udp("echo")).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(u.recv_from(&mut buf).unwrap().0, 2);
}

#[test]
fn a_disabled_service_is_not_bound_and_not_in_the_ready_file() {
    let d = Daemon::start(&["--disable", "chargen"]);
    assert!(d.ready.get("chargen").is_none());
    assert!(d.ready.get("echo").is_some());
}

// ----- Trace ----------------------------------------------------------------

#[test]
fn trace_shows_readiness_reads_writes_and_eof() {
    let d = Daemon::start(&["--trace"]);
    let mut s = d.connect("echo");
    s.write_all(b"traced").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut s).unwrap(), b"");
    let needles = [
        "accepted",
        "readable",
        "read 6 bytes",
        "wrote 6 bytes",
        "read EOF",
        "FIN sent",
    ];
    let all_there = || {
        let log = d.stderr();
        needles.iter().all(|n| log.contains(n))
    };
    assert!(wait_until(all_there), "trace incomplete:\n{}", d.stderr());
}

/// Splits `trace 12.345678 rest` into the stamp's seconds and the rest.
fn trace_stamp(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix("trace ")?;
    let (stamp, rest) = rest.split_once(' ')?;
    let (secs, micros) = stamp.split_once('.')?;
    if micros.len() != 6 || !micros.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stamp.parse().ok()?, rest)).filter(|_| secs.parse::<u64>().is_ok())
}

#[test]
fn every_trace_line_carries_seconds_since_start_to_the_microsecond() {
    // One loop, whose lines follow one clock in order; with several, the
    // lines name their reactor (tests/reactors.rs).
    let d = Daemon::start(&["--trace", "--reactors", "1"]);
    let mut s = d.connect("echo");
    s.write_all(b"stamped").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert!(wait_until(|| d.stderr().contains("wrote 7 bytes")));
    let log = d.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("trace")).collect();
    assert!(lines.len() >= 4, "{log}");
    let mut last = 0.0;
    for line in lines {
        let (t, rest) = trace_stamp(line).unwrap_or_else(|| panic!("no stamp: {line:?}"));
        assert!(t >= last, "stamps go backwards at {line:?}");
        assert!(
            rest.starts_with('#') || rest.starts_with("-- turn"),
            "{line:?}"
        );
        last = t;
    }
}

#[test]
fn a_turn_woken_only_by_a_timer_prints_its_header() {
    let d = Daemon::start(&["--trace", "--set", "echo.idle_timeout_s=1"]);
    let _s = d.connect("echo");
    assert!(wait_until(|| d.stderr().contains("timer fired: idle")));
    let log = d.stderr();
    let before: Vec<&str> = log
        .lines()
        .take_while(|l| !l.contains("timer fired: idle"))
        .collect();
    let header = before
        .iter()
        .rev()
        .find(|l| l.contains("-- turn"))
        .expect("a turn header");
    assert!(
        header.contains("0 event(s), 0 ready, timer due"),
        "the idle timer's turn has no header of its own:\n{log}"
    );
}
