//! The command line itself: usage errors, shell completions and the manual
//! page, through the real binary.
//! Run: `cargo test --test cli`.

use std::process::{Command, Output, Stdio};

fn socketlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_socketlab"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run socketlab")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ----- Usage errors ---------------------------------------------------------

/// Runs a command line that must be refused, and returns its one line.
fn refused_in_one_line(args: &[&str]) -> String {
    let out = socketlab(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?} must give one line: {err:?}"
    );
    assert!(err.starts_with("socketlab: "), "{err:?}");
    assert!(stdout(&out).is_empty(), "{args:?} printed to stdout");
    err
}

#[test]
fn a_bad_flag_is_one_line_naming_it_and_the_help_to_read() {
    let err = refused_in_one_line(&["serve", "--no-such-flag"]);
    assert!(err.contains("'--no-such-flag'"), "{err}");
    assert!(err.contains("'socketlab serve --help'"), "{err}");
}

#[test]
fn a_near_miss_keeps_clap_suggestion_on_the_same_line() {
    let err = refused_in_one_line(&["serve", "--port", "1"]);
    assert!(err.contains("'--port-base'"), "{err}");
}

#[test]
fn a_bad_value_in_a_nested_subcommand_names_that_subcommand() {
    let err = refused_in_one_line(&["bench", "echo", "--conns", "many"]);
    assert!(err.contains("'many'"), "{err}");
    assert!(err.contains("'socketlab bench echo --help'"), "{err}");
}

#[test]
fn a_missing_argument_and_an_unknown_subcommand_are_one_line_each() {
    let err = refused_in_one_line(&["completions"]);
    assert!(err.contains("<SHELL>"), "{err}");
    let err = refused_in_one_line(&["frobnicate"]);
    assert!(err.contains("'frobnicate'"), "{err}");
}

#[test]
fn help_is_left_as_clap_prints_it() {
    let out = socketlab(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("Usage: socketlab serve"), "{text}");
    assert!(text.lines().count() > 10, "{text}");
}

// ----- Completions and the manual page -------------------------------------

#[test]
fn completions_are_printed_for_every_supported_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = socketlab(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains("socketlab"), "{shell}");
        // Subcommands and their flags are in the script.
        assert!(script.contains("serve"), "{shell}");
        assert!(script.contains("port-base"), "{shell}");
    }
}

#[test]
fn the_bash_completion_script_is_valid_bash() {
    let out = socketlab(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socketlab.bash");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn an_unknown_shell_is_refused_listing_the_known_ones() {
    let err = refused_in_one_line(&["completions", "tcsh"]);
    assert!(err.contains("bash") && err.contains("powershell"), "{err}");
}

#[test]
fn man_prints_a_roff_page_listing_the_subcommands() {
    let out = socketlab(&["man"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH socketlab 1"), "{page}");
    for sub in ["serve", "echo", "chat", "exec", "bench", "completions"] {
        assert!(page.contains(sub), "the page should mention {sub}");
    }
}

// ----- One address convention for every client ------------------------------

/// A TCP and UDP port on 127.0.0.1 that nothing listens on (bound, then
/// released; nothing in the test run binds it again on purpose).
fn unused_port() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    format!("127.0.0.1:{port}")
}

const HINT: &str = "(is `socketlab serve` running there?)";

#[test]
fn every_client_takes_addr_as_a_flag_and_as_the_first_argument() {
    let addr = unused_port();
    for client in ["echo", "daytime", "chat"] {
        for args in [vec![client, "--addr", &addr], vec![client, &addr]] {
            let out = socketlab(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");
            assert!(err.contains(HINT), "{args:?}: {err}");
        }
        // Both at once is ambiguous: a usage error.
        refused_in_one_line(&[client, "--addr", &addr, &addr]);
    }
    // exec's first argument is the program, so it takes --addr only.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.key"), "00".repeat(32)).unwrap();
    let data = dir.path().to_str().unwrap();
    let out = socketlab(&["exec", "--addr", &addr, "--data-dir", data, "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stderr(&out).contains(HINT), "{}", stderr(&out));
}

#[test]
fn udp_clients_give_the_same_hint_as_tcp_when_nothing_listens() {
    let addr = unused_port();
    for args in [
        vec![
            "echo",
            "--udp",
            "--addr",
            &addr,
            "--count",
            "1",
            "--timeout",
            "2s",
        ],
        vec!["daytime", "--udp", "--addr", &addr, "--timeout", "2s"],
    ] {
        let out = socketlab(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("refused") && err.contains(HINT),
            "{args:?}: {err}"
        );
    }
}
