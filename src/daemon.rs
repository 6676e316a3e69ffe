//! `socketlab serve`: load the configuration, bind every listener, run the reactor.
//!
//! Start-up is all-or-nothing ("nothing half-started", PROTOCOL.md §1).
//! Every listener is bound before anything else happens: no `listening`
//! line is logged, no data dir, key file or pid file is created. If one
//! address is in use or one value is wrong, the daemon says so in one line
//! on stderr and exits with status 2, having served nobody and left nothing
//! behind. Only once every socket is held does it create its files, log one
//! `listening` line per listener, write the pid file and then the ready
//! file (atomically, so a test or script that waits for it never reads half
//! a file), and start the loop.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use crate::config::{self, Config, ListenAddr, Overrides, Reactors};
use crate::reactor::{Bound, Group, ListenSocket, Reactor};
use crate::services::chat::Hub as ChatHub;
use crate::services::{self, Common, ServiceId, Shared};

/// `socketlab serve` (PROTOCOL.md §1).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set one configuration key (VALUE in TOML syntax; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where the daemon keeps its state [default: socketlab-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address every service binds unless told otherwise [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Every service listens on PORT-BASE + its offset; 0 = ephemeral ports [default: 7000].
    #[arg(long, value_name = "N")]
    port_base: Option<u16>,
    /// Move one service: SERVICE=HOST:PORT or SERVICE=unix:/path (repeatable).
    #[arg(long, value_name = "SERVICE=ADDR")]
    listen: Vec<String>,
    /// Do not start SERVICE (repeatable).
    #[arg(long, value_name = "SERVICE")]
    disable: Vec<String>,
    /// Event loops to run, each on its own thread: a number or `auto`
    /// (one per CPU this process may use); the `reactors` key [default: 1].
    #[arg(long, value_name = "N")]
    reactors: Option<String>,
    /// Once every listener is bound, write their addresses here as JSON.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Print one line per readiness event and I/O outcome.
    #[arg(long)]
    trace: bool,
    /// Once every listener is bound, write the daemon's process id here;
    /// removed again when the daemon exits.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// error, warn, info, debug, trace or off [default: RUST_LOG, else info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("socketlab: {message}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: Args) -> Result<(), String> {
    crate::logging::init(args.log_level.as_deref())?;
    let flags = Overrides {
        bind: args.bind,
        port_base: args.port_base,
        data_dir: args.data_dir,
        listen: args.listen,
        disable: args.disable,
    };
    // `--reactors N` is `--set reactors=N` given first, so an explicit
    // `--set` still has the last word, as it has over the file.
    let mut sets = args.set;
    if let Some(n) = &args.reactors {
        let value = if n == "auto" {
            "\"auto\"".to_string()
        } else {
            n.clone()
        };
        sets.insert(0, format!("reactors={value}"));
    }
    let mut config =
        config::load(args.config.as_deref(), &sets, &flags).map_err(|e| e.to_string())?;
    let open_files = raise_open_file_limit();
    let derived_max = open_files.saturating_sub(32).max(1);
    if args.print_config {
        // Printed before the limit is filled in, so the file shows it as a
        // derived comment and a file fed back keeps deriving it.
        print!("{}", config.to_toml(Some(derived_max)));
        return Ok(());
    }
    let max_connections = *config.limits.max_connections.get_or_insert(derived_max);

    // Bind first: a port in use must fail before any file is made or any
    // line says "listening". Dropping `bound` on a later error closes the
    // sockets (and removes Unix socket files).
    let reactors = reactor_count(config.reactors);
    let spread = reactors > 1;
    let (bound, listening) = bind_all(&config, spread)?;
    let mut sibling_sockets = Vec::new();
    for _ in 1..reactors {
        sibling_sockets.push(bind_siblings(&bound)?);
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let exposure = exposure_warnings(&config, &listening);
    let slow_turn = Duration::from_millis(config.limits.slow_turn_ms);
    let group = Arc::new(Group::new(
        reactors,
        max_connections,
        config.limits.max_connections_per_ip,
    ));
    // Loaded once for every reactor: the exec key, the files user store.
    let common = Common::new(&config).map_err(|e| e.to_string())?;
    // Only the daemon, and only once, adopts what its programs leave
    // behind where they get no cgroup (services/exec/subreaper.rs).
    common.become_subreaper();
    // With several reactors the chat's rooms and nicks are the daemon's:
    // one hub, its lines put in order through every reactor's inbox.
    let chat = Arc::new(if spread {
        ChatHub::across(&config.chat, group.clone())
    } else {
        ChatHub::local(&config.chat)
    });
    let siblings = Siblings {
        config: config.clone(),
        common: common.clone(),
        max_connections,
        trace: args.trace,
        slow_turn,
        group: group.clone(),
        chat: chat.clone(),
    };
    let shared = Shared::joined(config, &common).with_chat(chat, 0);
    let mut reactor = Reactor::new(bound, shared, max_connections, args.trace)
        .map_err(|e| e.to_string())?
        .join(group, 0);
    reactor.set_slow_turn(slow_turn);
    let threads = siblings.start(sibling_sockets)?;
    let mut ready = Ready::new();
    for l in &listening {
        log::info!("listening {} {} {}", l.service, l.transport, l.shown);
        let transport = if l.transport == "unix" {
            "tcp"
        } else {
            l.transport
        };
        ready
            .entry(l.service.name())
            .or_default()
            .insert(transport, l.ready.clone());
    }
    for warning in exposure {
        log::warn!("{warning}");
    }
    let _pid_file = match &args.pid_file {
        Some(path) => Some(
            PidFile::write(path)
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &ready)
            .map_err(|e| format!("cannot write ready file {}: {e}", path.display()))?;
    }
    log::info!(
        "ready: {max_connections} connections at most (open-file limit {open_files}), \
         {reactors} reactor(s)"
    );
    run_reactors(reactor, threads)
}

/// What every reactor after the first is built from.
struct Siblings {
    /// The daemon's configuration. A service a sibling does not host
    /// (chat) is still enabled in it, so the admin endpoint on any reactor
    /// reports it; a sibling binds no socket for it (`bind_siblings`).
    config: Config,
    /// What the services of every reactor share, loaded once.
    common: Common,
    max_connections: usize,
    trace: bool,
    /// `limits.slow_turn_ms`, which every reactor logs against.
    slow_turn: Duration,
    group: Arc<Group>,
    /// The chat every reactor serves a part of.
    chat: Arc<ChatHub>,
}

type ReactorThread = std::thread::JoinHandle<io::Result<()>>;

impl Siblings {
    /// Starts one thread per set of sockets, each building its reactor
    /// there (a reactor holds sessions that are not `Send`, so it is born
    /// on the thread it runs on) and reporting back before it runs, so a
    /// reactor that cannot be built stops the start-up like any other
    /// error.
    fn start(self, sockets: Vec<Vec<Bound>>) -> Result<Vec<ReactorThread>, String> {
        let mut threads = Vec::new();
        for (i, bound) in sockets.into_iter().enumerate() {
            let index = i + 1;
            let (built_tx, built_rx) = std::sync::mpsc::sync_channel(1);
            let (config, group) = (self.config.clone(), self.group.clone());
            let common = self.common.clone();
            let chat = self.chat.clone();
            let (max_connections, trace) = (self.max_connections, self.trace);
            let slow_turn = self.slow_turn;
            let thread = std::thread::Builder::new()
                .name(format!("reactor-{index}"))
                .spawn(move || {
                    let shared = Shared::joined(config, &common).with_chat(chat, index);
                    let built = Reactor::new(bound, shared, max_connections, trace);
                    match built {
                        Ok(reactor) => {
                            let _ = built_tx.send(Ok(()));
                            let mut reactor = reactor.join(group, index);
                            reactor.set_slow_turn(slow_turn);
                            reactor.run()
                        }
                        Err(e) => {
                            let _ = built_tx.send(Err(e.to_string()));
                            Ok(())
                        }
                    }
                })
                .map_err(|e| format!("cannot start reactor {index}: {e}"))?;
            match built_rx.recv() {
                Ok(Ok(())) => threads.push(thread),
                Ok(Err(e)) => return Err(format!("cannot build reactor {index}: {e}")),
                Err(_) => return Err(format!("reactor {index} failed while starting")),
            }
        }
        Ok(threads)
    }
}

/// Runs the first reactor on this thread and waits for the others, which
/// run on threads of their own. Each reactor receives SIGINT/SIGTERM
/// itself (signal-hook delivers a signal to every registered receiver), so
/// each closes its own connections; the daemon exits once the last has
/// finished.
fn run_reactors(mut first: Reactor, threads: Vec<ReactorThread>) -> Result<(), String> {
    let mut outcome = first.run().map_err(|e| format!("event loop failed: {e}"));
    for (i, thread) in threads.into_iter().enumerate() {
        let result = match thread.join() {
            Ok(result) => result.map_err(|e| format!("event loop {} failed: {e}", i + 1)),
            Err(_) => Err(format!("event loop {} panicked", i + 1)),
        };
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// How many reactors to run: the configured number, or for `"auto"` one
/// per CPU this process may run on (`available_parallelism` reads the
/// affinity mask and the cgroup's CPU quota, so a daemon pinned with
/// `taskset` or limited by its container does not oversubscribe).
fn reactor_count(reactors: Reactors) -> usize {
    match reactors {
        Reactors::Fixed(n) => n.max(1),
        Reactors::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Binds, for one more reactor, a second socket on the address of each
/// TCP and UDP socket, with `SO_REUSEPORT`: every service is served by
/// every reactor (what their connections share is the daemon's: the
/// chat hub, and `services::Common`), and the kernel
/// then hands each new connection (each datagram's flow, for UDP) to one
/// of the sockets sharing the port.
fn bind_siblings(first: &[Bound]) -> Result<Vec<Bound>, String> {
    let mut bound = Vec::new();
    for b in first {
        match b {
            Bound::Stream(id, ListenSocket::Tcp(tcp)) => {
                let addr = tcp.local_addr().map_err(|e| e.to_string())?;
                let tcp = bind_tcp(addr, true)
                    .map_err(|e| format!("cannot listen for {id} on tcp {addr}: {e}"))?;
                bound.push(Bound::Stream(*id, ListenSocket::Tcp(tcp)));
            }
            Bound::Datagram(id, udp) => {
                let addr = udp.local_addr().map_err(|e| e.to_string())?;
                let udp = bind_udp(addr, true)
                    .map_err(|e| format!("cannot listen for {id} on udp {addr}: {e}"))?;
                bound.push(Bound::Datagram(*id, udp));
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// One bound listener, as the log line and the ready file show it.
struct Listening {
    service: ServiceId,
    /// `tcp`, `udp` or `unix` in the log; a Unix listener is `tcp` in the
    /// ready file (PROTOCOL.md §1).
    transport: &'static str,
    /// The address as logged: `127.0.0.1:7007` or `/run/e.sock`.
    shown: String,
    /// The address as the ready file gives it: `unix:` before a path.
    ready: String,
    /// The IP, for the warning about exec on a non-loopback address.
    ip: Option<std::net::IpAddr>,
}

/// The warnings to log at start, one per exec listener on an IP address
/// that is not loopback. The exec service runs programs for anyone holding
/// the key. On loopback only local users can reach it; anywhere else the
/// key is all that stands between the network and the daemon's user, and
/// the traffic is not encrypted, which is worth a line every time the
/// daemon starts. Unix sockets are left to file permissions.
fn exposure_warnings(config: &Config, listening: &[Listening]) -> Vec<String> {
    let what = if config.exec.allow_shell {
        "shell commands and programs"
    } else {
        "programs"
    };
    listening
        .iter()
        .filter(|l| l.service == ServiceId::Exec && l.ip.is_some_and(|ip| !ip.is_loopback()))
        .map(|l| {
            format!(
                "exec listens on {}, which is not a loopback address: anyone who can reach it \
                 and holds the key runs {what} as this user, over an unencrypted connection \
                 (see docs/security.md)",
                l.shown
            )
        })
        .collect()
}

/// The pid file: written once the daemon holds its sockets, removed when
/// the daemon exits normally (this value is dropped at the end of `serve`).
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> io::Result<PidFile> {
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, path)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the ready file says of one service: `{"tcp": ..., "udp": ...}`.
type Ready = BTreeMap<&'static str, BTreeMap<&'static str, String>>;

/// Binds every enabled service, or none: the first failure drops what was
/// bound so far and is reported naming the service and address. Nothing is
/// logged here; the caller logs the listeners once all are bound.
/// With `spread`, the sockets of services every reactor serves are bound
/// with `SO_REUSEPORT`, so the other reactors can bind theirs beside them.
fn bind_all(config: &Config, spread: bool) -> Result<(Vec<Bound>, Vec<Listening>), String> {
    let mut bound = Vec::new();
    let mut listening = Vec::new();
    let inet = |id, transport, local: SocketAddr| Listening {
        service: id,
        transport,
        shown: local.to_string(),
        ready: local.to_string(),
        ip: Some(local.ip()),
    };
    for id in ServiceId::ALL {
        if !config.service(id).enabled || !services::is_implemented(id) {
            continue;
        }
        let addr = config.listen_addr(id).map_err(|e| e.to_string())?;
        match addr {
            ListenAddr::Inet(addr) => {
                let (tcp, udp) = bind_inet(id, addr, spread)?;
                let local = tcp.local_addr().map_err(|e| e.to_string())?;
                listening.push(inet(id, "tcp", local));
                bound.push(Bound::Stream(id, ListenSocket::Tcp(tcp)));
                if let Some(udp) = udp {
                    let local = udp.local_addr().map_err(|e| e.to_string())?;
                    listening.push(inet(id, "udp", local));
                    bound.push(Bound::Datagram(id, udp));
                }
            }
            ListenAddr::Unix(path) => {
                let listener = bind_unix(id, &path)?;
                listening.push(Listening {
                    service: id,
                    transport: "unix",
                    shown: path.display().to_string(),
                    ready: format!("unix:{}", path.display()),
                    ip: None,
                });
                bound.push(Bound::Stream(
                    id,
                    ListenSocket::Unix(listener, path.clone()),
                ));
                // A Unix listener replaces the TCP one only; the UDP side of
                // the service stays on its derived address.
                if id.has_udp() {
                    let mut derived = config.clone();
                    derived.service_mut(id).listen = None;
                    if let Ok(ListenAddr::Inet(addr)) = derived.listen_addr(id) {
                        let udp = bind_udp(addr, spread)
                            .map_err(|e| format!("cannot listen for {id} on udp {addr}: {e}"))?;
                        let local = udp.local_addr().map_err(|e| e.to_string())?;
                        listening.push(inet(id, "udp", local));
                        bound.push(Bound::Datagram(id, udp));
                    }
                }
            }
        }
    }
    Ok((bound, listening))
}

/// Binds a service's TCP listener and, if it has one, its UDP socket on the
/// same port number. With port 0 the kernel picks the TCP port; the UDP
/// socket then takes the same number, retried a few times in the rare case
/// that number is taken for UDP.
fn bind_inet(
    id: ServiceId,
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<(mio::net::TcpListener, Option<mio::net::UdpSocket>), String> {
    for _ in 0..16 {
        let tcp = bind_tcp(addr, reuse_port)
            .map_err(|e| format!("cannot listen for {id} on tcp {addr}: {e}"))?;
        if !id.has_udp() {
            return Ok((tcp, None));
        }
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        match bind_udp(local, reuse_port) {
            Ok(udp) => return Ok((tcp, Some(udp))),
            Err(_) if addr.port() == 0 => continue,
            Err(e) => return Err(format!("cannot listen for {id} on udp {addr}: {e}")),
        }
    }
    Err(format!(
        "cannot find a port free for both tcp and udp for {id}"
    ))
}

/// Binds a TCP listener, with `SO_REUSEPORT` when asked; without it, this
/// is what `mio::net::TcpListener::bind` does (`SO_REUSEADDR`, so a
/// restarted daemon is not kept off its port by connections in
/// TIME_WAIT), with a deeper backlog.
fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let tcp = mio::net::TcpListener::from_std(socket.into());
    deepen_backlog(&tcp);
    Ok(tcp)
}

/// Binds a UDP socket, with `SO_REUSEPORT` when asked.
fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::UdpSocket> {
    if !reuse_port {
        return mio::net::UdpSocket::bind(addr);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    set_reuse_port(&socket)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Sets `SO_REUSEPORT`: every socket bound to the port by this user with
/// the option set shares it, and the kernel spreads new connections over
/// them. (socket2 has it behind its `all` feature; one `setsockopt` does
/// not justify the feature.)
fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a descriptor we own, with a pointer to a local
    // int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mio listens with a backlog of 1024. A load test that opens thousands of
/// connections at once overflows that before the loop's first accept, and
/// the kernel then drops SYNs (clients retry after a second). Calling
/// `listen()` again on a listening socket only changes the backlog; the
/// kernel caps it at `net.core.somaxconn`.
fn deepen_backlog(listener: &mio::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own; failure is harmless.
    unsafe {
        libc::listen(listener.as_raw_fd(), 65_535);
    }
}

/// Binds a Unix domain socket, removing a stale socket file left by a
/// daemon that died, but never one a live daemon still answers on.
fn bind_unix(id: ServiceId, path: &Path) -> Result<mio::net::UnixListener, String> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "cannot listen for {id} on unix {}: address in use",
                    path.display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(path);
            }
            Err(e) => {
                return Err(format!(
                    "cannot listen for {id} on unix {}: path exists ({e})",
                    path.display()
                ));
            }
        }
    }
    mio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen for {id} on unix {}: {e}", path.display()))
}

/// Writes the ready file atomically: a temporary file beside it, then a
/// rename, so a reader sees either no file or the whole of it.
fn write_ready_file(path: &Path, ready: &Ready) -> io::Result<()> {
    let json = serde_json::to_string(ready).map_err(io::Error::other)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Raises the soft open-file limit to the hard limit, as Redis does, and
/// returns the limit in force.
fn raise_open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_on(addr: &str) -> Listening {
        let addr: SocketAddr = addr.parse().unwrap();
        Listening {
            service: ServiceId::Exec,
            transport: "tcp",
            shown: addr.to_string(),
            ready: addr.to_string(),
            ip: Some(addr.ip()),
        }
    }

    #[test]
    fn exec_on_a_non_loopback_address_is_warned_about_naming_the_risk() {
        let config = Config::default();
        let warnings = exposure_warnings(&config, &[exec_on("192.0.2.7:7512")]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert!(w.contains("192.0.2.7:7512"), "{w}");
        assert!(w.contains("not a loopback address"), "{w}");
        assert!(w.contains("unencrypted"), "{w}");
        assert!(!w.contains("shell"), "{w}");

        let mut config = Config::default();
        config.exec.allow_shell = true;
        let warnings = exposure_warnings(&config, &[exec_on("[2001:db8::1]:7512")]);
        assert!(warnings[0].contains("shell commands"), "{warnings:?}");
    }

    #[test]
    fn exec_on_loopback_and_other_services_anywhere_are_not_warned_about() {
        let config = Config::default();
        let mut echo = exec_on("192.0.2.7:7007");
        echo.service = ServiceId::Echo;
        let quiet = [exec_on("127.0.0.1:7512"), exec_on("[::1]:7512"), echo];
        assert!(exposure_warnings(&config, &quiet).is_empty());
    }
}
